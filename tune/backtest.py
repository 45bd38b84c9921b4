"""Ray Tune sweeps over betting-strategy parameters (Kelly fraction, minimum edge, minimum
confidence), scored on walk-forward season folds; the held-out test season is scored once, by
the best configuration only, after the sweep.

    python -m tune.backtest --underdog-dir runs/underdog --samples 40
"""
from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from ray import tune as ray_tune

from edgeray.backtest.engine import SizingSpec, run_bets
from tune.storage import experiment_location, run_storage

METRIC = "val_log_growth"  # mean log(final / initial bankroll) over the validation folds
SEARCH_SPACE = {
    "kelly_fraction": ray_tune.uniform(0.05, 0.5),
    "kelly_cap": ray_tune.uniform(0.02, 0.2),
    "min_edge": ray_tune.uniform(0.0, 0.12),
    "min_confidence": ray_tune.uniform(0.0, 0.5),
}


TIER_CHOICES = [["moderate"], ["heavy"], ["extreme"], ["moderate", "heavy"], ["moderate", "heavy", "extreme"]]
SIZING_KEYS = ("kelly_fraction", "kelly_cap", "min_edge", "min_confidence")


def search_space(opportunities: pd.DataFrame) -> dict:
    """Sizing parameters always; the underdog blend weight and tiers when the opportunities carry
    the two component probabilities and a tier (no refit needed: the blend is linear)."""
    space = dict(SEARCH_SPACE)
    if {"base_prob", "market_model_prob"} <= set(opportunities.columns):
        space["blend_weight"] = ray_tune.uniform(0.0, 1.0)
    if "tier" in opportunities.columns:
        space["tiers"] = ray_tune.choice(TIER_CHOICES)
    return space


def apply_config(opportunities: pd.DataFrame, config: dict) -> pd.DataFrame:
    out = opportunities
    if "tiers" in config:
        out = out[out["tier"].isin(config["tiers"])]
    if "blend_weight" in config:
        w = config["blend_weight"]
        out = out.assign(model_prob=w * out["base_prob"] + (1 - w) * out["market_model_prob"])
        out = out.assign(confidence=out["model_prob"])
    return out.reset_index(drop=True)


def _log_growth(opportunities: pd.DataFrame, config: dict, bankroll: float) -> float:
    chosen = apply_config(opportunities, config)
    if chosen.empty:
        return 0.0
    sizing = {k: config[k] for k in SIZING_KEYS}
    result = run_bets(chosen, SizingSpec(method="kelly", **sizing), bankroll, metrics=False)
    final = float(result.equity["bankroll"].iloc[-1]) if len(result.equity) else bankroll
    return float(np.log(max(final, 1e-9) / bankroll))


def _trial(config: dict, *, folds: list[pd.DataFrame], bankroll: float) -> None:
    import ray

    growth = [_log_growth(fold, config, bankroll) for fold in folds]
    # The node says where the trial ran on a cluster (Tune's node_ip is the same for every node of one machine).
    ray_tune.report({METRIC: float(np.mean(growth)), "fold_growth": growth,
                     "node_id": ray.get_runtime_context().get_node_id()})


def sweep(opportunities: pd.DataFrame, test_season: int, num_samples: int = 20, search: str = "optuna",
          bankroll: float = 1000.0, max_concurrent: int = 2, storage_path: str | Path | None = None, seed: int = 0) -> dict:
    """Validation folds are the seasons before `test_season` (each scored on its own); the test
    season never reaches a trial. `storage_path`: a local folder, or on a cluster a URI every node reaches
    (tune/storage.py)."""
    if "season" not in opportunities:
        raise ValueError("opportunities: needs a 'season' column to build walk-forward folds")
    seasons = sorted(int(s) for s in opportunities["season"].unique())
    if test_season not in seasons:
        raise ValueError(f"test_season: {test_season} is not among the seasons {seasons}")
    val_seasons = [s for s in seasons if s < test_season]
    if not val_seasons:
        raise ValueError(f"test_season: {test_season} leaves no earlier season to validate on")
    folds = [opportunities[opportunities["season"] == s].reset_index(drop=True) for s in val_seasons]
    if search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(seed=seed)
    elif search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        searcher = BasicVariantGenerator(random_state=seed)
    else:
        raise ValueError(f"search: expected 'optuna' or 'random', got {search!r}")
    name = f"strategy-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    tuner = ray_tune.Tuner(
        ray_tune.with_resources(ray_tune.with_parameters(_trial, folds=folds, bankroll=bankroll), {"cpu": 1}),
        param_space=search_space(opportunities),
        tune_config=ray_tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, num_samples=num_samples,
                                        max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=ray_tune.RunConfig(name=name, verbose=0, **run_storage(storage_path)))
    grid = tuner.fit()
    trials = [{"config": r.config, METRIC: (r.metrics or {}).get(METRIC), "node_id": (r.metrics or {}).get("node_id")}
              for r in grid if r.error is None]
    if not trials:
        raise RuntimeError(f"no trial of sweep {name} completed")
    best = max(trials, key=lambda t: t[METRIC])
    test = opportunities[opportunities["season"] == test_season].reset_index(drop=True)
    held_out = run_bets(apply_config(test, best["config"]),
                        SizingSpec(method="kelly", **{k: best["config"][k] for k in SIZING_KEYS}), bankroll)
    return {"experiment": name, "storage_path": experiment_location(storage_path, name), "val_seasons": val_seasons,
            "test_season": test_season, "trials": trials,
            "best_config": best["config"], f"best_{METRIC}": best[METRIC],
            "test": {k: held_out.metrics.get(k) for k in ("total_bets", "roi", "profit", "max_drawdown", "roi_ci95")}}


def main(argv: list[str] | None = None) -> dict:
    import ray

    from edgeray.underdog.model import backtest_opportunities

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--underdog-dir", default="runs/underdog")
    parser.add_argument("--data-dir", default="../shared/data/sports")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--test-season", type=int, default=None)
    args = parser.parse_args(argv)
    ray.init(ignore_reinit_error=True)
    opportunities = backtest_opportunities(args.underdog_dir, args.data_dir)
    opportunities["season"] = np.where(opportunities["date"].dt.month >= 8, opportunities["date"].dt.year,
                                       opportunities["date"].dt.year - 1)
    test_season = args.test_season or int(opportunities["season"].max())
    result = sweep(opportunities, test_season, args.samples)
    print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
