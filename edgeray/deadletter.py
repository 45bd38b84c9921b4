"""Dead-letter store: every rejected row with its reason and raw content, bounded on disk.

JSON Lines on local disk: appending is atomic per write on POSIX for our line sizes, a crash
loses at most the line being written, and users can read it with any tool (`jq`, pandas).
The live file rotates at `max_bytes` (deadletters.jsonl -> .1 -> .2 ...; `keep_files` files in all,
the oldest dropped), and a raw row is stored truncated past `max_raw_bytes`: rejected input is
attacker-sized, the disk is not. Pages are read from the end of the files, never the whole store.

With `storage.state_url` set, dead letters are rows of one table in that database instead (SqlDeadLetterStore,
keyed by namespace and store), the newest `max_rows` kept, so every node's actors and the API read the same
ones. `open_deadletter_store(cfg, name)` picks the backend; the actors never choose.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import sqlalchemy as sa

if TYPE_CHECKING:
    from edgeray.config import PipelineConfig

MAX_RAW_BYTES = 4096
MAX_VALUE_CHARS = 1024
_BLOCK = 1 << 16


def _reverse_lines(path: Path):
    """The non-empty lines of `path`, last first, reading blocks from the end."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        pos, tail = fh.tell(), b""
        while pos > 0:
            step = min(_BLOCK, pos)
            pos -= step
            fh.seek(pos)
            lines = (fh.read(step) + tail).split(b"\n")
            tail = lines.pop(0)  # may continue in the previous block
            for line in reversed(lines):
                if line.strip():
                    yield line
        if tail.strip():
            yield tail


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
    return n


def _record(now: int, kind: str, source: str, r, max_raw_bytes: int) -> dict:
    """One rejected row as stored, its raw content and value bounded."""
    raw = r.raw if len(r.raw) <= max_raw_bytes else None
    value = r.value if r.value is None or len(r.value) <= MAX_VALUE_CHARS else r.value[:MAX_VALUE_CHARS] + "..."
    record = {"received_ns": now, "kind": str(kind), "source": source, "reason": r.reason, "field": r.field,
              "value": value, "raw": json.loads(raw) if raw is not None else r.raw[:max_raw_bytes]}
    if raw is None:
        record["raw_truncated"] = True  # `raw` is then the first max_raw_bytes of its JSON text
    return record


def _check_page(limit: int, offset: int) -> None:
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset: must be >= 0, got limit={limit}, offset={offset}")


class DeadLetterStore:
    def __init__(self, path: str | os.PathLike, max_bytes: int = 50 * 1024**2, keep_files: int = 3,
                 max_raw_bytes: int = MAX_RAW_BYTES):
        if keep_files < 1:
            raise ValueError(f"keep_files: must be >= 1, got {keep_files}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.keep_files, self.max_raw_bytes = max_bytes, keep_files, max_raw_bytes
        self._lock = threading.Lock()
        # Records per retained file, newest (the live file) first: `total` without reading them.
        self._counts = [_count_lines(p) if p.exists() else 0 for p in self.files()]

    @property
    def where(self) -> str:
        return str(self.path)

    def files(self) -> list[Path]:
        """The retained files, newest first."""
        return [self.path] + [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep_files)]

    @property
    def total(self) -> int:
        return sum(self._counts)

    def _line(self, now: int, kind: str, source: str, r) -> bytes:
        return (json.dumps(_record(now, kind, source, r, self.max_raw_bytes)) + "\n").encode()

    def append(self, kind: str, source: str, rejected: pd.DataFrame) -> int:
        if rejected.empty:
            return 0
        now = time.time_ns()
        lines = [self._line(now, kind, source, r) for r in rejected.itertuples(index=False)]
        with self._lock:
            size = self.path.stat().st_size if self.path.exists() else 0
            chunk: list[bytes] = []
            for line in lines:
                if size and size + len(line) > self.max_bytes:
                    self._write(chunk)
                    self._rotate()
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line)
            self._write(chunk)
        return len(lines)

    def _write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        with open(self.path, "ab") as fh:
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        self._counts[0] += len(lines)

    def _rotate(self) -> None:
        files = self.files()
        files[-1].unlink(missing_ok=True)
        for older, newer in zip(reversed(files[1:]), reversed(files[:-1])):
            if newer.exists():
                os.replace(newer, older)
        self._counts = [0] + self._counts[:-1]

    def read_page(self, limit: int = 100, offset: int = 0) -> dict:
        """`limit` records skipping the `offset` newest, oldest first: offset 0 is the newest page."""
        _check_page(limit, offset)
        items: list[dict] = []
        skip = offset
        with self._lock:
            total = self.total
            for path, count in zip(self.files(), self._counts):
                if len(items) >= limit:
                    break
                if skip >= count or not path.exists():  # a whole file before the page: not opened
                    skip -= min(skip, count)
                    continue
                for line in _reverse_lines(path):
                    if skip:
                        skip -= 1
                        continue
                    if len(items) >= limit:
                        break
                    items.append(json.loads(line))
        return {"total": total, "offset": offset, "limit": limit, "items": items[::-1]}


