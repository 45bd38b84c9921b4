"""Ingestion core: validate, de-duplicate, reorder within a lateness window, count.

Pure Python + pandas (no Ray) so it is tested directly; `actors.ingestion` wraps it.

Invariant, true after every call: received == accepted + rejected + duplicates.
`accepted` rows are either still in the reorder buffer (`pending`) or already `emitted`.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from edgeray.deadletter import DeadLetterStore
from edgeray.events import EventKind, to_record_batch
from edgeray.validation import Columns, validate

_MIN_NS = -(2**63)


def _max_by_symbol(cols: Columns) -> dict[str, int]:
    codes, symbols = pd.factorize(cols["symbol"])
    out = np.full(len(symbols), _MIN_NS, dtype=np.int64)
    np.maximum.at(out, codes, cols["event_ts"].view(np.int64))
    return dict(zip(symbols, out.tolist()))


def _take(cols: Columns, mask: np.ndarray) -> Columns:
    return {k: v[mask] for k, v in cols.items()}


@dataclass(frozen=True)
class IngestCounters:
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    emitted: int = 0
    pending: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class IngestReport:
    """What happened to one input micro-batch."""

    received: int
    accepted: int
    duplicates: int
    rejected: pd.DataFrame  # row (position in the input), reason, field, value, raw
    released: list[pa.RecordBatch]  # events now leaving the reorder buffer, in event-time order

    def errors(self) -> list[dict]:
        return self.rejected[["row", "field", "reason", "value"]].to_dict("records")


class IngestCore:
    def __init__(self, deadletters: DeadLetterStore, known_symbols: set[str] | None = None,
                 lateness: pd.Timedelta = pd.Timedelta(0), dedup_capacity: int = 5_000_000,
                 known_sports: set[str] | None = None):
        self.deadletters = deadletters
        self.known_symbols = known_symbols
        self.known_sports = known_sports
        self.lateness_ns = int(pd.Timedelta(lateness).value)
        self.dedup_capacity = dedup_capacity
        self._seen: set[int] = set()
        self._seen_chunks: deque[np.ndarray] = deque()  # FIFO eviction keeps the id set bounded
        self._pending: dict[EventKind, list[Columns]] = {}
        self._max_seen_ns: dict[tuple[EventKind, str], int] = {}
        self._released_upto_ns: dict[tuple[EventKind, str], int] = {}
        self._reasons: Counter[str] = Counter()
        # Replaced atomically after each call so concurrent readers always see a consistent snapshot.
        self.counters = IngestCounters()

    # -- public -------------------------------------------------------------------------------
    def ingest(self, kind: EventKind | str, raw: pd.DataFrame, source: str = "push") -> IngestReport:
        """Take a raw micro-batch; report what was accepted, rejected and released."""
        kind = EventKind(kind)
        result = validate(kind, raw, self.known_symbols, self.known_sports)
        good = result.accepted
        good["source"] = np.where(good["source"] == "", source, good["source"])
        good["received_ns"] = np.full(result.n_accepted, time.time_ns(), dtype=np.int64)
        rejected_frames = [result.rejected]
        rows = result.accepted_rows

        ids = good["event_id"]
        dup = pd.Series(ids).duplicated().to_numpy() | np.fromiter((i in self._seen for i in ids.tolist()), bool, len(ids))
        good, rows = _take(good, ~dup), rows[~dup]

        late = self._late(kind, good)
        if late.any():
            late_rows = pd.DataFrame(_take(good, late)).drop(columns=["received_ns"])
            rejected_frames.append(pd.DataFrame({
                "row": rows[late], "reason": "late", "field": "event_ts", "value": late_rows["event_ts"].astype(str).to_numpy(),
                "raw": late_rows.to_json(orient="records", lines=True, date_format="iso").splitlines(),
            }))
            good, rows = _take(good, ~late), rows[~late]
        rejected = pd.concat(rejected_frames, ignore_index=True)

        n_good = len(good["event_id"])
        self._remember(good["event_id"])
        self.deadletters.append(kind, source, rejected)
        self._reasons.update(rejected["reason"].tolist())
        if n_good:
            for sym, mx in _max_by_symbol(good).items():
                self._max_seen_ns[(kind, sym)] = max(self._max_seen_ns.get((kind, sym), _MIN_NS), mx)
            self._pending.setdefault(kind, []).append(good)
        released = self._release(kind, flush=False)
        self._update_counters(received=len(raw), accepted=n_good, rejected=len(rejected),
                              duplicates=int(dup.sum()), emitted=sum(b.num_rows for b in released))
        return IngestReport(received=len(raw), accepted=n_good, duplicates=int(dup.sum()),
                            rejected=rejected, released=released)

    def flush(self) -> list[pa.RecordBatch]:
        """Release everything still held for reordering (end of a replay or shutdown)."""
        released = [b for kind in list(self._pending) for b in self._release(kind, flush=True)]
        self._update_counters(emitted=sum(b.num_rows for b in released))
        return released

    # -- internals ----------------------------------------------------------------------------
    def _late(self, kind: EventKind, cols: Columns) -> np.ndarray:
        """Rows older than what was already released for their symbol cannot be put in order."""
        codes, symbols = pd.factorize(cols["symbol"])
        upto = np.fromiter((self._released_upto_ns.get((kind, sym), _MIN_NS) for sym in symbols), np.int64, len(symbols))
        return cols["event_ts"].view(np.int64) < upto[codes]

    def _remember(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        self._seen.update(ids.tolist())
        self._seen_chunks.append(ids)
        while len(self._seen) > self.dedup_capacity and self._seen_chunks:
            self._seen.difference_update(self._seen_chunks.popleft().tolist())

    def _release(self, kind: EventKind, flush: bool) -> list[pa.RecordBatch]:
        chunks = self._pending.get(kind)
        if not chunks:
            return []
        pending = chunks[0] if len(chunks) == 1 else {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        ts_ns = pending["event_ts"].view(np.int64)
        if flush:
            ready = np.ones(len(ts_ns), dtype=bool)
        else:
            codes, symbols = pd.factorize(pending["symbol"])
            watermark = np.fromiter((self._max_seen_ns[(kind, sym)] for sym in symbols), np.int64, len(symbols)) - self.lateness_ns
            ready = ts_ns <= watermark[codes]
        if not ready.any():
            self._pending[kind] = [pending]
            return []
        out = _take(pending, ready)
        order = np.argsort(out["event_ts"], kind="stable")
        out = {k: v[order] for k, v in out.items()}
        rest = _take(pending, ~ready)
        self._pending[kind] = [rest] if len(rest["event_id"]) else []
        self._released_upto_ns.update({(kind, sym): mx for sym, mx in _max_by_symbol(out).items()})
        return [to_record_batch(kind, out)]

    def _update_counters(self, received: int = 0, accepted: int = 0, rejected: int = 0,
                         duplicates: int = 0, emitted: int = 0) -> None:
        c = self.counters
        self.counters = IngestCounters(
            received=c.received + received,
            accepted=c.accepted + accepted,
            rejected=c.rejected + rejected,
            duplicates=c.duplicates + duplicates,
            emitted=c.emitted + emitted,
            pending=sum(len(c["event_id"]) for chunks in self._pending.values() for c in chunks),
            rejected_by_reason=dict(self._reasons),
        )
