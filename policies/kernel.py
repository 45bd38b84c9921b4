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

from edgeray.betbook import BetBook, bet_key
from edgeray.columns import Columns, column, take
from edgeray.config import PipelineConfig
from edgeray.ledger import PaperLedger
from edgeray.risk import RiskEngine, RiskLimits
from edgeray.value import ValueConfig, ValueStrategy
from edgeray.veto import VetoConfig, VetoGate
from edgeray.watermark import NEVER, SymbolWatermark, timestamps_ns
from policies.engine import DecisionBatch, DecisionEngine, decision_ids
from policies.strategies import PairsStatArb

PASS_THROUGH = ("approve", "resize")
ORDER_COLUMNS = ["decision_id", "event_ts", "symbol", "strategy", "quantity"]
VETO_HISTORY = 2_000  # reviews kept for the API's lookups; a short history keeps the checkpoint small
BET_STRATEGY = "value_bet"
BET_REGIME = "pre_game"
NO_REJECTED = pd.DataFrame()  # read-only: a batch with every row in time  # what the veto rules' `regimes` see for a bet (market regimes do not apply)


def stage_records(frame: pd.DataFrame | None, stage: str, columns: list[str], event_ts: pd.Series | None = None) -> list[dict]:
    """One audit record per row (`event_ts`: the rows' stamps when `frame` has none). Column by column (`tolist`
    gives the same Python values as `to_dict("records")`, tests/test_kernel_fastpath.py): the frame selection and
    to_dict cost ~1 ms on a one-order batch."""
    if frame is None or frame.empty:
        return []
    values = [frame[c].tolist() for c in columns]
    stamps = (frame["event_ts"] if event_ts is None else event_ts).tolist()
    return [{"decision_id": i, "stage": stage, "event_ts": ts, "payload": dict(zip(columns, row))}
            for i, ts, *row in zip(frame["decision_id"].tolist(), stamps, *values)]


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
        # Bets on live odds: their own book and risk engine (the market ledger's snapshots would wipe their
        # exposure), the same limits file, veto gate, kill switch and audit log as every other decision.
        v = d.value
        self.value = ValueStrategy(ValueConfig(
            min_edge=v.min_edge, kelly_multiplier=v.kelly_multiplier, max_stake=v.max_stake, min_books=v.min_books,
            cooldown=pd.Timedelta(minutes=v.cooldown_minutes) if v.cooldown_minutes else None, max_edge=v.max_edge))
        if state.get("bets"):
            self.bets = BetBook.from_state(state["bets"])
            self.bet_risk = RiskEngine.from_state(state["bet_risk"])
            self.value.load_state(state["value"])
        else:
            self.bets = BetBook(v.bankroll)
            # One strategy holds the whole bet book, so a strategy's share of its gross would cap the book at its
            # first bets (seen: 89 of 170 bets refused); the other limits apply as written.
            limits = RiskLimits.load(d.risk_config).model_copy(update={"max_strategy_concentration": 1.0})
            self.bet_risk = RiskEngine(limits, v.bankroll)
        # Per (game, book): one quote per book and instant, so a retried batch's quotes are recognised exactly.
        self.odds_done = SymbolWatermark(state.get("odds_done_until"))

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
            self.decided_until_ns = int(timestamps_ns(frame["event_ts"]).max())
        out.batch, out.decisions, out.orders = batch, batch.n_decisions, len(batch.orders)
        return out

    def _risk_and_veto(self, orders: pd.DataFrame, risk_engine: RiskEngine, timed: dict,
                       prefix: str = "") -> tuple[list[dict], pd.DataFrame, pd.DataFrame | None]:
        """Risk sees every order, the veto gate every order risk passed. Returns the audit records, the orders
        risk passed (with its sizes) and the veto's verdicts on them (None: risk passed none)."""
        t = time.perf_counter_ns()
        risk = risk_engine.check(orders)  # one verdict per order, in the orders' row order
        timed["risk"] = (time.perf_counter_ns() - t) / 1e6
        passed = risk["verdict"].isin(PASS_THROUGH).to_numpy()
        sized = orders[passed].assign(quantity=risk.loc[passed, "quantity"].to_numpy())
        records = stage_records(risk, "risk", ["verdict", "quantity", "reasons", "risk_score"], orders["event_ts"])
        for reason in risk["reasons"]:
            for r in filter(None, str(reason).split("; ")):
                self._count(f"{prefix}risk:{r}")
        for v in risk["verdict"]:
            self._count(f"{prefix}risk_{v}")
        if sized.empty:
            return records, sized, None
        t = time.perf_counter_ns()
        veto = self.veto.review(sized, pd.Timestamp.now(tz="UTC"))  # in the sized orders' row order
        timed["veto"] = (time.perf_counter_ns() - t) / 1e6
        records += stage_records(veto, "veto", ["verdict", "rule"], sized["event_ts"])
        for v in veto["verdict"]:
            self._count(f"{prefix}veto_{v}")
        return records, sized, veto

    def _gate(self, batch: DecisionBatch, timed: dict) -> list[dict]:
        """Risk and veto on the batch's orders; approvals wait for the next bar."""
        orders = batch.orders
        records, sized, veto = self._risk_and_veto(orders, self.risk, timed)
        if veto is None:
            return records
        approved = sized[(veto["verdict"] == "approve").to_numpy() & (sized["quantity"] != 0).to_numpy()]
        self.pending_orders = approved[ORDER_COLUMNS].reset_index(drop=True) if len(approved) else None
        # Held decisions may still be approved by a human, so they are rewarded when they fill.
        live = (veto["verdict"] != "reject").to_numpy()
        index = {d: i for i, d in enumerate(orders["decision_id"])}
        rows = [index[d] for d in sized["decision_id"][live]]
        self.engine.register(sized["decision_id"][live].tolist(), batch.arms[rows], batch.contexts[rows])
        return records

    # -- bets on live odds ------------------------------------------------------------------------
    def step_bets(self, features: pd.DataFrame) -> KernelStep:
        """Multi-book odds feature rows (edgeray.features.books, event-time order) -> value bets through risk
        and veto -> approved bets booked. A batch retried after a restart is recognised per (game, book)."""
        out = KernelStep()
        per_book = features.assign(symbol=features["symbol"].astype(str) + "|" + features["bookmaker"].astype(str))
        fresh = self.odds_done.fresh_mask(per_book)
        if not fresh.any():
            out.skipped_as_already_decided = True
            return out
        rows = features[fresh].reset_index(drop=True)
        t = time.perf_counter_ns()
        bets = self.value.decide(rows) if self.cfg.decisions.value.enabled else self.value.decide(rows.iloc[:0])
        out.timed["decide"] = (time.perf_counter_ns() - t) / 1e6
        self.odds_done.advance(per_book[fresh])
        out.decisions = len(rows)
        if bets.empty:
            return out
        keys = [bet_key(g, side) for g, side in zip(bets["symbol"], bets["side"])]
        ids = decision_ids(self.cfg.namespace, np.asarray(keys, dtype=object), bets["event_ts"])
        stake = bets["stake_fraction"].to_numpy(float) * self.bets.available
        orders = pd.DataFrame({"decision_id": ids, "event_ts": pd.to_datetime(bets["event_ts"], utc=True),
                               "symbol": keys, "strategy": BET_STRATEGY, "regime": BET_REGIME, "quantity": stake,
                               "price": 1.0, "volatility": np.nan, "confidence": bets["p_ref"].to_numpy(float),
                               "game": bets["symbol"].to_numpy(object), "side": bets["side"].to_numpy(object),
                               "bookmaker": bets["bookmaker"].to_numpy(object),
                               "decimal_odds": bets["decimal_odds"].to_numpy(float)})
        proposal = bets.drop(columns=["event_ts"]).rename(columns={"symbol": "game"}).assign(stake=stake)
        out.records += [{"decision_id": i, "stage": "bet_decision", "event_ts": ts, "payload": p}
                        for i, ts, p in zip(ids, orders["event_ts"], proposal.to_dict("records"))]
        records, sized, veto = self._risk_and_veto(orders, self.bet_risk, out.timed, prefix="bet_")
        out.records += records
        if veto is not None:
            approved = sized[(veto["verdict"] == "approve").to_numpy() & (sized["quantity"] > 0).to_numpy()]
            out.records += self._book_bets(approved)
        out.orders = len(orders)
        return out

    def _book_bets(self, orders: pd.DataFrame | list[dict]) -> list[dict]:
        """Approved bet orders (from the gate, or a human's approval of a hold) into the bet book."""
        frame = pd.DataFrame(orders)
        if frame.empty:
            return []
        records = self.bets.place(pd.DataFrame({
            "decision_id": frame["decision_id"], "event_ts": pd.to_datetime(frame["event_ts"], utc=True),
            "symbol": frame["game"], "side": frame["side"], "bookmaker": frame["bookmaker"],
            "decimal_odds": frame["decimal_odds"].astype(float), "stake": frame["quantity"].astype(float)}))
        self.bet_risk.on_ledger(self.bets.snapshot())
        return records

    def settle(self, results: pd.DataFrame) -> list[dict]:
        """Game results settle the bet book's open bets on those games (records: one "settlement" per bet)."""
        records = self.bets.settle(results)
        if records:
            self.bet_risk.on_ledger(self.bets.snapshot())
        return records

    def _count(self, key: str) -> None:
        self.verdicts[key] = self.verdicts.get(key, 0) + 1

    def _in_time_order(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Split `frame` into rows the engine can take (at or after every earlier row of their symbol,
        and with a cross-symbol strategy, of every symbol) and rows that went back in time, each with
        its reason. A row already behind is never ahead of the running maximum, so a cumulative max
        over all rows equals one over the kept rows."""
        ts = timestamps_ns(frame["event_ts"])
        codes, uniq = pd.factorize(column(frame, "symbol").astype(str))
        done = self.done.state_dict()
        # Per symbol: strictly after the symbol's decided watermark (as SymbolWatermark.fresh), and not
        # before an earlier row of this batch. Integer ns throughout: a float would round them.
        floor = np.full(len(ts), NEVER, dtype=np.int64)
        for k, sym in enumerate(uniq):
            idx = np.flatnonzero(codes == k) if len(uniq) > 1 else np.arange(len(ts))
            running = np.maximum.accumulate(ts[idx])
            floor[idx] = np.maximum(np.concatenate([[NEVER], running[:-1]]), done[sym] + 1 if sym in done else NEVER)
        reasons = np.where(ts < floor, "went_back_in_time_for_symbol", None).astype(object)
        if self.cross_symbol:
            start = NEVER if self.decided_until_ns is None else self.decided_until_ns
            shared = np.maximum.accumulate(np.concatenate([[start], ts]))[:-1]
            reasons = np.where((reasons == None) & (ts < shared), "went_back_in_time_across_symbols", reasons)  # noqa: E711
        bad = reasons != None  # noqa: E711
        if not bad.any():
            return frame, (NO_REJECTED if isinstance(frame, Columns) else frame.iloc[:0])
        rejected = take(frame, bad)
        rejected = (rejected.to_frame() if isinstance(rejected, Columns) else rejected).assign(reason=reasons[bad])
        for reason, n in rejected["reason"].value_counts().items():
            self.rejected_rows[reason] = self.rejected_rows.get(reason, 0) + int(n)
        return take(frame, ~bad), rejected

    def _rejected_records(self, rejected: pd.DataFrame) -> list[dict]:
        if rejected.empty:
            return []
        ids = decision_ids(self.cfg.namespace, column(rejected, "symbol"), rejected["event_ts"])
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
        self.bet_risk.kill(reason, actor, pd.Timestamp(event["ts"]))
        self.ledger.halt()
        cancelled = self.ledger.cancel_all(reason)
        self.snapshot = self.ledger.snapshot()
        event = {**event, "cancelled_orders": cancelled}
        return event, [self._control_record("kill_switch", event)]

    def resume(self, actor: str) -> tuple[dict, list[dict]]:
        event = self.risk.resume(actor)
        self.bet_risk.resume(actor, pd.Timestamp(event["ts"]))
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
        bets = [o for o in approved if o.get("strategy") == BET_STRATEGY]
        market = [o for o in approved if o.get("strategy") != BET_STRATEGY]
        if market:
            self.ledger.submit(pd.DataFrame(market))
        booked = self._book_bets(bets)
        now = pd.Timestamp.now(tz="UTC")
        return booked + [{"decision_id": r["decision_id"], "stage": "veto_review", "event_ts": now,
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
                "decided_until_ns": self.decided_until_ns, "rejected_rows": self.rejected_rows,
                "bets": self.bets.state_dict(), "bet_risk": self.bet_risk.state_dict(), "value": self.value.state_dict(),
                "odds_done_until": self.odds_done.state_dict()}
