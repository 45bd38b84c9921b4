"""Feast on both online stores: the SQLite default and the real Redis server."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgeray.feature_repo.definitions import MARKET_VIEW, ODDS_VIEW
from edgeray.featurestore import FeastSettings, FeastSink, FeatureReader, open_store, repo_config
from edgeray.features.market import MarketFeatureSpec

NAMES = MarketFeatureSpec().names


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(request, tmp_path, unique_name, redis_url):
    settings = FeastSettings(directory=str(tmp_path / "feast"), project=unique_name, online_store=request.param,
                             redis_url=redis_url)
    store = open_store(settings, apply=True)
    yield settings, store
    store.teardown()


def feature_rows(symbol: str, minutes: list[int], base: float) -> pd.DataFrame:
    ts = pd.Timestamp("2022-01-01", tz="UTC") + pd.to_timedelta(minutes, unit="min")
    frame = pd.DataFrame({name: base + np.arange(len(minutes)) + i / 100 for i, name in enumerate(NAMES)})
    frame.insert(0, "event_ts", ts)
    frame.insert(0, "symbol", symbol)
    return frame


def test_sink_writes_latest_online_and_history_offline(store_settings):
    settings, store = store_settings
    sink = FeastSink(store, settings.offline_dir)
    sink.write(MARKET_VIEW, feature_rows("A", [0, 1, 2], 10.0))
    sink.write(MARKET_VIEW, pd.concat([feature_rows("A", [3], 20.0), feature_rows("B", [3], 30.0)]))
    assert sink.online_rows_written == 3  # latest per entity per batch, not every row
    assert sink.flush() == 5

    reader = FeatureReader(store, MARKET_VIEW, NAMES)
    latest = reader.latest("A")
    assert latest.event_ts == pd.Timestamp("2022-01-01 00:03", tz="UTC")
    assert latest.values["ret_1"] == 20.0 and latest.values["rv_30"] == pytest.approx(20.04)
    assert reader.latest("B").values["ret_1"] == 30.0
    assert reader.latest("never-seen") is None

    # Point-in-time join from the offline history: as of 00:01:30 the value stamped 00:01 is seen.
    entity = pd.DataFrame({"symbol": ["A"], "event_timestamp": [pd.Timestamp("2022-01-01 00:01:30", tz="UTC")]})
    hist = store.get_historical_features(entity_df=entity, features=[f"{MARKET_VIEW}:ret_1"]).to_df()
    assert hist["ret_1"].tolist() == [11.0]


def test_nan_features_round_trip_as_nan(store_settings):
    settings, store = store_settings
    rows = feature_rows("W", [0], 1.0)
    rows["spread_bps"] = np.nan
    FeastSink(store, settings.offline_dir).write(MARKET_VIEW, rows)
    values = FeatureReader(store, MARKET_VIEW, NAMES).latest("W").values
    assert np.isnan(values["spread_bps"]) and values["ret_1"] == 1.0


def test_odds_view_is_keyed_by_game(store_settings):
    settings, store = store_settings
    frame = pd.DataFrame({"symbol": ["nba:1"], "event_ts": [pd.Timestamp("2022-01-01", tz="UTC")],
                          "prob_a_fair": [0.6], "prob_b_fair": [0.4], "overround": [0.04], "line_move_a": [0.01]})
    FeastSink(store, settings.offline_dir).write(ODDS_VIEW, frame)
    got = FeatureReader(store, ODDS_VIEW, ["prob_a_fair", "line_move_a"]).latest("nba:1")
    assert got.values == {"prob_a_fair": 0.6, "line_move_a": 0.01}


def test_redis_url_selects_redis_and_unknown_store_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", "redis://:secret@10.0.0.5:6380/2")
    settings = FeastSettings.from_env(str(tmp_path))
    assert settings.online_store == "redis"
    assert repo_config(settings).online_store.connection_string == "10.0.0.5:6380,db=2,password=secret"
    monkeypatch.delenv("REDIS_URL")
    assert FeastSettings.from_env(str(tmp_path)).online_store == "sqlite"
    with pytest.raises(ValueError, match="online_store must be 'sqlite' or 'redis', got 'dynamo'"):
        repo_config(FeastSettings(directory=str(tmp_path), online_store="dynamo"))
