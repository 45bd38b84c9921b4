"""The 16-dim context row the LinUCB meta-controller sees for each bar.

Every column is a function of that row alone (its features, its regime code and the recent PnL
passed in for it), so a context for time t uses nothing stamped after t. Scales put each column
at O(1) and clips bound it, so one bad tick cannot dominate the ridge regression; missing
features (warm-up rows, no bid/ask) are 0, i.e. "no signal".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from edgeray.regime import column_array, float64_column

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
_NS_PER_MINUTE = 60_000_000_000
# Context columns filled from one block: rv_30, spread_bps, ret_15, mom_30 (scaled), recent PnL, log volume ratio.
_BLOCK_FEATURES = ("rv_30", "spread_bps", "volume_ratio_30", "ret_15", "mom_30")
_BLOCK_COLUMNS = [7, 10, 13, 14, 12, 11]
_BLOCK_SCALE = np.array([[1e3], [0.1], [1e2], [1e2], [1.0], [1.0]])  # x * 1.0 is x, bit for bit (NaN, inf, -0.0)
_NAT = np.iinfo(np.int64).min  # NaT in asi8


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

    minute = _utc_minute_of_day(frame)
    angle = 2.0 * np.pi * minute / MINUTES_PER_DAY

    out = np.zeros((n, CONTEXT_DIM))
    out[np.arange(n), codes] = 1.0
    columns = [float64_column(frame, name) for name in _BLOCK_FEATURES]
    if all(c is not None for c in columns):
        # The scaled and clipped columns as the rows of one block, so the multiply and the NaN -> 0 are one call
        # each, and the clip one per pair of bounds. The bounds stay scalars: numpy clips -0.0 to -0.0 with
        # scalar bounds but to +0.0 with array bounds (another loop), and the per-column code used scalars.
        # ndarray.clip is what np.clip calls, minus ~3 us of dispatch.
        block = np.empty((len(_BLOCK_COLUMNS), n))
        block[0], block[1], volume_ratio, block[2], block[3] = columns
        block[4] = pnl
        with np.errstate(divide="ignore", invalid="ignore"):
            # ratio 0 -> -inf -> clipped to -3 (a real "no volume" signal); negative/NaN -> NaN -> 0.
            np.log(volume_ratio, out=block[5])
        block *= _BLOCK_SCALE
        block[0:2] = block[0:2].clip(0.0, 10.0)  # volatility, spread
        block[2:5] = block[2:5].clip(-5.0, 5.0)  # ret_15, mom_30, recent PnL
        block[5] = block[5].clip(-3.0, 3.0)  # log volume ratio
        block[np.isnan(block)] = 0.0
        out[:, _BLOCK_COLUMNS] = block.T
    else:  # some column is not plain float64: column by column through pandas, as before
        out[:, 7] = _scaled(frame["rv_30"], 1e3, 0.0, 10.0)
        out[:, 10] = _scaled(frame["spread_bps"], 0.1, 0.0, 10.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_vr = np.log(frame["volume_ratio_30"].to_numpy(float))
        out[:, 11] = _clip_nan0(log_vr, -3.0, 3.0)
        out[:, 12] = _clip_nan0(pnl, -5.0, 5.0)
        out[:, 13] = _scaled(frame["ret_15"], 1e2, -5.0, 5.0)
        out[:, 14] = _scaled(frame["mom_30"], 1e2, -5.0, 5.0)
    out[:, 8] = np.sin(angle)
    out[:, 9] = np.cos(angle)
    out[:, 15] = 1.0
    return out


def _utc_minute_of_day(frame: pd.DataFrame) -> np.ndarray:
    """UTC hour * 60 + minute per row (int64), after the same checks as before."""
    values = column_array(frame, "event_ts")
    if isinstance(values, np.ndarray) and values.dtype == "datetime64[ns]":  # Columns: UTC instants already
        ns = values.view(np.int64)
        if (ns == _NAT).any():
            raise ValueError(f"event_ts[{int(np.flatnonzero(ns == _NAT)[0])}] = NaT")
        return (ns // _NS_PER_MINUTE) % MINUTES_PER_DAY
    if isinstance(values, pd.arrays.DatetimeArray) and values.tz is not None and getattr(values, "unit", None) == "ns":
        # Straight from epoch ns: floor division (and a non-negative remainder) also holds before 1970,
        # so this is the UTC wall-clock minute that .dt.hour / .dt.minute give, without a tz_convert.
        ns = values.asi8
        nat = ns == _NAT
        if nat.any():
            raise ValueError(f"event_ts[{int(np.flatnonzero(nat)[0])}] = NaT")
        return (ns // _NS_PER_MINUTE) % MINUTES_PER_DAY
    ts = frame["event_ts"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"event_ts: expected tz-aware UTC timestamps, got dtype {ts.dtype}")
    if ts.isna().any():
        row = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise ValueError(f"event_ts[{row}] = NaT")
    ts = ts.dt.tz_convert("UTC")
    return ts.dt.hour.to_numpy(np.int64) * 60 + ts.dt.minute.to_numpy(np.int64)


def _regime_codes(regimes: np.ndarray, n: int) -> np.ndarray:
    r = np.asarray(regimes)
    if r.shape != (n,):
        raise ValueError(f"regimes: expected shape ({n},) to match the frame, got {r.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if r.dtype.kind in "iu":
        # Integer codes are finite and whole already: only the range can be wrong (same rows, same message).
        bad = np.flatnonzero((r < 0) | (r >= N_REGIMES))
        if bad.size:
            raise ValueError(f"regimes[{bad[0]}] = {r[bad[0]].item()!r} is not a regime code 0..{N_REGIMES - 1}")
        return r.astype(np.int64)
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
    # clip maps +-inf to the bounds; NaN survives clip, so it is zeroed after. (values.clip: np.clip's own call.)
    out = values.clip(low, high)
    out[np.isnan(out)] = 0.0
    return out
