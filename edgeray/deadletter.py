"""Append-only dead-letter store: every rejected row with its reason and raw content.

JSON Lines on local disk: appending is atomic per write on POSIX for our line sizes, a crash
loses at most the line being written, and users can read it with any tool (`jq`, pandas).
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd


class DeadLetterStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, kind: str, source: str, rejected: pd.DataFrame) -> int:
        if rejected.empty:
            return 0
        now = time.time_ns()
        lines = [
            json.dumps({"received_ns": now, "kind": str(kind), "source": source, "reason": r.reason,
                        "field": r.field, "value": r.value, "raw": json.loads(r.raw)})
            for r in rejected.itertuples(index=False)
        ]
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return len(lines)

    def read(self, limit: int | None = None) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()]
        return records[-limit:] if limit else records

    def counts_by_reason(self) -> dict[str, int]:
        return dict(Counter(r["reason"] for r in self.read()))
