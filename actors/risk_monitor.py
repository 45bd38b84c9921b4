"""Risk monitor actor: limits, drawdown and daily-loss stops, and the audited kill switch."""
from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import ray

from edgeray.risk import RiskEngine, RiskLimits
from edgeray.statefile import load_state, save_state


@ray.remote(num_cpus=0, max_concurrency=4)  # threads: the kill switch answers while a batch is checked
class RiskMonitorActor:
    def __init__(self, limits_path: str, initial_equity: float, state_path: str, executor, audit):
        self.state_path = Path(state_path)
        state = load_state(self.state_path)
        self.engine = RiskEngine.from_state(state) if state else RiskEngine(RiskLimits.load(limits_path), initial_equity)
        self.executor = executor
        self.audit = audit
        self._lock = threading.Lock()

    def check(self, orders: pd.DataFrame, snapshot: dict | None = None) -> pd.DataFrame:
        with self._lock:
            if snapshot is not None:
                self.engine.on_ledger(snapshot)
            verdicts = self.engine.check(orders)
            save_state(self.state_path, self.engine.state_dict())
            return verdicts

    def kill(self, reason: str, actor: str) -> dict:
        """Halt: every later risk check rejects, the executor cancels unfilled orders and fills
        nothing more, and the event is written to the audit log before this returns."""
        with self._lock:
            event = self.engine.kill(reason, actor)
            save_state(self.state_path, self.engine.state_dict())
        cancelled = ray.get(self.executor.halt.remote(reason))
        self._audit("kill_switch", event, cancelled)
        return {**event, "cancelled_orders": cancelled}

    def resume(self, actor: str) -> dict:
        with self._lock:
            event = self.engine.resume(actor)
            save_state(self.state_path, self.engine.state_dict())
        ray.get(self.executor.resume.remote())
        self._audit("resume", event, [])
        return event

    def _audit(self, stage: str, event: dict, cancelled: list[str]) -> None:
        ts = pd.Timestamp(event["ts"])
        ray.get(self.audit.append.remote([{"decision_id": f"{stage}-{ts.value}", "stage": stage, "event_ts": ts,
                                           "payload": {**event, "cancelled_orders": cancelled}}]))

    def status(self) -> dict:
        with self._lock:
            return self.engine.status()
