"""Ingestion core: validate, de-duplicate, reorder within a lateness window, count.

Pure Python + pandas (no Ray) so it is tested directly; `actors.ingestion` wraps it.

Invariant, true after every call: received == accepted + rejected + duplicates.
`accepted` rows are either still in the reorder buffer (`pending`) or already `emitted`.

Identity (event_id, from the ID_KEYS) decides what is the same event; a content hash of the value
fields decides whether a second row with that identity is a resend (a duplicate, harmless) or a
different version (a `conflict`, dead-lettered: "first write wins" must not be silent).
"""
from __future__ import annotations

import base64
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from edgeray.deadletter import DeadLetterStore
from edgeray.events import EventKind, content_fields, content_hashes, to_record_batch
from edgeray.validation import DEFAULT_MAX_FUTURE_SKEW, Columns, validate

_MIN_NS = -(2**63)
# Accepted rows whose values are kept so a conflict message can show the first version.
RECENT_VALUES_ROWS = 50_000


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


_NEW, _DUPLICATE, _CONFLICT = 0, 1, 2


def _same(a, b) -> bool:
    return (a == b) or (pd.isna(a) and pd.isna(b))


def _fmt(values: dict, names) -> str:
    def one(v):
        if isinstance(v, np.datetime64):
            return str(pd.Timestamp(v, tz="UTC"))
        return v.item() if isinstance(v, np.generic) else v
    return "{" + ", ".join(f"{n}: {one(values[n])}" for n in names) + "}"


