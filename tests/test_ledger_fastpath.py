"""The columnar PaperLedger against the pandas implementation it replaced (tests/ledger_reference.py).

Both ledgers are driven through the same seeded random scenarios and the real BTC 1-minute file;
every call must give the same result: fills and outcomes frames equal with exact dtypes and exact
floats (the arithmetic is the same, operation for operation), the same ValueError messages, and
the same state_dict (compared as JSON text, i.e. the checkpoint bytes), snapshot and equity curve
after every step. Checkpoints written by the reference must load into the new ledger.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from edgeray.ledger import PaperLedger
from tests.conftest import shared_file
from tests.ledger_reference import PaperLedger as ReferenceLedger

T0 = pd.Timestamp("2024-03-01 14:30", tz="UTC").value
SEC = 1_000_000_000
SYMBOLS = ("AAA", "BBB", "CCC", "DDD")  # DDD trades rarely; ZZZ (orders only) never has a row


class Twin:
    """A reference ledger and a new one; every call goes to both and their results must agree."""

    def __init__(self, **cfg):
        self.ref = ReferenceLedger(**cfg)
        self.new = PaperLedger(**cfg)

    def call(self, method: str, *args):
        results = []
        for led in (self.ref, self.new):
            copied = [a.copy() if isinstance(a, pd.DataFrame) else a for a in args]
            try:
                results.append(("ok", getattr(led, method)(*copied)))
            except ValueError as exc:
                results.append(("error", str(exc)))
        (ref_kind, ref_out), (new_kind, new_out) = results
        assert new_kind == ref_kind, (method, ref_out, new_out)
        if ref_kind == "error":
            assert new_out == ref_out
        elif method == "on_market":
            assert list(new_out) == list(ref_out) == ["fills", "outcomes"]
            for key in ("fills", "outcomes"):
                pd.testing.assert_frame_equal(new_out[key], ref_out[key], check_exact=True)
                assert [str(d) for d in new_out[key].dtypes] == [str(d) for d in ref_out[key].dtypes]
        else:
            assert new_out == ref_out
        self.check()
        return ref_kind, ref_out

    def check(self) -> None:
        ref_state, new_state = self.ref.state_dict(), self.new.state_dict()
        assert new_state == ref_state
        assert json.dumps(new_state) == json.dumps(ref_state)  # same keys, order and number types on disk
        assert self.new.snapshot() == self.ref.snapshot()
        assert self.new.pending_ids == self.ref.pending_ids
        pd.testing.assert_frame_equal(self.new.equity_curve(), self.ref.equity_curve(), check_exact=True)

    def restart(self, cross: bool) -> None:
        """Reload both from JSON checkpoints; `cross`: the new ledger loads the reference's checkpoint."""
        ref_json = json.dumps(self.ref.state_dict())
        new_json = ref_json if cross else json.dumps(self.new.state_dict())
        self.ref = ReferenceLedger.from_state(json.loads(ref_json))
        self.new = PaperLedger.from_state(json.loads(new_json))
        self.check()


def stamps(ns: np.ndarray, style: str):
    """The same instants in the shapes callers send: tz-aware (UTC or another zone), naive UTC, ISO
    strings, an object column of Timestamps, microsecond resolution."""
    aware = pd.Series(pd.to_datetime(ns, utc=True))
    if style == "utc":
        return aware
    if style == "zone":
        return aware.dt.tz_convert("America/New_York")
    if style == "naive":
        return aware.dt.tz_localize(None)
    if style == "iso":
        return aware.map(lambda t: t.isoformat()).astype(object)
    if style == "objects":
        return pd.Series(aware.to_numpy(), dtype=object)
    if style == "micros":
        return aware.astype("datetime64[us, UTC]")
    raise AssertionError(style)


STYLES = ("utc", "utc", "utc", "naive", "zone", "iso", "objects", "micros")


