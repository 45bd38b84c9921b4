"""Frozen from edgeray/risk.py (validate_order_frame) and edgeray/veto.py (rule_mask) (2026-12-07)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from edgeray.veto import VetoWhen


def _first_bad(frame: pd.DataFrame, column: str, bad: np.ndarray) -> str:
    row = int(np.flatnonzero(bad)[0])
    return f"row {row} (decision_id {frame['decision_id'].iloc[row]!r}), value {frame[column].iloc[row]!r}"


def validate_order_frame(orders: pd.DataFrame, required: tuple[str, ...]) -> pd.DataFrame:
    """Check an order frame and return a copy with event_ts in UTC; raises ValueError naming field and value."""
    if not isinstance(orders, pd.DataFrame):
        raise ValueError(f"orders: expected a pandas DataFrame, got {type(orders).__name__}")
    missing = [c for c in required if c not in orders.columns]
    if missing:
        raise ValueError(f"orders: missing column(s) {missing}; have {list(orders.columns)}")
    out = orders.reset_index(drop=True).copy()
    if out.empty:
        return out
    ids = out["decision_id"]
    bad = ~ids.map(lambda v: isinstance(v, str) and v != "").to_numpy(bool)
    if bad.any():
        raise ValueError(f"decision_id: must be a non-empty str at row {int(np.flatnonzero(bad)[0])}, "
                         f"value {ids.iloc[int(np.flatnonzero(bad)[0])]!r}")
    dup = ids.duplicated(keep=False).to_numpy(bool)
    if dup.any():
        raise ValueError(f"decision_id: duplicated within the batch, value {ids[dup].iloc[0]!r}")
    for col in ("symbol", "strategy", "regime"):
        if col in required:
            bad = ~out[col].map(lambda v: isinstance(v, str) and v != "").to_numpy(bool)
            if bad.any():
                raise ValueError(f"{col}: must be a non-empty str at {_first_bad(out, col, bad)}")
    ts = out["event_ts"]
    if ts.dtype == object:  # e.g. a column of Timestamps; parsed without assuming a zone
        try:
            ts = pd.to_datetime(ts)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"event_ts: not parseable as timestamps ({exc})") from exc
    if not pd.api.types.is_datetime64_any_dtype(ts) or getattr(ts.dt, "tz", None) is None:
        raise ValueError(f"event_ts: must be timezone-aware datetime64 (UTC), got dtype {ts.dtype}")
    if ts.isna().any():
        raise ValueError(f"event_ts: missing at {_first_bad(out, 'event_ts', ts.isna().to_numpy())}")
    out["event_ts"] = ts.dt.tz_convert("UTC")
    for col in ("quantity", "price", "volatility", "confidence"):
        if col not in required:
            continue
        try:
            values = pd.to_numeric(out[col], errors="raise").to_numpy(float)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{col}: not numeric ({exc})") from exc
        if col == "volatility":  # NaN means "no estimate yet" (warm-up); anything else must be >= 0
            bad = ~(np.isnan(values) | (np.isfinite(values) & (values >= 0)))
            rule = "finite and >= 0 (or NaN)"
        elif col == "price":
            bad = ~(np.isfinite(values) & (values > 0))
            rule = "finite and > 0"
        elif col == "confidence":
            bad = ~((values >= 0) & (values <= 1))
            rule = "in [0, 1]"
        else:
            bad = ~np.isfinite(values)
            rule = "finite"
        if bad.any():
            raise ValueError(f"{col}: must be {rule} at {_first_bad(out, col, bad)}")
        out[col] = values
    return out



def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def rule_mask(when: VetoWhen, frame: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows (of a validated order frame) that satisfy every given condition."""
    mask = np.ones(len(frame), dtype=bool)
    if when.notional_above is not None:
        notional = np.abs(frame["quantity"].to_numpy(float)) * frame["price"].to_numpy(float)
        mask &= notional > when.notional_above
    if when.confidence_below is not None:
        mask &= frame["confidence"].to_numpy(float) < when.confidence_below
    for column, allowed in (("symbol", when.symbols), ("strategy", when.strategies), ("regime", when.regimes)):
        if allowed is not None:
            mask &= frame[column].isin(allowed).to_numpy(bool)
    if when.utc_time_between is not None:
        ts = frame["event_ts"]
        seconds = (ts - ts.dt.normalize()).dt.total_seconds().to_numpy(float)
        start, end = (_minutes(t) * 60 for t in when.utc_time_between)
        inside = (seconds >= start) & (seconds < end) if start < end else (seconds >= start) | (seconds < end)
        mask &= inside
    return mask