DEADLETTER_TABLE = "edgeray_deadletters"
# The stores a pipeline keeps, and their files under run_dir when no database is configured.
DEADLETTER_FILES = {"ingestion": "deadletters.jsonl", "undecided": "decision_deadletters.jsonl"}


class SqlDeadLetterStore:
    """Dead letters as rows (namespace, store, JSON record) of one table: the same API as DeadLetterStore.
    Retention: the newest `max_rows` of this (namespace, store) are kept (up to 10% more between trims)."""

    def __init__(self, url: str, namespace: str, store: str, max_rows: int = 200_000,
                 max_raw_bytes: int = MAX_RAW_BYTES):
        from edgeray.storage.sql import create_tables, open_engine

        if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1:
            raise ValueError(f"max_rows: must be an integer >= 1, got {max_rows!r}")
        self.namespace, self.store = namespace, store
        self.max_rows, self.max_raw_bytes = max_rows, max_raw_bytes
        self.engine = open_engine(url)
        metadata = sa.MetaData()
        self.table = sa.Table(
            DEADLETTER_TABLE, metadata,
            # BIGINT on PostgreSQL; SQLite autoincrements only an INTEGER primary key.
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
            sa.Column("namespace", sa.String(), nullable=False),
            sa.Column("store", sa.String(), nullable=False),
            sa.Column("record", sa.Text(), nullable=False),  # text, not JSONB: a record is shown as it was stored
            sa.Index("edgeray_deadletters_by_store", "namespace", "store", "id"),
        )
        create_tables(self.engine, metadata)
        t = self.table
        self._mine = sa.and_(t.c.namespace == namespace, t.c.store == store)
        # Trimming reads max_rows index entries: done once per tenth of max_rows appended (and on the first
        # append), so the store holds at most 10% more than max_rows between trims.
        self._trim_every = max(1, max_rows // 10)
        self._since_trim = self._trim_every
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        from edgeray.storage.sql import shown

        return f"table {DEADLETTER_TABLE} ({self.namespace}/{self.store}) in {shown(self.engine)}"

    @property
    def total(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(self.table).where(self._mine)).scalar_one()

    def append(self, kind: str, source: str, rejected: pd.DataFrame) -> int:
        if rejected.empty:
            return 0
        now = time.time_ns()
        rows = [{"namespace": self.namespace, "store": self.store,
                 "record": json.dumps(_record(now, kind, source, r, self.max_raw_bytes))}
                for r in rejected.itertuples(index=False)]
        t = self.table
        # The id of the oldest row to keep; the subquery is empty (nothing deleted) while fewer are stored.
        oldest_kept = (sa.select(t.c.id).where(self._mine).order_by(t.c.id.desc())
                       .offset(self.max_rows - 1).limit(1).scalar_subquery())
        with self._lock, self.engine.begin() as conn:
            conn.execute(t.insert(), rows)
            self._since_trim += len(rows)
            if self._since_trim >= self._trim_every:
                conn.execute(sa.delete(t).where(self._mine, t.c.id < oldest_kept))
                self._since_trim = 0
        return len(rows)

    def read_page(self, limit: int = 100, offset: int = 0) -> dict:
        """`limit` records skipping the `offset` newest, oldest first: offset 0 is the newest page."""
        _check_page(limit, offset)
        t = self.table
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(t).where(self._mine)).scalar_one()
            texts = conn.execute(sa.select(t.c.record).where(self._mine).order_by(t.c.id.desc())
                                 .limit(limit).offset(offset)).scalars().all()
        return {"total": total, "offset": offset, "limit": limit, "items": [json.loads(x) for x in reversed(texts)]}

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        from edgeray.storage.sql import shown

        return f"SqlDeadLetterStore({shown(self.engine)!r}, namespace={self.namespace!r}, store={self.store!r})"


def open_deadletter_store(cfg: "PipelineConfig", name: str) -> DeadLetterStore | SqlDeadLetterStore:
    """The dead-letter store `name` ("ingestion": rejected input; "undecided": rows the decision loop could not
    decide) as `cfg` configures it: rows in storage.state_url's database, else JSON Lines under run_dir."""
    if name not in DEADLETTER_FILES:
        raise ValueError(f"dead-letter store: unknown name {name!r}; known: {sorted(DEADLETTER_FILES)}")
    ing = cfg.ingestion
    if cfg.storage.state_url:
        return SqlDeadLetterStore(cfg.storage.state_url, cfg.namespace, name, ing.deadletter_max_rows)
    return DeadLetterStore(Path(cfg.run_dir) / DEADLETTER_FILES[name], ing.deadletter_max_bytes,
                           ing.deadletter_keep_files)
