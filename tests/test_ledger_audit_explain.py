"""Paper ledger (hand-worked numbers), append-only audit log (SQLite and PostgreSQL), SHAP explanations."""
from __future__ import annotations

import json
import math
import time
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from edgeray.audit import AuditLog
from edgeray.explain import EdgeModel, forward_log_return, make_explainer
from edgeray.ledger import PaperLedger
from tests.conftest import postgres_url_or_skip

T0 = pd.Timestamp("2024-03-01 14:30", tz="UTC")
NAN = float("nan")


def ts(i: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=i)


def bars(rows: list[tuple]) -> pd.DataFrame:
    """rows of (minute, symbol, open, close, bid, ask)."""
    return pd.DataFrame({
        "symbol": [r[1] for r in rows], "event_ts": [ts(r[0]) for r in rows],
        "open": [r[2] for r in rows], "close": [r[3] for r in rows],
        "bid": [r[4] for r in rows], "ask": [r[5] for r in rows],
    })


def orders(rows: list[tuple]) -> pd.DataFrame:
    """rows of (decision_id, minute, symbol, quantity)."""
    return pd.DataFrame({
        "decision_id": [r[0] for r in rows], "event_ts": [ts(r[1]) for r in rows],
        "symbol": [r[2] for r in rows], "strategy": ["momo"] * len(rows), "quantity": [float(r[3]) for r in rows],
    })


def frictionless(**kw) -> PaperLedger:
    return PaperLedger(10_000.0, fee_bps=0.0, slippage_bps=0.0, default_spread_bps=0.0, **kw)


# --- ledger ------------------------------------------------------------------------------------

def test_round_trip_pnl_with_spread_fee_and_slippage():
    led = PaperLedger(10_000.0, fee_bps=1.0, slippage_bps=0.5, default_spread_bps=2.0)
    led.on_market(bars([(0, "AAA", 100.0, 100.0, NAN, NAN)]))
    assert led.submit(orders([("buy", 0, "AAA", 10)])) == 1
    # minute 1, no quotes: half spread = 101 * 2bps / 2 = 0.0101, slippage = 101 * 0.5bps = 0.00505
    buy = led.on_market(bars([(1, "AAA", 101.0, 102.0, NAN, NAN)]))["fills"]
    buy_price = 101.0 + 0.0101 + 0.00505
    buy_fee = 10 * buy_price * 1e-4
    assert buy.loc[0, "price"] == pytest.approx(buy_price, abs=1e-12)
    assert buy.loc[0, "fee"] == pytest.approx(buy_fee, abs=1e-12)
    led.submit(orders([("sell", 1, "AAA", -10)]))
    # minute 2 has quotes 103.9/104.1: half spread 0.1; slippage = 104 * 0.5bps = 0.0052; sells receive less
    sell = led.on_market(bars([(2, "AAA", 104.0, 105.0, 103.9, 104.1)]))["fills"]
    sell_price = 104.0 - 0.1 - 0.0052
    sell_fee = 10 * sell_price * 1e-4
    assert sell.loc[0, "price"] == pytest.approx(sell_price, abs=1e-12)
    expected_pnl = 10 * (sell_price - buy_price) - buy_fee - sell_fee  # = 28.5915902
    snap = led.snapshot()
    assert snap["realised_pnl"] == pytest.approx(expected_pnl, abs=1e-9)
    assert snap["cash"] == pytest.approx(10_000.0 + expected_pnl, abs=1e-9)
    assert snap["positions"] == {} and snap["unrealised_pnl"] == 0.0
    assert snap["equity"] == pytest.approx(10_000.0 + expected_pnl, abs=1e-9)
    curve = led.equity_curve()
    assert len(curve) == 3
    # after the buy fill, marked at minute 1's close of 102
    assert curve["equity"].iloc[1] == pytest.approx(10_000.0 - 10 * buy_price - buy_fee + 10 * 102.0, abs=1e-9)


