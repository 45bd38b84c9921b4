"""Monte Carlo over bet sequences: how the final bankroll, drawdown and ruin are distributed if the same bets had
come out differently.

Each bet is replayed as the share of bankroll it took in the backtest (stake / bankroll_before), one after another.
- "bootstrap": draw the bets themselves (share, odds, outcome) with replacement: the realised record, reshuffled.
- "model": keep the bets, draw each outcome as Bernoulli(model_prob): what the model believes could have happened.
Paths are (paths, bets) numpy arrays in log space. `paths_chunk` is the unit the Ray layer fans out; chunk seeds
come from one SeedSequence so the result does not depend on how chunks are spread over workers.

The fan (bankroll quantiles after each bet) cannot be merged from per-chunk quantiles, so each chunk also returns
its paths' bankroll multiples at the fan's steps and `summarise` takes exact quantiles over all of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

METHODS = ("bootstrap", "model")
QUANTILES = (5, 25, 50, 75, 95)
FAN_STEPS = 100  # the fan samples at most this many bets (evenly spaced) after the start
# Paths x steps the fan keeps at most (8 MB of float32); past it the fan is drawn from the first paths only.
FAN_MAX_VALUES = 2_000_000


@dataclass(frozen=True)
class MonteCarloInputs:
    fraction: np.ndarray
    decimal_odds: np.ndarray
    model_prob: np.ndarray
    won: np.ndarray

    @classmethod
    def from_bets(cls, bets: pd.DataFrame) -> "MonteCarloInputs":
        """From run_bets' `bets` frame (placed rows only)."""
        placed = bets.loc[bets["placed"].to_numpy(dtype=bool)]
        before = placed["bankroll_before"].to_numpy(dtype=float)
        return cls(placed["stake"].to_numpy(dtype=float) / before, placed["decimal_odds"].to_numpy(dtype=float),
                   placed["model_prob"].to_numpy(dtype=float), placed["won"].to_numpy(dtype=float))

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("fraction", "decimal_odds", "model_prob", "won")}

    @classmethod
    def from_dict(cls, state: dict) -> "MonteCarloInputs":
        return cls(*(np.asarray(state[k], dtype=float) for k in ("fraction", "decimal_odds", "model_prob", "won")))


def chunk_seeds(seed: int, n_chunks: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_chunks)]


def fan_steps(n_bets: int) -> np.ndarray:
    """The fan's steps: 0 (the start), then after each bet, thinned to FAN_STEPS evenly spaced ones (the last kept)."""
    return np.unique(np.linspace(0, n_bets, min(n_bets, FAN_STEPS) + 1).round().astype(int))


