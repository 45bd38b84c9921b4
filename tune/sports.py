"""Ray Tune sweeps over each sports model family's hyper-parameters (ASHA scheduler, Optuna or random search).

Each trial fits one model on the training seasons and reports the validation seasons' log loss through
`ray.tune.report`. Per-epoch reports need the model to tell us its validation loss while it trains: when
the model's `fit` accepts `eval_frame` and its progress info carries "val_log_loss", every epoch is reported
(ASHA can stop poor trials early); otherwise a trial reports once, after fitting, and ASHA only ranks. The
final report of every trial is the calibrated model's validation log loss, marked `final=True`; the best
trial is the completed one with the lowest final log loss. Its config is refitted on the training seasons
and registered (with its validation figures from edgeray.sports.performance) when a registry is given.

Run a full sweep as a job: `python -m tune.sports --sport nba --family statistical --samples 20`.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from ray import tune as ray_tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from sklearn.metrics import log_loss

from edgeray.sports.performance import frame_performance
from edgeray.sports.registry import FAMILIES, SPORTS, ModelRegistry, check_family, check_sport
from tune.storage import experiment_location, run_storage

METRIC = "val_log_loss"
SEARCHES = ("optuna", "random")
SCHEDULERS = ("asha", "fifo")
_PROB_EPS = 1e-15

_ensemble_space = {
    "n_estimators": ray_tune.randint(50, 401),
    "max_depth": ray_tune.randint(2, 11),
    "gb_max_iter": ray_tune.randint(50, 301),
    "learning_rate": ray_tune.loguniform(0.01, 0.3),
    "lr_C": ray_tune.loguniform(0.01, 10.0),
    "nn_hidden": ray_tune.choice(["16", "32", "32-16"]),
}
# family -> model name -> sampled key -> Tune domain. Keys are the model's own params except where the
# model takes a list its internal CV picks from (C -> Cs=[C], ...) or layer sizes (encoded "64-32" because
# Optuna's categorical choices must be scalars); `config_to_params` decodes both.
SEARCH_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "statistical": {
        "logistic_l2": {"C": ray_tune.loguniform(1e-3, 1e2), "k_features": ray_tune.choice([5, 10, "all"])},
        "poisson": {"alpha": ray_tune.loguniform(1e-4, 10.0), "k_features": ray_tune.choice([5, 10, "all"])},
        "bayes_logistic": {"prior_var": ray_tune.loguniform(1e-3, 1e2),
                           "k_features": ray_tune.choice([5, 10, "all"])},
    },
    "ensemble": {"voting_soft": dict(_ensemble_space), "voting_hard": dict(_ensemble_space),
                 "stacked": dict(_ensemble_space)},
    "neural": {
        "mlp": {"hidden_layers": ray_tune.choice(["32-16", "64-32", "128-64", "128-64-32"]),
                "dropout": ray_tune.uniform(0.0, 0.5), "lr": ray_tune.loguniform(1e-4, 1e-2),
                "epochs": ray_tune.randint(5, 61), "batch_size": ray_tune.choice([64, 128, 256]),
                "weight_decay": ray_tune.loguniform(1e-6, 1e-3)},
    },
    "lstm": {
        "lstm_weather": {"units": ray_tune.choice([16, 32, 64, 128]), "layers": ray_tune.randint(1, 4),
                         "dropout": ray_tune.uniform(0.0, 0.5), "seq_len": ray_tune.choice([5, 8, 10, 15]),
                         "head_units": ray_tune.choice([16, 32, 64]), "lr": ray_tune.loguniform(1e-4, 1e-2),
                         "epochs": ray_tune.randint(5, 31), "weight_decay": ray_tune.loguniform(1e-6, 1e-3)},
    },
}
DEFAULT_NAMES = {"statistical": "logistic_l2", "ensemble": "voting_soft", "neural": "mlp", "lstm": "lstm_weather"}
_AS_ONE_ITEM_LIST = {"C": "Cs", "alpha": "alphas", "prior_var": "prior_vars", "k_features": "k_features"}
_LAYER_SIZES = ("hidden_layers", "nn_hidden")

ModelFactory = Callable[[str, str, "str | None", "dict | None"], Any]


def default_factory(family: str, sport: str, name: str | None = None, params: dict | None = None):
    from edgeray.sports.models import make_model  # imported in the worker, so the driver need not load torch

    return make_model(family, sport, name, params)


def config_to_params(config: dict, fixed_params: dict | None = None) -> dict:
    """Decode a sampled Tune config into the model's params; `fixed_params` (already model params) win."""
    params: dict = {}
    for key, value in config.items():
        if isinstance(value, np.generic):
            value = value.item()
        if key in _AS_ONE_ITEM_LIST:
            params[_AS_ONE_ITEM_LIST[key]] = [value]
        elif key in _LAYER_SIZES and isinstance(value, str):
            params[key] = [int(units) for units in value.split("-")]
        else:
            params[key] = value
    params.update(fixed_params or {})
    return params