def test_partial_reduce_and_flip_realise_average_cost_pnl():
    led = frictionless()
    led.submit(orders([("b1", -1, "AAA", 10), ("b2", 0, "AAA", 10)]))
    led.on_market(bars([(0, "AAA", 100.0, 100.0, NAN, NAN), (1, "AAA", 110.0, 110.0, NAN, NAN)]))
    assert led.avg_cost["AAA"] == pytest.approx(105.0)  # (10*100 + 10*110) / 20
    led.submit(orders([("s1", 1, "AAA", -5)]))
    led.on_market(bars([(2, "AAA", 120.0, 120.0, NAN, NAN)]))
    assert led.realised_pnl == pytest.approx(5 * (120 - 105))  # 75
    assert led.positions["AAA"] == 15 and led.avg_cost["AAA"] == pytest.approx(105.0)
    led.submit(orders([("s2", 2, "AAA", -25)]))  # closes 15, opens a 10 short at 90
    led.on_market(bars([(3, "AAA", 90.0, 80.0, NAN, NAN)]))
    assert led.realised_pnl == pytest.approx(75 + 15 * (90 - 105))  # -150
    assert led.positions["AAA"] == -10 and led.avg_cost["AAA"] == pytest.approx(90.0)
    snap = led.snapshot()
    assert snap["unrealised_pnl"] == pytest.approx(-10 * (80 - 90))  # +100
    assert snap["equity"] == pytest.approx(10_000.0 - 150 + 100)
    assert snap["equity"] == pytest.approx(10_000.0 + snap["realised_pnl"] + snap["unrealised_pnl"])
    assert snap["position_strategy"] == {"AAA": "momo"}


def test_fill_uses_the_next_bar_of_the_symbol_not_the_current_one():
    led = frictionless()
    led.submit(orders([("a", 1, "AAA", 1), ("b", 1, "BBB", -2), ("late", 5, "AAA", 3)]))
    out = led.on_market(bars([
        (1, "AAA", 10.0, 11.0, NAN, NAN),  # stamped exactly at the decision: must not fill here
        (1, "BBB", 50.0, 51.0, NAN, NAN),
        (2, "AAA", 12.0, 13.0, NAN, NAN),
        (3, "BBB", 52.0, 53.0, NAN, NAN),
    ]))
    fills = out["fills"].set_index("decision_id")
    assert set(fills.index) == {"a", "b"}
    assert fills.loc["a", "price"] == 12.0 and fills.loc["a", "event_ts"] == ts(2)
    assert fills.loc["b", "price"] == 52.0 and fills.loc["b", "event_ts"] == ts(3)
    assert led.pending_ids == ["late"]  # decided at minute 5, after every row seen so far
    later = led.on_market(bars([(5, "AAA", 14.0, 14.0, NAN, NAN), (6, "AAA", 15.0, 15.0, NAN, NAN)]))["fills"]
    assert later["decision_id"].tolist() == ["late"] and later.loc[0, "price"] == 15.0


def test_quote_rows_fill_at_mid_plus_half_spread():
    led = PaperLedger(1_000.0, fee_bps=0.0, slippage_bps=1.0, default_spread_bps=50.0)
    led.submit(orders([("q", 0, "EURUSD", 1000)]))
    fills = led.on_market(bars([(1, "EURUSD", NAN, NAN, 1.0998, 1.1002)]))["fills"]
    # mid 1.1 + half spread 0.0002 + 1bp of mid slippage; the default spread is unused when quotes exist
    assert fills.loc[0, "price"] == pytest.approx(1.1 + 0.0002 + 1.1e-4, abs=1e-12)
    assert led.prices["EURUSD"] == pytest.approx(1.1)  # marked at the mid when there is no close


