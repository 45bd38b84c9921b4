"""Meta-controller actor: the decision loop's hot path and its control surface, over one DecisionKernel.

Per micro-batch: kernel.step (ledger step, decide, risk, veto: plain calls in this process, see
policies/kernel.py for why) -> the audit write (durable before the batch counts as done) -> the
shadows -> one checkpoint. The kill switch, the human reviews at the veto gate, the hold expiry and
the reads take the same lock between batches, so a kill lands before the next batch is decided.
"""
from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pandas as pd
import ray

from actors.metrics import DecisionStageMetrics
from edgeray.audit import AuditLog
from edgeray.columns import column
from edgeray.config import PipelineConfig
from edgeray.latency import LatencyRing, StageLatencies
from edgeray.storage.state import open_state_store
from envs.trading import TradingEnvConfig
from policies.kernel import DecisionKernel

# Where a decided row's time goes, in order (ms; `stages_ms` in status, edgeray_decision_stage_ms in Ray metrics):
# ingest: receipt -> the streamer takes the batch (per row: includes waiting for the micro-batch to fill);
# features: the streamer's processing; queue_wait: the streamer's send -> this actor starts the batch (the
# outbox, transport, the actor's queue); then the kernel's stages and the audit write in this process.
# "other": the rest of the batch here (watermarks, record building). "shadows" (the shadow strategies' paper
# trading) and "checkpoint" run after the audit write, so they are outside a row's latency.
STAGES = ("ingest", "features", "queue_wait", "execution", "decide", "risk", "veto", "audit", "shadows",
          "checkpoint", "other")
CURVE_EVERY = 50  # checkpoints between equity-curve saves (the curve would make every checkpoint megabytes)
CHECKPOINT = "meta_controller"  # names in the state store (files: meta_controller.json, equity_curve.parquet)
CURVE = "equity_curve"
EXPIRY_CHECK_S = 1.0  # how often held decisions are checked against their deadline


def policy_window(checkpoint: str | None) -> int:
    """The trading env's feature window the served policy was trained with (from its policy.json)."""
    if not checkpoint:
        return TradingEnvConfig.window
    from policies.rl_policy import load_meta  # torch and RLlib (~3 s of import) only for a loop that serves a policy

    meta = load_meta(checkpoint)
    if meta.env != "trading":
        raise ValueError(f"decisions.sizer.checkpoint: the loop sizes with a trading-env policy, got env {meta.env!r}")
    return int(meta.env_config.get("window", TradingEnvConfig.window))


