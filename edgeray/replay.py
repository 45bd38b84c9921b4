"""Replaying a bounded source as a live feed: when each row is due, how rows group into micro-batches,
and the watermark a complete file allows.

Pacing: row i is due when the replay clock (event time, `rate` event-seconds per wall-second, started
at the first row replayed) reaches the latest event_ts up to row i; a row stamped behind an earlier
one is due as soon as it is reached, as it would arrive late on a live feed. A micro-batch leaves
when it is full or when its oldest row has waited `max_wait_ms`, so at low rates latency is not held
by batch fill; the rows carry their due times as receipt stamps, so that wait counts in the latency.

Watermark: a replay knows every row still to come, so a row may leave the reorder buffer as soon as
no row of its symbol still to come (in this source or a later one of the same kind) is earlier
(`release_before`). Without it the last rows of each batch waited for the next batch's event time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

NO_ROW = np.iinfo(np.int64).max  # "nothing still to come" for a symbol


def event_ns(frame: pd.DataFrame) -> np.ndarray | None:
    """event_ts as int64 ns (unparseable -> None for the whole frame: such a source is not paced and
    gets no early release; validation still judges every row). Numbers are not guessed at: their
    unit is the loader's business."""
    if "event_ts" not in frame or len(frame) == 0:
        return None
    col = frame["event_ts"]
    if pd.api.types.is_numeric_dtype(col):
        return None
    try:
        if not pd.api.types.is_datetime64_any_dtype(col):
            col = pd.to_datetime(col, utc=True, errors="coerce", format="mixed")
        ts = col if isinstance(col.dtype, pd.DatetimeTZDtype) else col.dt.tz_localize("UTC")
    except (ValueError, TypeError):
        return None
    if ts.isna().all():
        return None
    return ts.dt.as_unit("ns").array.asi8  # NaT is int64 min: never due late, never holds anything back


@dataclass
class SourcePlan:
    """One loaded source frame of a replay. `later`: per symbol, the earliest event_ts in the sources
    replayed after this one with the same kind."""
    frame: pd.DataFrame
    later: dict[str, int]

    def __post_init__(self) -> None:
        ts = event_ns(self.frame)
        self.ts = ts
        self._suffix: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if ts is not None and "symbol" in self.frame:
            symbols = self.frame["symbol"].astype(str).to_numpy()
            valid = ts != np.iinfo(np.int64).min
            for sym in pd.unique(symbols):
                idx = np.flatnonzero((symbols == sym) & valid)
                # suffix[k] = min event_ts of this symbol's rows from its k-th row on
                self._suffix[str(sym)] = (idx, np.minimum.accumulate(ts[idx][::-1])[::-1])
            # due in event time: the latest stamp so far (NaT, int64 min, is due with the row before)
            self.due = np.maximum.accumulate(ts)
        else:
            self.due = None

    def minimums(self) -> dict[str, int]:
        """Per symbol, the earliest event_ts in this source (the suffix minimum from its first row)."""
        return {sym: int(suffix[0]) for sym, (_, suffix) in self._suffix.items() if len(suffix)}

    def release_before(self, end: int) -> dict[str, int] | None:
        """Per symbol, the earliest event_ts of any row still to come once rows [0, end) are fed."""
        if self.ts is None:
            return None
        out = dict(self.later)
        for sym, (idx, suffix) in self._suffix.items():
            k = int(np.searchsorted(idx, end))
            still = int(suffix[k]) if k < len(idx) else NO_ROW
            out[sym] = min(still, out.get(sym, NO_ROW))
        return out


def plan_sources(loaded: list[tuple[object, pd.DataFrame]]) -> list[SourcePlan]:
    """`loaded`: (kind, frame) in replay order -> a SourcePlan each, with the later sources folded in."""
    plans: list[SourcePlan] = []
    later: dict[object, dict[str, int]] = {}
    for kind, frame in reversed(loaded):
        plan = SourcePlan(frame, dict(later.get(kind, {})))
        plans.append(plan)
        merged = later.setdefault(kind, {})
        for sym, ts in plan.minimums().items():
            merged[sym] = min(ts, merged.get(sym, NO_ROW))
    return plans[::-1]


class PacedBatcher:
    """Which rows of a SourcePlan leave next on a paced replay, and when (wall clock, `perf_counter_ns`)."""

    def __init__(self, plan: SourcePlan, start: int, rate: float, max_wait_ms: float, now_ns: int):
        self.plan = plan
        self.rate = rate
        self.max_wait_ns = int(max_wait_ms * 1e6)
        self.clock_event0 = int(plan.due[start]) if len(plan.due) > start else 0
        self.clock_wall0 = now_ns

    def wall_due(self, rows: np.ndarray | int) -> np.ndarray:
        """perf_counter_ns at which rows are due."""
        # Offsets in int64 first: absolute ns do not fit a float64 exactly (~256 ns steps).
        ahead = np.maximum(self.plan.due[rows], self.clock_event0) - self.clock_event0
        return self.clock_wall0 + ahead / self.rate

    def waited_at(self, pos: int, factor: float = 1.0) -> int:
        """When the oldest row of the batch starting at `pos` has waited `factor` x max wait."""
        return int(self.wall_due(np.array([pos]))[0] + factor * self.max_wait_ns)

    def full_at(self, pos: int, batch_size: int) -> int:
        """When the batch starting at `pos` has `batch_size` rows due (or the source's last row is due)."""
        return int(self.wall_due(np.array([min(pos + batch_size, len(self.plan.due)) - 1]))[0])

    def take(self, pos: int, batch_size: int, now_ns: int) -> int:
        """The end of the batch starting at `pos`: every row due by `now_ns` (at least one, at most batch_size)."""
        stop = min(pos + batch_size, len(self.plan.due))
        due = self.wall_due(np.arange(pos, stop))
        return pos + max(1, int(np.searchsorted(due, now_ns, side="right")))
