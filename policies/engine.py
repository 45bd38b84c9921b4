"""The decision engine behind the meta-controller actor (no Ray here): feature rows in, sized
orders and audit records out.

Per micro-batch: regime per row -> LinUCB context -> arm (strategy) per row -> that strategy's
signal -> sizing to a target position -> order = target - position -> confidence from the edge
model and its SHAP explanation. Rewards arrive later from the ledger, keyed by decision id.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edgeray.columns import Columns, column, take, utc_datetimes, utc_stamps
from edgeray.config import DecisionConfig, ShadowConfig
from edgeray.explain import EdgeModel
from edgeray.features.market import MarketFeatureSpec
from edgeray.ledger import PaperLedger
from edgeray.regime import Regime, RegimeDetector, float_matrix
from edgeray.watermark import timestamps_ns
from envs.trading import LiveObservations
from policies.context import CONTEXT_DIM, build_context
from policies.linucb import LinUCB
from policies.sizing import make_sizer, policy_sizing
from policies.strategies import default_market_strategies

REGIME_NAMES = np.array([r.name.lower() for r in sorted(Regime, key=int)])
PNL_EWMA_ALPHA = 0.05  # weight of the newest realised reward in the "recent PnL" context feature
MAX_PENDING_REWARDS = 20_000
# Most batches order nothing; building their empty orders frame cost ~0.7 ms of a 10-row batch's ~4 ms. Read-only.
NO_ORDERS = pd.DataFrame({"decision_id": pd.Series(dtype=object), "event_ts": pd.Series(dtype="datetime64[ns, UTC]"),
                          "symbol": pd.Series(dtype=object), "strategy": pd.Series(dtype=object),
                          "regime": pd.Series(dtype=object), **{c: pd.Series(dtype=float) for c in
                                                                 ("quantity", "price", "volatility", "confidence", "notional")}})


def decision_ids(namespace: str, symbols: np.ndarray, event_ts: pd.Series) -> list[str]:
    """Deterministic ids: a batch replayed after an actor restart produces the same ids, so the
    audit log and the ledger can drop the repeat instead of recording it twice."""
    stamps = timestamps_ns(event_ts)
    return [hashlib.blake2b(f"{namespace}|{s}|{t}".encode(), digest_size=12).hexdigest() for s, t in zip(symbols, stamps)]


@dataclass
class DecisionBatch:
    orders: pd.DataFrame  # the order frame for risk and veto (non-zero orders only)
    records: list[dict]  # one "decision" audit record per input row
    contexts: np.ndarray  # LinUCB context per order row (same order as `orders`)
    arms: np.ndarray  # chosen arm per order row
    n_decisions: int
    # What the shadows need later (DecisionEngine.shadow_step), once the live decisions are audited.
    frame: pd.DataFrame | None = None
    regimes: np.ndarray | None = None
    ids: list[str] | None = None
    direction: np.ndarray | None = None
    served: dict | None = None


def targets_to_orders(symbols: np.ndarray, direction: np.ndarray, target: np.ndarray, positions: dict[str, float]) -> np.ndarray:
    """Order = the change from the symbol's previous target (its ledger position before the
    batch); flat signals keep the previous target, so they trade nothing. Numpy over the rows grouped by
    symbol (a pandas groupby ffill/shift cost ~2 ms a 5-row batch, twice a batch with the shadows)."""
    n = len(symbols)
    if n == 0:
        return np.zeros(0)
    codes, uniq = pd.factorize(np.asarray(symbols), use_na_sentinel=False)
    order = np.argsort(codes, kind="stable")  # each symbol's rows together, in row order
    code = codes[order]
    set_here = ((direction != 0) & ~np.isnan(target))[order]
    first = np.r_[True, code[1:] != code[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    last_set = np.maximum.accumulate(np.where(set_here, np.arange(n), -1))  # the latest row that set a target...
    last_set = np.where(last_set >= group_start, last_set, -1)  # ...within the symbol's own rows
    start = np.array([positions.get(s, 0.0) for s in uniq], dtype=float)[code]
    current = np.where(last_set >= 0, np.asarray(target, dtype=float)[order][np.maximum(last_set, 0)], start)
    previous = np.where(first, start, np.r_[np.nan, current[:-1]])
    out = np.empty(n)
    out[order] = np.where(direction[order] != 0, current - previous, 0.0)
    return out


def paper_ledger(cfg) -> PaperLedger:
    """A fresh paper ledger with the loop's costs (`decisions.ledger`), for shadows that never execute."""
    return PaperLedger(cfg.initial_cash, cfg.fee_bps, cfg.slippage_bps, cfg.default_spread_bps, cfg.reward_horizon_bars)


