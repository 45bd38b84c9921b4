"""The numpy fast paths behind DecisionEngine.decide give exactly what the pandas code gave.

tests/decide_reference/ holds frozen copies of the pieces as they were before the fast paths (regime,
context, LinUCB, strategies, sizing, edge model). Each test runs the reference and the current code side
by side on the same micro-batches, each with its own state, and compares every output bit for bit (signed
zeros included; NaN where NaN), every warning, every error message for bad input, the final state_dicts
as JSON text, and that a reference checkpoint loads into the current code and carries on identically.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import policies.engine as engine_module
from edgeray import explain as new_explain
from edgeray import regime as new_regime
from edgeray.config import DecisionConfig, PipelineConfig, ShadowConfig
from edgeray.features.market import MarketFeatureSpec, MarketFeatureState
from edgeray.generator import generate_bars
from policies import context as new_context
from policies import linucb as new_linucb
from policies import sizing as new_sizing
from policies import strategies as new_strategies
from tests.decide_reference import context as ref_context
from tests.decide_reference import explain as ref_explain
from tests.decide_reference import linucb as ref_linucb
from tests.decide_reference import regime as ref_regime
from tests.decide_reference import sizing as ref_sizing
from tests.decide_reference import strategies as ref_strategies

ROOT = Path(__file__).resolve().parents[1]
NEW = SimpleNamespace(regime=new_regime, context=new_context, linucb=new_linucb, sizing=new_sizing,
                      strategies=new_strategies, explain=new_explain)
REF = SimpleNamespace(regime=ref_regime, context=ref_context, linucb=ref_linucb, sizing=ref_sizing,
                      strategies=ref_strategies, explain=ref_explain)
FEATURES = MarketFeatureSpec().names
BTC_SYMBOLS = ["BTCUSDT-PERP", "GBPUSD"]  # as configs/pipeline.yaml: the pair's second leg never prints here
SYN_SYMBOLS = ["SYN-A", "SYN-B"]
EDGE_FIT_ROWS = 800


# ----------------------------------------------------------------------------------------------- comparing
def assert_same(new, old, what: str) -> None:
    """Same dtype, shape and bits (NaN where NaN: their payload is not a value)."""
    new, old = np.asarray(new), np.asarray(old)
    assert new.dtype == old.dtype, f"{what}: dtype {new.dtype} != {old.dtype}"
    assert new.shape == old.shape, f"{what}: shape {new.shape} != {old.shape}"
    if new.dtype.kind in "fc":
        nan = np.isnan(old)
        assert np.array_equal(np.isnan(new), nan), f"{what}: NaN in different places"
        assert new[~nan].tobytes() == old[~nan].tobytes(), f"{what}: values differ: {new} != {old}"
    else:
        assert np.array_equal(new, old), f"{what}: {new} != {old}"


def assert_same_json(new, old, what: str) -> None:
    a, b = json.dumps(new, default=str), json.dumps(old, default=str)
    assert a == b, f"{what}: state differs\nnew: {a[:2000]}\nold: {b[:2000]}"


def both(call_new, call_old, what: str):
    """Run both; they must raise the same error or warn the same warnings. Returns (new, old) results."""
    out = []
    for call in (call_new, call_old):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = ("ok", call())
            except Exception as exc:  # noqa: BLE001 - the point is to compare them
                result = ("error", (type(exc), str(exc)))
        out.append((result, [(w.category, str(w.message)) for w in caught]))
    (new, new_warn), (old, old_warn) = out
    assert new_warn == old_warn, f"{what}: warnings differ: {new_warn} != {old_warn}"
    assert new[0] == old[0], f"{what}: new {new} vs old {old}"
    if new[0] == "error":
        assert new[1] == old[1], f"{what}: errors differ: {new[1]} != {old[1]}"
        return None
    return new[1], old[1]


# ----------------------------------------------------------------------------------------------- frames
def decision_frame(events: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """actors.feature_streamer.decision_frame, built the same way (one frame from the columns, so the same columns,
    dtypes and blocks): importing that module pulls in Ray and Feast, ~10 s of this test's budget."""
    bid, ask = events["bid"].to_numpy(float), events["ask"].to_numpy(float)
    mid = (bid + ask) / 2.0
    close = events["close"].to_numpy(float) if "close" in events else mid
    opened = events["open"].to_numpy(float) if "open" in events else mid
    return pd.DataFrame({**{c: features[c].to_numpy() for c in features.columns}, "open": opened, "close": close,
                         "bid": bid, "ask": ask, "received_ns": events["received_ns"].to_numpy(),
                         "features_in_ns": np.int64(1_700_000_000_000_000_000)})


