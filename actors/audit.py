"""Audit log actor: the single writer of the append-only decision audit (SQLite or PostgreSQL)."""
from __future__ import annotations

import threading
import time

import numpy as np
import ray

from edgeray.audit import AuditLog

LATENCY_SAMPLES = 200_000


@ray.remote(num_cpus=0, max_concurrency=4)  # threads: reads (HTTP lookups) answer while a batch is written
class AuditActor:
    def __init__(self, url: str):
        self.log = AuditLog(url)
        self._latency_ms = np.zeros(LATENCY_SAMPLES)
        self._latency_n = 0
        self._lock = threading.Lock()

    def append(self, records: list[dict], received_ns: np.ndarray | None = None) -> int:
        """Write in one transaction; `received_ns` (the batch's market-event receipt stamps) makes
        this the end of the end-to-end latency: event in -> decision durable in the audit log."""
        written = self.log.append(records) if records else 0
        if received_ns is not None and len(received_ns):
            latency = (time.time_ns() - np.asarray(received_ns, dtype=np.int64)) / 1e6
            with self._lock:
                idx = (self._latency_n + np.arange(len(latency))) % LATENCY_SAMPLES
                self._latency_ms[idx] = latency
                self._latency_n += len(latency)
        return written

    def latency(self) -> dict:
        with self._lock:
            recent = self._latency_ms[: min(self._latency_n, LATENCY_SAMPLES)].copy()
        p50, p99 = (np.percentile(recent, [50, 99]).tolist() if len(recent) else (None, None))
        return {"latency_ms_p50": p50, "latency_ms_p99": p99, "samples": int(len(recent))}

    def get(self, decision_id: str) -> list[dict]:
        return self.log.get(decision_id)

    def range(self, start, end, stage: str | None = None, limit: int = 1000) -> list[dict]:
        return self.log.range(start, end, stage=stage, limit=limit)

    def count(self, stage: str | None = None) -> int:
        return self.log.count(stage)
