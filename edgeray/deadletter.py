"""Dead-letter store: every rejected row with its reason and raw content, bounded on disk.

JSON Lines on local disk: appending is atomic per write on POSIX for our line sizes, a crash
loses at most the line being written, and users can read it with any tool (`jq`, pandas).
The live file rotates at `max_bytes` (deadletters.jsonl -> .1 -> .2 ...; `keep_files` files in all,
the oldest dropped), and a raw row is stored truncated past `max_raw_bytes`: rejected input is
attacker-sized, the disk is not. Pages are read from the end of the files, never the whole store.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pandas as pd

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

    def files(self) -> list[Path]:
        """The retained files, newest first."""
        return [self.path] + [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep_files)]

    @property
    def total(self) -> int:
        return sum(self._counts)

    def _line(self, now: int, kind: str, source: str, r) -> bytes:
        raw = r.raw if len(r.raw) <= self.max_raw_bytes else None
        value = r.value if r.value is None or len(r.value) <= MAX_VALUE_CHARS else r.value[:MAX_VALUE_CHARS] + "..."
        record = {"received_ns": now, "kind": str(kind), "source": source, "reason": r.reason, "field": r.field,
                  "value": value, "raw": json.loads(raw) if raw is not None else r.raw[:self.max_raw_bytes]}
        if raw is None:
            record["raw_truncated"] = True  # `raw` is then the first max_raw_bytes of its JSON text
        return (json.dumps(record) + "\n").encode()

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
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset: must be >= 0, got limit={limit}, offset={offset}")
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