def btc_decision_rows(n_rows: int) -> pd.DataFrame:
    """The first rows of the real BTC file as the streamer sends them (bench/decisions.py feature_rows())."""
    from edgeray.config import SourceConfig
    from edgeray.deadletter import DeadLetterStore
    from edgeray.ingest import IngestCore
    from edgeray.sources import load_source, micro_batches
    from tests.conftest import shared_file

    path = shared_file("markets/btc_perp_1m_2022-01.csv")
    cfg = PipelineConfig.load(ROOT / "configs" / "pipeline.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        core = IngestCore(DeadLetterStore(Path(tmp) / "deadletters.jsonl"),
                          lateness=pd.Timedelta(seconds=cfg.ingestion.lateness_seconds))
        released = []
        for kind, frame in load_source(SourceConfig(type="bars", path=str(path), symbol=BTC_SYMBOLS[0])):
            for chunk in micro_batches(frame.iloc[:n_rows], 1000):
                released += core.ingest(kind, chunk, "replay").released
        released += core.flush()
    market = MarketFeatureState(cfg.features.spec())
    frames = []
    for batch in released:
        events = batch.to_pandas()
        frames.append(decision_frame(events, market.update(events, "bar")))
    return pd.concat(frames, ignore_index=True)


def synthetic_rows(n_bars: int = 1500) -> pd.DataFrame:
    """Two interleaved symbols (both pair legs) with quotes, plus planted NaN / inf / zero features and NaN closes."""
    bars = generate_bars(tuple(SYN_SYMBOLS), n_bars=n_bars, seed=21)
    feats = MarketFeatureState().update(bars, "bar")
    frame = pd.concat([bars[["symbol", "event_ts", "open", "close", "bid", "ask"]].reset_index(drop=True),
                       feats[FEATURES]], axis=1)
    rng = np.random.default_rng(4)
    n = len(frame)
    for name in ("rv_30", "ret_15", "mom_30", "vwap_dist_30", "volume_ratio_30", "spread_bps", "ret_1", "ret_5"):
        rows = rng.choice(n, size=n // 40, replace=False)
        frame.loc[rows[: len(rows) // 2], name] = np.nan
        frame.loc[rows[len(rows) // 2:], name] = rng.choice([np.inf, -np.inf, 0.0, -0.0], size=len(rows) - len(rows) // 2)
    frame.loc[rng.choice(n, size=15, replace=False), "close"] = np.nan  # a pair leg with no price this bar
    return frame


def batches(rows: pd.DataFrame, size: int, warm: int) -> list[pd.DataFrame]:
    """One `warm`-row batch (the lfilter path), then `size`-row micro-batches, each with a fresh index like the bench."""
    cuts = ([0, warm] if warm else [0]) + list(range(warm + size, len(rows), size)) + [len(rows)]
    cuts = sorted(set(cuts))
    return [rows.iloc[a:b].reset_index(drop=True) for a, b in zip(cuts[:-1], cuts[1:])]


@pytest.fixture(scope="module")
def btc_rows() -> pd.DataFrame:
    return btc_decision_rows(5000)


@pytest.fixture(scope="module")
def syn_rows() -> pd.DataFrame:
    return synthetic_rows()


# ----------------------------------------------------------------------------------------------- side by side
def _or_error(call):
    """The edge model refuses inf features (planted in the synthetic frame): its message is then the output."""
    try:
        return call()
    except ValueError as exc:
        return np.array([str(exc)])


class Side:
    """One implementation's pieces, wired as decide() wires them, each with its own state."""

    def __init__(self, mods, symbols: list[str], edge_frame: pd.DataFrame):
        self.mods = mods
        self.detector = mods.regime.RegimeDetector()
        self.strategies = mods.strategies.default_market_strategies(symbols)
        self.bandit = mods.linucb.LinUCB([s.name for s in self.strategies], mods.context.CONTEXT_DIM, alpha=1.0,
                                         epsilon=0.2, seed=3, min_budget=0.3, max_pending=50)
        self.sizers = [mods.sizing.make_sizer("kelly", fraction=0.25, cap=0.2),
                       mods.sizing.make_sizer("fixed_fraction", fraction=0.02, scale_by_strength=True),
                       mods.sizing.make_sizer("vol_target", scale_by_strength=True)]
        self.edge = mods.explain.EdgeModel(FEATURES, horizon_bars=15).fit(edge_frame)
        self.logistic = mods.explain.EdgeModel(FEATURES, horizon_bars=5, model="logistic").fit(edge_frame)
        self.recent_pnl = 0.0
        self.pending: list[list[str]] = []

    def step(self, k: int, frame: pd.DataFrame) -> dict:
        out = {}
        n = len(frame)
        out["regimes"] = regimes = self.detector.classify(frame)
        out["contexts"] = contexts = self.mods.context.build_context(frame, regimes, np.full(n, self.recent_pnl * 100.0))
        selection = self.bandit.select(contexts)
        for field in ("arm", "ucb", "explored", "size_scale"):
            out[f"selection.{field}"] = getattr(selection, field)
        arm, cols = selection.arm, np.arange(n)
        signals = [s.signals(frame, regimes) for s in self.strategies]
        for s, sig in zip(self.strategies, signals):
            for field in ("direction", "strength", "expected_return"):
                out[f"{s.name}.{field}"] = getattr(sig, field)
        direction = np.stack([s.direction for s in signals])[arm, cols]
        strength = np.stack([s.strength for s in signals])[arm, cols]
        expected = np.stack([s.expected_return for s in signals])[arm, cols]
        price, vol = frame["close"].to_numpy(float), frame["rv_30"].to_numpy(float)
        horizons = np.array([s.horizon_bars for s in self.strategies])[arm]
        price_ok = np.where(np.isfinite(price), price, 1.0)
        for j, sizer in enumerate(self.sizers):
            h = (horizons, None, 3)[(k + j) % 3]  # per-row, the sizer's own and a scalar horizon, in turn
            sized = sizer.size(direction, strength, expected, vol, price_ok, 1e6, horizon_bars=h)
            out[f"sizer{j}.fraction"], out[f"sizer{j}.quantity"] = sized.fraction, sized.quantity
        out["p_up"] = _or_error(lambda: self.edge.predict_proba(frame))
        if k % 3 == 0:
            out["p_up_logistic"] = _or_error(lambda: self.logistic.predict_proba(frame))
        traded = np.flatnonzero(direction != 0)[:2]  # SHAP only on the rows that trade, as decide()
        if len(traded):
            out["explain"] = _or_error(lambda: np.array(self.edge.explain(frame.iloc[traded], top_k=5),
                                                        dtype=object).ravel().astype(str))
        # Delayed rewards three batches on: the bandit's A^-1, budgets and exploration change as in the loop.
        ids = [f"{k}-{i}" for i in traded]
        self.bandit.register(ids, arm[traded], contexts[traded])
        self.pending.append(ids)
        if len(self.pending) > 3:
            due = self.pending.pop(0)
            rewards = np.sin(np.arange(len(due)) + k) * 0.01
            out["reward"] = np.array(list(self.bandit.reward(due, rewards).values()))
            for r in rewards:
                self.recent_pnl = 0.95 * self.recent_pnl + 0.05 * float(r)
        return out

    def state(self) -> dict:
        return {"bandit": self.bandit.state_dict(), "regimes": self.detector.state_dict(),
                "strategies": [s.state_dict() for s in self.strategies]}

    def load(self, state: dict) -> None:
        """Rebuild every stateful piece from a checkpoint (JSON round trip, as on disk)."""
        state = json.loads(json.dumps(state))
        self.bandit = self.mods.linucb.LinUCB.from_state(state["bandit"])
        self.detector = self.mods.regime.RegimeDetector.from_state(state["regimes"])
        self.strategies = [type(s).from_state(st) for s, st in zip(self.strategies, state["strategies"])]


def run_side_by_side(rows: pd.DataFrame, symbols: list[str], size: int, warm: int) -> None:
    edge_frame = rows.iloc[:EDGE_FIT_ROWS].replace([np.inf, -np.inf], np.nan)
    new, old = Side(NEW, symbols, edge_frame), Side(REF, symbols, edge_frame)
    frames = batches(rows, size, warm)
    for k, frame in enumerate(frames):
        if k == len(frames) // 2:
            new.load(old.state())  # a checkpoint written by the reference code restores into the current code
        result = both(lambda: new.step(k, frame), lambda: old.step(k, frame), f"batch {k}")
        assert result is not None, f"batch {k} raised"
        got, want = result
        assert got.keys() == want.keys(), f"batch {k}: outputs {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_same(got[key], want[key], f"batch {k} ({len(frame)} rows) {key}")
    assert_same_json(new.state(), old.state(), "final state_dicts")


@pytest.mark.parametrize(("size", "n_rows", "warm"), [(1, 500, 300), (2, 600, 300), (7, 1350, 300), (100, 5000, 0)])
def test_pieces_match_the_reference_on_the_real_btc_file(btc_rows, size, n_rows, warm):
    run_side_by_side(btc_rows.iloc[:n_rows], BTC_SYMBOLS, size, warm)


@pytest.mark.parametrize(("size", "n_rows", "warm"), [(1, 500, 300), (7, 1350, 300), (100, 3000, 0)])
def test_pieces_match_the_reference_on_two_symbols(syn_rows, size, n_rows, warm):
    run_side_by_side(syn_rows.iloc[:n_rows], SYN_SYMBOLS, size, warm)


def test_baseline_paths_agree_bit_for_bit_across_any_split(syn_rows):
    """The plain-float small-batch baseline and lfilter continue each other's state exactly."""
    rows = syn_rows.iloc[:1400]
    whole = ref_regime.RegimeDetector()
    want = whole.classify(rows)
    rng = np.random.default_rng(8)
    cuts = np.sort(rng.choice(np.arange(1, len(rows)), size=60, replace=False))
    split = new_regime.RegimeDetector()
    got = np.concatenate([split.classify(rows.iloc[a:b].reset_index(drop=True))
                          for a, b in zip([0, *cuts], [*cuts, len(rows)])])
    assert_same(got, want, "regimes")
    assert_same_json(split.state_dict(), whole.state_dict(), "detector state")


# ----------------------------------------------------------------------------------------------- the engine
PATCHED = ("RegimeDetector", "build_context", "LinUCB", "make_sizer", "policy_sizing", "default_market_strategies",
           "EdgeModel")


@contextmanager
def reference_pieces():
    """policies.engine with the reference pieces in its namespace (the engine file itself is unchanged)."""
    reference = {"RegimeDetector": ref_regime.RegimeDetector, "build_context": ref_context.build_context,
                 "LinUCB": ref_linucb.LinUCB, "make_sizer": ref_sizing.make_sizer,
                 "policy_sizing": ref_sizing.policy_sizing,
                 "default_market_strategies": ref_strategies.default_market_strategies,
                 "EdgeModel": ref_explain.EdgeModel}
    saved = {name: getattr(engine_module, name) for name in PATCHED}
    for name, value in reference.items():
        setattr(engine_module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(engine_module, name, value)


def test_decide_matches_the_reference_end_to_end(syn_rows, tmp_path):
    cfg = DecisionConfig(epsilon=0.2, edge_model_warmup_rows=500, edge_model_activation_lag_rows=150, min_order_notional=10.0,
                         shadows=[ShadowConfig(name="mom", strategy="momentum")])
    spec = MarketFeatureSpec()
    new = engine_module.DecisionEngine(cfg, SYN_SYMBOLS, "t", spec, tmp_path / "new")
    with reference_pieces():
        old = engine_module.DecisionEngine(cfg, SYN_SYMBOLS, "t", spec, tmp_path / "old")
    positions = {"new": {}, "old": {}}
    seen = {"orders": 0, "shadow": 0, "explained": 0}
    pending = {"new": [], "old": []}
    rows = syn_rows.iloc[:1000].replace([np.inf, -np.inf], np.nan)  # decide() refuses inf (the edge model does)
    for k, frame in enumerate(batches(rows, 7, 0)):
        out = {}
        for side, eng in (("new", new), ("old", old)):
            with reference_pieces() if side == "old" else _nothing():
                batch = eng.decide(frame, {"equity": 1e6, "positions": dict(positions[side])})
                # The shadows (when the engine runs them apart from decide) trade the same strategies' signals.
                batch.shadow_records = eng.shadow_step(batch) if hasattr(eng, "shadow_step") else []
                eng.register(batch.orders["decision_id"].tolist(), batch.arms, batch.contexts)
                pending[side].append(batch.orders["decision_id"].tolist())
                if len(pending[side]) > 3:
                    due = pending[side].pop(0)
                    eng.on_outcomes(pd.DataFrame({"decision_id": due, "reward": np.cos(np.arange(len(due)) + k) * 0.01}))
            for sym, qty in zip(batch.orders["symbol"], batch.orders["quantity"]):
                positions[side][sym] = positions[side].get(sym, 0.0) + qty
            out[side] = batch
        got, want = out["new"], out["old"]
        pd.testing.assert_frame_equal(got.orders, want.orders, check_exact=True)
        assert json.dumps(got.records, default=str) == json.dumps(want.records, default=str), f"batch {k}: records differ"
        assert json.dumps(got.shadow_records, default=str) == json.dumps(want.shadow_records, default=str), \
            f"batch {k}: shadow records differ"
        for field in ("regimes", "direction"):
            if getattr(want, field, None) is not None:
                assert_same(getattr(got, field), getattr(want, field), f"batch {k} {field}")
        assert_same(got.contexts, want.contexts, f"batch {k} contexts")
        assert_same(got.arms, want.arms, f"batch {k} arms")
        assert got.n_decisions == want.n_decisions
        seen["orders"] += len(got.orders)
        seen["shadow"] += len(got.shadow_records)
        seen["explained"] += sum(bool(r["payload"].get("explanation")) for r in got.records)
    assert seen["orders"] and seen["explained"] and (seen["shadow"] or not hasattr(new, "shadow_step")), seen
    assert new.edge is not None and old.edge is not None
    state_new, state_old = new.state_dict(), old.state_dict()
    assert Path(state_new.pop("edge_model")).name == Path(state_old.pop("edge_model")).name
    assert_same_json(state_new, state_old, "engine state_dict")


@contextmanager
def _nothing():
    yield


# ----------------------------------------------------------------------------------------------- bad input
def _frame(n: int = 6, symbol="X", **overrides) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    frame = pd.DataFrame({"symbol": symbol, "event_ts": pd.date_range("2024-01-02 23:57", periods=n, freq="1min", tz="UTC"),
                          "close": 100.0 + rng.random(n)})
    for name in FEATURES:
        frame[name] = rng.normal(0, 0.01, n)
    frame["rv_30"] = 0.001 + 0.001 * rng.random(n)
    frame["volume_ratio_30"] = 1.0 + rng.random(n)
    frame["spread_bps"] = 5.0 * rng.random(n)
    for name, value in overrides.items():
        frame[name] = value
    return frame


def _from_matrix(n: int) -> pd.DataFrame:
    """Every feature from one C-ordered 2-D array: the float block is Fortran-ordered, its columns strided views."""
    rng = np.random.default_rng(n)
    frame = pd.DataFrame(rng.normal(0, 0.01, (n, len(FEATURES))), columns=FEATURES)
    frame["rv_30"] = 0.001 + 0.001 * rng.random(n)
    frame.insert(0, "symbol", ["A", "B"] * (n // 2))
    frame.insert(1, "event_ts", pd.date_range("2024-01-02", periods=n, freq="1min", tz="UTC"))
    frame["close"] = 100.0 + rng.random(n)
    return frame


def _unsorted() -> pd.DataFrame:
    f = _frame()
    f["event_ts"] = f["event_ts"].iloc[::-1].to_numpy()
    return f


def _with_nat() -> pd.DataFrame:
    f = _frame()
    f.loc[2, "event_ts"] = pd.NaT
    return f


def _dup_column(name: str, n: int = 6):
    def make() -> pd.DataFrame:
        f = _frame(symbol=["A", "B", "A", "B", "A", "B"]).iloc[:n]
        return pd.concat([f, f[[name]]], axis=1)  # frame[name] is a DataFrame: (n, 2) where a column was (n,)
    return make


ODD_FRAMES = {
    "plain": _frame,
    "no symbol": lambda: _frame().drop(columns="symbol"),
    "no event_ts": lambda: _frame().drop(columns="event_ts"),
    "no rv_30": lambda: _frame().drop(columns="rv_30"),
    "no close": lambda: _frame().drop(columns="close"),
    "text feature": lambda: _frame(ret_5="x"),
    "int feature": lambda: _frame(mom_30=np.arange(6)),
    "nullable feature": lambda: _frame(ret_15=pd.array([0.1, None, 0.2, 0.0, -0.1, 0.3], dtype="Float64")),
    "object floats": lambda: _frame(vwap_dist_30=np.array([0.1, 0.2, None, 0.0, 1.0, 2.0], dtype=object)),
    "inf feature": lambda: _frame(volume_ratio_30=[np.inf, 0.0, -np.inf, 1.0, np.nan, 2.0]),
    "duplicate rv_30": _dup_column("rv_30"),
    "duplicate close": _dup_column("close"),
    "duplicate volume_ratio_30": _dup_column("volume_ratio_30"),
    "duplicate mom_30": _dup_column("mom_30"),
    "duplicate ret_1": _dup_column("ret_1"),
    "duplicate symbol": _dup_column("symbol"),
    "duplicate event_ts": _dup_column("event_ts"),
    "duplicate spread_bps": _dup_column("spread_bps"),
    "duplicate rv_30 (1 rows)": _dup_column("rv_30", 1),
    "duplicate rv_30 (2 rows)": _dup_column("rv_30", 2),
    "duplicate ret_15 (1 rows)": _dup_column("ret_15", 1),
    "duplicate ret_15 (2 rows)": _dup_column("ret_15", 2),
    "duplicate ret_5 (1 rows)": _dup_column("ret_5", 1),
    "duplicate ret_5 (2 rows)": _dup_column("ret_5", 2),
    "duplicate ret_1 (1 rows)": _dup_column("ret_1", 1),
    "duplicate ret_1 (2 rows)": _dup_column("ret_1", 2),
    "duplicate mom_30 (1 rows)": _dup_column("mom_30", 1),
    "duplicate mom_30 (2 rows)": _dup_column("mom_30", 2),
    "duplicate vwap_dist_30 (1 rows)": _dup_column("vwap_dist_30", 1),
    "duplicate vwap_dist_30 (2 rows)": _dup_column("vwap_dist_30", 2),
    "duplicate close (1 rows)": _dup_column("close", 1),
    "duplicate close (2 rows)": _dup_column("close", 2),
    "duplicate spread_bps (1 rows)": _dup_column("spread_bps", 1),
    "duplicate spread_bps (2 rows)": _dup_column("spread_bps", 2),
    "duplicate symbol (1 rows)": _dup_column("symbol", 1),
    "duplicate symbol (2 rows)": _dup_column("symbol", 2),
    "signed zeros": lambda: _frame(mom_30=[-0.0, -0.0, 0.0, np.nan, -0.0, 0.0], vwap_dist_30=[-0.0, 0.0, -0.0, -0.0, np.nan, 0.0],
                                   spread_bps=[-0.0, 0.0, -0.0, 1.0, np.nan, -0.0], ret_15=[-0.0, 0.0, np.nan, -0.0, 0.0, -0.0],
                                   rv_30=[-0.0, 0.0, 0.001, 0.002, -0.0, 0.003], ret_1=[-0.0, 0.0, 0.001, -0.001, -0.0, 0.0]),
    "from a matrix": lambda: _from_matrix(6),
    "from a matrix (40 rows)": lambda: _from_matrix(40),
    "unsorted": _unsorted,
    "NaT": _with_nat,
    "naive stamps": lambda: _frame(event_ts=pd.date_range("2024-01-02", periods=6, freq="1min")),
    "string stamps": lambda: _frame(event_ts=[f"2024-01-02 00:0{i}:00" for i in range(6)]),
    "new york stamps": lambda: _frame(event_ts=pd.date_range("2024-01-02", periods=6, freq="37min", tz="America/New_York")),
    "microsecond stamps": lambda: _frame(event_ts=pd.date_range("1969-12-31 23:58", periods=6, freq="1min", tz="UTC").as_unit("us")),
    "pre-1970 stamps": lambda: _frame(event_ts=pd.date_range("1969-12-31 23:58", periods=6, freq="1min", tz="UTC")),
    "int symbols": lambda: _frame(symbol=[1, 1, 2, 2, 1, 2]),
    "mixed symbols": lambda: _frame(symbol=["A", 1, "A", None, "A", 1]),
    "two symbols": lambda: _frame(symbol=["A", "B", "A", "B", "B", "A"]),
    "empty": lambda: _frame().iloc[:0],
    "one row": lambda: _frame().iloc[:1],
    "bad pair price": lambda: _frame(symbol=["A", "B", "A", "B", "A", "B"], close=[1.0, 2.0, -1.0, 2.0, 1.0, 0.0]),
    "nan pair price": lambda: _frame(symbol=["A", "B", "A", "B", "A", "B"], close=[np.nan, 2.0, 1.0, np.nan, np.nan, 3.0]),
}
ODD_REGIMES = {
    "int8": lambda n: np.arange(n, dtype=np.int8) % 7,
    "int64 sideways": lambda n: np.full(n, 2, dtype=np.int64),
    "uint8": lambda n: (np.arange(n) % 7).astype(np.uint8),
    "float codes": lambda n: (np.arange(n) % 7).astype(float),
    "half codes": lambda n: np.full(n, 2.5),
    "out of range": lambda n: np.arange(n) + 3,
    "negative": lambda n: -np.ones(n, dtype=np.int64),
    "bool": lambda n: np.ones(n, dtype=bool),
    "wrong length": lambda n: np.zeros(n + 1, dtype=np.int8),
    "strings": lambda n: np.array(["a"] * n),
}


@pytest.fixture(scope="module")
def small_edge_models() -> dict:
    fit = _frame(60, symbol="A")
    models = {label: mods.explain.EdgeModel(FEATURES, horizon_bars=2).fit(fit) for label, mods in (("new", NEW), ("old", REF))}
    models.update({f"{label} logistic": mods.explain.EdgeModel(FEATURES, horizon_bars=2, model="logistic").fit(fit)
                   for label, mods in (("new", NEW), ("old", REF))})
    return models


@pytest.mark.parametrize("frame_name", sorted(ODD_FRAMES))
def test_odd_frames_give_the_same_outputs_and_errors(frame_name, small_edge_models):
    make = ODD_FRAMES[frame_name]
    sides = {}
    for label, mods in (("new", NEW), ("old", REF)):
        sides[label] = SimpleNamespace(
            detector=mods.regime.RegimeDetector(), strategies=mods.strategies.default_market_strategies(["A", "B"]),
            edge=small_edge_models[label], mods=mods)
    for call in range(2):  # a second call checks the carried state (and "went back in time" for reordered rows)
        frame_new, frame_old = make(), make()
        result = both(lambda: sides["new"].detector.classify(frame_new), lambda: sides["old"].detector.classify(frame_old),
                      f"{frame_name}: classify #{call}")
        n = len(frame_new)
        regimes = result[0].astype(np.int8) if result else np.full(n, 2, np.int8)
        if result:
            assert_same(*result, f"{frame_name}: regimes")
        assert_same_json(sides["new"].detector.state_dict(), sides["old"].detector.state_dict(), f"{frame_name}: detector state")
        result = both(lambda: NEW.context.build_context(frame_new, regimes, np.zeros(n)),
                      lambda: REF.context.build_context(frame_old, regimes, np.zeros(n)), f"{frame_name}: context")
        if result:
            assert_same(*result, f"{frame_name}: context")
        for s_new, s_old in zip(sides["new"].strategies, sides["old"].strategies):
            result = both(lambda: s_new.signals(frame_new, regimes), lambda: s_old.signals(frame_old, regimes),
                          f"{frame_name}: {s_new.name}")
            if result:
                for field in ("direction", "strength", "expected_return"):
                    assert_same(getattr(result[0], field), getattr(result[1], field), f"{frame_name}: {s_new.name}.{field}")
            assert_same_json(s_new.state_dict(), s_old.state_dict(), f"{frame_name}: {s_new.name} state")
        result = both(lambda: sides["new"].edge.predict_proba(frame_new), lambda: sides["old"].edge.predict_proba(frame_old),
                      f"{frame_name}: predict_proba")
        if result:
            assert_same(*result, f"{frame_name}: p_up")
        result = both(lambda: sides["new"].edge.explain(frame_new, top_k=3), lambda: sides["old"].edge.explain(frame_old, top_k=3),
                      f"{frame_name}: explain")
        if result:
            assert result[0] == result[1]
        new_lr, old_lr = small_edge_models["new logistic"], small_edge_models["old logistic"]
        result = both(lambda: new_lr.predict_proba(frame_new), lambda: old_lr.predict_proba(frame_old), f"{frame_name}: logistic")
        if result:
            assert_same(*result, f"{frame_name}: logistic p_up")
        result = both(lambda: new_lr.explain(frame_new, top_k=3), lambda: old_lr.explain(frame_old, top_k=3),
                      f"{frame_name}: logistic explain")
        if result:
            assert result[0] == result[1]


@pytest.mark.parametrize("regimes_name", sorted(ODD_REGIMES))
def test_odd_regime_codes_give_the_same_outputs_and_errors(regimes_name):
    frame = _frame(symbol=["A", "B", "A", "B", "A", "B"])
    regimes = ODD_REGIMES[regimes_name](len(frame))
    result = both(lambda: NEW.context.build_context(frame, regimes, np.zeros(len(frame))),
                  lambda: REF.context.build_context(frame, regimes, np.zeros(len(frame))), f"{regimes_name}: context")
    if result:
        assert_same(*result, f"{regimes_name}: context")
    for s_new, s_old in zip(NEW.strategies.default_market_strategies(["A", "B"]),
                            REF.strategies.default_market_strategies(["A", "B"])):
        result = both(lambda: s_new.signals(frame, regimes), lambda: s_old.signals(frame, regimes), f"{regimes_name}: {s_new.name}")
        if result:
            for field in ("direction", "strength", "expected_return"):
                assert_same(getattr(result[0], field), getattr(result[1], field), f"{regimes_name}: {s_new.name}.{field}")


SIZE_CASES = {
    "plain": dict(direction=np.array([1, -1, 0]), strength=np.array([0.5, 1.0, 0.0]), expected_return=np.array([0.01, -0.02, 0.0]),
                  volatility=np.array([0.001, 0.002, np.nan]), price=np.array([100.0, 50.0, 10.0])),
    "scalars": dict(direction=1, strength=0.5, expected_return=0.01, volatility=0.001, price=100.0),
    "float direction": dict(direction=np.array([1.0, -1.0, -0.0]), strength=0.5, expected_return=np.array([0.01, -0.01, 0.0]),
                            volatility=0.001, price=100.0),
    "int8 direction": dict(direction=np.array([1, 0], np.int8), strength=[0.2, 0.0], expected_return=[0.003, 0.0],
                           volatility=[0.001, 0.001], price=[10.0, 10.0]),
    "bool direction": dict(direction=np.array([True, False]), strength=0.5, expected_return=0.01, volatility=0.001, price=1.0),
    "bad direction": dict(direction=np.array([2, 0]), strength=0.5, expected_return=0.01, volatility=0.001, price=1.0),
    "half direction": dict(direction=np.array([0.5]), strength=0.5, expected_return=0.01, volatility=0.001, price=1.0),
    "object direction": dict(direction=np.array([1, "x"], dtype=object), strength=0.5, expected_return=0.01, volatility=0.001, price=1.0),
    "2-D direction": dict(direction=np.ones((2, 2)), strength=0.5, expected_return=0.01, volatility=0.001, price=1.0),
    "short strength": dict(direction=np.array([1, 1, 1]), strength=np.array([0.5, 0.5]), expected_return=0.01, volatility=0.001, price=1.0),
    "text strength": dict(direction=np.array([1]), strength="a", expected_return=0.01, volatility=0.001, price=1.0),
    "list inputs": dict(direction=[1, -1], strength=[0.5, 0.7], expected_return=[0.01, -0.01], volatility=[0.001, 0.003], price=[5.0, 6.0]),
    "bad price": dict(direction=np.array([1, 1]), strength=0.5, expected_return=0.01, volatility=0.001, price=np.array([np.nan, 1.0])),
    "nan inputs": dict(direction=np.array([1, -1, 1]), strength=np.array([np.nan, 0.5, 0.5]),
                       expected_return=np.array([0.01, np.nan, 0.01]), volatility=np.array([0.001, 0.001, 0.0]), price=1.0),
}
HORIZONS = {"none": None, "scalar": 5, "per row": "rows", "zero": 0, "nan": np.nan, "wrong shape": np.array([1, 2, 3, 4, 5])}


@pytest.mark.parametrize("case", sorted(SIZE_CASES))
@pytest.mark.parametrize("horizon", sorted(HORIZONS))
@pytest.mark.parametrize("sizer", ["kelly", "fixed_fraction", "vol_target"])
def test_sizers_give_the_same_outputs_and_errors(case, horizon, sizer):
    args = SIZE_CASES[case]
    h = HORIZONS[horizon]
    if isinstance(h, str):
        h = np.arange(1, np.atleast_1d(args["direction"]).shape[0] + 1)
    for equity in (1e6, -1.0):
        result = both(lambda: NEW.sizing.make_sizer(sizer).size(**args, equity=equity, horizon_bars=h),
                      lambda: REF.sizing.make_sizer(sizer).size(**args, equity=equity, horizon_bars=h), f"{case}/{horizon}")
        if result:
            assert_same(result[0].fraction, result[1].fraction, f"{case}/{horizon}: fraction")
            assert_same(result[0].quantity, result[1].quantity, f"{case}/{horizon}: quantity")


def test_linucb_bad_contexts_give_the_same_errors():
    for contexts in (np.full((2, 16), np.nan), np.ones((2, 15)), np.ones(16), np.array([[np.inf] + [0.0] * 15])):
        both(lambda: NEW.linucb.LinUCB(["a", "b"], 16).select(contexts), lambda: REF.linucb.LinUCB(["a", "b"], 16).select(contexts),
             f"select {contexts.shape}")


def test_edge_model_overflowing_float32_fails_as_before(small_edge_models):
    """A standardised value past float32's range is refused by sklearn's validation, fast path or not."""
    huge = _frame(3, symbol="A", ret_1=[0.0, 1e300, 0.0])
    new, old = small_edge_models["new"], small_edge_models["old"]
    assert both(lambda: new.predict_proba(huge), lambda: old.predict_proba(huge), "float32 overflow") is None
