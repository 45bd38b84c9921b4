"""Seeded synthetic market data for the embedded default (no files needed).

Log-price random walk whose volatility and drift switch between regimes by a Markov chain
(calm / normal / stressed volatility; up / flat / down drift), spreads that widen with
volatility, and volume that rises with absolute returns. Same seed, same data.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

VOL_REGIMES = np.array([0.0004, 0.0010, 0.0030])  # per-minute log-return sd
DRIFT_REGIMES = np.array([0.00005, 0.0, -0.00005])
STAY_PROBABILITY = 0.995


def _regime_path(rng: np.random.Generator, n: int, n_states: int) -> np.ndarray:
    switches = rng.random(n) > STAY_PROBABILITY
    jumps = rng.integers(1, n_states, size=n)  # move to a different state
    return np.cumsum(np.where(switches, jumps, 0)) % n_states


def generate_bars(symbols: tuple[str, ...] = ("SYN-A", "SYN-B"), n_bars: int = 10_000,
                  start: str = "2024-01-02", freq: str = "1min", seed: int = 7,
                  start_price: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n_bars, freq=freq, tz="UTC")
    frames = []
    for sym in symbols:
        vol = VOL_REGIMES[_regime_path(rng, n_bars, len(VOL_REGIMES))]
        drift = DRIFT_REGIMES[_regime_path(rng, n_bars, len(DRIFT_REGIMES))]
        rets = drift + vol * rng.standard_t(df=4, size=n_bars) / np.sqrt(2.0)  # fat tails, sd ~= vol
        close = start_price * np.exp(np.cumsum(rets))
        open_ = np.concatenate([[start_price], close[:-1]])
        wick = np.abs(rng.normal(0, vol, size=(2, n_bars))) * close
        high = np.maximum(open_, close) + wick[0]
        low = np.minimum(open_, close) - wick[1]
        half_spread = close * (0.00005 + 0.5 * vol * rng.uniform(0.5, 1.5, n_bars))
        volume = rng.lognormal(mean=3.0, sigma=0.4, size=n_bars) * (1.0 + np.abs(rets) / vol)
        frames.append(pd.DataFrame({
            "event_ts": index, "symbol": sym, "open": open_, "high": high, "low": low, "close": close,
            "volume": volume, "bid": close - half_spread, "ask": close + half_spread, "source": f"generator(seed={seed})",
        }))
    return pd.concat(frames).sort_values(["event_ts", "symbol"], kind="stable").reset_index(drop=True)
