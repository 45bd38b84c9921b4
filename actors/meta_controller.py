"""Meta-controller actor: drives one micro-batch through the decision loop.

executor.step (fill earlier approvals on these bars, outcomes back) -> engine.decide (regime,
LinUCB arm, signal, size, confidence + SHAP) -> risk.check -> veto.review -> audit.append.
Approved orders ride on the next executor.step, so they fill on a later bar, never this one.
"""
from __future__ import annotations

import gc
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from actors.metrics import DecisionStageMetrics
from edgeray.config import PipelineConfig
from edgeray.audit import AuditLog
from edgeray.latency import LatencyRing, StageLatencies
from edgeray.statefile import load_state, save_state
from edgeray.watermark import NEVER, SymbolWatermark
from envs.trading import TradingEnvConfig
from policies.engine import DecisionEngine, decision_ids
from policies.rl_policy import load_meta
from policies.strategies import PairsStatArb

PASS_THROUGH = ("approve", "resize")
# Where a decided row's time goes, in order (ms; `stages_ms` in status, edgeray_decision_stage_ms in Ray metrics):
# ingest: receipt -> the streamer takes the batch (per row: includes waiting for the micro-batch to fill);
# features: the streamer's processing (features, Feast write); queue_wait: the streamer's send -> this actor
# starts the batch (the one-in-flight window, transport, the actor's queue); then the calls this actor makes.
# "other": the rest of the batch in this actor (watermarks, rewards, shadows' market step, record building).
# "shadows" (the shadow strategies' paper trading) runs after the audit write, so it is outside a row's latency.
STAGES = ("ingest", "features", "queue_wait", "executor_step", "decide", "risk", "veto", "audit", "shadows",
          "checkpoint", "other")


def _stage_records(frame: pd.DataFrame, stage: str, columns: list[str]) -> list[dict]:
    if frame is None or frame.empty:
        return []
    rows = frame[["decision_id", "event_ts", *columns]].to_dict("records")
    return [{"decision_id": r.pop("decision_id"), "stage": stage, "event_ts": r.pop("event_ts"), "payload": r} for r in rows]


def policy_window(checkpoint: str | None) -> int:
    """The trading env's feature window the served policy was trained with (from its policy.json)."""
    if not checkpoint:
        return TradingEnvConfig.window
    meta = load_meta(checkpoint)
    if meta.env != "trading":
        raise ValueError(f"decisions.sizer.checkpoint: the loop sizes with a trading-env policy, got env {meta.env!r}")
    return int(meta.env_config.get("window", TradingEnvConfig.window))