class Scenario:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.now = T0  # latest stamp sent for any symbol
        self.last = {s: None for s in SYMBOLS}
        self.price = {s: 100.0 * (1 + i) for i, s in enumerate(SYMBOLS)}
        self.ids: list[str] = []
        self.n_ids = 0

    def market(self) -> pd.DataFrame:
        rng = self.rng
        n = rng.choice([0] if rng.random() < 0.03 else [1, 1, 2, 2, 3, 5, 8, rng.randint(1, 50)])
        rows = []
        t = self.now
        for _ in range(n):
            t += rng.choice([0, 0, SEC * 60, SEC * 60, SEC * 30, 1])  # equal stamps within and across symbols
            sym = rng.choice(SYMBOLS[:3] * 3 + SYMBOLS[3:])
            p = self.price[sym] = self.price[sym] * float(np.exp(rng.gauss(0.0, 0.01)))
            kind = rng.random()
            if kind < 0.55:  # a bar with an open and quotes
                row = (sym, t, p * (1 + rng.gauss(0, 0.002)), p, p * 0.9998, p * 1.0002)
            elif kind < 0.75:  # a bar without quotes: default spread
                row = (sym, t, p * (1 + rng.gauss(0, 0.002)), p, np.nan, np.nan)
            elif kind < 0.9:  # a quote: no open (fill at the mid), close given
                row = (sym, t, np.nan, p, p * 0.9997, p * 1.0003)
            else:  # a quote with neither open nor close: marked and filled at the mid
                row = (sym, t, np.nan, np.nan, p * 0.9995, p * 1.0005)
            rows.append(row)
        if rows:
            self.now = max(self.now, t)
        rng.shuffle(rows)  # the ledger sorts by stamp (stably)
        ns = np.array([r[1] for r in rows], dtype=np.int64)
        frame = pd.DataFrame({"symbol": pd.Series([r[0] for r in rows], dtype=object),
                              "event_ts": stamps(ns, rng.choice(STYLES)),
                              "close": [r[3] for r in rows], "bid": [r[4] for r in rows], "ask": [r[5] for r in rows]})
        if rng.random() < 0.7:  # bars carry `open`; feature/quote frames may lack the column
            frame.insert(2, "open", [r[2] for r in rows])
        elif rng.random() < 0.3:
            frame.insert(2, "open", np.nan)
        return frame

    def orders(self) -> pd.DataFrame:
        rng = self.rng
        rows = []
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 6])):
            if self.ids and rng.random() < 0.1:
                decision_id = rng.choice(self.ids)  # a retry of an id already accepted
            else:
                self.n_ids += 1
                decision_id = f"d{self.n_ids}"
            sym = rng.choice(SYMBOLS + ("ZZZ",) if rng.random() < 0.1 else SYMBOLS[:3])
            # stamped before, at, or after the latest row: some wait several batches
            t = self.now + rng.choice([-SEC * 120, -1, 0, 0, 0, 1, SEC * 60, SEC * 600])
            size = rng.choice([1.0, 2.0, 0.5, 3.0, 10.0]) * rng.uniform(0.5, 1.5)
            rows.append((decision_id, t, sym, rng.choice(["momo", "revert", ""]), rng.choice([1, -1]) * size))
            if rng.random() < 0.1:
                rows.append(rows[-1])  # repeated within the batch
        self.ids.extend(r[0] for r in rows)
        ns = np.array([r[1] for r in rows], dtype=np.int64)
        return pd.DataFrame({"decision_id": [r[0] for r in rows], "event_ts": stamps(ns, rng.choice(STYLES)),
                             "symbol": [r[2] for r in rows], "strategy": [r[3] for r in rows],
                             "quantity": [r[4] for r in rows]})

    def bad_market(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A market frame each implementation must refuse with the same message."""
        rng = self.rng
        frame = frame.copy()
        choice = rng.randrange(6)
        if choice == 0:
            frame.loc[frame.index[-1], ["bid", "ask"]] = [1.0, 0.5]  # ask below bid
        elif choice == 1:
            frame.loc[frame.index[-1], ["close", "bid", "ask"]] = np.nan
        elif choice == 2:
            frame["symbol"] = frame["symbol"].astype(object)
            frame.loc[frame.index[-1], "symbol"] = rng.choice(["", None, 7])
        elif choice == 3:  # earlier than a row already processed (unless no row of the symbol was)
            frame["event_ts"] = pd.Series(pd.to_datetime(np.full(len(frame), T0 - SEC), utc=True), index=frame.index)
        elif choice == 4:
            frame = frame.drop(columns="bid")
        else:
            frame["event_ts"] = frame["event_ts"].astype(object)
            frame.loc[frame.index[0], "event_ts"] = rng.choice([None, "not a time"])
        return frame

    def bad_orders(self, orders: pd.DataFrame) -> pd.DataFrame:
        rng = self.rng
        orders = orders.copy()
        column, value = rng.choice([("quantity", 0.0), ("quantity", np.nan), ("decision_id", ""), ("symbol", None),
                                    ("strategy", 3), ("event_ts", None), ("quantity", "x")])
        orders[column] = orders[column].astype(object)
        orders.loc[orders.index[-1], column] = value
        return orders


# ISO strings of mixed precision make pd.to_datetime (both ledgers parse them the same way) warn
@pytest.mark.filterwarnings("ignore:Could not infer format")
@pytest.mark.parametrize("seed", range(6))
def test_random_scenarios_match_the_reference(seed):
    rng = random.Random(1000 + seed)
    twin = Twin(initial_cash=rng.choice([10_000.0, 1_000_000.0]), fee_bps=rng.choice([0.0, 1.0, 2.5]),
                slippage_bps=rng.choice([0.0, 0.5]), default_spread_bps=rng.choice([0.0, 2.0, 7.0]),
                reward_horizon_bars=rng.choice([1, 2, 3, 5]), max_curve_points=rng.choice([4, 16, 100_000]))
    sc = Scenario(seed)
    filled = matured = 0
    for _ in range(120):
        u = sc.rng.random()
        if u < 0.04:
            twin.call("halt")
        elif u < 0.10:
            twin.call("resume")
        elif u < 0.13:
            twin.call("cancel_all", "risk limit")
        elif u < 0.16:
            twin.call("cancel_all", "")  # refused: the reason is required
        elif u < 0.20:
            twin.restart(cross=sc.rng.random() < 0.5)
        orders = sc.orders()
        if len(orders) and sc.rng.random() < 0.05:
            twin.call("submit", sc.bad_orders(orders))
        twin.call("submit", orders)
        frame = sc.market()
        if len(frame) and sc.rng.random() < 0.06:
            twin.call("on_market", sc.bad_market(frame))
        kind, out = twin.call("on_market", frame)
        if kind == "ok":
            filled += len(out["fills"])
            matured += len(out["outcomes"])
    # the scenario exercised what it is meant to
    assert filled > 20 and matured > 10, (filled, matured)


def test_edge_cases_match_the_reference():
    twin = Twin(initial_cash=10_000.0, fee_bps=1.0, slippage_bps=0.5, reward_horizon_bars=2)
    empty = pd.DataFrame({"symbol": pd.Series(dtype=object), "event_ts": pd.Series(dtype="datetime64[ns, UTC]"),
                          "close": pd.Series(dtype=float), "bid": pd.Series(dtype=float), "ask": pd.Series(dtype=float)})
    twin.call("on_market", empty)  # no rows: every returned column is object
    frame = pd.DataFrame({"symbol": ["AAA", "AAA", "AAA", "BBB"],
                          "event_ts": pd.to_datetime([T0, T0 + SEC, T0 + SEC, T0], utc=True),
                          "open": [10.0, 11.0, 12.0, 20.0], "close": [10.5, 11.5, 12.5, 20.5], "bid": np.nan, "ask": np.nan})
    twin.call("on_market", frame.iloc[:1])  # rows, no pending, no outcomes
    orders = pd.DataFrame({"decision_id": ["a", "b", "c", "a"],
                           "event_ts": pd.to_datetime([T0, T0, T0 - 1, T0], utc=True),
                           "symbol": ["AAA", "AAA", "BBB", "AAA"], "strategy": ["s"] * 4, "quantity": [3, -5, 2, 3]})
    twin.call("submit", orders)  # integer quantities, a duplicate id in the batch
    # two AAA rows share the first stamp after the orders: both fill at the first of them, in submit order
    twin.call("on_market", frame.iloc[1:])
    twin.call("submit", orders.assign(decision_id=["e", "f", "g", "h"], quantity=[True, -2.0, 1.0, 4.0],
                                      event_ts=pd.to_datetime([T0 + SEC] * 4, utc=True)))  # an object column
    later = frame.assign(event_ts=pd.to_datetime([T0 + 2 * SEC, T0 + 3 * SEC, T0 + 4 * SEC, T0 + 2 * SEC], utc=True))
    # fills; outcomes mature from the last batch's fills and from this batch's own (horizon 2, three AAA rows)
    twin.call("on_market", later)
    twin.call("on_market", later.iloc[:0])
    twin.call("on_market", later.assign(event_ts=pd.to_datetime([T0 + 5 * SEC] * 4, utc=True)))
    twin.call("submit", orders.assign(decision_id=["i", "j", "k", "l"], quantity=[True, True, False, True]))  # refused
    twin.call("submit", orders.assign(decision_id=["i", "j", "k", "l"], quantity=[True, True, True, True]))
    nullable = pd.array([1, -1, 2, 0], dtype="Int64")
    twin.call("submit", orders.assign(decision_id=["m", "n", "o", "p"], quantity=nullable))  # refused: the zero
    twin.call("submit", orders.assign(decision_id=["m", "n", "o", "p"], quantity=nullable + 4))
    twin.call("on_market", later.assign(event_ts=pd.to_datetime([T0 + 6 * SEC] * 4, utc=True)))
    twin.call("submit", orders.iloc[:0])
    twin.call("submit", orders.drop(columns="strategy"))
    twin.call("on_market", "not a frame")
    stamp = pd.Timestamp(T0, tz="UTC")
    twin.call("submit", orders.assign(decision_id=["x", "y", "z", "w"], event_ts=[stamp, pd.NaT, stamp, pd.NaT]))


def btc_frames(rows: int | None = None, batch: int = 7) -> list[pd.DataFrame]:
    raw = pd.read_csv(shared_file("markets/btc_perp_1m_2022-01.csv"), nrows=rows)
    close = raw["close"].to_numpy(float)
    frame = pd.DataFrame({"symbol": "BTCUSDT-PERP", "event_ts": pd.to_datetime(raw["timestamp"], utc=True),
                          "open": raw["open"].to_numpy(float), "close": close,
                          "bid": close * 0.9999, "ask": close * 1.0001})
    return [frame.iloc[i:i + batch].reset_index(drop=True) for i in range(0, len(frame), batch)]


def test_real_btc_file_matches_the_reference():
    twin = Twin(initial_cash=100_000.0, fee_bps=1.0, slippage_bps=0.5, reward_horizon_bars=15, max_curve_points=512)
    sizes = (0.5, -1.0, 0.75, -0.25, 2.0, -2.0)  # alternating: adds, reductions and flips
    for k, frame in enumerate(btc_frames(rows=7 * 400)):  # the first ~2 days, 400 batches
        stamp = frame["event_ts"].iloc[-1]
        n = 2 if k % 3 == 0 else 1
        orders = pd.DataFrame({"decision_id": [f"btc-{k}-{j}" for j in range(n)], "event_ts": [stamp] * n,
                               "symbol": "BTCUSDT-PERP", "strategy": "alternate",
                               "quantity": [sizes[(k + j) % len(sizes)] for j in range(n)]})
        twin.call("on_market", frame)
        twin.call("submit", orders)
    assert twin.new.cancelled_count == 0 and len(twin.new.positions) == 1