def test_submit_is_idempotent():
    led = frictionless()
    batch = orders([("x", 0, "AAA", 1), ("y", 0, "AAA", 2), ("x", 0, "AAA", 1)])
    assert led.submit(batch) == 2
    assert led.submit(batch) == 0
    fills = led.on_market(bars([(1, "AAA", 10.0, 10.0, NAN, NAN)]))["fills"]
    assert sorted(fills["decision_id"]) == ["x", "y"]
    assert led.submit(batch) == 0  # already filled: a retry must not trade again
    assert led.on_market(bars([(2, "AAA", 10.0, 10.0, NAN, NAN)]))["fills"].empty
    assert led.positions["AAA"] == 3


def test_cancel_all_and_halt():
    led = frictionless()
    led.submit(orders([("c1", 0, "AAA", 1), ("c2", 0, "AAA", 1)]))
    assert sorted(led.cancel_all("risk limit")) == ["c1", "c2"]
    assert led.on_market(bars([(1, "AAA", 10.0, 10.0, NAN, NAN)]))["fills"].empty
    assert led.submit(orders([("c1", 1, "AAA", 1)])) == 0  # cancelled ids cannot be revived by a retry

    led.submit(orders([("p", 1, "AAA", 4)]))
    led.halt()
    assert led.submit(orders([("h", 1, "AAA", 1)])) == 0
    assert led.rejected_while_halted == 1
    out = led.on_market(bars([(2, "AAA", 11.0, 12.0, NAN, NAN)]))
    assert out["fills"].empty and led.positions == {}
    assert led.prices["AAA"] == 12.0  # still marks while halted
    led.resume()
    fills = led.on_market(bars([(3, "AAA", 13.0, 13.0, NAN, NAN)]))["fills"]
    assert fills["decision_id"].tolist() == ["p"] and fills.loc[0, "price"] == 13.0
    assert led.submit(orders([("h", 3, "AAA", 1)])) == 1  # rejected while halted, so not remembered


def test_outcome_reward_after_the_horizon_across_batches():
    led = PaperLedger(10_000.0, fee_bps=2.0, slippage_bps=0.0, default_spread_bps=0.0, reward_horizon_bars=2)
    led.submit(orders([("long", 0, "AAA", 5), ("short", 0, "BBB", -4)]))
    first = led.on_market(bars([(1, "AAA", 100.0, 101.0, NAN, NAN), (1, "BBB", 20.0, 20.0, NAN, NAN),
                                (2, "AAA", 102.0, 103.0, NAN, NAN), (2, "BBB", 21.0, 21.0, NAN, NAN)]))
    assert first["outcomes"].empty  # one further bar each so far
    second = led.on_market(bars([(3, "BBB", 19.0, 18.0, NAN, NAN), (3, "AAA", 104.0, 99.0, NAN, NAN),
                                 (4, "AAA", 90.0, 90.0, NAN, NAN)]))
    got = second["outcomes"].set_index("decision_id")
    assert set(got.index) == {"long", "short"}
    fee_long, fee_short = 5 * 100.0 * 2e-4, 4 * 20.0 * 2e-4
    pnl_long = 5 * (99.0 - 100.0) - fee_long  # marked at the 2nd bar after the fill bar (minute 3 close)
    pnl_short = -4 * (18.0 - 20.0) - fee_short
    assert got.loc["long", "pnl"] == pytest.approx(pnl_long)
    assert got.loc["long", "reward"] == pytest.approx(pnl_long / (5 * 100.0))
    assert got.loc["short", "reward"] == pytest.approx(pnl_short / (4 * 20.0))
    assert got.loc["long", "event_ts"] == ts(3)
    assert led.on_market(bars([(5, "AAA", 90.0, 90.0, NAN, NAN)]))["outcomes"].empty  # emitted once


