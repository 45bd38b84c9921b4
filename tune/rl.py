"""Train RL sizing policies (RLlib PPO, edgeray DDPG) on the trading or betting env; optionally sweep with Tune.

    python -m tune.rl --algo ddpg --env trading --steps 20000 --out runs/rl/ddpg-trading
    python -m tune.rl --algo ppo --env betting --steps 50000 --out runs/rl/ppo-betting
    python -m tune.rl --algo ddpg --env pendulum --tune --samples 4 --steps 10000   # Tune sweep over learning rates
    ray job submit --working-dir . -- python -m tune.rl --algo ppo --env trading    # joins the job's cluster

Writes an RLlib checkpoint (`algo.save_to_path`) plus `policy.json` (what serving needs: algo, env, action bounds,
evaluation return, the module's construction spec), `policy_weights.npz` (the module's weights as plain arrays, so
serving never unpickles; see policies.rl_policy) and `drift_reference.json` (observation and reward distributions the drift detector compares
live data against). Learning curves go to stdout/the Ray job log as JSON lines, and to `learning_curve.png`.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np

from edgeray.drift import DriftReference
from tune.storage import run_storage
from envs import make_betting_env, make_trading_env, register_rllib_envs
from policies.rl_policy import (
    DRIFT_REFERENCE,
    MODULE_SUBDIR,
    POLICY_META,
    WEIGHTS_FILE,
    PolicyMeta,
    RLPolicy,
    evaluate,
    load_meta,
    rollout,
    write_meta,
)

ALGOS = ("ppo", "ddpg")
ENVS = {"trading": make_trading_env, "betting": make_betting_env,
        "pendulum": lambda cfg=None: gym.make("Pendulum-v1")}  # a standard task to verify a learner on


def env_name(env: str) -> str:
    if env not in ENVS:
        raise ValueError(f"env must be one of {sorted(ENVS)}, got {env!r}")
    if env == "pendulum":
        return "Pendulum-v1"
    trading, betting = register_rllib_envs()
    return trading if env == "trading" else betting


def build_config(algo: str, env: str, *, seed: int = 0, env_config: dict | None = None, hiddens=(64, 64),
                 gpu: bool | None = None, num_envs_per_env_runner: int = 1, **training):
    """CPU-friendly defaults for 2 cores (no remote EnvRunners); a GPU learner when torch sees CUDA.

    `num_envs_per_env_runner` > 1 steps that many env copies as one gymnasium vector env: RLlib's EnvRunner spends
    ~1-2 ms of connector and episode bookkeeping per step call against ~0.25 ms for the trading env's own step, and
    a vector env pays it once per call for all copies (PPO's 2,000-step batch becomes copies x 2,000/copies steps)."""
    import torch

    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    gpu = torch.cuda.is_available() if gpu is None else gpu
    if algo == "ddpg":
        from policies.ddpg import DDPGConfig

        config = DDPGConfig().training(actor_hiddens=list(hiddens), critic_hiddens=list(hiddens),
                                       train_batch_size_per_learner=128, **training)
    else:
        from ray.rllib.algorithms.ppo import PPOConfig

        from policies import ppo

        config = PPOConfig().training(**{"lr": 3e-4, "train_batch_size_per_learner": 2000, "minibatch_size": 128,
                                         "num_epochs": 10, "gamma": 0.99, **training})
        # RLlib's PPO module and Learner without the overhead they do not need here (policies/ppo.py).
        config = ppo.lean(config, {"fcnet_hiddens": list(hiddens), "vf_share_layers": False})
    from policies.lean import lean_connectors

    # One connector piece each way instead of RLlib's default pipelines, for both learners (policies/lean.py).
    config = lean_connectors(config)
    return (config.environment(env_name(env), env_config=dict(env_config or {}))
            .env_runners(num_env_runners=0, num_envs_per_env_runner=int(num_envs_per_env_runner))
            .learners(num_learners=0, num_gpus_per_learner=1 if gpu else 0)
            .debugging(seed=seed))


def _progress_row(result: dict) -> dict:
    runners = result.get("env_runners", {})
    return {"iteration": int(result.get("training_iteration", 0)),
            "env_steps": int(runners.get("num_env_steps_sampled_lifetime", 0)),
            "episode_return_mean": float(runners.get("episode_return_mean", float("nan"))),
            "time_s": float(result.get("time_total_s", 0.0))}


def observation_names(env: gym.Env) -> list[str]:
    names = getattr(env.unwrapped, "observation_names", None)
    return list(names()) if callable(names) else [f"obs_{i}" for i in range(int(np.prod(env.observation_space.shape)))]


def drift_reference(policy: RLPolicy, env: gym.Env, episodes: int, seed: int) -> DriftReference:
    """Observation and reward distributions of the trained policy acting on the training env."""
    run = rollout(policy.act, env, episodes, seed)
    return DriftReference.from_samples(run["observations"], observation_names(env), run["rewards"])


def export_weights(checkpoint: str | Path) -> dict:
    """Write the checkpoint's module weights as `policy_weights.npz` and return the module spec for policy.json
    (also merged into an existing policy.json, which upgrades a checkpoint written before pickle-free serving).

    This reads RLlib's pickled module files, so run it only on checkpoints you wrote yourself (it is the
    writer's side: `train` calls it on the checkpoint it just saved)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    checkpoint = Path(checkpoint).resolve()
    module = RLModule.from_checkpoint(checkpoint / MODULE_SUBDIR)
    np.savez(checkpoint / WEIGHTS_FILE, **{k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})
    spec = {"weights": WEIGHTS_FILE, "model_config": dict(module.model_config or {}),
            "observation_low": module.observation_space.low.tolist(),
            "observation_high": module.observation_space.high.tolist()}
    if (checkpoint / POLICY_META).is_file():
        meta = load_meta(checkpoint)
        meta.module = spec
        write_meta(checkpoint, meta)
    return spec


def train(algo: str, env: str, steps: int, out: str | Path, *, seed: int = 0, env_config: dict | None = None,
          eval_episodes: int = 10, on_progress: Callable[[dict], None] | None = None, **training) -> dict:
    """Train until `steps` env steps are sampled; save checkpoint + policy.json + drift reference; evaluate."""
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    out = Path(out).resolve()  # RLlib's save_to_path reads a relative path as a URI without a scheme and fails
    out.mkdir(parents=True, exist_ok=True)
    algorithm = build_config(algo, env, seed=seed, env_config=env_config, **training).build_algo()
    curve, started, cpu_started = [], time.perf_counter(), time.process_time()
    try:
        while not curve or curve[-1]["env_steps"] < steps:
            curve.append(_progress_row(algorithm.train()))
            if on_progress:
                on_progress(curve[-1])
        wall_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started  # this process only: with num_learners=0 and no remote runners, all of it
        checkpoint = out / "checkpoint"
        algorithm.save_to_path(str(checkpoint))
    finally:
        algorithm.stop()
    module_spec = export_weights(checkpoint)
    eval_env = ENVS[env](env_config)
    meta = PolicyMeta(algo=algo, env=env, env_config=dict(env_config or {}),
                      action_low=eval_env.action_space.low.tolist(), action_high=eval_env.action_space.high.tolist(),
                      obs_dim=int(np.prod(eval_env.observation_space.shape)), env_steps=curve[-1]["env_steps"],
                      module=module_spec)
    write_meta(checkpoint, meta)
    policy = RLPolicy.load(checkpoint)
    # Evaluation seeds are disjoint from the training seed's episode seeds by construction (offset 10_000).
    scores = evaluate(policy.act, eval_env, eval_episodes, seed=seed + 10_000)
    meta.eval_return_mean = scores["return_mean"]
    write_meta(checkpoint, meta)
    reference = drift_reference(policy, eval_env, max(2, eval_episodes // 2), seed=seed + 20_000)
    (checkpoint / DRIFT_REFERENCE).write_text(json.dumps(reference.to_dict()))
    _plot_curve(curve, out / "learning_curve.png", f"{algo.upper()} on {env}")
    summary = {"algo": algo, "env": env, "checkpoint": str(checkpoint), "train_wall_s": round(wall_s, 2), "train_cpu_s": round(cpu_s, 2),
               "env_steps": curve[-1]["env_steps"], "eval": scores, "curve": curve}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _plot_curve(curve: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([c["env_steps"] for c in curve], [c["episode_return_mean"] for c in curve], marker=".")
    ax.set(xlabel="env steps", ylabel="mean episode return (training episodes)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sweep(algo: str, env: str, steps: int, samples: int, storage_path: str | Path, *, seed: int = 0,
          env_config: dict | None = None) -> dict:
    """Ray Tune over learning rates; the trainable is the RLlib algorithm class itself (DDPG like any built-in)."""
    from ray import tune as ray_tune
    from ray.tune import RunConfig

    if algo == "ddpg":
        from policies.ddpg import DDPG as trainable

        space = {"actor_lr": ray_tune.loguniform(1e-4, 3e-3), "critic_lr": ray_tune.loguniform(1e-4, 3e-3)}
    else:
        from ray.rllib.algorithms.ppo import PPO as trainable

        space = {"lr": ray_tune.loguniform(3e-5, 1e-3)}
    config = build_config(algo, env, seed=seed, env_config=env_config, **space)
    tuner = ray_tune.Tuner(
        trainable, param_space=config,
        tune_config=ray_tune.TuneConfig(metric="env_runners/episode_return_mean", mode="max", num_samples=samples,
                                        max_concurrent_trials=1),
        run_config=RunConfig(**run_storage(storage_path), name=f"{algo}-{env}",
                             stop={"env_runners/num_env_steps_sampled_lifetime": steps},
                             checkpoint_config=ray_tune.CheckpointConfig(checkpoint_at_end=True)))
    results = tuner.fit()
    best = results.get_best_result()
    keys = list(space)
    return {"best_config": {k: best.config[k] for k in keys},
            "best_return": float(best.metrics["env_runners"]["episode_return_mean"]),
            "best_checkpoint": best.checkpoint.path if best.checkpoint else None,
            "trials": [{**{k: r.config[k] for k in keys},
                        "return": float(r.metrics.get("env_runners", {}).get("episode_return_mean", float("nan")))}
                       for r in results]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=ALGOS, required=True)
    parser.add_argument("--env", choices=sorted(ENVS), required=True)
    parser.add_argument("--steps", type=int, default=20_000, help="env steps to sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-config", default="{}", help="JSON object passed to the env (see envs/*.py configs)")
    parser.add_argument("--out", default=None, help="output dir (default runs/rl/<algo>-<env>)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--tune", action="store_true", help="run a Ray Tune sweep over learning rates instead")
    parser.add_argument("--samples", type=int, default=4, help="Tune trials")
    parser.add_argument("--address", default=None, help="Ray address; default RAY_ADDRESS (set by ray job submit), else a local Ray")
    args = parser.parse_args(argv)
    try:
        env_config = json.loads(args.env_config)
    except json.JSONDecodeError as exc:
        parser.error(f"--env-config must be a JSON object, got {args.env_config!r}: {exc}")
    if not isinstance(env_config, dict):
        parser.error(f"--env-config must be a JSON object, got {args.env_config!r}")
    out = Path(args.out or f"runs/rl/{args.algo}-{args.env}")

    import ray
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    address = args.address or os.environ.get("RAY_ADDRESS")  # set by `ray job submit`
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=2, object_store_memory=256 * 1024**2, ignore_reinit_error=True)
    try:
        if args.tune:
            result = sweep(args.algo, args.env, args.steps, args.samples, out / "tune", seed=args.seed,
                           env_config=env_config)
        else:
            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                          TextColumn("return {task.fields[ret]}"), TimeRemainingColumn()) as bar:
                task = bar.add_task(f"{args.algo} on {args.env}", total=args.steps, ret="-")

                def show(row: dict) -> None:
                    bar.update(task, completed=min(row["env_steps"], args.steps), ret=f"{row['episode_return_mean']:.3f}")
                    print(json.dumps(row), flush=True)  # one JSON line per iteration for the Ray job log

                result = train(args.algo, args.env, args.steps, out, seed=args.seed, env_config=env_config,
                               eval_episodes=args.eval_episodes, on_progress=show)
    finally:
        ray.shutdown()
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