class ShadowRunner:
    """One strategy traded on a paper ledger of its own: no risk, no veto, never executed."""

    def __init__(self, cfg: ShadowConfig, strategy, ledger: PaperLedger):
        self.cfg = cfg
        self.strategy = strategy
        self.sizer = make_sizer(cfg.sizer.name, **cfg.sizer.params)
        self.ledger = ledger

    def decide(self, frame: pd.DataFrame, regimes: np.ndarray, ids: list[str]) -> list[dict]:
        sig = self.strategy.signals(frame, regimes)
        snap = self.ledger.snapshot()
        price = column(frame, "close", float)
        sized = self.sizer.size(sig.direction, sig.strength, sig.expected_return, column(frame, "rv_30", float), price,
                                snap["equity"], horizon_bars=self.strategy.horizon_bars)
        qty = targets_to_orders(column(frame, "symbol"), sig.direction, sized.quantity, snap["positions"])
        rows = np.flatnonzero(np.abs(qty) > 0)
        if not len(rows):
            return []
        orders = pd.DataFrame({"decision_id": [ids[i] for i in rows], "event_ts": utc_stamps(frame["event_ts"], rows),
                               "symbol": column(frame, "symbol")[rows], "strategy": self.strategy.name, "quantity": qty[rows]})
        self.ledger.submit(orders)
        stamps = utc_datetimes(frame["event_ts"])  # UTC datetimes: what the audit log stores
        return [{"decision_id": ids[i], "stage": f"shadow:{self.cfg.name}", "event_ts": stamps[i],
                 "payload": {"strategy": self.strategy.name, "quantity": float(qty[i]), "price": float(price[i])}} for i in rows]


class PolicyShadow:
    """A candidate RL policy sizing the same strategy signals on its own paper ledger (delta PnL vs live).
    A new candidate version starts a fresh ledger; the comparison is not checkpointed."""

    def __init__(self, ledger_cfg):
        self.ledger_cfg = ledger_cfg
        self.version: str | None = None
        self.ledger: PaperLedger | None = None

    def trade(self, version: str, frame: pd.DataFrame, ids: list[str], direction: np.ndarray,
              target_position: np.ndarray) -> list[dict]:
        if version != self.version:
            self.version = version
            self.ledger = paper_ledger(self.ledger_cfg)
        snap = self.ledger.snapshot()
        price = column(frame, "close", float)
        symbols = column(frame, "symbol")
        sized = policy_sizing(direction, target_position, price, snap["equity"])
        qty = targets_to_orders(symbols, direction, sized.quantity, snap["positions"])
        rows = np.flatnonzero(qty != 0)
        if not len(rows):
            return []
        self.ledger.submit(pd.DataFrame({"decision_id": [ids[i] for i in rows], "event_ts": utc_stamps(frame["event_ts"], rows),
                                         "symbol": symbols[rows], "strategy": "policy_shadow", "quantity": qty[rows]}))
        stamps = utc_datetimes(frame["event_ts"])  # UTC datetimes: what the audit log stores
        return [{"decision_id": ids[i], "stage": "shadow:policy", "event_ts": stamps[i],
                 "payload": {"policy_version": version, "quantity": float(qty[i]), "price": float(price[i])}} for i in rows]