def test_state_round_trip_gives_identical_behaviour():
    led = PaperLedger(5_000.0, reward_horizon_bars=2, max_curve_points=4)
    led.submit(orders([("a", 0, "AAA", 3), ("b", 0, "BBB", -2)]))
    led.on_market(bars([(1, "AAA", 10.0, 10.5, NAN, NAN), (2, "AAA", 10.7, 10.6, 10.55, 10.65)]))
    led.submit(orders([("c", 2, "AAA", -5), ("d", 9, "BBB", 1)]))
    clone = PaperLedger.from_state(json.loads(json.dumps(led.state_dict())))
    nxt = bars([(3, "AAA", 10.9, 11.0, NAN, NAN), (3, "BBB", 40.0, 41.0, NAN, NAN), (4, "AAA", 11.2, 11.1, NAN, NAN),
                (10, "BBB", 42.0, 43.0, NAN, NAN), (11, "AAA", 11.0, 11.0, NAN, NAN)])
    a, b = led.on_market(nxt), clone.on_market(nxt)
    # the state carried pending orders (b, c, d) and an open outcome (a) across the restart
    assert sorted(a["fills"]["decision_id"]) == ["b", "c", "d"]
    assert sorted(a["outcomes"]["decision_id"]) == ["a", "c"]
    pd.testing.assert_frame_equal(a["fills"], b["fills"])
    pd.testing.assert_frame_equal(a["outcomes"], b["outcomes"])
    assert led.snapshot() == clone.snapshot()
    pd.testing.assert_frame_equal(led.equity_curve(), clone.equity_curve())
    assert led.submit(orders([("a", 11, "AAA", 1)])) == clone.submit(orders([("a", 11, "AAA", 1)])) == 0


def test_equity_curve_is_bounded_and_evenly_downsampled():
    led = frictionless(max_curve_points=8)
    for start in range(0, 40, 5):
        led.on_market(bars([(i, "AAA", 10.0 + i, 10.0 + i, NAN, NAN) for i in range(start, start + 5)]))
    curve = led.equity_curve()
    assert 4 <= len(curve) <= 8
    minutes = ((curve["ts"] - T0) / pd.Timedelta(minutes=1)).astype(int).to_numpy()
    assert minutes[0] == 0 and len(set(np.diff(minutes))) == 1  # evenly spaced rows
    assert np.all(curve["equity"].to_numpy() == 10_000.0)  # never traded


def test_ledger_rejects_bad_input_naming_the_field():
    led = frictionless()
    with pytest.raises(ValueError, match="quantity"):
        led.submit(orders([("z", 0, "AAA", 0)]))
    with pytest.raises(ValueError, match="decision_id"):
        led.submit(orders([("", 0, "AAA", 1)]))
    with pytest.raises(ValueError, match="missing column"):
        led.submit(orders([("z", 0, "AAA", 1)]).drop(columns="strategy"))
    with pytest.raises(ValueError, match="close"):
        led.on_market(bars([(0, "AAA", 10.0, NAN, NAN, NAN)]))
    led.on_market(bars([(5, "AAA", 10.0, 10.0, NAN, NAN)]))
    with pytest.raises(ValueError, match="earlier than the last processed"):
        led.on_market(bars([(4, "AAA", 10.0, 10.0, NAN, NAN)]))
    assert led.pending_ids == []


# --- audit -------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request, tmp_path):
    """(url, table name); a unique PostgreSQL table per test, dropped afterwards."""
    table = f"audit_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}", table
        return
    url = postgres_url_or_skip()
    yield url, table
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # DROP is not blocked by the append-only triggers (only row changes are)
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
        conn.exec_driver_sql(f'DROP FUNCTION IF EXISTS "{table}_append_only"()')
    engine.dispose()


def record(decision_id: str, stage: str, minute: int, **payload) -> dict:
    return {"decision_id": decision_id, "stage": stage, "event_ts": ts(minute), "payload": payload}


