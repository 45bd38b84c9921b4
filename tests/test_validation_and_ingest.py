from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeray.deadletter import DeadLetterStore
from edgeray.events import EventKind
from edgeray.ingest import IngestCore
from edgeray.validation import validate

T0 = pd.Timestamp("2022-01-01", tz="UTC")


def bar(minute: int, symbol: str = "BTC", close: float = 100.0, **kw) -> dict:
    row = {"event_ts": (T0 + pd.Timedelta(minutes=minute)).isoformat(), "symbol": symbol, "open": close,
           "high": close + 1, "low": close - 1, "close": close, "volume": 5.0}
    row.update(kw)
    return row


BAD_BARS = [
    (bar(1, close=float("nan")), "missing_field", "open"),  # NaN is missing, as in pandas
    (bar(2, open=None), "missing_field", "open"),
    (bar(3, close=-5.0, open=-5.0, low=-6.0, high=-4.0), "nonpositive_price", "open"),
    (bar(4, event_ts="not-a-date"), "bad_timestamp", "event_ts"),
    (bar(5, event_ts="1850-01-01T00:00:00Z"), "bad_timestamp", "event_ts"),
    (bar(6, symbol="DOGE"), "unknown_symbol", "symbol"),
    (bar(7, bid=101.0, ask=100.0), "ask_below_bid", "ask"),
    (bar(8, high=50.0), "high_below_open_close_or_low", "high"),
    (bar(9, volume=-1.0), "negative_volume", "volume"),
    (bar(10) | {"close": "abc"}, "not_a_finite_number", "close"),
    ({k: v for k, v in bar(11).items() if k != "symbol"}, "missing_field", "symbol"),
    # 23 hours ahead was accepted once and moved the watermark into the future.
    (bar(12, event_ts=(pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=23)).isoformat()), "future", "event_ts"),
]


@pytest.mark.parametrize("row, reason, field", BAD_BARS, ids=[b[1] + ":" + b[2] for b in BAD_BARS])
def test_each_bad_bar_is_rejected_with_reason_field_and_raw_row(row, reason, field):
    result = validate(EventKind.BAR, pd.DataFrame([bar(0), row]), known_symbols={"BTC"})
    assert result.n_accepted == 1
    rej = result.rejected.iloc[0]
    assert (rej.row, rej.reason, rej.field) == (1, reason, field)
    assert '"symbol"' in rej.raw or field == "symbol"


def test_odds_rules():
    rows = pd.DataFrame([
        {"event_ts": T0, "symbol": "g1", "sport": "nba", "team_a": "x", "team_b": "y", "odds_a_american": -145, "odds_b_american": 125},
        {"event_ts": T0, "symbol": "g2", "sport": "nba", "team_a": "x", "team_b": "y", "odds_a_american": -99, "odds_b_american": 125},
        {"event_ts": T0, "symbol": "g3", "sport": "nba", "team_a": "x", "team_b": "y", "odds_a_american": -145, "odds_b_american": 99.5},
        {"event_ts": T0, "symbol": "g4", "sport": "nba", "team_a": "x", "team_b": "y", "odds_a_american": -145, "odds_b_american": 125, "odds_b_decimal": 3.0},
        {"event_ts": T0, "symbol": "g5", "sport": "nba", "team_a": "x", "team_b": "y", "odds_a_american": -145, "odds_b_american": 125, "odds_b_decimal": 2.25},
    ])
    result = validate(EventKind.ODDS, rows)
    assert result.rejected[["row", "reason", "field"]].values.tolist() == [
        [1, "impossible_odds", "odds_a_american"], [2, "impossible_odds", "odds_b_american"], [3, "inconsistent_odds", "odds_b_decimal"]]
    assert result.accepted["odds_a_decimal"][0] == pytest.approx(1 + 100 / 145)


def test_quotes_reject_crossed_books_and_negative_sizes():
    rows = pd.DataFrame([{"event_ts": T0, "symbol": "S", "bid": 1.0, "ask": 1.1},
                         {"event_ts": T0, "symbol": "S", "bid": 1.2, "ask": 1.1},
                         {"event_ts": T0, "symbol": "S", "bid": 1.0, "ask": 1.1, "bid_size": -3}])
    result = validate(EventKind.QUOTE, rows)
    assert result.rejected["reason"].tolist() == ["ask_below_bid", "negative_size"]


