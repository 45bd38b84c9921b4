from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from edgeray import odds
from edgeray.events import (SCHEMAS, EventKind, FeatureVector, MarketBar, OddsQuote, QuoteTick, batch_kind, batch_to_events, event_ids, events_to_batch)

TS = pd.Timestamp("2022-01-01 00:01", tz="UTC")


def test_arrow_schema_is_derived_from_the_dataclass_and_versioned():
    schema = SCHEMAS[EventKind.BAR]
    assert schema.names == ["event_id"] + [f.name for f in dataclasses.fields(MarketBar)]
    assert schema.field("event_ts").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("close").nullable is False and schema.field("volume").nullable is True
    assert schema.metadata[b"edgeray.schema_version"] == b"2"
    # The caller's own id travels as an opaque, nullable string; identity never depends on it.
    assert schema.field("source_id").type == pa.string() and schema.field("source_id").nullable is True


def test_typed_events_round_trip_through_an_arrow_batch():
    bars = [MarketBar(TS, "BTC", 1.0, 2.0, 0.5, 1.5, 10.0), MarketBar(TS + pd.Timedelta("1min"), "BTC", 1.5, 1.6, 1.4, 1.5)]
    batch = events_to_batch(bars)
    assert batch_kind(batch) is EventKind.BAR
    back = batch_to_events(batch)
    assert [b.close for b in back] == [1.5, 1.5]
    assert back[1].volume is None
    assert back[0].event_ts == TS


def test_event_ids_are_stable_and_depend_on_identity_only():
    frame = pd.DataFrame({"symbol": ["A", "A", "B"], "event_ts": [TS, TS + pd.Timedelta("1min"), TS]})
    ids = event_ids(EventKind.BAR, frame)
    assert len(set(ids.tolist())) == 3
    np.testing.assert_array_equal(ids, event_ids(EventKind.BAR, frame.copy()))
    # Same identity from a numpy datetime column gives the same id as from tz-aware pandas.
    as_numpy = {"symbol": frame["symbol"].to_numpy(), "event_ts": frame["event_ts"].dt.tz_localize(None).to_numpy()}
    np.testing.assert_array_equal(ids, event_ids(EventKind.BAR, as_numpy))
    # The kind is part of the identity: a quote at the same instant is a different event.
    quotes = frame.assign(bid=1.0, ask=1.1, bid_size=np.nan, ask_size=np.nan)
    assert not set(event_ids(EventKind.QUOTE, quotes).tolist()) & set(ids.tolist())


def test_a_caller_id_is_kept_as_source_id_and_never_used_as_identity():
    frame = pd.DataFrame({"symbol": ["A", "B"], "event_ts": [TS, TS], "source_id": ["same", "same"]})
    ids = event_ids(EventKind.BAR, frame)
    assert ids[0] != ids[1]
    batch = events_to_batch([MarketBar(TS, "BTC", 1.0, 2.0, 0.5, 1.5, source_id="feed-42")])
    assert batch.column("source_id").to_pylist() == ["feed-42"]
    assert batch_to_events(batch)[0].source_id == "feed-42"


def test_invalid_typed_event_names_its_field():
    with pytest.raises(ValueError, match="ask: ask_below_bid"):
        events_to_batch([QuoteTick(TS, "BTC", bid=2.0, ask=1.0)])
    with pytest.raises(ValueError, match="odds_a_american: impossible_odds"):
        events_to_batch([OddsQuote(TS, "g1", "nba", "a", "b", odds_a_american=-50, odds_b_american=120)])


def test_wrong_schema_version_is_refused():
    batch = events_to_batch([MarketBar(TS, "BTC", 1.0, 2.0, 0.5, 1.5)])
    old = batch.replace_schema_metadata({b"edgeray.kind": b"bar", b"edgeray.schema_version": b"0"})
    with pytest.raises(ValueError, match="schema_version 0"):
        batch_kind(old)


def test_feature_vectors_have_stable_ids():
    assert FeatureVector("BTC", TS, "market", {"x": 1.0}).event_id == FeatureVector("BTC", TS, "market", {"x": 1.0}).event_id
    assert FeatureVector("BTC", TS, "market", {"x": 1.0}).event_id != FeatureVector("ETH", TS, "market", {"x": 1.0}).event_id


