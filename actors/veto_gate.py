"""Veto gate actor: rules decide approve / reject / hold; held decisions wait for a human (HTTP)
or time out to the configured default. Only an approval releases a held order to the executor."""
from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import ray

from edgeray.statefile import load_state, save_state
from edgeray.veto import VetoConfig, VetoGate

EXPIRY_CHECK_S = 1.0  # how often held decisions are checked against their deadline


@ray.remote(num_cpus=0, max_concurrency=4)
class VetoGateActor:
    def __init__(self, config_path: str, state_path: str, executor, audit):
        self.state_path = Path(state_path)
        state = load_state(self.state_path)
        # A short review history keeps the per-batch checkpoint small (~0.3 MB).
        self.gate = VetoGate.from_state(state) if state else VetoGate(VetoConfig.load(config_path), history_size=2_000)
        self.executor = executor
        self.audit = audit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._expiry_loop, daemon=True).start()

    def _expiry_loop(self) -> None:
        while not self._stop.wait(EXPIRY_CHECK_S):  # a timer, not synchronisation: holds expire on the wall clock
            self.expire()

    def review(self, orders: pd.DataFrame, now: pd.Timestamp | None = None) -> pd.DataFrame:
        with self._lock:
            verdicts = self.gate.review(orders, now or pd.Timestamp.now(tz="UTC"))
            save_state(self.state_path, self.gate.state_dict())
            return verdicts

    def pending(self) -> list[dict]:
        with self._lock:
            return self.gate.pending(pd.Timestamp.now(tz="UTC"))

    def approve(self, decision_id: str, reviewer: str) -> dict:
        with self._lock:
            released = self.gate.approve(decision_id, reviewer, pd.Timestamp.now(tz="UTC"))
            save_state(self.state_path, self.gate.state_dict())
        self._release([released])
        return released

    def reject(self, decision_id: str, reviewer: str) -> dict:
        with self._lock:
            record = self.gate.reject(decision_id, reviewer, pd.Timestamp.now(tz="UTC"))
            save_state(self.state_path, self.gate.state_dict())
        self._release([record])
        return record

    def expire(self, now: pd.Timestamp | None = None) -> list[dict]:
        """Apply the timeout action to holds past their deadline (`now` lets a test set the clock)."""
        with self._lock:
            records = self.gate.expire(now or pd.Timestamp.now(tz="UTC"))
            if records:
                save_state(self.state_path, self.gate.state_dict())
        if records:
            self._release(records)
        return records

    def _release(self, records: list[dict]) -> None:
        """Audit each human/timeout verdict; send approved orders to the executor."""
        approved = [r["order"] for r in records if r.get("release") and r.get("order")]
        if approved:
            ray.get(self.executor.submit.remote(pd.DataFrame(approved)))
        ray.get(self.audit.append.remote([{
            "decision_id": r["decision_id"], "stage": "veto_review", "event_ts": pd.Timestamp.now(tz="UTC"),
            "payload": {k: v for k, v in r.items() if k != "order"}} for r in records]))