def _split(frame: pd.DataFrame, train_seasons: list[int], val_seasons: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    if "season" not in frame.columns:
        raise ValueError("frame: missing column 'season'")
    train_seasons, val_seasons = [int(s) for s in train_seasons], [int(s) for s in val_seasons]
    if not train_seasons:
        raise ValueError(f"train_seasons: need at least one season, got {train_seasons!r}")
    if not val_seasons:
        raise ValueError(f"val_seasons: need at least one season, got {val_seasons!r}")
    if min(val_seasons) <= max(train_seasons):
        raise ValueError(f"val_seasons: must all come after train_seasons, got {val_seasons} vs {train_seasons}")
    present = set(frame["season"].astype(int))
    for label, wanted in (("train_seasons", train_seasons), ("val_seasons", val_seasons)):
        absent = sorted(set(wanted) - present)
        if absent:
            raise ValueError(f"{label}: season(s) {absent} have no games in the frame")
    return frame[frame["season"].isin(train_seasons)], frame[frame["season"].isin(val_seasons)]


def _val_log_loss(model: Any, val: pd.DataFrame) -> float:
    decided = val[val["home_win"].notna()]
    p = np.clip(np.asarray(model.predict_proba(decided), dtype=float), _PROB_EPS, 1 - _PROB_EPS)
    return float(log_loss(decided["home_win"].astype(int), p, labels=[0, 1]))


def _accepts_eval_frame(model: Any) -> bool:
    try:
        return "eval_frame" in inspect.signature(model.fit).parameters
    except (TypeError, ValueError):
        return False


def _trial(config: dict, *, frame: pd.DataFrame, sport: str, family: str, name: str, train_seasons: list[int],
           val_seasons: list[int], fixed_params: dict, factory: ModelFactory, device: str) -> None:
    train, val = _split(frame, train_seasons, val_seasons)
    model = factory(family, sport, name, config_to_params(config, fixed_params))
    last_train_loss = [math.nan]

    def progress(epoch: int, total: int, info: dict) -> None:
        last_train_loss[0] = float(info.get("loss", math.nan))
        if METRIC in info:  # the model scored the validation rows itself: ASHA can prune on it
            ray_tune.report({METRIC: float(info[METRIC]), "train_loss": last_train_loss[0], "epoch": epoch,
                             "final": False})

    started = time.perf_counter()
    if _accepts_eval_frame(model):
        model.fit(train, progress=progress, device=device, eval_frame=val)
    else:
        model.fit(train, progress=progress, device=device)
    import ray

    # The node says where the trial ran on a cluster (Tune's node_ip is the same for every node of one machine).
    ray_tune.report({METRIC: _val_log_loss(model, val), "train_loss": last_train_loss[0],
                     "fit_seconds": time.perf_counter() - started, "final": True,
                     "node_id": ray.get_runtime_context().get_node_id()})


def _search_space(family: str, name: str, fixed_params: dict) -> dict:
    space = SEARCH_SPACES[family].get(name)
    if space is None:
        raise ValueError(f"name: no search space for model {name!r} of family {family!r}; "
                         f"expected one of {sorted(SEARCH_SPACES[family])}")
    # A fixed model param removes the sampled keys that would set it (e.g. fixing Cs drops C).
    fixed = set(fixed_params)
    return {k: v for k, v in space.items() if k not in fixed and _AS_ONE_ITEM_LIST.get(k) not in fixed}


def run_sweep(sport: str, family: str, frame: pd.DataFrame, train_seasons: list[int], val_seasons: list[int],
              num_samples: int, search: str = "optuna", scheduler: str = "asha", max_concurrent: int = 2,
              registry: ModelRegistry | None = None, storage_path: str | Path | None = None, *,
              name: str | None = None, fixed_params: dict | None = None, factory: ModelFactory | None = None,
              gpus_per_trial: float = 0.0, seed: int | None = 0, tags: list[str] | tuple[str, ...] = ()) -> dict:
    """Sweep one model family with Ray Tune; returns the trials, the best config and (with a registry) its record.

    Needs a running Ray (ray.init) in the caller. `fixed_params` are model params held constant (e.g.
    {"epochs": 2} in CI); `factory(family, sport, name, params)` builds models (default: make_model).
    """
    check_sport(sport)
    check_family(family)
    name = DEFAULT_NAMES[family] if name is None else name
    fixed_params = dict(fixed_params or {})
    space = _search_space(family, name, fixed_params)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: must be an integer >= 1, got {num_samples!r}")
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 1:
        raise ValueError(f"max_concurrent: must be an integer >= 1, got {max_concurrent!r}")
    if search not in SEARCHES:
        raise ValueError(f"search: unknown search {search!r}; expected one of {list(SEARCHES)}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler: unknown scheduler {scheduler!r}; expected one of {list(SCHEDULERS)}")
    if not (isinstance(gpus_per_trial, (int, float)) and 0 <= gpus_per_trial):
        raise ValueError(f"gpus_per_trial: must be a number >= 0, got {gpus_per_trial!r}")
    train, val = _split(frame, train_seasons, val_seasons)  # fail here, not in every trial
    factory = factory or default_factory
    device = "cuda" if gpus_per_trial > 0 else "cpu"

    if search == "optuna":
        from ray.tune.search.optuna import OptunaSearch  # needs the optuna package

        searcher = OptunaSearch(seed=seed)
    else:
        searcher = BasicVariantGenerator(random_state=seed)
    max_epochs = int(fixed_params.get("epochs", 100))
    trial_scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max_epochs + 1, grace_period=1,
                                     reduction_factor=2) if scheduler == "asha" else FIFOScheduler())
    experiment = f"{sport}-{family}-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    trainable = ray_tune.with_parameters(
        _trial, frame=frame, sport=sport, family=family, name=name, train_seasons=list(train_seasons),
        val_seasons=list(val_seasons), fixed_params=fixed_params, factory=factory, device=device)
    resources = {"cpu": 1, "gpu": gpus_per_trial} if gpus_per_trial > 0 else {"cpu": 1}
    tuner = ray_tune.Tuner(
        ray_tune.with_resources(trainable, resources),
        param_space=space,
        tune_config=ray_tune.TuneConfig(metric=METRIC, mode="min", search_alg=searcher,
                                        scheduler=trial_scheduler, num_samples=num_samples,
                                        max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=ray_tune.RunConfig(name=experiment, verbose=0, **run_storage(storage_path)),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    sweep_seconds = time.perf_counter() - started

    trials = []
    for result in grid:
        metrics = result.metrics or {}
        history = result.metrics_dataframe
        trials.append({
            "trial_id": metrics.get("trial_id"), "config": result.config, "node_id": metrics.get("node_id"),
            METRIC: metrics.get(METRIC), "final": bool(metrics.get("final", False)),
            "reports": 0 if history is None else int(len(history)),
            "error": None if result.error is None else repr(result.error),
        })
    completed = [t for t in trials if t["final"] and t["error"] is None and t[METRIC] is not None]
    if not completed:
        errors = [t["error"] for t in trials if t["error"]]
        raise RuntimeError(f"no trial of sweep {experiment} completed; first error: {errors[:1]}")
    best = min(completed, key=lambda t: t[METRIC])
    best_params = config_to_params(best["config"], fixed_params)
    out = {
        "experiment": experiment, "storage_path": experiment_location(storage_path, experiment), "sport": sport,
        "family": family,
        "name": name, "search": search, "scheduler": scheduler, "num_samples": num_samples,
        "train_seasons": list(train_seasons), "val_seasons": list(val_seasons), "trials": trials,
        "n_completed": len(completed), "n_errors": sum(t["error"] is not None for t in trials),
        "best_trial_id": best["trial_id"], "best_config": best["config"], "best_params": best_params,
        "best_val_log_loss": best[METRIC], "sweep_seconds": round(sweep_seconds, 3),
    }
    if registry is not None:
        model = factory(family, sport, name, best_params).fit(train, device=device)
        figures = frame_performance(model.predict_proba(val), val)
        record = registry.register(
            model, {"performance": figures, "tune": {"val_log_loss_in_sweep": best[METRIC],
                                                     "experiment": experiment}},
            tags=["tune", *tags], data={"train_seasons": out["train_seasons"], "val_seasons": out["val_seasons"],
                                        "search": search, "scheduler": scheduler, "num_samples": num_samples,
                                        "best_trial_id": best["trial_id"], "best_config": best["config"]})
        out.update({"model_id": record["model_id"], "version": record["version"], "record": record,
                    "refit_val_log_loss": figures["log_loss"]})
    return out


def _seasons(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise ValueError(f"seasons: expected comma-separated years, got {text!r}") from exc


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m tune.sports", description=__doc__.splitlines()[0])
    parser.add_argument("--sport", required=True, choices=list(SPORTS))
    parser.add_argument("--family", required=True, choices=list(FAMILIES))
    parser.add_argument("--name", default=None, help="model name within the family (default: the family's first)")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--search", choices=list(SEARCHES), default="optuna")
    parser.add_argument("--scheduler", choices=list(SCHEDULERS), default="asha")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--train-seasons", default=None, help="e.g. 2018,2019,2020 (default: the 3 before val)")
    parser.add_argument("--val-seasons", default=None, help="e.g. 2021 (default: the last season in the data)")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sports"))
    parser.add_argument("--registry", default="runs/registry")
    parser.add_argument("--storage-path", default=None,
                        help="where results go: a folder, or on a cluster a URI every node reaches (s3://, gs://)")
    parser.add_argument("--epochs", type=int, default=None, help="hold epochs fixed instead of searching them")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--address", default=None, help="Ray address (default: start a local Ray)")
    args = parser.parse_args(argv)

    import ray

    from edgeray.sports.features import build_features
    from edgeray.sports.games import load_sport

    frame = build_features(load_sport(args.sport, args.data_dir))
    seasons = sorted(int(s) for s in frame["season"].unique())
    val = _seasons(args.val_seasons) if args.val_seasons else [seasons[-1]]
    train = _seasons(args.train_seasons) if args.train_seasons else [s for s in seasons if s < min(val)][-3:]
    ray.init(address=args.address, ignore_reinit_error=True)
    try:
        result = run_sweep(args.sport, args.family, frame, train, val, args.samples, search=args.search,
                           scheduler=args.scheduler, max_concurrent=args.max_concurrent,
                           registry=ModelRegistry(args.registry), storage_path=args.storage_path, name=args.name,
                           fixed_params={"epochs": args.epochs} if args.epochs else None,
                           gpus_per_trial=args.gpus_per_trial)
    finally:
        ray.shutdown()
    summary = {k: v for k, v in result.items() if k not in ("trials", "record")}
    print(json.dumps(summary, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