def test_audit_append_is_idempotent(audit_url):
    url, table = audit_url
    log = AuditLog(url, table_name=table)
    batch = [record("d1", "signal", 0, p=0.6), record("d1", "sizing", 0, size=3), record("d2", "signal", 1)]
    assert log.append(batch) == 3
    assert log.append(batch) == 0  # the retried batch adds nothing
    assert log.append(batch + [record("d2", "fill", 2, price=10.5), record("d2", "fill", 2, price=99.0)]) == 1
    assert log.count() == 4 and log.count(stage="signal") == 2
    assert log.get("d2")[-1]["payload"] == {"price": 10.5}  # the first write wins
    assert [r["stage"] for r in log.get("d1")] == ["signal", "sizing"]
    log.close()


def test_audit_log_is_append_only(audit_url):
    url, table = audit_url
    log = AuditLog(url, table_name=table)
    log.append([record("d1", "signal", 0, p=0.6)])
    for sql in (f'UPDATE "{table}" SET stage = \'forged\'', f'DELETE FROM "{table}"'):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with log.engine.begin() as conn:
                conn.exec_driver_sql(sql)
    if log.dialect == "postgresql":
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with log.engine.begin() as conn:
                conn.exec_driver_sql(f'TRUNCATE "{table}"')
    assert not any(hasattr(log, name) for name in ("update", "delete", "remove"))
    rows = log.get("d1")
    assert len(rows) == 1 and rows[0]["stage"] == "signal"
    log.close()


def test_audit_range_queries(audit_url):
    url, table = audit_url
    log = AuditLog(url, table_name=table)
    log.append([record(f"d{i}", "signal" if i % 2 == 0 else "fill", i) for i in range(10)])
    got = log.range(ts(2), ts(6))  # [2, 6)
    assert [r["decision_id"] for r in got] == ["d2", "d3", "d4", "d5"]
    assert all(r["event_ts"].tzinfo is not None for r in got)
    assert [r["decision_id"] for r in log.range(ts(2), ts(6), stage="fill")] == ["d3", "d5"]
    assert [r["decision_id"] for r in log.range(ts(0), ts(10), limit=3)] == ["d0", "d1", "d2"]
    # a naive bound means UTC; a non-UTC aware bound is converted
    assert len(log.range(ts(2).tz_localize(None), ts(6).tz_convert("America/New_York"))) == 4
    assert log.range(ts(6), ts(6)) == []
    log.close()


def test_audit_json_payload_round_trip_and_durability(audit_url):
    url, table = audit_url
    log = AuditLog(url, table_name=table)
    payload = {"p_up": np.float32(0.625), "n": np.int64(7), "features": {"ret_1": NAN, "spread_bps": 1.5},
               "top": [("ret_5", -0.25)], "vec": np.array([1.0, 2.0]), "at": ts(3), "ok": np.bool_(True)}
    log.append([{"decision_id": "d1", "stage": "explain", "event_ts": ts(3), "payload": payload}])
    log.close()
    reopened = AuditLog(url, table_name=table)  # a new process would see exactly this
    (row,) = reopened.get("d1")
    assert row["payload"] == {"p_up": 0.625, "n": 7, "features": {"ret_1": None, "spread_bps": 1.5},
                              "top": [["ret_5", -0.25]], "vec": [1.0, 2.0], "at": "2024-03-01T14:33:00+00:00",
                              "ok": True}
    assert row["event_ts"] == ts(3).to_pydatetime()
    assert row["recorded_at"] >= row["event_ts"]
    reopened.close()


def test_audit_validates_every_record_before_writing(audit_url):
    url, table = audit_url
    log = AuditLog(url, table_name=table)
    good = record("d1", "signal", 0)
    with pytest.raises(ValueError, match=r"records\[1\]\.decision_id.*None"):
        log.append([good, {"stage": "signal", "event_ts": ts(0), "payload": {}}])
    with pytest.raises(ValueError, match=r"records\[0\]\.event_ts"):
        log.append([{"decision_id": "d1", "stage": "signal", "event_ts": None, "payload": {}}])
    with pytest.raises(ValueError, match=r"records\[0\]\.stage"):
        log.append([{"decision_id": "d1", "stage": "", "event_ts": ts(0), "payload": {}}])
    with pytest.raises(ValueError, match="payload"):
        log.append([{**good, "payload": {"obj": object()}}])
    assert log.count() == 0  # all-or-nothing
    log.close()