# Threads for the control calls; the lock keeps batches in arrival order and one at a time.
@ray.remote(num_cpus=0, max_concurrency=4)
class MetaControllerActor:
    def __init__(self, config: dict, audit, policy=None):
        self.cfg = PipelineConfig.model_validate(config)
        self.state_store = open_state_store(self.cfg)  # run_dir/state, or storage.state_url's database
        self.policy = policy  # PolicyServerActor when decisions.sizer.name is "rl_policy"
        state = self.state_store.load(CHECKPOINT)
        curve = self.state_store.load_frame(CURVE) if state else None
        if curve is not None:  # the chart points saved beside the last checkpoints
            state["ledger"]["curve_ts"] = pd.to_datetime(curve["ts"], utc=True).astype("int64").tolist()
            state["ledger"]["curve_equity"] = curve["equity"].tolist()
        self.kernel = DecisionKernel(self.cfg, policy_window(self.cfg.decisions.sizer.checkpoint), state)
        # The loop writes its own records in process: on a busy 2-core box the audit actor's round trip cost
        # ~10 ms a batch for ~1 ms of work. The database serialises writers (SQLite WAL with a busy timeout,
        # or PostgreSQL); the AuditActor serves the reads. Waiting for it first means it has created the table.
        ray.get(audit.count.remote())
        self.audit_log = AuditLog(self.cfg.audit_url)
        self._lock = threading.RLock()
        self._checkpoints = 0
        self._checkpointed_at = time.perf_counter()
        self._shadow_records: list[dict] = []  # written with the next batch's records or before the next checkpoint
        # The streamed batches decided so far (see decide_batch); restored with the checkpoint they belong to.
        stream = (state or {}).get("stream") or {}
        self._producer: str | None = stream.get("producer")
        self._last_seq: int = stream.get("seq") or 0
        self._durable_seq = self._last_seq
        self._latency = LatencyRing()  # receipt -> decision durable in the audit log, per row
        self._busy_s = 0.0
        self._stages = StageLatencies(STAGES)
        self._stage_metrics = DecisionStageMetrics()
        self._stop = threading.Event()
        threading.Thread(target=self._expiry_loop, name="veto-expiry", daemon=True).start()
        gc.freeze()  # see FeatureStreamerActor: keeps gen-2 collections off the hot path

    def decide_batch(self, frame: pd.DataFrame, seq: int | None = None, after: int | None = None,
                     producer: str | None = None) -> dict:
        """Decide one batch. A streamed batch carries its sender's numbering (`seq`, the `after` it follows, the
        `producer`): it is checkpointed lazily (decisions.checkpoint_interval_ms) and the reply's `durable_seq` says
        up to which batch the sender may forget; a batch that does not follow the last one decided here (this actor
        restarted from an older checkpoint) is not decided, and the reply's `resend_after` asks for the batches
        after that one first. A call without `seq` (HTTP) is checkpointed before it returns."""
        started_ns = time.time_ns()  # wall clock: compared with the streamer's stamps (another process)
        with self._lock:
            if seq is not None:
                if producer != self._producer:  # a new sender numbers from 1
                    self._producer, self._last_seq = producer, 0
                if seq <= self._last_seq:
                    return {"decisions": 0, "orders": 0, "skipped_as_already_decided": True, "durable_seq": self._durable_seq}
                if after != self._last_seq:
                    return {"decisions": 0, "orders": 0, "resend_after": self._last_seq, "durable_seq": self._durable_seq}
            try:
                out, upstream, timed = self._decide(frame, started_ns)
            finally:
                if seq is not None:  # a batch that failed is the sender's to dead-letter, never to resend
                    self._last_seq = seq
            # Only the call in flight is retried after a restart, so without a sender that keeps and resends what
            # came after the last checkpoint (the streamer does), every batch is checkpointed before it is answered.
            t = time.perf_counter_ns()
            if seq is None or self._checkpoint_due():
                self._checkpoint()
            if out.batch is not None:
                timed["checkpoint"] = (time.perf_counter_ns() - t) / 1e6
                self._busy_s += timed["checkpoint"] / 1e3
                self._record_stages(upstream, timed)
            if out.skipped_as_already_decided:
                return {"decisions": 0, "orders": 0, "skipped_as_already_decided": True, "durable_seq": self._durable_seq}
            return {"decisions": out.decisions, "orders": out.orders, "rejected_rows": out.rejected_rows,
                    "durable_seq": self._durable_seq}

    def _decide(self, frame: pd.DataFrame, started_ns: int):
        """kernel.step, the audit write (durable before the batch counts as done, and before any checkpoint says
        so) and the shadows; returns the step, the upstream stages and this actor's stage times (ms)."""
        started = time.perf_counter()
        upstream = self._upstream_ms(frame, started_ns)
        act = (lambda obs: ray.get(self.policy.act.remote(obs))) if self.policy is not None else None
        out = self.kernel.step(frame, act=act)
        timed = dict(out.timed)
        if out.skipped_as_already_decided:  # retried after a restart that came after its checkpoint
            return out, upstream, timed
        t = time.perf_counter_ns()
        decided = out.batch is not None
        # The shadows' records of the batch before ride in this batch's transaction (one commit, one fsync, a batch).
        records, self._shadow_records = self._shadow_records + out.records, []
        self._audit(records, column(frame, "received_ns") if decided and "received_ns" in frame else None)
        timed["audit"] = (time.perf_counter_ns() - t) / 1e6
        if decided:
            # The shadows never execute, so they wait until the live decisions are durable (off the latency
            # path). Their records wait for the next write; a checkpoint writes them first (see _checkpoint).
            t = time.perf_counter_ns()
            self._shadow_records = self.kernel.engine.shadow_step(out.batch)
            timed["shadows"] = (time.perf_counter_ns() - t) / 1e6
        busy = time.perf_counter() - started
        self._busy_s += busy
        timed["other"] = max(0.0, busy * 1e3 - sum(timed.values()))
        return out, upstream, timed

    def _checkpoint_due(self) -> bool:
        return time.perf_counter() - self._checkpointed_at >= self.cfg.decisions.checkpoint_interval_ms / 1e3

    def decide_bets(self, features: pd.DataFrame) -> dict:
        """Multi-book odds feature rows -> value bets through risk and veto -> booked; audited, then checkpointed
        (the same durability order as decide_batch, so a retried batch is skipped, never booked twice)."""
        with self._lock:
            started = time.perf_counter()
            out = self.kernel.step_bets(features)
            if out.skipped_as_already_decided:
                return {"quotes": 0, "bets": 0, "skipped_as_already_decided": True}
            self._audit(out.records)
            self._checkpoint()
            self._busy_s += time.perf_counter() - started
            return {"quotes": out.decisions, "bets": out.orders}

    def settle(self, results: pd.DataFrame) -> dict:
        """Game results settle the bet book's open bets (a retried call finds them settled: nothing twice)."""
        with self._lock:
            records = self.kernel.settle(results)
            if records:
                self._durably(records)
            return {"settled": len(records)}

    def bet_book(self) -> dict:
        """The bet book's snapshot and the value strategy's risk status."""
        with self._lock:
            k = self.kernel
            return {**k.bets.snapshot(), "open": list(k.bets.open.values()), "risk": k.bet_risk.status()}

    def _audit(self, records: list[dict], received_ns: np.ndarray | None = None) -> None:
        """One transaction; with `received_ns` (the rows' receipt stamps) this ends their end-to-end latency."""
        if records:
            self.audit_log.append(records)
        if received_ns is not None and len(received_ns):
            self._latency.record_since(received_ns, time.time_ns())

    def _checkpoint(self) -> None:
        """The kernel's state, with the streamed batches it covers; every record it implies is durable first."""
        if self._shadow_records:
            records, self._shadow_records = self._shadow_records, []
            self._audit(records)
        self.state_store.save(CHECKPOINT, {**self.kernel.state_dict(), "stream": {"producer": self._producer, "seq": self._last_seq}})
        self._checkpoints += 1
        self._checkpointed_at = time.perf_counter()
        self._durable_seq = self._last_seq
        if self._checkpoints % CURVE_EVERY == 0:
            self._save_curve()

    def _save_curve(self) -> None:
        self.state_store.save_frame(CURVE, self.kernel.ledger.equity_curve())

    def _upstream_ms(self, frame: pd.DataFrame, started_ns: int) -> dict:
        """ingest (per row), features and queue_wait (per batch) from the stamps riding on the rows."""
        if "features_in_ns" not in frame or frame.empty:
            return {}
        # Per row: a batch may join rows of several streamer batches (see actors/outbox.py).
        arrived, sent = column(frame, "features_in_ns", np.int64), column(frame, "features_out_ns", np.int64)
        out = {"features": (sent - arrived) / 1e6, "queue_wait": (started_ns - sent) / 1e6}
        if "received_ns" in frame:
            out["ingest"] = (arrived - column(frame, "received_ns", np.int64)) / 1e6
        return out

    def _record_stages(self, upstream: dict, timed: dict) -> None:
        for stage, value in {**upstream, **timed}.items():
            self._stages.record(stage, value)
            if np.ndim(value):  # per-row stages: a sample of the rows keeps the metrics calls per batch bounded
                for v in value[:: max(1, len(value) // 8)]:
                    self._stage_metrics.observe(stage, v)
            else:
                self._stage_metrics.observe(stage, value)

    def flush(self) -> dict:
        """Submit the last approvals (they fill on the next bar)."""
        with self._lock:
            self.kernel.submit_pending()
            self._checkpoint()  # also makes the last streamed batches durable: their sender may forget them
        return self.status()

    # -- control: kill switch, human reviews, hold expiry --------------------------------------
    def kill(self, reason: str, actor: str) -> dict:
        """Halt: every later risk check rejects, unfilled orders are cancelled and nothing more fills;
        the event is in the audit log before this returns."""
        with self._lock:
            event, records = self.kernel.kill(reason, actor)
            self._durably(records)
            return event

    def resume(self, actor: str) -> dict:
        with self._lock:
            event, records = self.kernel.resume(actor)
            self._durably(records)
            return event

    def pending(self) -> list[dict]:
        with self._lock:
            return self.kernel.veto.pending(pd.Timestamp.now(tz="UTC"))

    def approve(self, decision_id: str, reviewer: str) -> dict:
        return self._review("approve", decision_id, reviewer)

    def reject(self, decision_id: str, reviewer: str) -> dict:
        return self._review("reject", decision_id, reviewer)

    def _review(self, action: str, decision_id: str, reviewer: str) -> dict:
        with self._lock:
            record, records = self.kernel.review(action, decision_id, reviewer, pd.Timestamp.now(tz="UTC"))
            self._durably(records)
            return record

    def expire(self, now: pd.Timestamp | None = None) -> list[dict]:
        """Apply the timeout action to holds past their deadline (`now` lets a test set the clock)."""
        with self._lock:
            records = self.kernel.expire(now or pd.Timestamp.now(tz="UTC"))
            if records:
                self._durably(records)
            return [r["payload"] for r in records]

    def _expiry_loop(self) -> None:
        while not self._stop.wait(EXPIRY_CHECK_S):  # a timer, not synchronisation: holds expire on the wall clock
            self.expire()
            with self._lock:  # a stream that pauses still gets its last batches checkpointed
                if self._durable_seq != self._last_seq and self._checkpoint_due():
                    self._checkpoint()

    def _durably(self, records: list[dict]) -> None:
        """A control event: audited, then checkpointed, before the caller hears of it."""
        self._audit(records)
        self._checkpoint()

    # -- reads --------------------------------------------------------------------------------
    def arms(self) -> list[dict]:
        with self._lock:
            return self.kernel.engine.bandit.stats()

    def set_arm(self, arm: str, enabled: bool) -> list[dict]:
        with self._lock:
            bandit = self.kernel.engine.bandit
            (bandit.enable if enabled else bandit.disable)(arm)
            self._checkpoint()
            return bandit.stats()

    def risk_status(self) -> dict:
        with self._lock:
            return self.kernel.risk.status()

    def snapshot(self) -> dict:
        with self._lock:
            return self.kernel.ledger.snapshot()

    def equity_curve(self) -> pd.DataFrame:
        with self._lock:
            self._save_curve()
            return self.kernel.ledger.equity_curve()

    def status(self) -> dict:
        with self._lock:
            k = self.kernel
            latency = self._latency.percentiles()
            equity = k.snapshot.get("equity", self.cfg.decisions.ledger.initial_cash)
            return {**k.engine.counts, "verdicts": dict(k.verdicts), "latency_ms_p50": latency["latency_ms_p50"],
                    "latency_ms_p99": latency["latency_ms_p99"], "busy_s": self._busy_s, "equity": equity,
                    "shadows": k.engine.shadow_report(equity), "rejected_rows": dict(k.rejected_rows),
                    "edge_model": k.engine.edge.model_kind if k.engine.edge is not None else None,
                    "stages_ms": self._stages.summary(), "node_id": ray.get_runtime_context().get_node_id(),
                    "bets": {key: v for key, v in k.bets.snapshot().items() if key not in ("positions", "prices", "position_strategy")}}
