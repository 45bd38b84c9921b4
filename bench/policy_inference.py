"""RL policy inference latency on CPU (issue target: < 2 ms p99 per micro-batch).

Builds an untrained DDPG and PPO policy for the trading env (inference cost does not depend on training), saves
them as `tune.rl` checkpoints, and times per micro-batch of 1, 100 and 1,000 observations:
- in process: `RLPolicy.act` (bare RLModule forward_inference + unsquash);
- through the policy-server actor: one `act.remote` round trip as the meta-controller does it, with
  CompactObservations (`actor_round_trip`; the expanded float32 batch beside it as `actor_round_trip_expanded`);
  the drift detector observes every batch, folded in by the actor's background thread off the request path.

`actor.rows_1000.p99_ms` is the worse of the two policies' actor round trips at 1,000 rows (issue 12 target:
< 5 ms); `drift` shows, per policy, that the detector saw every served row (it catches up after the last call).

    python bench/policy_inference.py [--iterations 500]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCHES = (1, 100, 1000)


def _summary(samples_s: list[float]) -> dict:
    ms = np.asarray(samples_s) * 1e3
    p50, p99 = np.percentile(ms, [50, 99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), "iterations": len(ms)}


def _loadavg() -> float | None:
    """The 1-minute load average when the bench ends: figures from a busy machine say so."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500)
    args = parser.parse_args(argv)

    import ray
    import torch

    import pandas as pd

    from actors.policy_server import PolicyServerActor
    from envs.trading import FEATURE_NAMES, LiveObservations, TradingEnvConfig
    from policies.rl_policy import RLPolicy
    from tune import rl

    ray.init(num_cpus=2, object_store_memory=256 * 1024**2, include_dashboard=False, log_to_driver=False)
    results = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "torch_threads": torch.get_num_threads()}, "iterations": args.iterations, "policies": {}}
    rng = np.random.default_rng(0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for algo in ("ddpg", "ppo"):
                checkpoint = rl.train(algo, "trading", 1, Path(tmp) / algo, eval_episodes=2,
                                      env_config={"generator_bars": 1200, "episode_len": 100})["checkpoint"]
                policy = RLPolicy.load(checkpoint)
                server = PolicyServerActor.remote(checkpoint, checkpoint_roots=[tmp])  # outside runs/rl
                figures = {}
                window = int(policy.meta.env_config.get("window", TradingEnvConfig.window))
                for rows in BATCHES:
                    # What the loop sends: CompactObservations of feature rows (each symbol's rows once; the
                    # overlapping windows are rebuilt in the actor); the expanded batch is timed beside it.
                    frame = pd.DataFrame(rng.normal(0, 0.01, size=(rows, len(FEATURE_NAMES))), columns=FEATURE_NAMES).assign(
                        symbol=rng.choice(["BTCUSDT-PERP", "GBPUSD"], size=rows), close=rng.uniform(100, 200, size=rows))
                    compact = LiveObservations(window).build_compact(frame, rng.integers(0, 5, size=rows),
                                                                     {"equity": 1e6, "cash": 1e6, "positions": {}, "prices": {}})
                    obs = compact.expand()
                    assert obs.shape == (rows, policy.meta.obs_dim)
                    local, remote, remote_compact = [], [], []
                    for _ in range(20):  # warm-up
                        policy.act(obs)
                        ray.get(server.act.remote(obs))
                        ray.get(server.act.remote(compact))
                    for _ in range(args.iterations):
                        started = time.perf_counter()
                        policy.act(obs)
                        local.append(time.perf_counter() - started)
                    for _ in range(args.iterations):
                        started = time.perf_counter()
                        ray.get(server.act.remote(obs))
                        remote.append(time.perf_counter() - started)
                    for _ in range(args.iterations):
                        started = time.perf_counter()
                        ray.get(server.act.remote(compact))
                        remote_compact.append(time.perf_counter() - started)
                    figures[f"batch_{rows}"] = {"in_process": _summary(local), "actor_round_trip": _summary(remote_compact),
                                                "actor_round_trip_expanded": _summary(remote),
                                                "payload_kb": {"compact": round((compact.base.nbytes + compact.starts.nbytes
                                                                                 + compact.tail.nbytes) / 1024, 1),
                                                               "expanded": round(obs.nbytes / 1024, 1)}}
                lag_after_last_call = ray.get(server.status.remote())["drift_lag_rows"]
                deadline = time.monotonic() + 60
                while (status := ray.get(server.status.remote()))["drift_lag_rows"] and time.monotonic() < deadline:
                    pass
                figures["drift"] = {"rows_served": status["rows_served"], "lag_rows_after_last_call": lag_after_last_call,
                                    "lag_rows_at_end": status["drift_lag_rows"],
                                    "detector_live_rows": status["drift"]["n_live_rows"] if status["drift"] else None,
                                    "inline_folds": status["drift_inline_folds"], "errors": status["drift_errors"]}
                results["policies"][algo] = figures
                ray.kill(server)
    finally:
        ray.shutdown()
    # As the loop calls it: compact observations (the expanded batch's figure is beside it in the JSON).
    by_algo = {algo: f["batch_1000"]["actor_round_trip"]["p99_ms"] for algo, f in results["policies"].items()}
    results["actor.rows_1000.p99_ms"] = max(by_algo.values())
    results["actor.rows_1000.p99_ms_by_algo"] = by_algo
    results["target_actor_p99_ms"] = 5.0
    results["loadavg_1m"] = _loadavg()
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