# --- explain -----------------------------------------------------------------------------------

FEATURES = ["ret_1", "ret_5", "ret_15", "ret_60", "rv_30", "mom_30", "volume_ratio_30", "spread_bps",
            "spread_z_60", "vwap_dist_30"]
PLANTED = "vwap_dist_30"


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4))
    y = (x[:, 1] - 0.5 * x[:, 3] + 0.3 * rng.normal(size=400) > 0).astype(int)
    return x, y


def test_make_explainer_picks_by_model_type_with_local_accuracy(xy):
    import shap
    import torch
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    x, y = xy
    gbt = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, y)
    explainer = make_explainer(gbt, x[:100])
    assert isinstance(explainer, shap.TreeExplainer)
    values = explainer.shap_values(x[:20])
    # local accuracy: the attributions add up to the model's log-odds output
    np.testing.assert_allclose(values.sum(axis=1) + explainer.expected_value, gbt.decision_function(x[:20]), atol=1e-6)

    forest = RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0).fit(x, y.astype(float))
    explainer = make_explainer(forest, x[:100])
    assert isinstance(explainer, shap.TreeExplainer)
    np.testing.assert_allclose(explainer.shap_values(x[:20]).sum(axis=1) + explainer.expected_value,
                               forest.predict(x[:20]), atol=1e-6)

    logistic = LogisticRegression().fit(x, y)
    explainer = make_explainer(logistic, x[:100])
    assert isinstance(explainer, shap.LinearExplainer)
    values = explainer.shap_values(x[:20])
    np.testing.assert_allclose(values.sum(axis=1) + explainer.expected_value, logistic.decision_function(x[:20]), atol=1e-6)
    # closed form, independently: coef * (x - background mean)
    np.testing.assert_allclose(values, logistic.coef_[0] * (x[:20] - x[:100].mean(axis=0)), atol=1e-9)

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    explainer = make_explainer(mlp, x[:50])
    assert isinstance(explainer, shap.DeepExplainer)
    deep = np.asarray(explainer.shap_values(torch.as_tensor(x[:5], dtype=torch.float32))).reshape(5, 4)
    with torch.no_grad():
        out = mlp(torch.as_tensor(x[:5], dtype=torch.float32)).numpy().ravel()
    np.testing.assert_allclose(deep.sum(axis=1) + np.ravel(explainer.expected_value)[0], out, atol=1e-4)

    knn = KNeighborsClassifier(n_neighbors=5).fit(x, y)
    explainer = make_explainer(knn, x[:100])
    assert isinstance(explainer, shap.KernelExplainer)
    assert explainer.data.data.shape[0] == 10  # background summarised to k-means centroids

    with pytest.raises(ValueError, match="background"):
        make_explainer(gbt, np.array([[np.nan, 0, 0, 0]]))
    with pytest.raises(ValueError, match="model"):
        make_explainer(object(), x[:10])


