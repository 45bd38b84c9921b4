"""The decision kernel: one micro-batch through ledger step -> decide -> risk -> veto, in one process.

The stages stay separate cores (`edgeray/ledger.py`, `edgeray/risk.py`, `edgeray/veto.py`, the
`DecisionEngine`); the kernel runs them as plain calls on the same thread, the way NautilusTrader's
kernel runs its risk and execution engines beside the strategy. As actors of their own, each hop cost
6-8 ms p50 (p99 13-23 ms) on a busy 2-core box for well under 1 ms of work (bench/decisions.py,
2026-12-02), and three of them sat on every order's path. One object also makes the checkpoint one
atomic file: the ledger, the risk state and the veto queue can no longer disagree after a restart.

Order of a batch: earlier approvals are submitted and fill against these bars (strictly later than
each order), outcomes come back as rewards, the engine decides, risk checks every order against the
ledger as it stands, the veto gate reviews what risk passed, and approved orders wait for the next
batch, so an order never fills on the bar it was decided on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from edgeray.config import PipelineConfig
from edgeray.ledger import PaperLedger
from edgeray.risk import RiskEngine, RiskLimits
from edgeray.veto import VetoConfig, VetoGate
from edgeray.watermark import NEVER, SymbolWatermark
from policies.engine import DecisionBatch, DecisionEngine, decision_ids
from policies.strategies import PairsStatArb

PASS_THROUGH = ("approve", "resize")
ORDER_COLUMNS = ["decision_id", "event_ts", "symbol", "strategy", "quantity"]
VETO_HISTORY = 2_000  # reviews kept for the API's lookups; a short history keeps the checkpoint small


def stage_records(frame: pd.DataFrame | None, stage: str, columns: list[str]) -> list[dict]:
    if frame is None or frame.empty:
        return []
    rows = frame[["decision_id", "event_ts", *columns]].to_dict("records")
    return [{"decision_id": r.pop("decision_id"), "stage": stage, "event_ts": r.pop("event_ts"), "payload": r} for r in rows]


@dataclass
class KernelStep:
    """What one batch produced: the audit records of the live path, and timings per stage (ms)."""
    records: list[dict] = field(default_factory=list)
    batch: DecisionBatch | None = None
    decisions: int = 0
    orders: int = 0
    rejected_rows: int = 0
    skipped_as_already_decided: bool = False
    timed: dict[str, float] = field(default_factory=dict)


class DecisionKernel:
    def __init__(self, cfg: PipelineConfig, policy_window: int, state: dict | None = None):
        # What the hot path imports where it is used (SHAP for explanations, scipy's filter for regimes) is
        # imported with the kernel, so no batch waits seconds for it mid-stream; processes that only start the
        # pipeline import the modules without building a kernel and never pay for them.
        import scipy.signal  # noqa: F401
        import shap  # noqa: F401

        d = cfg.decisions
        self.cfg = cfg
        self.engine = DecisionEngine(d, cfg.ingestion.symbols, cfg.namespace, cfg.features.spec(),
                                     Path(cfg.run_dir) / "models", policy_window=policy_window)
        state = state or {}
        if state:  # a restart: learned state, positions, limits and holds come back together
            self.engine.load_state(state["engine"])
            self.ledger = PaperLedger.from_state(state["ledger"])
            self.risk = RiskEngine.from_state(state["risk"])
            self.veto = VetoGate.from_state(state["veto"])
        else:
            self.ledger = PaperLedger(d.ledger.initial_cash, d.ledger.fee_bps, d.ledger.slippage_bps,
                                      d.ledger.default_spread_bps, d.ledger.reward_horizon_bars)
            self.risk = RiskEngine(RiskLimits.load(d.risk_config), d.ledger.initial_cash)
            self.veto = VetoGate(VetoConfig.load(d.veto_config), history_size=VETO_HISTORY)
        pending = state.get("pending_orders")
        self.pending_orders: pd.DataFrame | None = pd.DataFrame.from_records(pending["rows"], columns=ORDER_COLUMNS).assign(
            event_ts=lambda f: pd.to_datetime(f["event_ts"], utc=True)) if pending else None
        self.verdicts: dict[str, int] = state.get("verdicts", {})
        self.rejected_rows: dict[str, int] = state.get("rejected_rows", {})
        self.done = SymbolWatermark(state.get("done_until"))
        # The pairs strategy reads both legs as one stream, so its clock is shared across symbols.
        self.cross_symbol = any(isinstance(s, PairsStatArb) for s in
                                [*self.engine.strategies, *(sh.strategy for sh in self.engine.shadows)])
        self.decided_until_ns: int | None = state.get("decided_until_ns")
        self.snapshot: dict = self.ledger.snapshot()

    # -- the hot path -------------------------------------------------------------------------
    def step(self, frame: pd.DataFrame, act=None) -> KernelStep:
        """Decide one batch. Rows already decided (a batch retried after a restart) are skipped, and rows
        behind their symbol's clock are rejected with a reason, so nothing is decided twice or wedges the loop."""
        out = KernelStep()
        fresh = self.done.fresh(frame)
        if fresh.empty:
            out.skipped_as_already_decided = True
            return out
        frame, rejected = self._in_time_order(fresh)
        out.rejected_rows = len(rejected)
        out.records += self._rejected_records(rejected)
        if frame.empty:
            return out
        t = time.perf_counter_ns()
        if self.pending_orders is not None:
            self.ledger.submit(self.pending_orders)
            self.pending_orders = None
        step = self.ledger.on_market(frame)
        self.snapshot = self.ledger.snapshot()
        # Every batch, orders or not: the drawdown stop needs every peak and the daily loss stop the day's
        # first equity (seen only at order times, both were missed between orders, and the status went stale).
        self.risk.on_ledger(self.snapshot)
        self.engine.on_outcomes(step["outcomes"])
        out.timed["execution"] = (time.perf_counter_ns() - t) / 1e6
        t = time.perf_counter_ns()
        batch = self.engine.decide(frame, self.snapshot, act=act)
        out.timed["decide"] = (time.perf_counter_ns() - t) / 1e6
        out.records += batch.records
        out.records += stage_records(step["fills"], "fill", ["symbol", "strategy", "quantity", "price", "fee"])
        out.records += stage_records(step["outcomes"], "outcome", ["pnl", "reward"])
        if len(batch.orders):
            out.records += self._gate(batch, out.timed)
        self.done.advance(frame)
        if self.cross_symbol:
            self.decided_until_ns = int(pd.to_datetime(frame["event_ts"], utc=True).array.asi8.max())
        out.batch, out.decisions, out.orders = batch, batch.n_decisions, len(batch.orders)
        return out

    def _gate(self, batch: DecisionBatch, timed: dict) -> list[dict]:
        """Risk sees every order, the veto gate every order risk passed; approvals wait for the next bar."""
        orders = batch.orders
        t = time.perf_counter_ns()
        risk = self.risk.check(orders).set_index("decision_id").loc[orders["decision_id"]].reset_index()
        timed["risk"] = (time.perf_counter_ns() - t) / 1e6
        passed = risk["verdict"].isin(PASS_THROUGH).to_numpy()
        sized = orders[passed].assign(quantity=risk.loc[passed, "quantity"].to_numpy())
        records = stage_records(risk.assign(event_ts=orders["event_ts"].to_numpy()), "risk",
                                ["verdict", "quantity", "reasons", "risk_score"])
        for reason in risk["reasons"]:
            for r in filter(None, str(reason).split("; ")):
                self._count(f"risk:{r}")
        for v in risk["verdict"]:
            self._count(f"risk_{v}")
        if sized.empty:
            return records
        t = time.perf_counter_ns()
        veto = self.veto.review(sized, pd.Timestamp.now(tz="UTC")).set_index("decision_id").loc[sized["decision_id"]].reset_index()
        timed["veto"] = (time.perf_counter_ns() - t) / 1e6
        records += stage_records(veto.assign(event_ts=sized["event_ts"].to_numpy()), "veto", ["verdict", "rule"])
        for v in veto["verdict"]:
            self._count(f"veto_{v}")
        approved = sized[(veto["verdict"] == "approve").to_numpy() & (sized["quantity"] != 0).to_numpy()]
        self.pending_orders = approved[ORDER_COLUMNS].reset_index(drop=True) if len(approved) else None
        # Held decisions may still be approved by a human, so they are rewarded when they fill.
        live = (veto["verdict"] != "reject").to_numpy()
        index = {d: i for i, d in enumerate(orders["decision_id"])}
        rows = [index[d] for d in sized["decision_id"][live]]
        self.engine.register(sized["decision_id"][live].tolist(), batch.arms[rows], batch.contexts[rows])
        return records

    def _count(self, key: str) -> None:
        self.verdicts[key] = self.verdicts.get(key, 0) + 1

    def _in_time_order(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Split `frame` into rows the engine can take (at or after every earlier row of their symbol,
        and with a cross-symbol strategy, of every symbol) and rows that went back in time, each with
        its reason. A row already behind is never ahead of the running maximum, so a cumulative max
        over all rows equals one over the kept rows."""
        ts = pd.to_datetime(frame["event_ts"], utc=True).array.asi8
        symbols = frame["symbol"].astype(str).to_numpy()
        done = self.done.state_dict()
        # Per symbol: strictly after the symbol's decided watermark (as SymbolWatermark.fresh), and not
        # before an earlier row of this batch. Integer ns throughout: a float would round them.
        floor = np.full(len(ts), NEVER, dtype=np.int64)
        for sym in pd.unique(symbols):
            idx = np.flatnonzero(symbols == sym)
            running = np.maximum.accumulate(ts[idx])
            floor[idx] = np.maximum(np.concatenate([[NEVER], running[:-1]]), done[sym] + 1 if sym in done else NEVER)
        reasons = np.where(ts < floor, "went_back_in_time_for_symbol", None).astype(object)
        if self.cross_symbol:
            start = NEVER if self.decided_until_ns is None else self.decided_until_ns
            shared = np.maximum.accumulate(np.concatenate([[start], ts]))[:-1]
            reasons = np.where((reasons == None) & (ts < shared), "went_back_in_time_across_symbols", reasons)  # noqa: E711
        bad = reasons != None  # noqa: E711
        if not bad.any():
            return frame, frame.iloc[:0]
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

    def submit_pending(self) -> int:
        """Hand the last approvals to the ledger now (the end of a replay); they fill on the next bar."""
        if self.pending_orders is None:
            return 0
        n = self.ledger.submit(self.pending_orders)
        self.pending_orders = None
        return n

    # -- control: the kill switch and the human at the veto gate -------------------------------
    def kill(self, reason: str, actor: str) -> tuple[dict, list[dict]]:
        """Halt: every later risk check rejects, unfilled orders are cancelled and nothing more fills. Approvals
        not yet submitted go to the halted ledger with the next batch, which refuses and counts them, as before."""
        event = self.risk.kill(reason, actor)
        self.ledger.halt()
        cancelled = self.ledger.cancel_all(reason)
        self.snapshot = self.ledger.snapshot()
        event = {**event, "cancelled_orders": cancelled}
        return event, [self._control_record("kill_switch", event)]

    def resume(self, actor: str) -> tuple[dict, list[dict]]:
        event = self.risk.resume(actor)
        self.ledger.resume()
        return event, [self._control_record("resume", {**event, "cancelled_orders": []})]

    @staticmethod
    def _control_record(stage: str, event: dict) -> dict:
        ts = pd.Timestamp(event["ts"])
        return {"decision_id": f"{stage}-{ts.value}", "stage": stage, "event_ts": ts, "payload": event}

    def review(self, action: str, decision_id: str, reviewer: str, now: pd.Timestamp) -> tuple[dict, list[dict]]:
        """A human's approve or reject of a held decision (KeyError: unknown, already decided or expired)."""
        record = (self.veto.approve if action == "approve" else self.veto.reject)(decision_id, reviewer, now)
        return record, self._release([record])

    def expire(self, now: pd.Timestamp) -> list[dict]:
        """Apply the timeout action to holds past their deadline; returns the audit records (empty: none)."""
        return self._release(self.veto.expire(now))

    def _release(self, reviews: list[dict]) -> list[dict]:
        """Approved holds go to the ledger (they fill on the next bar); every verdict becomes an audit record."""
        approved = [r["order"] for r in reviews if r.get("release") and r.get("order")]
        if approved:
            self.ledger.submit(pd.DataFrame(approved))
        now = pd.Timestamp.now(tz="UTC")
        return [{"decision_id": r["decision_id"], "stage": "veto_review", "event_ts": now,
                 "payload": {k: v for k, v in r.items() if k != "order"}} for r in reviews]

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        pending = None
        if self.pending_orders is not None:
            rows = self.pending_orders.assign(event_ts=self.pending_orders["event_ts"].map(pd.Timestamp.isoformat))
            pending = {"rows": rows.to_dict("records")}
        return {"engine": self.engine.state_dict(), "ledger": self.ledger.state_dict(include_curve=False),
                "risk": self.risk.state_dict(), "veto": self.veto.state_dict(), "pending_orders": pending,
                "verdicts": self.verdicts, "done_until": self.done.state_dict(),
                "decided_until_ns": self.decided_until_ns, "rejected_rows": self.rejected_rows}