class DecisionEngine:
    def __init__(self, cfg: DecisionConfig, symbols: list[str], namespace: str, feature_spec: MarketFeatureSpec,
                 model_dir: Path, policy_window: int = 8):
        self.cfg = cfg
        self.namespace = namespace
        self.feature_names = feature_spec.names
        catalogue = {s.name: s for s in default_market_strategies(symbols)}
        wanted = cfg.strategies or list(catalogue)
        unknown = [w for w in wanted if w not in catalogue]
        if unknown:
            raise ValueError(f"decisions.strategies: unknown strategy {unknown}; known: {sorted(catalogue)}")
        self.strategies = [catalogue[w] for w in wanted]
        self.regimes = RegimeDetector()
        # Pending rewards are bounded: a held decision nobody approves is evicted, not kept for ever.
        self.bandit = LinUCB([s.name for s in self.strategies], CONTEXT_DIM, alpha=cfg.alpha, epsilon=cfg.epsilon,
                             seed=cfg.seed, max_pending=MAX_PENDING_REWARDS)
        # "rl_policy": sizes come from a served RL policy (the `act` callable given to decide) on TradingEnv
        # observations built from the feature rows; `policy_window` is that env's feature window.
        self.uses_policy = cfg.sizer.name == "rl_policy"
        self.sizer = None if self.uses_policy else make_sizer(cfg.sizer.name, **cfg.sizer.params)
        self.observations = LiveObservations(policy_window) if self.uses_policy else None
        self.policy_shadow = PolicyShadow(cfg.ledger)
        self.recent_pnl = 0.0
        self.model_dir = Path(model_dir)
        self.edge: EdgeModel | None = None
        self._warmup: list[pd.DataFrame] = []
        self._warmup_rows = 0
        self._fitting: Future | None = None  # the confidence model's fit, on a thread (see _learn_edge)
        self._rows_since_fit = 0
        # Shadows get their own strategy instances: stateful ones (pairs) must see each row once.
        self.shadows = [ShadowRunner(sc, self._strategy(sc.strategy, {s.name: s for s in default_market_strategies(symbols)}),
                                     paper_ledger(cfg.ledger)) for sc in cfg.shadows]
        self.counts = {"decisions": 0, "orders": 0, "rewards_applied": 0, "rewards_unknown": 0}

    @staticmethod
    def _strategy(name: str, catalogue: dict):
        if name not in catalogue:
            raise ValueError(f"decisions.shadows.strategy: unknown strategy {name!r}; known: {sorted(catalogue)}")
        return catalogue[name]

    # -- the hot path -------------------------------------------------------------------------
    def decide(self, frame: pd.DataFrame, snapshot: dict, act=None) -> DecisionBatch:
        """`act(obs) -> {"actions", "version"[, "shadow_actions", "shadow_version"]}` serves the RL policy
        when the sizer is "rl_policy"."""
        n = len(frame)
        symbols = column(frame, "symbol")
        ids = decision_ids(self.namespace, symbols, frame["event_ts"])
        regimes = self.regimes.classify(frame)
        contexts = build_context(frame, regimes, np.full(n, self.recent_pnl * 100.0))  # in percent, like ret_15
        selection = self.bandit.select(contexts)
        arm = selection.arm
        cols = np.arange(n)
        signals = [s.signals(frame, regimes) for s in self.strategies]
        direction = np.stack([s.direction for s in signals])[arm, cols]
        strength = np.stack([s.strength for s in signals])[arm, cols]
        expected = np.stack([s.expected_return for s in signals])[arm, cols]
        price = column(frame, "close", float)
        vol = column(frame, "rv_30", float)
        horizons = np.array([s.horizon_bars for s in self.strategies])[arm]  # each strategy's expected return is over its own horizon
        served = None
        if self.uses_policy:
            if act is None:
                raise RuntimeError("decisions.sizer.name is 'rl_policy' but no policy server was given to decide()")
            served = act(self.observations.build_compact(frame, regimes, snapshot))  # expanded where it is served
            sized = policy_sizing(direction, served["actions"][:, 0], price, float(snapshot["equity"]))
        else:
            sized = self.sizer.size(direction, strength, expected, vol, price, float(snapshot["equity"]), horizon_bars=horizons)
        target = sized.quantity * selection.size_scale
        qty = targets_to_orders(symbols, direction, target, snapshot.get("positions", {}))
        qty[np.abs(qty * price) < self.cfg.min_order_notional] = 0.0
        order_rows = np.flatnonzero(qty != 0)

        confidence = np.full(n, 0.5)
        explanations: dict[int, list] = {}
        if self.edge is not None:
            p_up = self.edge.predict_proba(frame)
            confidence = np.where(direction < 0, 1.0 - p_up, p_up)
            if len(order_rows):
                explained = self.edge.explain(take(frame, order_rows), top_k=self.cfg.explain_top_k)
                explanations = dict(zip(order_rows.tolist(), explained))
        self._learn_edge(frame)

        names = [s.name for s in self.strategies]
        regime_names = REGIME_NAMES[regimes]
        orders = pd.DataFrame({
            "decision_id": [ids[i] for i in order_rows], "event_ts": utc_stamps(frame["event_ts"], order_rows),
            "symbol": symbols[order_rows], "strategy": [names[arm[i]] for i in order_rows],
            "regime": regime_names[order_rows], "quantity": qty[order_rows], "price": price[order_rows],
            "volatility": vol[order_rows], "confidence": confidence[order_rows],
            "notional": np.abs(qty[order_rows] * price[order_rows])}) if len(order_rows) else NO_ORDERS
        feats = float_matrix(frame, self.feature_names).tolist()
        stamps = utc_datetimes(frame["event_ts"])  # UTC datetimes: what the audit log stores
        sizing_meta = ({"method": "rl_policy", "policy_version": served["version"]} if served is not None
                       else {"method": self.sizer.name})
        records = []
        for i in range(n):
            records.append({"decision_id": ids[i], "stage": "decision", "event_ts": stamps[i], "payload": {
                "symbol": symbols[i], "regime": regime_names[i], "strategy": names[arm[i]], "explored": bool(selection.explored[i]),
                "ucb": float(selection.ucb[i, arm[i]]),
                "signal": {"direction": int(direction[i]), "strength": float(strength[i]), "expected_return": float(expected[i])},
                "sizing": sizing_meta | {"fraction": float(sized.fraction[i]), "target": float(target[i]),
                                         "quantity": float(qty[i])},
                "confidence": float(confidence[i]), "price": float(price[i]),
                "features": {k: (v if v == v else None) for k, v in zip(self.feature_names, feats[i])},  # NaN -> null
                "explanation": [{"feature": f, "shap": float(v)} for f, v in explanations.get(i, [])]}})
        self.counts["decisions"] += n
        self.counts["orders"] += len(order_rows)
        return DecisionBatch(orders, records, contexts[order_rows], arm[order_rows], n,
                             frame, regimes, ids, direction, served)

    def shadow_step(self, batch: DecisionBatch) -> list[dict]:
        """The shadows' turn on a decided batch: their ledgers fill and mark on its bars, then they decide.
        Never executed and outside the feedback loop, so the caller runs this after the live decisions are
        durable (off the latency path); batches must still come in order, as for `decide`."""
        frame = batch.frame
        for shadow in self.shadows:
            shadow.ledger.on_market(frame)
        if self.policy_shadow.ledger is not None:
            self.policy_shadow.ledger.on_market(frame)
        records = []
        for shadow in self.shadows:
            records.extend(shadow.decide(frame, batch.regimes, batch.ids))
        served = batch.served
        if served is not None and "shadow_actions" in served:
            records.extend(self.policy_shadow.trade(served["shadow_version"], frame, batch.ids, batch.direction,
                                                    served["shadow_actions"][:, 0]))
        return records

    def _learn_edge(self, frame: pd.DataFrame | Columns) -> None:
        """Fit the confidence model once on the first rows seen; it only ever sees the past.

        The fit and SHAP's explainer (built on first use) took ~0.9 s, a stall for every row queued behind that
        batch (the p99 of a short `edgeray run`). So they run on a thread, and the model is used from the first batch
        after `edge_model_activation_lag_rows` more rows, waiting for the thread only if it is not done by then: which
        rows get the model never depends on how fast the fit was (0: fitted and used at once, blocking)."""
        if self.edge is not None:
            return
        if self._fitting is None:
            if self._warmup_rows >= self.cfg.edge_model_warmup_rows:
                return  # a fit failed before: its error was raised then
            self._warmup.append(frame.to_frame() if isinstance(frame, Columns) else frame)
            self._warmup_rows += len(frame)
            if self._warmup_rows < self.cfg.edge_model_warmup_rows:
                return
            history = pd.concat(self._warmup, ignore_index=True)
            self._warmup = []
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-model-fit")
            self._fitting = pool.submit(self._fit_edge, history)
            pool.shutdown(wait=False)  # the submitted fit still runs; the pool's thread ends with it
            self._rows_since_fit = 0
            if self.cfg.edge_model_activation_lag_rows > 0:
                return
        else:
            self._rows_since_fit += len(frame)
            if self._rows_since_fit < self.cfg.edge_model_activation_lag_rows:
                return
        fitting, self._fitting = self._fitting, None
        self.edge = fitting.result()  # a fit's error is raised here, on the loop's thread
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.edge.save(self.model_dir / "edge_model.joblib")

    def _fit_edge(self, history: pd.DataFrame) -> EdgeModel:
        model = EdgeModel(self.feature_names, horizon_bars=self.cfg.edge_model_horizon_bars).fit(history)
        model.explain(history.iloc[-1:], top_k=1)  # builds the SHAP explainer here, not on the first order's batch
        return model

    def register(self, ids: list[str], arms: np.ndarray, contexts: np.ndarray) -> None:
        if len(ids):
            self.bandit.register(list(ids), np.asarray(arms), np.asarray(contexts))

    def on_outcomes(self, outcomes: pd.DataFrame) -> None:
        if outcomes is None or outcomes.empty:
            return
        rewards = outcomes["reward"].to_numpy(float)
        result = self.bandit.reward(outcomes["decision_id"].tolist(), rewards)
        self.counts["rewards_applied"] += int(result["applied"])
        self.counts["rewards_unknown"] += int(result["unknown"])
        for r in rewards:
            self.recent_pnl = (1 - PNL_EWMA_ALPHA) * self.recent_pnl + PNL_EWMA_ALPHA * float(r)

    def shadow_report(self, live_equity: float) -> list[dict]:
        report = [{"name": s.cfg.name, "strategy": s.strategy.name, "equity": s.ledger.equity,
                   "delta_pnl_vs_live": s.ledger.equity - live_equity} for s in self.shadows]
        if self.policy_shadow.ledger is not None:
            equity = self.policy_shadow.ledger.equity
            report.append({"name": "policy_shadow", "policy_version": self.policy_shadow.version, "equity": equity,
                           "delta_pnl_vs_live": equity - live_equity})
        return report

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"bandit": self.bandit.state_dict(), "regimes": self.regimes.state_dict(),
                "strategies": {s.name: s.state_dict() for s in self.strategies if hasattr(s, "state_dict")},
                "recent_pnl": self.recent_pnl, "counts": dict(self.counts),
                "edge_model": str(self.model_dir / "edge_model.joblib") if self.edge is not None else None,
                # The warm-up rows are not checkpointed (they would make every checkpoint large): after a
                # restart before the edge model exists, it is fitted on rows seen from then on.
                "shadows": {s.cfg.name: s.ledger.state_dict(include_curve=False) for s in self.shadows},
                "observations": self.observations.state_dict() if self.observations else None}

    def load_state(self, state: dict) -> None:
        self.bandit = LinUCB.from_state(state["bandit"])
        self.regimes = RegimeDetector.from_state(state["regimes"])
        for s in self.strategies:
            if s.name in state["strategies"]:
                restored = type(s).from_state(state["strategies"][s.name])
                self.strategies[self.strategies.index(s)] = restored
        self.recent_pnl = state["recent_pnl"]
        self.counts = dict(state["counts"])
        if state["edge_model"]:
            self.edge = EdgeModel.load(state["edge_model"])
        for s in self.shadows:
            if s.cfg.name in state["shadows"]:
                s.ledger = PaperLedger.from_state(state["shadows"][s.cfg.name])
        if self.observations is not None and state.get("observations"):
            self.observations.load_state(state["observations"])
