"""LinUCB meta-controller latency: 8 arms x 16-dim context.

Times the single-row hot path (select_one, update, and the two together, as the decision loop
runs them) and the batched `select` on a 256-row micro-batch. Prints JSON with p50/p99 in
microseconds; the batched figures are also divided by the row count.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.context import CONTEXT_DIM  # noqa: E402
from policies.linucb import LinUCB  # noqa: E402

N_ARMS = 8
ITERATIONS = 20_000
WARMUP = 1_000
BATCH_ROWS = 256
BATCH_ITERATIONS = 2_000


def _summary(samples_s: np.ndarray, per: int = 1) -> dict:
    us = samples_s * 1e6 / per
    p50, p99 = np.percentile(us, [50, 99])
    return {"p50_us": round(float(p50), 3), "p99_us": round(float(p99), 3), "mean_us": round(float(us.mean()), 3),
            "iterations": int(samples_s.size)}


def main() -> dict:
    rng = np.random.default_rng(0)
    model = LinUCB([f"arm_{i}" for i in range(N_ARMS)], dim=CONTEXT_DIM, alpha=1.0, epsilon=0.05, seed=0)
    contexts = rng.normal(size=(ITERATIONS + WARMUP, CONTEXT_DIM))
    rewards = rng.normal(size=ITERATIONS + WARMUP)
    clock = time.perf_counter

    for i in range(WARMUP):  # a model that has seen data, and warm caches
        arm, _, _ = model.select_one(contexts[i])
        model.update(arm, contexts[i], float(rewards[i]))
    rows = contexts[WARMUP:]
    rew = rewards[WARMUP:].tolist()

    select_s = np.empty(ITERATIONS)
    arms = np.empty(ITERATIONS, dtype=np.int64)
    for i in range(ITERATIONS):
        x = rows[i]
        t0 = clock()
        arm, _, _ = model.select_one(x)
        select_s[i] = clock() - t0
        arms[i] = arm

    update_s = np.empty(ITERATIONS)
    for i in range(ITERATIONS):
        x, a, r = rows[i], int(arms[i]), rew[i]
        t0 = clock()
        model.update(a, x, r)
        update_s[i] = clock() - t0

    both_s = np.empty(ITERATIONS)
    for i in range(ITERATIONS):
        x, r = rows[i], rew[i]
        t0 = clock()
        arm, _, _ = model.select_one(x)
        model.update(arm, x, r)
        both_s[i] = clock() - t0

    batch = rng.normal(size=(BATCH_ROWS, CONTEXT_DIM))
    for _ in range(50):
        model.select(batch)
    batch_s = np.empty(BATCH_ITERATIONS)
    for i in range(BATCH_ITERATIONS):
        t0 = clock()
        model.select(batch)
        batch_s[i] = clock() - t0

    return {
        "arms": N_ARMS,
        "dim": CONTEXT_DIM,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "select_one": _summary(select_s),
        "update": _summary(update_s),
        "select_one_plus_update": _summary(both_s),
        f"select_batch_{BATCH_ROWS}_per_call": _summary(batch_s),
        f"select_batch_{BATCH_ROWS}_per_row": _summary(batch_s, per=BATCH_ROWS),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