def planted_frame(n_per_symbol: int = 1200, horizon: int = 3, seed: int = 7) -> pd.DataFrame:
    """Two symbols; PLANTED at row i drives the next 1-bar log return, the other features are noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, symbol in enumerate(["AAA", "BBB"]):
        feats = {f: rng.normal(size=n_per_symbol) for f in FEATURES}
        signal = feats[PLANTED]
        step = np.concatenate([[0.0], 0.002 * signal[:-1]]) + 0.001 * rng.normal(size=n_per_symbol)
        close = 100.0 * np.exp(np.cumsum(step))
        for f in FEATURES:
            feats[f][:60] = np.nan  # warm-up rows: NaN features
        parts.append(pd.DataFrame({"symbol": symbol, "event_ts": [ts(i) + pd.Timedelta(seconds=k) for i in range(n_per_symbol)],
                                   "close": close, "bid": np.nan, "ask": np.nan, **feats}))
    return pd.concat(parts).sort_values("event_ts", kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def planted():
    frame = planted_frame()
    cut = ts(int(len(frame) / 2 * 0.7))
    train, test = frame[frame["event_ts"] <= cut], frame[frame["event_ts"] > cut]
    return frame, train, test, EdgeModel(FEATURES, horizon_bars=3).fit(train)


def test_forward_label_uses_only_the_next_rows_of_the_same_symbol():
    frame = pd.DataFrame({  # interleaved symbols, rows out of time order
        "symbol": ["A", "B", "A", "A", "B", "A"],
        "event_ts": [ts(0), ts(0), ts(2), ts(1), ts(1), ts(3)],
        "close": [100.0, 50.0, 121.0, 110.0, 45.0, 99.0],
    })
    got = forward_log_return(frame, 2)
    expected = [math.log(121 / 100), np.nan, np.nan, math.log(99 / 110), np.nan, np.nan]
    np.testing.assert_allclose(got, expected, equal_nan=True)
    changed = frame.assign(close=np.where(frame["event_ts"] > ts(2), 1.0, frame["close"]))
    # a change after minute 2 moves only labels of rows within 2 bars before it
    assert got[0] == forward_log_return(changed, 2)[0] and forward_log_return(changed, 2)[3] != got[3]


def test_fit_has_no_look_ahead():
    frame = planted_frame(n_per_symbol=300)
    t = ts(200)
    past = frame[frame["event_ts"] <= t].reset_index(drop=True)
    model = EdgeModel(FEATURES, horizon_bars=3).fit(past)
    # The last 3 rows of each symbol have no known label at t: whatever their features, the fit is the same.
    tail = past.groupby("symbol").cumcount(ascending=False) < 3
    scrambled = past.copy()
    scrambled.loc[tail, FEATURES] = np.random.default_rng(0).normal(scale=50.0, size=(int(tail.sum()), len(FEATURES)))
    probe = frame.iloc[150:250]  # past the NaN warm-up rows, so predictions vary by row
    assert model.predict_proba(probe).std() > 0
    np.testing.assert_array_equal(model.predict_proba(probe),
                                  EdgeModel(FEATURES, horizon_bars=3).fit(scrambled).predict_proba(probe))
    # ...whereas an earlier row does count (so the check above could fail)
    shifted = past.copy()
    shifted.loc[~tail & (shifted.index > 100), FEATURES] *= -1.0
    assert not np.array_equal(model.predict_proba(probe), EdgeModel(FEATURES, horizon_bars=3).fit(shifted).predict_proba(probe))
    # A prediction for row t uses that row only: the same with or without the rows after it.
    last_at_t = past.index[-1]
    assert model.predict_proba(past.iloc[[last_at_t]])[0] == model.predict_proba(frame)[last_at_t]


def test_edge_model_learns_a_planted_signal_and_explains_it(planted):
    frame, train, test, model = planted
    fwd = forward_log_return(frame, 3)[test.index]
    keep = np.isfinite(fwd)
    p = model.predict_proba(test)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    accuracy = np.mean((p[keep] > 0.5) == (fwd[keep] > 0))
    base_rate = max(np.mean(fwd[keep] > 0), np.mean(fwd[keep] <= 0))
    assert accuracy > base_rate + 0.08, (accuracy, base_rate)
    explained = model.explain(test, top_k=3)
    assert len(explained) == len(test) and all(len(row) == 3 for row in explained)
    assert all(abs(row[0][1]) >= abs(row[1][1]) >= abs(row[2][1]) for row in explained)
    top1 = np.mean([row[0][0] == PLANTED for row in explained])
    assert top1 > 0.6, top1
    # NaN (warm-up) rows give a finite, neutral-feature prediction rather than an error
    warm = train.iloc[:5]
    assert warm[FEATURES].isna().all().all() and np.isfinite(model.predict_proba(warm)).all()


def test_edge_model_logistic_explains_with_local_accuracy(planted):
    _, train, test, _ = planted
    model = EdgeModel(FEATURES, horizon_bars=3, model="logistic").fit(train)
    values = model.shap_values(test.iloc[:50])
    logit = np.log(model.predict_proba(test.iloc[:50]) / (1 - model.predict_proba(test.iloc[:50])))
    np.testing.assert_allclose(values.sum(axis=1) + model.explainer.expected_value, logit, atol=1e-6)
    assert np.argmax(np.abs(values).mean(axis=0)) == FEATURES.index(PLANTED)


def test_edge_model_persistence_and_speed(planted, tmp_path):
    _, _, test, model = planted
    batch = test.iloc[:64]
    path = tmp_path / "edge.joblib"
    model.save(path)
    loaded = EdgeModel.load(path)
    restored = EdgeModel.from_state(json.loads(json.dumps(model.state_dict())))
    for other in (loaded, restored):
        np.testing.assert_array_equal(other.predict_proba(batch), model.predict_proba(batch))
        assert other.explain(batch) == model.explain(batch)
    timings = []
    for _ in range(30):
        start = time.perf_counter()
        model.explain(batch)
        timings.append(time.perf_counter() - start)
    # target: a few ms per 64-row batch with the tree explainer; generous bound for a busy 2-core box
    assert np.median(timings) < 0.05, timings
    with pytest.raises(ValueError, match="ret_1"):
        model.predict_proba(batch.drop(columns="ret_1"))
    with pytest.raises(ValueError, match="spread_bps"):
        model.predict_proba(batch.assign(spread_bps=np.inf))
    with pytest.raises(RuntimeError, match="not fitted"):
        EdgeModel(FEATURES).predict_proba(batch)


def test_the_confidence_model_is_fitted_off_the_loop_and_used_from_a_fixed_row(tmp_path, monkeypatch):
    """The fit runs on a thread: batches after the warm-up are decided while it has not finished, and the model is
    used from the first batch after edge_model_activation_lag_rows more rows, however long the fit took."""
    import threading

    from edgeray.config import DecisionConfig
    from edgeray.features.market import MarketFeatureSpec, MarketFeatureState
    from edgeray.generator import generate_bars
    from policies.engine import DecisionEngine

    bars = generate_bars(("SYN-A", "SYN-B"), n_bars=200, seed=5).reset_index(drop=True)
    feats = MarketFeatureState().update(bars, "bar").drop(columns=["symbol", "event_ts"])
    rows = pd.concat([bars[["symbol", "event_ts", "open", "close", "bid", "ask"]], feats], axis=1)
    engine = DecisionEngine(DecisionConfig(edge_model_warmup_rows=200, edge_model_activation_lag_rows=100, shadows=[]),
                            ["SYN-A", "SYN-B"], "t", MarketFeatureSpec(), tmp_path)
    release, fitted_on = threading.Event(), []
    real_fit = engine._fit_edge

    def gated_fit(history):  # the fit cannot finish until the test says so
        fitted_on.append(len(history))
        assert release.wait(60)
        return real_fit(history)

    monkeypatch.setattr(engine, "_fit_edge", gated_fit)
    confidence = []
    for start in range(0, len(rows), 10):
        if start == 290:  # the batch that activates the model (100 rows after the fit began) may wait for it
            release.set()
        batch = engine.decide(rows.iloc[start:start + 10].reset_index(drop=True), {"equity": 1e6, "positions": {}})
        confidence += [r["payload"]["confidence"] for r in batch.records]
    assert fitted_on == [200]  # the warm-up rows, and only those
    assert all(c == 0.5 for c in confidence[:300]) and engine.edge is not None
    assert any(c != 0.5 for c in confidence[300:])  # used from row 300 on
    assert (tmp_path / "edge_model.joblib").is_file()
