"""Frozen pre-optimisation reference copy of policies/context.py, used only by tests/test_decide_fastpath.py.

The 16-dim context row the LinUCB meta-controller sees for each bar.

Every column is a function of that row alone (its features, its regime code and the recent PnL
passed in for it), so a context for time t uses nothing stamped after t. Scales put each column
at O(1) and clips bound it, so one bad tick cannot dominate the ridge regression; missing
features (warm-up rows, no bid/ask) are 0, i.e. "no signal".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

N_REGIMES = 7  # edgeray.regime codes: TRENDING_UP=0 .. REVERSAL=6 (plain ints, no import)
CONTEXT_NAMES: tuple[str, ...] = (
    "regime_trending_up", "regime_trending_down", "regime_sideways", "regime_high_volatility",
    "regime_low_volatility", "regime_breakout", "regime_reversal",
    "volatility",          # rv_30 * 1e3 (1-minute log-return std in per-mille, typically 0.3..3), clipped [0, 10]
    "tod_sin", "tod_cos",  # UTC minute of day on the unit circle, so 23:59 sits next to 00:00
    "spread",              # spread_bps / 10, clipped [0, 10]
    "log_volume_ratio",    # log(volume_ratio_30), clipped [-3, 3]
    "recent_pnl",          # caller's recent strategy PnL (in risk units), clipped [-5, 5]
    "ret_15",              # 15-bar log return in percent, clipped [-5, 5]
    "mom_30",              # close / mean30 - 1 in percent, clipped [-5, 5]
    "bias",                # constant 1.0 so each arm learns an intercept
)
CONTEXT_DIM = len(CONTEXT_NAMES)
assert CONTEXT_DIM == 16

REQUIRED_COLUMNS = ("event_ts", "rv_30", "spread_bps", "volume_ratio_30", "ret_15", "mom_30")
MINUTES_PER_DAY = 1440


def build_context(frame: pd.DataFrame, regimes: np.ndarray, recent_pnl: np.ndarray) -> np.ndarray:
    """(n, 16) float64 contexts in CONTEXT_NAMES order, finite for every row."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing columns {missing}")
    n = len(frame)
    codes = _regime_codes(regimes, n)
    pnl = np.asarray(recent_pnl, dtype=float)
    if pnl.shape != (n,):
        raise ValueError(f"recent_pnl: expected shape ({n},) to match the frame, got {pnl.shape}")

    ts = frame["event_ts"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"event_ts: expected tz-aware UTC timestamps, got dtype {ts.dtype}")
    if ts.isna().any():
        row = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise ValueError(f"event_ts[{row}] = NaT")
    ts = ts.dt.tz_convert("UTC")
    minute = ts.dt.hour.to_numpy(np.int64) * 60 + ts.dt.minute.to_numpy(np.int64)
    angle = 2.0 * np.pi * minute / MINUTES_PER_DAY

    out = np.zeros((n, CONTEXT_DIM))
    out[np.arange(n), codes] = 1.0
    out[:, 7] = _scaled(frame["rv_30"], 1e3, 0.0, 10.0)
    out[:, 8] = np.sin(angle)
    out[:, 9] = np.cos(angle)
    out[:, 10] = _scaled(frame["spread_bps"], 0.1, 0.0, 10.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # ratio 0 -> -inf -> clipped to -3 (a real "no volume" signal); negative/NaN -> NaN -> 0.
        log_vr = np.log(frame["volume_ratio_30"].to_numpy(float))
    out[:, 11] = _clip_nan0(log_vr, -3.0, 3.0)
    out[:, 12] = _clip_nan0(pnl, -5.0, 5.0)
    out[:, 13] = _scaled(frame["ret_15"], 1e2, -5.0, 5.0)
    out[:, 14] = _scaled(frame["mom_30"], 1e2, -5.0, 5.0)
    out[:, 15] = 1.0
    return out


def _regime_codes(regimes: np.ndarray, n: int) -> np.ndarray:
    r = np.asarray(regimes)
    if r.shape != (n,):
        raise ValueError(f"regimes: expected shape ({n},) to match the frame, got {r.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not (np.issubdtype(r.dtype, np.integer) or np.issubdtype(r.dtype, np.floating)):
        raise ValueError(f"regimes: expected integer codes 0..{N_REGIMES - 1}, got dtype {r.dtype}")
    rf = r.astype(float)
    bad = np.flatnonzero(~np.isfinite(rf) | (rf != np.round(rf)) | (rf < 0) | (rf >= N_REGIMES))
    if bad.size:
        raise ValueError(f"regimes[{bad[0]}] = {r[bad[0]].item()!r} is not a regime code 0..{N_REGIMES - 1}")
    return rf.astype(np.int64)


def _scaled(column: pd.Series, scale: float, low: float, high: float) -> np.ndarray:
    return _clip_nan0(column.to_numpy(float) * scale, low, high)


def _clip_nan0(values: np.ndarray, low: float, high: float) -> np.ndarray:
    # clip maps +-inf to the bounds; NaN survives clip, so it is zeroed after.
    out = np.clip(values, low, high)
    out[np.isnan(out)] = 0.0
    return out
