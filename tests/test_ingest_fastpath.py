"""The fast paths of validate() and of the id / content hashing give exactly what the pandas version
did (kept frozen in tests/ingest_reference): accepted columns with their dtypes and values, the
rejected frame, accepted_rows, exceptions, and ids and content hashes bit for bit (they are
persisted identities, so dedup must hold across versions)."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from edgeray import events as new_events
from edgeray import validation as new_validation
from edgeray.config import SourceConfig
from edgeray.sources import load_source
from tests.conftest import shared_file
from tests.ingest_reference import events as ref_events
from tests.ingest_reference import validation as ref_validation

# Both versions warn alike when a rejected row of a frame with duplicated columns is written out.
pytestmark = pytest.mark.filterwarnings("ignore:DataFrame columns are not unique")
NOW = pd.Timestamp("2026-06-01 12:00", tz="UTC")
SYMBOLS = {"BTCUSDT-PERP", "BTC", "USDJPY", "GBPUSD", "BTCUSDT"}


# --- comparison helpers ------------------------------------------------------------------------

def _same_array(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert type(a) is type(b), what
    assert a.dtype == b.dtype, f"{what}: {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, what
    if a.dtype.kind in "fcMm":
        assert a.view(f"u{a.dtype.itemsize}").tobytes() == b.view(f"u{b.dtype.itemsize}").tobytes(), what
    elif a.dtype == object:
        assert [type(v) for v in a] == [type(v) for v in b], what
        assert [repr(v) for v in a] == [repr(v) for v in b], what
    else:
        assert np.array_equal(a, b), what


def _same_hashes(kind: str, cols, what: str) -> None:
    for fn in ("event_ids", "content_hashes"):
        old = getattr(ref_events, fn)(kind, cols)
        new = getattr(new_events, fn)(kind, cols)
        assert old.dtype == new.dtype == np.uint64, (what, fn)
        assert np.array_equal(old, new), (what, fn)


def _run(module, kind, raw, kw):
    try:
        return module.validate(kind, raw.copy(deep=True) if isinstance(raw, pd.DataFrame) else raw, **kw), None
    except Exception as exc:  # noqa: BLE001 - the same exception is part of the contract
        return None, exc


def check(kind: str, raw, what: str = "", **kw) -> new_validation.ValidationResult | None:
    kw.setdefault("now", NOW)
    old, old_exc = _run(ref_validation, kind, raw, kw)
    new, new_exc = _run(new_validation, kind, raw, kw)
    if old_exc is not None or new_exc is not None:
        # Without a fixed `now` a message may hold the clock's reading: compare it without its digits.
        strip = (lambda m: re.sub(r"\d+", "N", m)) if kw["now"] is None else (lambda m: m)
        assert type(old_exc) is type(new_exc) and strip(str(old_exc)) == strip(str(new_exc)), (what, old_exc, new_exc)
        return None
    assert list(old.accepted) == list(new.accepted), what
    for name in old.accepted:
        _same_array(old.accepted[name], new.accepted[name], f"{what}: accepted[{name}]")
    pd.testing.assert_frame_equal(old.rejected, new.rejected, check_exact=True, check_dtype=True,
                                  check_index_type=True, check_column_type=True, obj=f"{what}: rejected")
    _same_array(old.accepted_rows, new.accepted_rows, f"{what}: accepted_rows")
    # The ingest core stamps source/received_ns before hashing; hash what it hashes.
    cols = dict(new.accepted)
    cols["source"] = np.where(cols["source"] == "", "replay", cols["source"])
    _same_hashes(kind, cols, what)
    return new


# --- real data ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    path = shared_file("markets/btc_perp_1m_2022-01.csv")
    return load_source(SourceConfig(type="bars", path=str(path), symbol="BTCUSDT-PERP"))[0][1]


@pytest.mark.parametrize("size, rows", [(1, 150), (2, 300), (7, 700), (100, 5000)])
def test_real_btc_bars_in_micro_batches(btc, size, rows):
    for start in range(0, rows, size):
        batch = btc.iloc[start:start + size]
        result = check("bar", batch, f"btc[{start}:{start + size}]", known_symbols={"BTCUSDT-PERP"})
        assert result.n_accepted == len(batch)
    check("bar", btc.iloc[:20_000], "btc[:20000]", known_symbols={"BTCUSDT-PERP"})
    check("bar", btc.iloc[:50], "btc unknown symbol", known_symbols={"ETH"})


def test_real_btc_bars_in_other_forms(btc):
    batch = btc.iloc[:300].copy()
    stamps = pd.to_datetime(batch["event_ts"], utc=True)
    forms = {
        "tz-aware ns": stamps,
        "tz-aware ms": stamps.dt.as_unit("ms"),
        "tz-aware us": stamps.dt.as_unit("us"),
        "other tz": stamps.dt.tz_convert("America/New_York"),
        "naive ns": stamps.dt.tz_localize(None),
        "naive s": stamps.dt.tz_localize(None).dt.as_unit("s"),
        "Timestamp objects": stamps.astype(object),
        "ISO T Z": stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ISO +00:00": stamps.map(lambda t: t.isoformat()),
        "epoch ns": stamps.astype("int64"),
    }
    for name, ts in forms.items():
        frame = batch.assign(event_ts=ts.to_numpy() if name == "Timestamp objects" else ts)
        for strict in (False, True):
            for size in (1, 2, 300):
                for start in range(0, min(len(frame), 6 * size), size):
                    check("bar", frame.iloc[start:start + size], f"{name} strict={strict}", strict=strict,
                          known_symbols={"BTCUSDT-PERP"})
    for unit, div in (("s", 10**9), ("ms", 10**6), ("us", 10**3), ("ns", 1)):
        frame = batch.iloc[:20].assign(event_ts=stamps.iloc[:20].astype("int64") // div)
        check("bar", frame, f"epoch {unit}", epoch_unit=unit)
        check("bar", frame, f"epoch {unit} strict", epoch_unit=unit, strict=True)
    check("bar", batch.assign(volume=(batch["volume"] * 100).round().astype("int64")), "int volume")
    check("bar", batch.assign(volume=batch["volume"].astype("float32")), "float32 volume")
    check("bar", batch.assign(source_id=np.arange(len(batch))), "source_id ints")
    check("bar", batch.assign(event_id=[f"id{i}" for i in range(len(batch))]), "event_id strings", strict=True)
    check("bar", batch.drop(columns=["source"]), "no source column")
    check("bar", pd.concat([batch.iloc[:5], batch.iloc[:5]]), "duplicated rows and index")
    check("bar", batch.iloc[::-1], "reversed")


def test_real_quotes_and_bid_ask_bars():
    for rel in ("markets/btcusdt_quotes_2021-01-08.parquet", "markets/usdjpy_ticks.csv"):
        kind, frame = load_source(SourceConfig(type="quotes", path=str(shared_file(rel)), symbol="USDJPY"))[0]
        for size in (1, 2, 7, 100):
            for start in range(0, min(len(frame), 40 * size), size):
                check("quote", frame.iloc[start:start + size], f"{rel}[{start}:+{size}]", known_symbols=SYMBOLS)
        check("quote", frame, rel, known_symbols=SYMBOLS)
        check("quote", frame, rel + " strict", strict=True)
    bid = shared_file("markets/gbpusd_1m_bid_2012-02.csv")
    ask = shared_file("markets/gbpusd_1m_ask_2012-02.csv")
    kind, frame = load_source(SourceConfig(type="bid_ask_bars", path=str(bid), ask_path=str(ask), symbol="GBPUSD"))[0]
    for size in (1, 2, 7, 100):
        for start in range(0, 30 * size, size):
            check("bar", frame.iloc[start:start + size], f"gbpusd[{start}:+{size}]", known_symbols=SYMBOLS)
    check("bar", frame, "gbpusd all", known_symbols=SYMBOLS)


@pytest.mark.parametrize("rel", ["sports/nba_2007_2023.csv", "sports/nfl_sbr_2011_2021.csv",
                                 "sports/ncaab_sbr_closing_2012_2022.csv"])
def test_real_odds_and_results(rel):
    frames = load_source(SourceConfig(type="sports", path=str(shared_file(rel))))
    for kind, frame in frames:
        frame = frame.iloc[:3000]
        for size in (1, 2, 7, 100):
            for start in range(0, min(len(frame), 20 * size), size):
                check(kind.value, frame.iloc[start:start + size], f"{rel} {kind}[{start}:+{size}]",
                      known_sports={"nba", "nfl", "ncaab"})
        check(kind.value, frame, f"{rel} {kind}", known_sports={"nba"})
        check(kind.value, frame, f"{rel} {kind} strict", strict=True)
        typed = frame.copy()
        for col in ("odds_a_american", "odds_b_american", "score_a", "score_b"):
            if col in typed:
                typed[col] = pd.to_numeric(typed[col], errors="coerce")
        typed["event_ts"] = pd.to_datetime(typed["event_ts"], utc=True)
        check(kind.value, typed, f"{rel} {kind} typed")
        check(kind.value, typed.iloc[:3], f"{rel} {kind} typed small")


# --- odd and bad input -------------------------------------------------------------------------

T0 = pd.Timestamp("2022-01-01", tz="UTC")


def bar(minute: int = 0, **kw) -> dict:
    row = {"event_ts": (T0 + pd.Timedelta(minutes=minute)).isoformat(), "symbol": "BTC", "open": 100.0,
           "high": 101.0, "low": 99.0, "close": 100.0, "volume": 5.0}
    row.update(kw)
    return row


ODD_VALUES = {
    "open": ["100.0", "abc", "", " ", None, float("nan"), float("inf"), -float("inf"), -5.0, 0.0, -0.0, True, 100,
             np.float32(100.5), np.int64(100), "1e2", [1], {"a": 1}],
    "volume": [-1.0, None, "5", float("nan"), float("inf"), 0, True],
    "high": [50.0, "200", None],
    "low": [150.0, None, "x"],
    "symbol": ["DOGE", "", "  ", None, float("nan"), 5, True, "btc", " BTC", ["BTC"]],
    "event_ts": ["not-a-date", "", " ", None, "1850-01-01T00:00:00Z", "2022-01-01", "2022-01-01T00:00:00+05:00",
                 "2022-01-01T00:00:00.123456789Z", "2022-02-30T00:00:00", "2022-01-01T24:00:00", "2022-01-01 23:59:60",
                 " 2022-01-01T00:00:00", "2022-01-01t00:00:00", "2022-01-01T00:00:00.1234567891",
                 "2300-01-01T00:00:00", "1899-12-31T23:59:59", "2099-01-01T00:00:00", "2026-06-01T12:04:59Z",
                 "2026-06-01T12:05:01Z", 1640995200, 1640995200.5, 1_640_995_200_000_000_000, True, float("nan"),
                 pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp("2022-01-01"), pd.NaT,
                 pd.Timestamp("2022-01-01", tz="Asia/Tokyo"), np.datetime64("2022-01-01T00:00:00"), "12:00", "2022"],
    "bid": [101.0, "100.5", None, -1.0],
    "ask": [99.0, "100.5", None, float("inf")],
    "source": [None, 5, "", "feed-x"],
    "source_id": [None, 12.0, 12.5, "x" * 300, "", 7, True, float("nan")],
    "event_id": ["abc", 3, None],
}


def _odd_bar_frames():
    for field, values in ODD_VALUES.items():
        for value in values:
            yield f"{field}={value!r}", pd.DataFrame([bar(0), bar(1, **{field: value}), bar(2)])
            # the whole column odd (so no object mix with good rows)
            yield f"{field}={value!r} all", pd.DataFrame([bar(0, **{field: value}), bar(1, **{field: value})])


def test_odd_and_bad_bars():
    for what, frame in _odd_bar_frames():
        for strict in (False, True):
            for unit in ((None, "s", "ns") if what.startswith("event_ts") else (None,)):
                check("bar", frame, f"{what} strict={strict} unit={unit}", known_symbols={"BTC"}, strict=strict,
                      epoch_unit=unit)
        if what.startswith("symbol"):
            check("bar", frame, what + " no known symbols")
    for field, values in ODD_VALUES.items():  # all of a field's odd values side by side in one column
        mixed = pd.DataFrame([bar(0)] + [bar(i + 1, **{field: v}) for i, v in enumerate(values)])
        for strict in (False, True):
            check("bar", mixed, f"{field} mixed strict={strict}", known_symbols={"BTC"}, strict=strict)


def test_shapes_and_edge_frames():
    base = pd.DataFrame([bar(i) for i in range(4)])
    cases = {
        "empty no columns": pd.DataFrame(),
        "empty with columns": base.iloc[:0],
        "[{}]": pd.DataFrame([{}]),
        "[{}, {}]": pd.DataFrame([{}, {}]),
        "index only": pd.DataFrame(index=[5, 6]),
        "missing close": base.drop(columns=["close"]),
        "missing event_ts": base.drop(columns=["event_ts"]),
        "missing symbol": base.drop(columns=["symbol"]),
        "only event_ts": base[["event_ts"]],
        "extra columns": base.assign(extra=1, other="x"),
        "odd index": base.set_axis([10, 3, 3, -1]),
        "string index": base.set_axis(list("abcd")),
        "duplicated column": pd.concat([base, base[["close"]]], axis=1),
        "duplicated event_ts column": pd.concat([base, base[["event_ts"]]], axis=1),
        "int column names": base.rename(columns={"volume": 7}),
        "categorical symbol": base.assign(symbol=pd.Categorical(base["symbol"])),
        "string dtype symbol": base.assign(symbol=base["symbol"].astype("string")),
        "nullable Float64": base.assign(open=base["open"].astype("Float64")),
        "nullable Int64 volume": base.assign(volume=pd.array([1, None, 3, 4], dtype="Int64")),
        "pyarrow ts": base.assign(event_ts=pd.to_datetime(base["event_ts"]).astype("timestamp[ns, tz=UTC][pyarrow]")),
        "object floats": base.assign(open=base["open"].astype(object)),
        "all NaN float": base.assign(volume=np.nan),
        "NaT in tz column": base.assign(event_ts=pd.to_datetime(base["event_ts"]).where([True, False, True, True])),
        "NaT in naive column": base.assign(event_ts=pd.to_datetime(base["event_ts"]).dt.tz_localize(None)
                                           .where([True, False, True, True])),
        "future tz column": base.assign(event_ts=pd.to_datetime(base["event_ts"]) + pd.Timedelta(days=2000)),
        "1800 naive us": base.assign(event_ts=pd.Series([pd.Timestamp("1800-01-01")] * 4).dt.as_unit("us")),
        "3000 tz ms": base.assign(event_ts=pd.Series([pd.Timestamp("3000-01-01", tz="UTC").as_unit("ms")] * 4,
                                                     dtype="datetime64[ms, UTC]")),
        "3000 Timestamps s": base.assign(event_ts=[pd.Timestamp("3000-01-01", tz="UTC").as_unit("s")] * 4),
        "mixed Timestamps": base.assign(event_ts=[pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp("2022-01-01"),
                                                  pd.Timestamp("2022-01-01", tz="Europe/Paris"), "2022-01-01T00:00:00"]),
        "mixed naive and Z": base.assign(event_ts=["2022-01-01T00:00:00", "2022-01-01T00:01:00Z",
                                                   "2022-01-01T00:02:00+00:00", "2022-01-01 00:03:00.5"]),
        "attrs": base.copy(),
        "bool columns": base.assign(open=True),
        "duplicated ids": pd.concat([base, base, base.iloc[[0]]], ignore_index=True),
    }
    cases["attrs"].attrs["detected"] = {"x": [1, 2]}
    for what, frame in cases.items():
        for kind in ("bar", "quote", "odds", "result"):
            for strict in (False, True):
                check(kind, frame, f"{what} {kind} strict={strict}", known_symbols={"BTC"}, strict=strict)
    check("bar", base, "bad epoch unit", epoch_unit="m")
    check("candle", base, "unknown kind")
    check("bar", base, "known_symbols as list", known_symbols=["BTC"])
    check("bar", base, "known_symbols frozenset", known_symbols=frozenset({"BTC"}))
    check("bar", base, "known_symbols with a non-str", known_symbols={"BTC", 1})
    check("bar", base, "tiny skew", max_future_skew=pd.Timedelta(0))
    check("bar", base, "skew as text", max_future_skew="10s")
    check("bar", base, "naive now", now=pd.Timestamp("2026-01-01"))
    check("bar", base, "other tz now", now=pd.Timestamp("2026-01-01", tz="Asia/Tokyo"))
    check("bar", base, "now in the past", now=pd.Timestamp("2021-12-31 23:58", tz="UTC"))
    check("bar", base.assign(event_ts=pd.to_datetime(base["event_ts"])), "now in the past, tz column",
          now=pd.Timestamp("2021-12-31 23:58", tz="UTC"))


def test_without_a_fixed_now():
    far = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)
    frame = pd.DataFrame([bar(0), bar(1, event_ts=far.isoformat()), bar(2)])
    check("bar", frame, "now=None", now=None)
    check("bar", frame.assign(event_ts=pd.to_datetime(frame["event_ts"], format="ISO8601")), "now=None tz", now=None)
    check("bar", frame, "now=None huge skew", now=None, max_future_skew=pd.Timedelta.max)
    check("bar", frame, "now=None NaT skew", now=None, max_future_skew=pd.NaT)


def test_strict_pushes_of_every_kind():
    quote = {"event_ts": "2022-01-01T00:00:00Z", "symbol": "BTC", "bid": 100.0, "ask": 100.5, "bid_size": 1.0, "ask_size": 2}
    odds = {"event_ts": "2022-01-01T00:00:00Z", "symbol": "g1", "sport": "nba", "team_a": "x", "team_b": "y",
            "odds_a_american": -145, "odds_b_american": 125, "odds_b_decimal": 2.25, "is_open": True, "is_close": False,
            "home_side": "a", "bookmaker": "pinnacle"}
    result = {"event_ts": "2022-01-01T00:00:00Z", "symbol": "g1", "sport": "nba", "team_a": "x", "team_b": "y",
              "score_a": 100, "score_b": 98.0}
    odd = [None, "1", 1, 1.5, True, False, "true", "yes", "0", "", [1], float("nan"), -99, 99.5, 3.0, -1]
    for kind, row in (("quote", quote), ("odds", odds), ("result", result)):
        check(kind, pd.DataFrame([row, row]), f"{kind} good")
        for field in dict.fromkeys(list(row) + ["bid_size", "odds_a_decimal", "is_close", "market_type", "source"]):
            # every odd value in one column (each row gets its own verdict), then a few whole columns of one
            mixed = pd.DataFrame([row] + [{**row, field: value} for value in odd])
            for strict in (False, True):
                check(kind, mixed, f"{kind} {field} mixed strict={strict}", strict=strict, known_symbols={"BTC"},
                      known_sports={"nba"})
                for value in (None, True, 1, "1", 1.5, "yes"):
                    check(kind, pd.DataFrame([{**row, field: value}] * 2), f"{kind} {field}={value!r} all",
                          strict=strict, known_sports={"nba"})
        # what a JSON push decodes to
        pushed = pd.DataFrame(json.loads(json.dumps([row, {k: v for k, v in row.items() if k != "symbol"}])))
        check(kind, pushed, f"{kind} json", strict=True)


def test_ids_and_hashes_on_other_inputs():
    rng = np.random.default_rng(7)
    n = 50
    ts = pd.date_range("2022-01-01", periods=n, freq="s", tz="UTC")
    prices = rng.normal(100, 1, n)
    prices[[3, 4, 5]] = [np.nan, -0.0, 0.0]
    prices[6] = np.frombuffer(np.uint64(0xFFF8000000000123).tobytes(), dtype=np.float64)[0]  # odd NaN payload
    syms = np.array([f"S{i % 3}" for i in range(n)], dtype=object)
    cols = {
        "symbol": syms, "event_ts": ts.to_numpy("datetime64[ns]"), "open": prices, "high": prices, "low": prices,
        "close": prices, "volume": prices, "bid": prices, "ask": prices, "source": syms,
        "bid_size": prices, "ask_size": prices,
    }
    variants = {
        "arrays": cols,
        "tz Series": {**cols, "event_ts": pd.Series(ts)},
        "tz index": {**cols, "event_ts": ts},
        "ms naive": {**cols, "event_ts": ts.tz_localize(None).to_numpy("datetime64[ms]")},
        "lists": {k: list(v) for k, v in cols.items()},
        "frame": pd.DataFrame(cols),
        "str dtype": {**cols, "symbol": syms.astype(str)},
        "None in symbols": {**cols, "symbol": np.where(np.arange(n) % 5 == 0, None, syms)},
        "NaN in symbols": {**cols, "symbol": np.where(np.arange(n) % 5 == 0, np.nan, syms).astype(object)},
        "mixed symbols": {**cols, "symbol": np.array([1, "1", 2.5, "x"] * 12 + ["a", "b"], dtype=object)},
        "unicode": {**cols, "symbol": np.array(["é", "日本", "", " "] * 12 + ["\x00", "a\nb"], dtype=object)},
        "NUL after prefix": {**cols, "symbol": np.array(["S1", "S1\x00x"] * 25, dtype=object)},
        "float32": {**cols, "open": prices.astype(np.float32)},
        "int": {**cols, "volume": np.arange(n), "bid": np.arange(n, dtype=np.uint64)},
        "bool": {**cols, "volume": np.arange(n) % 2 == 0},
        "2-d": {**cols, "open": np.stack([prices, prices], axis=1)},
        "strided": {k: (np.concatenate([v, v])[::2] if isinstance(v, np.ndarray) else v) for k, v in cols.items()},
        "empty": {k: v[:0] for k, v in cols.items()},
    }
    odds_cols = {"symbol": syms, "event_ts": cols["event_ts"], "sport": syms, "team_a": syms, "team_b": syms,
                 "odds_a_american": prices, "odds_b_american": prices, "odds_a_decimal": prices,
                 "odds_b_decimal": prices, "home_side": syms, "bookmaker": syms, "market_type": syms,
                 "is_open": np.arange(n) % 2 == 0, "is_close": np.arange(n) % 3 == 0, "score_a": prices,
                 "score_b": prices}
    for what, c in variants.items():
        for kind in ("bar", "quote"):
            for fn in ("event_ids", "content_hashes"):
                try:
                    old = getattr(ref_events, fn)(kind, c)
                except Exception as exc:  # noqa: BLE001
                    with pytest.raises(type(exc)):
                        getattr(new_events, fn)(kind, c)
                    continue
                new = getattr(new_events, fn)(kind, c)
                assert old.dtype == new.dtype and np.array_equal(old, new), (what, kind, fn)
    for kind in ("odds", "result"):
        _same_hashes(kind, odds_cols, kind)
        _same_hashes(kind, {**odds_cols, "is_open": (np.arange(n) % 2 == 0).astype(object)}, kind + " object bools")
    # strings pandas' C-string table cannot tell apart hash by their neighbours: never from the cache
    for values in (["a", "a\x00b"], ["a\x00b", "a"], ["", "\x00"], ["\x00"], ["é", "e"], ["\ud800"], ["x", 1]):
        array = np.array(values, dtype=object)
        try:
            expected = pd.util.hash_array(array)
        except Exception as exc:  # noqa: BLE001
            with pytest.raises(type(exc)):
                new_events._hash(array)
            continue
        assert np.array_equal(new_events._hash(array), expected), values
    # the string hash cache fills, clears and still agrees
    many = np.array([f"sym{i}" for i in range(new_events._STR_HASHES_MAX + 10)], dtype=object)
    assert np.array_equal(new_events._hash(many), pd.util.hash_array(many))
    assert np.array_equal(new_events._hash(many[:100]), pd.util.hash_array(many[:100]))
    for i in range(3):
        chunk = np.array([f"c{i}-{j}" for j in range(70_000)], dtype=object)
        assert np.array_equal(new_events._hash(chunk), pd.util.hash_array(chunk))


def test_events_to_batch_round_trip_is_unchanged():
    bar_event = new_events.MarketBar(event_ts=T0.to_pydatetime(), symbol="BTC", open=1.0, high=2.0, low=0.5, close=1.5)
    ref_bar = ref_events.MarketBar(event_ts=T0.to_pydatetime(), symbol="BTC", open=1.0, high=2.0, low=0.5, close=1.5)
    assert new_events.events_to_batch([bar_event]).equals(ref_events.events_to_batch([ref_bar]))
    with pytest.raises(ValueError, match="nonpositive_price"):
        new_events.events_to_batch([new_events.MarketBar(event_ts=T0.to_pydatetime(), symbol="BTC", open=-1.0,
                                                         high=2.0, low=-2.0, close=1.5)])