# One thread on purpose: batches must be decided in the order they arrive; reads queue behind a batch.
@ray.remote(num_cpus=0)
class MetaControllerActor:
    def __init__(self, config: dict, executor, risk, veto, audit, policy=None):
        self.cfg = PipelineConfig.model_validate(config)
        run_dir = Path(self.cfg.run_dir)
        self.state_path = run_dir / "state" / "meta_controller.json"
        self.policy = policy  # PolicyServerActor when decisions.sizer.name is "rl_policy"
        self.engine = DecisionEngine(self.cfg.decisions, self.cfg.ingestion.symbols, self.cfg.namespace,
                                     self.cfg.features.spec(), run_dir / "models",
                                     policy_window=policy_window(self.cfg.decisions.sizer.checkpoint))
        state = load_state(self.state_path)
        self._pending_orders: pd.DataFrame | None = None
        if state:  # restart: learned state and not-yet-submitted approvals come back
            self.engine.load_state(state["engine"])
            if state["pending_orders"]:
                self._pending_orders = pd.read_json(io.StringIO(state["pending_orders"]), orient="table")
        self.executor, self.risk, self.veto = executor, risk, veto
        # The loop writes its own records in process: on a busy 2-core box the audit actor's round trip cost
        # ~10 ms a batch for ~1 ms of work (bench/decisions.py). The database serialises writers (SQLite WAL
        # with a busy timeout, or PostgreSQL); the AuditActor stays the writer for kill switch, veto reviews,
        # drift alerts and serves the reads. Waiting for it first means it has created the table.
        ray.get(audit.count.remote())
        self.audit_log = AuditLog(self.cfg.audit_url)
        self._latency = LatencyRing()  # receipt -> decision durable in the audit log, per row
        self.verdicts: dict[str, int] = (state or {}).get("verdicts", {})
        self._done = SymbolWatermark((state or {}).get("done_until"))
        # The pairs strategy reads both legs as one stream, so its clock is shared across symbols.
        self._cross_symbol = any(isinstance(s, PairsStatArb) for s in
                                 [*self.engine.strategies, *(sh.strategy for sh in self.engine.shadows)])
        self._decided_until_ns: int | None = (state or {}).get("decided_until_ns")
        self.rejected_rows: dict[str, int] = (state or {}).get("rejected_rows", {})
        self.snapshot: dict = {}
        self._busy_s = 0.0
        self._stages = StageLatencies(STAGES)
        self._stage_metrics = DecisionStageMetrics()
        gc.freeze()  # see FeatureStreamerActor: keeps gen-2 collections off the hot path

    def decide_batch(self, frame: pd.DataFrame) -> dict:
        started_ns = time.time_ns()  # wall clock: compared with the streamer's stamps (another process)
        started = time.perf_counter()
        timed: dict[str, float] = {}  # stage -> ms for this batch, recorded once the batch is done
        upstream = self._upstream_ms(frame, started_ns)
        # A batch retried after a restart may already be in the checkpoint (the actor died after
        # saving, before answering): its rows are skipped, so nothing is decided twice.
        fresh = self._done.fresh(frame)
        if fresh.empty:
            return {"decisions": 0, "orders": 0, "skipped_as_already_decided": True}
        # Rows behind the clock of a batch that also brings new rows went back in time: deciding them
        # would make the regime or pairs state raise on every later batch (the loop wedged on 3 bad bars).
        frame, rejected = self._in_time_order(frame)
        if frame.empty:
            self._audit_rejected(rejected)
            return {"decisions": 0, "orders": 0, "rejected_rows": len(rejected)}
        t = time.perf_counter_ns()
        step = ray.get(self.executor.step.remote(self._pending_orders, frame))
        timed["executor_step"] = (time.perf_counter_ns() - t) / 1e6
        self._pending_orders = None
        self.snapshot = step["snapshot"]
        self.engine.on_outcomes(step["outcomes"])
        act = (lambda obs: ray.get(self.policy.act.remote(obs))) if self.policy is not None else None
        t = time.perf_counter_ns()
        batch = self.engine.decide(frame, self.snapshot, act=act)
        timed["decide"] = (time.perf_counter_ns() - t) / 1e6
        records = list(batch.records)
        records += _stage_records(step["fills"], "fill", ["symbol", "strategy", "quantity", "price", "fee"])
        records += _stage_records(step["outcomes"], "outcome", ["pnl", "reward"])
        records += self._rejected_records(rejected)
        if len(batch.orders):
            records += self._gate(batch, timed)
        received = frame["received_ns"].to_numpy() if "received_ns" in frame else None
        # The audit write must be durable before the checkpoint says this batch is done: a write still in
        # flight when this actor dies is lost with it, and the retried batch would then be skipped as decided.
        t = time.perf_counter_ns()
        self._audit(records, received)
        timed["audit"] = (time.perf_counter_ns() - t) / 1e6
        # The shadows never execute, so they wait until the live decisions are durable (off the latency
        # path); their records are durable before the checkpoint too.
        t = time.perf_counter_ns()
        shadow_records = self.engine.shadow_step(batch)
        if shadow_records:
            self._audit(shadow_records)
        timed["shadows"] = (time.perf_counter_ns() - t) / 1e6
        self._done.advance(frame)
        if self._cross_symbol:
            self._decided_until_ns = int(pd.to_datetime(frame["event_ts"], utc=True).array.asi8.max())
        # Every batch, on purpose: only the call in flight is retried after a restart, so a batch answered
        # after the last checkpoint would never be resent (its approvals, rewards and counts lost).
        t = time.perf_counter_ns()
        save_state(self.state_path, self._state())
        timed["checkpoint"] = (time.perf_counter_ns() - t) / 1e6
        busy = time.perf_counter() - started
        self._busy_s += busy
        timed["other"] = max(0.0, busy * 1e3 - sum(timed.values()))
        self._record_stages(upstream, timed)
        return {"decisions": batch.n_decisions, "orders": len(batch.orders), "rejected_rows": len(rejected)}

    def _in_time_order(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Split `frame` into rows the engine can take (at or after every earlier row of their symbol,
        and with a cross-symbol strategy, of every symbol) and rows that went back in time, each with
        its reason. A row already behind is never ahead of the running maximum, so a cumulative max
        over all rows equals one over the kept rows."""
        ts = pd.to_datetime(frame["event_ts"], utc=True).array.asi8
        symbols = frame["symbol"].astype(str).to_numpy()
        done = self._done.state_dict()
        # Per symbol: strictly after the symbol's decided watermark (as SymbolWatermark.fresh), and not
        # before an earlier row of this batch. Integer ns throughout: a float would round them.
        floor = np.full(len(ts), NEVER, dtype=np.int64)
        for sym in pd.unique(symbols):
            idx = np.flatnonzero(symbols == sym)
            running = np.maximum.accumulate(ts[idx])
            floor[idx] = np.maximum(np.concatenate([[NEVER], running[:-1]]), done[sym] + 1 if sym in done else NEVER)
        reasons = np.where(ts < floor, "went_back_in_time_for_symbol", None).astype(object)
        if self._cross_symbol:
            shared = np.maximum.accumulate(np.concatenate([[NEVER if self._decided_until_ns is None else self._decided_until_ns], ts]))[:-1]
            reasons = np.where((reasons == None) & (ts < shared), "went_back_in_time_across_symbols", reasons)  # noqa: E711
        bad = reasons != None  # noqa: E711
        if not bad.any():
            return frame, frame.iloc[:0].assign(reason=[])
        rejected = frame[bad].assign(reason=reasons[bad]).reset_index(drop=True)
        for reason, n in rejected["reason"].value_counts().items():
            self.rejected_rows[reason] = self.rejected_rows.get(reason, 0) + int(n)
        return frame[~bad].reset_index(drop=True), rejected

    def _rejected_records(self, rejected: pd.DataFrame) -> list[dict]:
        if rejected.empty:
            return []
        ids = decision_ids(self.cfg.namespace, rejected["symbol"].to_numpy(), rejected["event_ts"])
        return [{"decision_id": i, "stage": "rejected", "event_ts": r["event_ts"],
                 "payload": {"symbol": r["symbol"], "reason": r["reason"], "close": float(r["close"])}}
                for i, r in zip(ids, rejected[["symbol", "event_ts", "reason", "close"]].to_dict("records"))]

    def _audit_rejected(self, rejected: pd.DataFrame) -> None:
        self._audit(self._rejected_records(rejected))
        save_state(self.state_path, self._state())

    def _audit(self, records: list[dict], received_ns: np.ndarray | None = None) -> None:
        """One transaction; with `received_ns` (the rows' receipt stamps) this ends their end-to-end latency."""
        if records:
            self.audit_log.append(records)
        if received_ns is not None and len(received_ns):
            self._latency.record_since(received_ns, time.time_ns())

    def _upstream_ms(self, frame: pd.DataFrame, started_ns: int) -> dict:
        """ingest (per row), features and queue_wait (per batch) from the stamps riding on the rows."""
        if "features_in_ns" not in frame or frame.empty:
            return {}
        # Per row: a batch may join rows of several streamer batches (see actors/outbox.py).
        arrived, sent = frame["features_in_ns"].to_numpy(np.int64), frame["features_out_ns"].to_numpy(np.int64)
        out = {"features": (sent - arrived) / 1e6, "queue_wait": (started_ns - sent) / 1e6}
        if "received_ns" in frame:
            out["ingest"] = (arrived - frame["received_ns"].to_numpy(np.int64)) / 1e6
        return out

    def _record_stages(self, upstream: dict, timed: dict) -> None:
        for stage, value in {**upstream, **timed}.items():
            self._stages.record(stage, value)
            if np.ndim(value):  # per-row stages: a sample of the rows keeps the metrics calls per batch bounded
                for v in value[:: max(1, len(value) // 8)]:
                    self._stage_metrics.observe(stage, v)
            else:
                self._stage_metrics.observe(stage, value)

    def _gate(self, batch, timed: dict) -> list[dict]:
        orders = batch.orders
        t = time.perf_counter_ns()
        risk = ray.get(self.risk.check.remote(orders, self.snapshot))
        timed["risk"] = (time.perf_counter_ns() - t) / 1e6
        risk = risk.set_index("decision_id").loc[orders["decision_id"]].reset_index()
        passed = risk["verdict"].isin(PASS_THROUGH).to_numpy()
        sized = orders[passed].assign(quantity=risk.loc[passed, "quantity"].to_numpy())
        records = _stage_records(risk.assign(event_ts=orders["event_ts"].to_numpy()), "risk", ["verdict", "quantity", "reasons"])
        for reason in risk["reasons"]:
            for r in filter(None, str(reason).split("; ")):
                self.verdicts[f"risk:{r}"] = self.verdicts.get(f"risk:{r}", 0) + 1
        for v in risk["verdict"]:
            self.verdicts[f"risk_{v}"] = self.verdicts.get(f"risk_{v}", 0) + 1
        if sized.empty:
            return records
        t = time.perf_counter_ns()
        veto = ray.get(self.veto.review.remote(sized))
        timed["veto"] = (time.perf_counter_ns() - t) / 1e6
        veto = veto.set_index("decision_id").loc[sized["decision_id"]].reset_index()
        records += _stage_records(veto.assign(event_ts=sized["event_ts"].to_numpy()), "veto", ["verdict", "rule"])
        for v in veto["verdict"]:
            self.verdicts[f"veto_{v}"] = self.verdicts.get(f"veto_{v}", 0) + 1
        approved = sized[(veto["verdict"] == "approve").to_numpy() & (sized["quantity"] != 0).to_numpy()]
        self._pending_orders = approved[["decision_id", "event_ts", "symbol", "strategy", "quantity"]] if len(approved) else None
        # Held decisions may still be approved by a human, so they are rewarded when they fill.
        live = (veto["verdict"] != "reject").to_numpy()
        index = {d: i for i, d in enumerate(orders["decision_id"])}
        rows = [index[d] for d in sized["decision_id"][live]]
        self.engine.register(sized["decision_id"][live].tolist(), batch.arms[rows], batch.contexts[rows])
        return records

    def _state(self) -> dict:
        pending = self._pending_orders.to_json(orient="table", date_unit="ns") if self._pending_orders is not None else None
        return {"engine": self.engine.state_dict(), "pending_orders": pending, "verdicts": self.verdicts,
                "done_until": self._done.state_dict(), "decided_until_ns": self._decided_until_ns,
                "rejected_rows": self.rejected_rows}

    def flush(self) -> dict:
        """Submit the last approvals (they fill on the next bar)."""
        if self._pending_orders is not None:
            ray.get(self.executor.submit.remote(self._pending_orders))
            self._pending_orders = None
            save_state(self.state_path, self._state())
        return self.status()

    # -- control and reads --------------------------------------------------------------------
    def arms(self) -> list[dict]:
        return self.engine.bandit.stats()

    def set_arm(self, arm: str, enabled: bool) -> list[dict]:
        (self.engine.bandit.enable if enabled else self.engine.bandit.disable)(arm)
        save_state(self.state_path, self._state())
        return self.engine.bandit.stats()

    def status(self) -> dict:
        latency = self._latency.percentiles()
        equity = self.snapshot.get("equity", self.cfg.decisions.ledger.initial_cash)
        return {**self.engine.counts, "verdicts": dict(self.verdicts), "latency_ms_p50": latency["latency_ms_p50"], "latency_ms_p99": latency["latency_ms_p99"],
                "busy_s": self._busy_s, "equity": equity, "shadows": self.engine.shadow_report(equity),
                "rejected_rows": dict(self.rejected_rows), "stages_ms": self._stages.summary()}
