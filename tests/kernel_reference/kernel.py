"""Frozen from policies/engine.py, edgeray/watermark.py and policies/kernel.py (2026-12-07)."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

NEVER = -(2**63)


def targets_to_orders(symbols: np.ndarray, direction: np.ndarray, target: np.ndarray, positions: dict[str, float]) -> np.ndarray:
    frame = pd.DataFrame({"symbol": symbols, "target": np.where(direction != 0, target, np.nan)})
    held = frame.groupby("symbol", sort=False)["target"].ffill()
    start = frame["symbol"].map(lambda s: positions.get(s, 0.0)).to_numpy(float)
    current = np.where(np.isnan(held.to_numpy()), start, held.to_numpy())
    previous = pd.Series(current).groupby(frame["symbol"].to_numpy(), sort=False).shift(1).to_numpy()
    previous = np.where(np.isnan(previous), start, previous)
    return np.where(direction != 0, current - previous, 0.0)


def decision_ids(namespace: str, symbols: np.ndarray, event_ts: pd.Series) -> list[str]:
    stamps = pd.to_datetime(event_ts, utc=True).astype("int64").to_numpy()
    return [hashlib.blake2b(f"{namespace}|{s}|{t}".encode(), digest_size=12).hexdigest() for s, t in zip(symbols, stamps)]


class SymbolWatermark:
    def __init__(self, state: dict[str, int] | None = None):
        self._done_ns: dict[str, int] = dict(state or {})

    def fresh(self, frame: pd.DataFrame) -> pd.DataFrame:
        last = frame["symbol"].map(lambda s: self._done_ns.get(s, NEVER)).to_numpy("int64")
        stamps = pd.to_datetime(frame["event_ts"], utc=True).array.asi8
        return frame[stamps > last].reset_index(drop=True)

    def advance(self, frame: pd.DataFrame) -> None:
        if len(frame):
            stamps = pd.Series(pd.to_datetime(frame["event_ts"], utc=True).array.asi8, index=frame.index)
            self._done_ns.update({s: int(t) for s, t in stamps.groupby(frame["symbol"]).max().items()})

    def state_dict(self) -> dict[str, int]:
        return dict(self._done_ns)


def in_time_order(frame: pd.DataFrame, done: dict[str, int], cross_symbol: bool, decided_until_ns: int | None):
    """policies/kernel.py DecisionKernel._in_time_order without the counting: (kept, rejected with reason)."""
    ts = pd.to_datetime(frame["event_ts"], utc=True).array.asi8
    symbols = frame["symbol"].astype(str).to_numpy()
    floor = np.full(len(ts), NEVER, dtype=np.int64)
    for sym in pd.unique(symbols):
        idx = np.flatnonzero(symbols == sym)
        running = np.maximum.accumulate(ts[idx])
        floor[idx] = np.maximum(np.concatenate([[NEVER], running[:-1]]), done[sym] + 1 if sym in done else NEVER)
    reasons = np.where(ts < floor, "went_back_in_time_for_symbol", None).astype(object)
    if cross_symbol:
        start = NEVER if decided_until_ns is None else decided_until_ns
        shared = np.maximum.accumulate(np.concatenate([[start], ts]))[:-1]
        reasons = np.where((reasons == None) & (ts < shared), "went_back_in_time_across_symbols", reasons)  # noqa: E711
    bad = reasons != None  # noqa: E711
    if not bad.any():
        return frame, frame.iloc[:0]
    rejected = frame[bad].assign(reason=reasons[bad]).reset_index(drop=True)
    return frame[~bad].reset_index(drop=True), rejected


def stage_records(frame: pd.DataFrame | None, stage: str, columns: list[str]) -> list[dict]:
    if frame is None or frame.empty:
        return []
    rows = frame[["decision_id", "event_ts", *columns]].to_dict("records")
    return [{"decision_id": r.pop("decision_id"), "stage": stage, "event_ts": r.pop("event_ts"), "payload": r} for r in rows]