def chunk_plan(n_paths: int, chunk_size: int, seed: int, n_bets: int) -> list[tuple[int, int, int]]:
    """(paths, seed, fan paths) per chunk, for in-process and Ray runs alike: the fan keeps the first paths, up to
    FAN_MAX_VALUES values."""
    if n_paths < 1:
        raise ValueError(f"n_paths must be >= 1, got {n_paths}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    fan_total = min(n_paths, max(1, FAN_MAX_VALUES // len(fan_steps(n_bets))))
    starts = range(0, n_paths, chunk_size)
    sizes = [min(chunk_size, n_paths - start) for start in starts]
    return [(size, s, max(0, min(size, fan_total - start)))
            for start, size, s in zip(starts, sizes, chunk_seeds(seed, len(sizes)))]


def paths_chunk(inputs: MonteCarloInputs, n_paths: int, seed: int, method: Literal["bootstrap", "model"] = "bootstrap",
                ruin_fraction: float = 0.5, fan_paths: int | None = None) -> dict[str, np.ndarray]:
    """Simulate n_paths paths; returns per path the final bankroll multiple, max drawdown and whether it fell
    below ruin_fraction of the start, and for the first fan_paths paths (all when None) the bankroll multiple at
    each of `fan_steps` (float32: the fan is a picture, and this is what travels between tasks)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_paths < 1:
        raise ValueError(f"n_paths must be >= 1, got {n_paths}")
    if not 0.0 < ruin_fraction < 1.0:
        raise ValueError(f"ruin_fraction must be in (0, 1), got {ruin_fraction}")
    fan_paths = n_paths if fan_paths is None else min(fan_paths, n_paths)
    n = len(inputs.fraction)
    steps = fan_steps(n)
    if n == 0:
        return {"final_multiple": np.ones(n_paths), "max_drawdown": np.zeros(n_paths),
                "ruined": np.zeros(n_paths, dtype=bool), "fan_step": steps,
                "fan_multiple": np.ones((fan_paths, 1), dtype=np.float32)}
    rng = np.random.default_rng(seed)
    f, d = inputs.fraction, inputs.decimal_odds
    if method == "bootstrap":
        idx = rng.integers(0, n, size=(n_paths, n))
        won = inputs.won[idx]
        f, d = f[idx], d[idx]
    else:
        won = (rng.random((n_paths, n)) < inputs.model_prob).astype(float)
    growth = 1.0 + f * (won * d - 1.0)  # stake share f wins f*(d-1) or loses f
    with np.errstate(divide="ignore"):
        log_curve = np.cumsum(np.log(np.maximum(growth, 0.0)), axis=1)
    log_curve = np.concatenate([np.zeros((n_paths, 1)), log_curve], axis=1)
    peak = np.maximum.accumulate(log_curve, axis=1)
    with np.errstate(invalid="ignore"):
        drawdown = 1.0 - np.exp(log_curve - peak)
    return {"final_multiple": np.exp(log_curve[:, -1]), "max_drawdown": np.nan_to_num(drawdown, nan=1.0).max(axis=1),
            "ruined": log_curve.min(axis=1) < np.log(ruin_fraction), "fan_step": steps,
            "fan_multiple": np.exp(log_curve[:fan_paths, steps]).astype(np.float32)}


def summarise(chunks: list[dict[str, np.ndarray]], initial_bankroll: float, ruin_fraction: float) -> dict:
    """The paths' statistics; `fan` holds the bankroll's quantiles at each of its steps over the fan's paths
    (`fan.paths`: all of them unless n_paths x steps passed FAN_MAX_VALUES)."""
    final = np.concatenate([c["final_multiple"] for c in chunks]) * initial_bankroll
    mdd = np.concatenate([c["max_drawdown"] for c in chunks])
    ruined = np.concatenate([c["ruined"] for c in chunks])
    fan = np.concatenate([c["fan_multiple"] for c in chunks]).astype(float)  # quantiles in float64, as `final`'s
    q = QUANTILES
    return {"paths": int(len(final)), "initial_bankroll": float(initial_bankroll), "ruin_fraction": float(ruin_fraction),
            "final_bankroll_mean": float(final.mean()),
            "final_bankroll_quantiles": {f"p{p:02d}": float(v) for p, v in zip(q, np.percentile(final, q))},
            "prob_loss": float((final < initial_bankroll).mean()),
            "max_drawdown_mean": float(mdd.mean()),
            "max_drawdown_quantiles": {f"p{p:02d}": float(v) for p, v in zip(q, np.percentile(mdd, q))},
            "prob_ruin": float(ruined.mean()),
            "fan": {"step": chunks[0]["fan_step"].tolist(), "paths": int(len(fan)),
                    **{f"p{p:02d}": (band * initial_bankroll).tolist()
                       for p, band in zip(q, np.percentile(fan, q, axis=0))}}}


def monte_carlo(bets: pd.DataFrame | MonteCarloInputs, *, n_paths: int = 1000,
                method: Literal["bootstrap", "model"] = "bootstrap", seed: int = 0, initial_bankroll: float = 1000.0,
                ruin_fraction: float = 0.5, chunk_size: int = 250) -> dict:
    """Run all chunks in-process (the Ray layer calls paths_chunk per chunk of chunk_plan and then summarise)."""
    if not (np.isfinite(initial_bankroll) and initial_bankroll > 0):
        raise ValueError(f"initial_bankroll must be > 0, got {initial_bankroll!r}")
    inputs = bets if isinstance(bets, MonteCarloInputs) else MonteCarloInputs.from_bets(bets)
    chunks = [paths_chunk(inputs, size, s, method, ruin_fraction, fan)
              for size, s, fan in chunk_plan(n_paths, chunk_size, seed, len(inputs.fraction))]
    return {"method": method, "seed": seed, **summarise(chunks, initial_bankroll, ruin_fraction)}
