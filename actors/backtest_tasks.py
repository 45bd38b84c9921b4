"""Backtests and Monte Carlo paths fanned out as Ray tasks (the work is in edgeray.backtest)."""
from __future__ import annotations

import pandas as pd
import ray

from edgeray.backtest.engine import SizingSpec, run_bets
from edgeray.backtest.montecarlo import MonteCarloInputs, chunk_plan, paths_chunk, summarise


@ray.remote(num_cpus=1)
def backtest_task(opportunities: pd.DataFrame, spec: dict, initial_bankroll: float, bets_offset: int | None = None,
                  bets_limit: int = 100, clv_method: str = "multiplicative") -> dict:
    return run_bets(opportunities, SizingSpec(**spec), initial_bankroll,
                    clv_method=clv_method).to_dict(bets_offset, bets_limit)


@ray.remote(num_cpus=1)
def monte_carlo_chunk(inputs: dict, n_paths: int, seed: int, method: str, ruin_fraction: float, fan_paths: int) -> dict:
    return paths_chunk(MonteCarloInputs.from_dict(inputs), n_paths, seed, method, ruin_fraction, fan_paths)


def compare_parallel(opportunities: pd.DataFrame, specs: dict[str, dict], initial_bankroll: float) -> dict[str, dict]:
    """One task per sizing strategy on the same opportunities (put in the object store once)."""
    ref = ray.put(opportunities)
    results = ray.get([backtest_task.remote(ref, spec, initial_bankroll) for spec in specs.values()])
    return dict(zip(specs, results))


def monte_carlo_parallel(bets: pd.DataFrame, n_paths: int, method: str = "bootstrap", seed: int = 0,
                         initial_bankroll: float = 1000.0, ruin_fraction: float = 0.5, chunk_size: int = 250) -> dict:
    """Paths in chunks across tasks; per-chunk seeds make the result independent of scheduling, and equal to
    edgeray.backtest.monte_carlo's in-process run with the same chunk size."""
    inputs = MonteCarloInputs.from_bets(bets)
    plan = chunk_plan(n_paths, chunk_size, seed, len(inputs.fraction))
    state = ray.put(inputs.to_dict())  # once in the object store, not serialised again for every chunk
    chunks = ray.get([monte_carlo_chunk.remote(state, n, s, method, ruin_fraction, fan) for n, s, fan in plan])
    return {"method": method, "seed": seed, **summarise(chunks, initial_bankroll, ruin_fraction)}
