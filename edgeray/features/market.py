"""Incremental per-symbol market features over micro-batches.

State per symbol is the last `lookback` rows of the raw inputs; each micro-batch is computed
over (tail + batch), so results equal a full recomputation over the whole history (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from edgeray.columns import Columns, column
from edgeray.features.windows import lagged_log_return, rolling_mean, rolling_std, rolling_sum

INPUTS = ("close", "volume", "typical", "spread_bps")


@dataclass(frozen=True)
class MarketFeatureSpec:
    return_horizons: tuple[int, ...] = (1, 5, 15, 60)
    vol_window: int = 30
    momentum_window: int = 30
    volume_window: int = 30
    spread_window: int = 60
    vwap_window: int = 30

    @property
    def names(self) -> list[str]:
        return [f"ret_{h}" for h in self.return_horizons] + [
            f"rv_{self.vol_window}", f"mom_{self.momentum_window}", f"volume_ratio_{self.volume_window}",
            "spread_bps", f"spread_z_{self.spread_window}", f"vwap_dist_{self.vwap_window}",
        ]

    @property
    def lookback(self) -> int:
        """Rows of history a value needs (returns need one row more than their horizon)."""
        return max(max(self.return_horizons), self.vol_window, self.momentum_window,
                   self.volume_window, self.spread_window, self.vwap_window) + 1


def compute(spec: MarketFeatureSpec, close: np.ndarray, volume: np.ndarray, typical: np.ndarray,
            spread_bps: np.ndarray) -> dict[str, np.ndarray]:
    """Features for every row of one symbol's ordered series (the full-history definition)."""
    feats: dict[str, np.ndarray] = {}
    for h in spec.return_horizons:
        feats[f"ret_{h}"] = lagged_log_return(close, h)
    r1 = lagged_log_return(close, 1)
    rv = np.full(len(close), np.nan)
    if len(close) > spec.vol_window:
        rv[1:] = rolling_std(r1[1:], spec.vol_window)
    feats[f"rv_{spec.vol_window}"] = rv
    feats[f"mom_{spec.momentum_window}"] = close / rolling_mean(close, spec.momentum_window) - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        feats[f"volume_ratio_{spec.volume_window}"] = volume / rolling_mean(volume, spec.volume_window)
        feats["spread_bps"] = spread_bps
        sd = rolling_std(spread_bps, spec.spread_window)
        feats[f"spread_z_{spec.spread_window}"] = np.where(sd > 0, (spread_bps - rolling_mean(spread_bps, spec.spread_window)) / sd, np.nan)
        vwap = rolling_sum(typical * volume, spec.vwap_window) / rolling_sum(volume, spec.vwap_window)
        feats[f"vwap_dist_{spec.vwap_window}"] = close / vwap - 1.0
    return feats


def inputs_from_frame(frame: pd.DataFrame | Columns, kind: str) -> dict[str, np.ndarray]:
    """Bars use close/volume/typical price; quote ticks use the mid and have no volume."""
    bid = column(frame, "bid", float)
    ask = column(frame, "ask", float)
    mid = (bid + ask) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        spread_bps = (ask - bid) / mid * 1e4
    if kind == "quote":
        nan = np.full(len(frame), np.nan)
        return {"close": mid, "volume": nan, "typical": mid, "spread_bps": spread_bps}
    close = column(frame, "close", float)
    typical = (column(frame, "high", float) + column(frame, "low", float) + close) / 3.0
    return {"close": close, "volume": column(frame, "volume", float), "typical": typical, "spread_bps": spread_bps}


class MarketFeatureState:
    """Keeps per-symbol tails and turns each ordered micro-batch into feature rows."""

    def __init__(self, spec: MarketFeatureSpec | None = None):
        self.spec = spec or MarketFeatureSpec()
        self._tails: dict[str, dict[str, np.ndarray]] = {}

    def update(self, frame: pd.DataFrame, kind: str) -> pd.DataFrame:
        """`frame` is sorted by event_ts; returns one feature row per input row (same order)."""
        return pd.DataFrame(self.update_columns(frame, kind))

    def update_columns(self, frame: pd.DataFrame | Columns, kind: str) -> dict:
        """`update` as columns (symbol, event_ts, then the features): the streamer adds its own columns to
        them, instead of building a frame and copying it."""
        inputs = inputs_from_frame(frame, kind)
        symbols = column(frame, "symbol")
        out = {name: np.full(len(frame), np.nan) for name in self.spec.names}
        for sym in pd.unique(symbols):
            idx = np.flatnonzero(symbols == sym)
            tail = self._tails.get(sym)
            series = {k: (np.concatenate([tail[k], inputs[k][idx]]) if tail else inputs[k][idx]) for k in INPUTS}
            n_tail = len(tail["close"]) if tail else 0
            feats = compute(self.spec, **series)
            for name in self.spec.names:
                out[name][idx] = feats[name][n_tail:]
            self._tails[sym] = {k: v[-self.spec.lookback:] for k, v in series.items()}
        # A DataFrame's event_ts stays its tz-aware array (to_numpy() would box every stamp as a Timestamp).
        stamps = frame["event_ts"] if isinstance(frame, Columns) else frame["event_ts"].array
        return {"symbol": symbols, "event_ts": stamps, **out}