def make_core(tmp_path, lateness_min=2, capacity=5_000_000):
    return IngestCore(DeadLetterStore(tmp_path / "dl.jsonl"), {"BTC", "ETH"}, pd.Timedelta(minutes=lateness_min), capacity)


def released_minutes(report_or_batches) -> list[int]:
    batches = report_or_batches.released if hasattr(report_or_batches, "released") else report_or_batches
    out = []
    for b in batches:
        ts = b.column("event_ts").to_pandas()
        out += ((ts - T0) / pd.Timedelta(minutes=1)).astype(int).tolist()
    return out


def test_duplicates_are_dropped_and_counted(tmp_path):
    core = make_core(tmp_path, lateness_min=0)
    core.ingest("bar", pd.DataFrame([bar(0), bar(1), bar(1)]))
    report = core.ingest("bar", pd.DataFrame([bar(1), bar(2)]))
    c = core.counters
    assert (c.received, c.accepted, c.duplicates, c.rejected) == (5, 3, 2, 0)
    assert report.duplicates == 1 and report.accepted == 1


def test_out_of_order_within_lateness_is_reordered_and_later_is_dead_lettered(tmp_path):
    core = make_core(tmp_path, lateness_min=2)
    first = core.ingest("bar", pd.DataFrame([bar(0), bar(3), bar(1), bar(5)]))
    assert released_minutes(first) == [0, 1, 3]  # 5 is held: events up to 2 minutes late may still come
    second = core.ingest("bar", pd.DataFrame([bar(4), bar(2)]))
    assert released_minutes(second) == []
    assert second.rejected[["row", "reason"]].values.tolist() == [[1, "late"]]
    assert released_minutes(core.flush()) == [4, 5]
    c = core.counters
    assert c.received == c.accepted + c.rejected + c.duplicates == 6
    assert c.emitted == c.accepted == 5 and c.pending == 0
    letters = DeadLetterStore(tmp_path / "dl.jsonl").read_page(100)["items"]
    assert letters[0]["reason"] == "late" and letters[0]["raw"]["symbol"] == "BTC"


def test_dedup_memory_is_bounded(tmp_path):
    core = make_core(tmp_path, lateness_min=0, capacity=10)
    for start in range(0, 100, 5):
        core.ingest("bar", pd.DataFrame([bar(m) for m in range(start, start + 5)]))
    assert len(core._seen) <= 15


event_rows = st.lists(
    st.tuples(st.sampled_from(["BTC", "ETH", "XXX"]), st.integers(0, 40), st.sampled_from([100.0, 101.0, -1.0])),
    min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.lists(event_rows, min_size=1, max_size=6), st.integers(0, 5))
def test_counters_always_add_up_and_output_is_ordered_and_exactly_once(tmp_path_factory, batches, lateness):
    core = make_core(tmp_path_factory.mktemp("h"), lateness_min=lateness)
    emitted: list[tuple[str, int, int]] = []
    for rows in batches:
        frame = pd.DataFrame([bar(m, symbol=s, close=c) for s, m, c in rows])
        report = core.ingest("bar", frame)
        c = core.counters
        assert c.received == c.accepted + c.rejected + c.duplicates
        assert report.received == report.accepted + len(report.rejected) + report.duplicates
        for b in report.released:
            emitted += list(zip(b.column("symbol").to_pylist(), released_minutes([b]), b.column("event_id").to_pylist()))
    for b in core.flush():
        emitted += list(zip(b.column("symbol").to_pylist(), released_minutes([b]), b.column("event_id").to_pylist()))
    ids = [e[2] for e in emitted]
    assert len(ids) == len(set(ids)) == core.counters.accepted  # every accepted event exactly once
    for sym in ("BTC", "ETH"):
        minutes = [m for s, m, _ in emitted if s == sym]
        assert minutes == sorted(minutes)  # per-symbol event-time order


def test_odds_are_checked_against_known_sports_not_the_symbol_universe():
    rows = pd.DataFrame([{"event_ts": T0, "symbol": "nba:1", "sport": "nba", "team_a": "x", "team_b": "y", "odds_a_american": -110, "odds_b_american": -110},
                         {"event_ts": T0, "symbol": "x:1", "sport": "curling", "team_a": "x", "team_b": "y", "odds_a_american": -110, "odds_b_american": -110}])
    result = validate(EventKind.ODDS, rows, known_symbols={"BTC"}, known_sports={"nba"})
    assert result.rejected[["row", "reason", "value"]].values.tolist() == [[1, "unknown_sport", "curling"]]