@pytest.mark.parametrize("american, decimal", [(-145, 1 + 100 / 145), (125, 2.25), (100, 2.0), (-100, 2.0),
                                               (-500000, 1.0002), (300, 4.0)])
def test_american_decimal_hand_worked(american, decimal):
    assert odds.american_to_decimal(american) == pytest.approx(decimal)
    back = odds.decimal_to_american(decimal)
    assert back == pytest.approx(american if abs(american) != 100 else 100)


def test_margin_removal_hand_worked():
    # -145 / +125: implied 0.5918 + 0.4444 = 1.0362 (3.62% overround)
    p_a = odds.implied_probability(odds.american_to_decimal(-145))
    p_b = odds.implied_probability(odds.american_to_decimal(125))
    fair_a, fair_b, over = odds.remove_margin_multiplicative(p_a, p_b)
    assert p_a == pytest.approx(0.59184, abs=1e-5) and p_b == pytest.approx(0.44444, abs=1e-5)
    assert over == pytest.approx(0.03628, abs=1e-5)
    assert fair_a == pytest.approx(0.57112, abs=1e-5) and fair_a + fair_b == pytest.approx(1.0)


def test_impossible_american_odds_raise_with_the_values():
    with pytest.raises(ValueError, match="-50"):
        odds.american_to_decimal([-150, -50])
    with pytest.raises(ValueError, match="decimal odds"):
        odds.decimal_to_american(1.0)


# --- margin removal: every method recovers the fair book its own model priced --------------------

FAIR_BOOKS = {2: np.array([0.62, 0.38]), 3: np.array([0.45, 0.30, 0.25])}  # a moneyline and a 1X2 market


def _priced_by(method: str, fair: np.ndarray) -> np.ndarray:
    """The implied probabilities a bookmaker following `method`'s model quotes for `fair` (about 5% margin)."""
    if method == "multiplicative":
        return fair * 1.05
    if method == "additive":
        return fair + 0.05 / len(fair)
    if method == "power":
        return fair ** (1 / 1.08)
    if method == "shin":  # Shin (1993): pi_i = sqrt(z p_i + (1 - z) p_i^2) * sum_j sqrt(z p_j + (1 - z) p_j^2)
        root = np.sqrt(0.04 * fair + 0.96 * fair ** 2)
        return root * root.sum()
    c = 1.25  # odds ratio and its log-space form: implied odds = fair odds * c
    return c * fair / (1 - fair + c * fair)


@pytest.mark.parametrize("outcomes", [2, 3])
@pytest.mark.parametrize("method", ["multiplicative", "additive", "power", "shin", "odds_ratio", "logarithmic"])
def test_each_margin_method_recovers_the_fair_book_it_priced(method, outcomes):
    fair = FAIR_BOOKS[outcomes]
    book = _priced_by(method, fair)
    assert book.sum() > 1.02  # a real margin to remove
    np.testing.assert_allclose(odds.remove_margin(book, method), fair, atol=1e-12)
    np.testing.assert_allclose(odds.remove_margin(np.vstack([book, fair]), method), [fair, fair], atol=1e-12)  # per row
    if method not in ("multiplicative",):  # a different model's book is not recovered: the methods differ
        assert np.abs(odds.remove_margin(book, "multiplicative") - fair).max() > 1e-4


def test_where_margin_methods_fail_they_say_so():
    underround = np.array([0.50, 0.47])  # best prices across books can sum below one
    with pytest.raises(ValueError, match="underround.*0.970000.*shin needs an overround"):
        odds.remove_margin(underround, "shin")
    with pytest.raises(ValueError, match="underround"):
        odds.shin_z(underround)
    for method in ("multiplicative", "power", "odds_ratio"):  # these models take an underround book
        out = odds.remove_margin(underround, method)
        assert out.sum() == pytest.approx(1.0) and (out > underround).all()
    long_shot = np.array([0.90, 0.16, 0.02])  # margin 8%, 2.67% per outcome off a 2% long shot
    with pytest.raises(ValueError, match="row 0, outcome 2.*additive"):
        odds.remove_margin(long_shot, "additive")
    assert odds.remove_margin(long_shot, "shin")[2] > 0
    with pytest.raises(ValueError, match="method: 'basic'"):
        odds.remove_margin(long_shot, "basic")
