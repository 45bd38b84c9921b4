"""Audit log actor: the single writer of the append-only decision audit (SQLite or PostgreSQL)."""
from __future__ import annotations

import time

import ray

from edgeray.audit import AuditLog
from edgeray.latency import LatencyRing


@ray.remote(num_cpus=0, max_concurrency=4)  # threads: reads (HTTP lookups) answer while a batch is written
class AuditActor:
    def __init__(self, url: str):
        self.log = AuditLog(url)
        self._latency = LatencyRing()

    def append(self, records: list[dict], received_ns=None) -> int:
        """Write in one transaction; `received_ns` (the batch's market-event receipt stamps) makes
        this the end of the end-to-end latency: event in -> decision durable in the audit log."""
        written = self.log.append(records) if records else 0
        if received_ns is not None and len(received_ns):
            self._latency.record_since(received_ns, time.time_ns())
        return written

    def latency(self) -> dict:
        return self._latency.percentiles()

    def get(self, decision_id: str) -> list[dict]:
        return self.log.get(decision_id)

    def range(self, start, end, stage: str | None = None, limit: int = 1000) -> list[dict]:
        return self.log.range(start, end, stage=stage, limit=limit)

    def count(self, stage: str | None = None) -> int:
        return self.log.count(stage)
