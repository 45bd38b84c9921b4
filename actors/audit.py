"""Audit log actor: reads of the append-only decision audit (SQLite or PostgreSQL) and the writes of the
kill switch, veto reviews and drift alerts; the meta-controller writes its decision records in process."""
from __future__ import annotations

import ray

from edgeray.audit import AuditLog


@ray.remote(num_cpus=0, max_concurrency=4)  # threads: reads (HTTP lookups) answer while a batch is written
class AuditActor:
    def __init__(self, url: str):
        self.log = AuditLog(url)

    def append(self, records: list[dict]) -> int:
        """Write in one transaction (the meta-controller writes its decision records itself, in process)."""
        return self.log.append(records) if records else 0

    def get(self, decision_id: str) -> list[dict]:
        return self.log.get(decision_id)

    def trails(self, decision_ids: list[str]) -> dict[str, list[dict]]:
        return self.log.trails(decision_ids)

    def range(self, start, end, stage: str | None = None, limit: int = 1000) -> list[dict]:
        return self.log.range(start, end, stage=stage, limit=limit)

    def latest_ids(self, stage: str, limit: int = 50) -> list[str]:
        return self.log.latest_ids(stage, limit)

    def count(self, stage: str | None = None) -> int:
        return self.log.count(stage)
