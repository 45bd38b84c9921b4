"""The decision kernel's numpy bookkeeping gives exactly what its pandas code gave (tests/kernel_reference/):
orders from targets, decision ids, the per-symbol watermark and the split of rows that went back in time."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeray.watermark import NEVER, SymbolWatermark, timestamps_ns
from policies.engine import decision_ids, targets_to_orders
from policies.kernel import DecisionKernel
from tests.kernel_reference import kernel as ref

SYMBOLS = ["BTC", "ETH", "GBPUSD"]
T0 = pd.Timestamp("2022-01-03T00:00:00Z").value


@st.composite
def batches(draw, max_rows: int = 40):
    n = draw(st.integers(0, max_rows))
    symbols = draw(st.lists(st.sampled_from(SYMBOLS), min_size=n, max_size=n))
    # Minutes that may repeat and go backwards, as a replayed or late stream can.
    minutes = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    stamps = pd.to_datetime(np.array(minutes, dtype=np.int64) * 60_000_000_000 + T0, utc=True)
    return pd.DataFrame({"symbol": np.array(symbols, dtype=object), "event_ts": stamps,
                         "close": np.arange(n, dtype=float) + 1.0})


def same_floats(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.signbit(a), np.signbit(b))  # -0.0 where the old code gave -0.0


@settings(max_examples=300, deadline=None)
@given(frame=batches(), data=st.data())
def test_targets_to_orders_matches_the_pandas_code(frame, data):
    n = len(frame)
    direction = np.array(data.draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n)), dtype=float)
    values = st.one_of(st.just(np.nan), st.just(0.0), st.just(-0.0), st.floats(-1e6, 1e6, allow_nan=False))
    target = np.array(data.draw(st.lists(values, min_size=n, max_size=n)), dtype=float)
    positions = data.draw(st.dictionaries(st.sampled_from(SYMBOLS), st.floats(-50, 50, allow_nan=False)))
    symbols = frame["symbol"].to_numpy()
    same_floats(targets_to_orders(symbols, direction, target, positions),
                ref.targets_to_orders(symbols, direction, target, positions))


@settings(max_examples=100, deadline=None)
@given(frame=batches())
def test_decision_ids_match_for_every_timestamp_form(frame):
    symbols = frame["symbol"].to_numpy()
    expected = ref.decision_ids("ns", symbols, frame["event_ts"])
    assert decision_ids("ns", symbols, frame["event_ts"]) == expected
    as_objects = pd.Series(list(frame["event_ts"]), dtype=object)  # tz-aware Timestamps in an object column
    assert decision_ids("ns", symbols, as_objects) == expected
    as_text = frame["event_ts"].map(pd.Timestamp.isoformat)
    assert decision_ids("ns", symbols, as_text) == expected


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(batches(max_rows=15), min_size=1, max_size=6))
def test_the_watermark_matches_the_pandas_code(steps):
    new, old = SymbolWatermark(), ref.SymbolWatermark()
    for frame in steps:
        pd.testing.assert_frame_equal(new.fresh(frame), old.fresh(frame))
        new.advance(frame)
        old.advance(frame)
        assert new.state_dict() == old.state_dict()
        assert all(type(k) is str and type(v) is int for k, v in new.state_dict().items())  # JSON-checkpointable


@settings(max_examples=200, deadline=None)
@given(frame=batches(), data=st.data())
def test_the_time_order_split_matches_the_pandas_code(frame, data):
    done = data.draw(st.dictionaries(st.sampled_from(SYMBOLS), st.integers(0, 40).map(lambda m: T0 + m * 60_000_000_000)))
    cross = data.draw(st.booleans())
    until = data.draw(st.one_of(st.none(), st.integers(0, 40).map(lambda m: T0 + m * 60_000_000_000)))
    kernel = SimpleNamespace(done=SymbolWatermark(done), cross_symbol=cross, decided_until_ns=until, rejected_rows={})
    kept, rejected = DecisionKernel._in_time_order(kernel, frame)
    ref_kept, ref_rejected = ref.in_time_order(frame, done, cross, until)
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), ref_kept.reset_index(drop=True))
    pd.testing.assert_frame_equal(rejected.reset_index(drop=True), ref_rejected.reset_index(drop=True))
    assert sum(kernel.rejected_rows.values()) == len(rejected)


def test_timestamps_ns_reads_every_form_as_utc_nanoseconds():
    stamps = pd.to_datetime(["2022-01-03T00:00:00.000000001Z", "2022-01-03T01:00:00Z"], utc=True, format="ISO8601")
    want = stamps.asi8
    for form in (pd.Series(stamps), pd.Series(stamps).dt.tz_convert("America/New_York"), pd.Series(list(stamps), dtype=object),
                 stamps.tz_localize(None).to_numpy(), [s.isoformat() for s in stamps]):
        np.testing.assert_array_equal(timestamps_ns(form), want)
    microseconds = pd.Series(stamps.as_unit("us"))  # another unit: still nanoseconds out
    np.testing.assert_array_equal(timestamps_ns(microseconds), want // 1000 * 1000)
    assert timestamps_ns(pd.Series([], dtype="datetime64[ns, UTC]")).dtype == np.int64
    assert NEVER < int(want.min())


# ---------------------------------------------------------------------------------- order frames, veto rules
from edgeray.risk import RISK_ORDER_COLUMNS, validate_order_frame  # noqa: E402
from edgeray.veto import VETO_ORDER_COLUMNS, VetoWhen, rule_mask  # noqa: E402
from tests.kernel_reference import orders as ref_orders  # noqa: E402

ODD = [None, "", 3, float("nan"), "x"]


@st.composite
def order_frames(draw):
    n = draw(st.integers(0, 6))
    clean = draw(st.booleans())  # half the frames valid throughout, so both outcomes are compared often
    label = lambda good: st.one_of(st.sampled_from(good), st.sampled_from(ODD)) if not clean and draw(st.booleans()) else st.sampled_from(good)  # noqa: E731
    minutes = draw(st.lists(st.integers(0, 2000), min_size=n, max_size=n))
    stamps = pd.to_datetime(np.array(minutes, dtype=np.int64) * 60_000_000_000 + T0, utc=True)
    form = draw(st.sampled_from(["utc", "other_zone", "objects", "naive", "text"]))
    event_ts = {"utc": stamps, "other_zone": stamps.tz_convert("America/New_York"), "naive": stamps.tz_localize(None),
                "objects": pd.Series(list(stamps), dtype=object), "text": [s.isoformat() for s in stamps]}[form]
    number = st.floats(-1e6, 1e6) if clean else st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")), st.just(float("inf")))
    frame = pd.DataFrame({
        "decision_id": draw(st.lists(label([f"d{i}" for i in range(8)]), min_size=n, max_size=n, unique=clean)),
        "event_ts": event_ts,
        "symbol": draw(st.lists(label(SYMBOLS), min_size=n, max_size=n)),
        "strategy": draw(st.lists(label(["momentum", "value_bet"]), min_size=n, max_size=n)),
        "regime": draw(st.lists(label(["trending", "pre_game"]), min_size=n, max_size=n)),
        "quantity": draw(st.lists(number, min_size=n, max_size=n)),
        "price": draw(st.lists(st.just(46000.0) if clean else st.one_of(number, st.just(46000.0)), min_size=n, max_size=n)),
        "volatility": draw(st.lists(st.one_of(st.just(0.001), st.just(float("nan"))) if clean else st.one_of(number, st.just(0.001)),
                                    min_size=n, max_size=n)),
        "confidence": draw(st.lists(st.floats(0, 1) if clean else st.one_of(st.floats(0, 1), st.just(1.5), st.just(float("nan"))),
                                    min_size=n, max_size=n)),
    })
    if draw(st.booleans()):
        frame.index = frame.index + 7  # a caller's frame need not have a 0-based index
    if draw(st.booleans()) and n:
        frame["quantity"] = frame["quantity"].astype(object)  # numbers in an object column are converted
    return frame


def outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except ValueError as exc:
        return "error", str(exc)


@settings(max_examples=400, deadline=None)
@given(frame=order_frames(), required=st.sampled_from([RISK_ORDER_COLUMNS, VETO_ORDER_COLUMNS]))
def test_order_validation_matches_the_pandas_code(frame, required):
    before = frame.copy()
    new, old = outcome(validate_order_frame, frame, required), outcome(ref_orders.validate_order_frame, frame, required)
    assert new[0] == old[0]
    if new[0] == "error":
        assert new[1] == old[1]
    else:
        pd.testing.assert_frame_equal(new[1], old[1])
    pd.testing.assert_frame_equal(frame, before)  # the caller's frame is left as it was


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_veto_rule_masks_match_the_pandas_code(data):
    n = data.draw(st.integers(1, 8))
    stamps = pd.to_datetime(np.array(data.draw(st.lists(st.integers(0, 86_400 * 3), min_size=n, max_size=n)))
                            * 1_000_000_000 + T0, utc=True)
    frame = validate_order_frame(pd.DataFrame({
        "decision_id": [f"d{i}" for i in range(n)], "event_ts": stamps,
        "symbol": data.draw(st.lists(st.sampled_from(SYMBOLS), min_size=n, max_size=n)), "strategy": "momentum",
        "regime": "trending", "quantity": data.draw(st.lists(st.floats(-10, 10), min_size=n, max_size=n)),
        "price": 100.0, "confidence": data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))}), VETO_ORDER_COLUMNS)
    hhmm = st.tuples(st.integers(0, 23), st.sampled_from([0, 15, 30, 59])).map(lambda t: f"{t[0]:02d}:{t[1]:02d}")
    window = data.draw(st.one_of(st.none(), st.tuples(hhmm, hhmm).filter(lambda w: w[0] != w[1])))
    when = VetoWhen(utc_time_between=window, symbols=data.draw(st.one_of(st.none(), st.just(["BTC"]))),
                    notional_above=data.draw(st.one_of(st.none(), st.floats(0, 500))),
                    confidence_below=data.draw(st.one_of(st.none(), st.floats(0, 1))))
    np.testing.assert_array_equal(rule_mask(when, frame), ref_orders.rule_mask(when, frame))


# ---------------------------------------------------------------------------------- policy observations
from envs.trading import FEATURE_NAMES, CompactObservations, LiveObservations  # noqa: E402
from tests.kernel_reference import observations as ref_observations  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(window=st.integers(1, 9), sizes=st.lists(st.integers(0, 12), min_size=1, max_size=4), seed=st.integers(0, 10_000))
def test_compact_observations_expand_to_what_the_loop_built(window, sizes, seed):
    """The policy server gets each symbol's recent rows once and the per-row windows are rebuilt there: the
    expanded batch is the old batch bit for bit (NaN and huge features, several symbols, state across batches)."""
    rng = np.random.default_rng(seed)
    new, old = LiveObservations(window), ref_observations.LiveObservations(window)
    for n in sizes:
        feats = rng.normal(0, 3, size=(n, len(FEATURE_NAMES)))
        feats[rng.random(feats.shape) < 0.1] = np.nan
        feats[rng.random(feats.shape) < 0.02] = 1e9
        frame = pd.DataFrame(feats, columns=FEATURE_NAMES).assign(
            symbol=rng.choice(SYMBOLS, size=n), close=rng.uniform(100, 200, size=n))
        regimes = rng.integers(0, 5, size=n)
        snapshot = {"equity": float(rng.choice([0.0, 1e6])), "cash": 5e5, "unrealised_pnl": -100.0,
                    "positions": {"BTC": 2.0}, "prices": {"BTC": 150.0}}
        compact = new.build_compact(frame, regimes, snapshot)
        assert isinstance(compact, CompactObservations) and len(compact) == n
        want = old.build(frame, regimes, snapshot)
        got = compact.expand()
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert new._history.keys() == old._history.keys()  # the rows carried into the next batch's windows
    for symbol, rows in old._history.items():
        np.testing.assert_array_equal(new._history[symbol], rows)


# ---------------------------------------------------------------------------------- audit records of a stage
from policies.kernel import stage_records  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(frame=batches(max_rows=12), data=st.data())
def test_stage_records_match_the_pandas_code(frame, data):
    n = len(frame)
    frame = frame.assign(
        decision_id=[f"d{i}" for i in range(n)],
        quantity=data.draw(st.lists(st.one_of(st.floats(allow_nan=True), st.integers(-5, 5)), min_size=n, max_size=n)),
        verdict=data.draw(st.lists(st.sampled_from(["approve", "reject", "hold"]), min_size=n, max_size=n)),
        count=np.arange(n, dtype=np.int64))
    columns = data.draw(st.lists(st.sampled_from(["symbol", "close", "quantity", "verdict", "count"]), unique=True))
    if data.draw(st.booleans()):  # as the kernel passes risk's verdicts: the stamps from the orders, beside the frame
        stamps = frame["event_ts"]
        old = ref.stage_records(frame.assign(event_ts=stamps.to_numpy()), "risk", columns)
        new = stage_records(frame.drop(columns=["event_ts"]), "risk", columns, stamps)
    else:
        new, old = stage_records(frame, "risk", columns), ref.stage_records(frame, "risk", columns)
    assert len(new) == len(old)
    for a, b in zip(new, old):
        assert a.keys() == b.keys() and a["payload"].keys() == b["payload"].keys()
        for key in ("decision_id", "stage", "event_ts"):
            assert a[key] == b[key] and type(a[key]) is type(b[key])
        for key, value in b["payload"].items():
            assert type(a["payload"][key]) is type(value)
            assert a["payload"][key] == value or (value != value and a["payload"][key] != a["payload"][key])