class IngestCore:
    def __init__(self, deadletters: DeadLetterStore, known_symbols: set[str] | None = None,
                 lateness: pd.Timedelta = pd.Timedelta(0), dedup_capacity: int = 5_000_000,
                 known_sports: set[str] | None = None, max_future_skew: pd.Timedelta = DEFAULT_MAX_FUTURE_SKEW):
        self.deadletters = deadletters
        self.known_symbols = known_symbols
        self.known_sports = known_sports
        self.lateness_ns = int(pd.Timedelta(lateness).value)
        self.max_future_skew = pd.Timedelta(max_future_skew)
        self.dedup_capacity = dedup_capacity
        self._seen: dict[int, int] = {}  # event_id -> content hash of the version accepted
        self._seen_chunks: deque[np.ndarray] = deque()  # FIFO eviction keeps the id map bounded
        self._recent: deque[tuple[EventKind, Columns]] = deque()  # values of the last accepted rows
        self._recent_rows = 0
        self._pending: dict[EventKind, list[Columns]] = {}
        self._max_seen_ns: dict[tuple[EventKind, str], int] = {}
        self._released_upto_ns: dict[tuple[EventKind, str], int] = {}
        self._reasons: Counter[str] = Counter()
        # Replaced atomically after each call so concurrent readers always see a consistent snapshot.
        self.counters = IngestCounters()

    # -- public -------------------------------------------------------------------------------
    def ingest(self, kind: EventKind | str, raw: pd.DataFrame, source: str = "push", strict: bool = False,
               epoch_unit: str | None = None, release_before: dict[str, int] | None = None,
               received_ns: np.ndarray | None = None) -> IngestReport:
        """Take a raw micro-batch; report what was accepted, rejected and released.
        `strict`/`epoch_unit`: see validation.validate (pushes are strict, file replays lenient).
        `release_before` {symbol: ns}: a bounded source's promise that no row of that symbol earlier than
        ns is still to come (a replay knows its whole file), so held rows before it leave now instead of
        waiting for the event-time watermark; what is dead-lettered as late does not change.
        `received_ns` (one per raw row): when each row arrived, if earlier than this call (a paced replay's
        due times), so the batching wait counts in the latency."""
        kind = EventKind(kind)
        result = validate(kind, raw, self.known_symbols, self.known_sports, max_future_skew=self.max_future_skew,
                          strict=strict, epoch_unit=epoch_unit)
        good = result.accepted
        good["source"] = np.where(good["source"] == "", source, good["source"])
        rows = result.accepted_rows
        good["received_ns"] = (np.asarray(received_ns, dtype=np.int64)[rows] if received_ns is not None
                               else np.full(result.n_accepted, time.time_ns(), dtype=np.int64))
        rejected_frames = [result.rejected]

        hashes = content_hashes(kind, good)
        status, first_hash = self._classify(good["event_id"], hashes)
        if (status == _CONFLICT).any():
            rejected_frames.append(self._conflicts(kind, good, rows, status == _CONFLICT, first_hash))
        dup = status == _DUPLICATE
        new = status == _NEW
        good, rows, hashes = _take(good, new), rows[new], hashes[new]

        late = self._late(kind, good)
        if late.any():
            late_rows = pd.DataFrame(_take(good, late)).drop(columns=["received_ns"])
            rejected_frames.append(pd.DataFrame({
                "row": rows[late], "reason": "late", "field": "event_ts", "value": late_rows["event_ts"].astype(str).to_numpy(),
                "raw": late_rows.to_json(orient="records", lines=True, date_format="iso").splitlines(),
            }))
            good, rows, hashes = _take(good, ~late), rows[~late], hashes[~late]
        # Most batches reject nothing: a concat of the one (empty) frame cost ~25-50 us a micro-batch.
        rejected = rejected_frames[0] if len(rejected_frames) == 1 else pd.concat(rejected_frames, ignore_index=True)

        n_good = len(good["event_id"])
        self._remember(kind, good, hashes)
        self.deadletters.append(kind, source, rejected)
        self._reasons.update(rejected["reason"].tolist())
        if n_good:
            for sym, mx in _max_by_symbol(good).items():
                self._max_seen_ns[(kind, sym)] = max(self._max_seen_ns.get((kind, sym), _MIN_NS), mx)
            self._pending.setdefault(kind, []).append(good)
        released = self._release(kind, flush=False, release_before=release_before)
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

    def _classify(self, ids: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row: new, duplicate (same identity and content as a version already accepted, in an
        earlier batch or earlier in this one) or conflict (same identity, different content); and
        the content hash of the first version for each non-new row."""
        status = np.full(len(ids), _NEW, dtype=np.int8)
        first = np.zeros(len(ids), dtype=np.uint64)
        in_batch: dict[int, int] = {}
        for i, (event_id, h) in enumerate(zip(ids.tolist(), hashes.tolist())):
            known = self._seen.get(event_id, in_batch.get(event_id))
            if known is None:
                in_batch[event_id] = h
                continue
            status[i], first[i] = (_DUPLICATE if known == h else _CONFLICT), known
        return status, first

    def _conflicts(self, kind: EventKind, cols: Columns, rows: np.ndarray, mask: np.ndarray,
                   first_hash: np.ndarray) -> pd.DataFrame:
        names = content_fields(kind)
        this = _take(cols, mask)
        ids = this["event_id"]
        earlier = self._recent_values(kind, ids)
        # A conflict inside one batch: the first version is an earlier row of the same batch.
        for i in np.flatnonzero(~mask):
            earlier.setdefault(int(cols["event_id"][i]), {n: cols[n][i] for n in names})
        values, fields = [], []
        for j, event_id in enumerate(ids.tolist()):
            mine = {n: this[n][j] for n in names}
            old = earlier.get(event_id)
            if old is None:
                values.append(f"a different version of this event was accepted earlier (its values are no longer "
                              f"cached); this {_fmt(mine, names)}")
                fields.append("values")
                continue
            differ = [n for n in names if not _same(old[n], mine[n])]
            values.append(f"first {_fmt(old, differ)} vs this {_fmt(mine, differ)}")
            fields.append(",".join(differ))
        frame = pd.DataFrame({k: v for k, v in this.items() if k != "received_ns"})
        return pd.DataFrame({"row": rows[mask], "reason": "conflict", "field": fields, "value": values,
                             "raw": frame.to_json(orient="records", lines=True, date_format="iso").splitlines()})

    def _recent_values(self, kind: EventKind, ids: np.ndarray) -> dict[int, dict]:
        names = content_fields(kind)
        found: dict[int, dict] = {}
        for chunk_kind, chunk in self._recent:
            if chunk_kind is not kind:
                continue
            for i in np.flatnonzero(np.isin(chunk["event_id"], ids)):
                found[int(chunk["event_id"][i])] = {n: chunk[n][i] for n in names}
        return found

    def _remember(self, kind: EventKind, cols: Columns, hashes: np.ndarray) -> None:
        ids = cols["event_id"]
        if not len(ids):
            return
        self._seen.update(zip(ids.tolist(), hashes.tolist()))
        self._seen_chunks.append(ids)
        while len(self._seen) > self.dedup_capacity and self._seen_chunks:
            for event_id in self._seen_chunks.popleft().tolist():
                self._seen.pop(event_id, None)
        self._recent.append((kind, cols))
        self._recent_rows += len(ids)
        while self._recent_rows - len(self._recent[0][1]["event_id"]) >= min(RECENT_VALUES_ROWS, self.dedup_capacity):
            self._recent_rows -= len(self._recent.popleft()[1]["event_id"])

    def _release(self, kind: EventKind, flush: bool, release_before: dict[str, int] | None = None) -> list[pa.RecordBatch]:
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
            if release_before:
                promised = np.fromiter((release_before.get(sym, _MIN_NS) for sym in symbols), np.int64, len(symbols))
                # Strictly before: a row still to come at the same instant is not late, so it must not be passed.
                watermark = np.maximum(watermark, promised - 1)
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

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a restarted ingestion needs to continue exactly where this one stood: the counters,
        the reorder buffer and the per-symbol watermarks. (The dedup memory is not included: a
        resumed replay does not re-feed rows from before its offset.)"""
        pending = {}
        for kind, chunks in self._pending.items():
            if chunks and len(chunks[0]["event_id"]):
                cols = chunks[0] if len(chunks) == 1 else {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
                sink = pa.BufferOutputStream()
                batch = to_record_batch(kind, cols)
                with pa.ipc.new_stream(sink, batch.schema) as writer:
                    writer.write_batch(batch)
                pending[kind.value] = base64.b64encode(sink.getvalue().to_pybytes()).decode()
        return {"counters": self.counters.as_dict(), "pending": pending,
                "max_seen_ns": [[k.value, s, v] for (k, s), v in self._max_seen_ns.items()],
                "released_upto_ns": [[k.value, s, v] for (k, s), v in self._released_upto_ns.items()]}

    def load_state(self, state: dict) -> None:
        self._pending = {}
        for kind, blob in state["pending"].items():
            table = pa.ipc.open_stream(base64.b64decode(blob)).read_all()
            cols = {}
            for name in table.column_names:
                col = table.column(name)
                cols[name] = (col.cast(pa.int64()).to_numpy().view("datetime64[ns]") if pa.types.is_timestamp(col.type)
                              else col.to_numpy(zero_copy_only=False))
            cols["symbol"] = cols["symbol"].astype(object)
            self._pending[EventKind(kind)] = [cols]
        self._max_seen_ns = {(EventKind(k), s): int(v) for k, s, v in state["max_seen_ns"]}
        self._released_upto_ns = {(EventKind(k), s): int(v) for k, s, v in state["released_upto_ns"]}
        counters = state["counters"]
        self._reasons = Counter(counters["rejected_by_reason"])
        self.counters = IngestCounters(**counters)
