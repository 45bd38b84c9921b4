"""Feast on both online stores: the SQLite default and the real Redis server."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgeray.feature_repo.definitions import MARKET_VIEW, ODDS_VIEW
from edgeray.features.books import NAMES as BOOK_NAMES
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


def test_sqlite_online_writes_skip_the_fsync_and_a_reader_in_another_process_sees_each_one(tmp_path, unique_name):
    settings = FeastSettings(directory=str(tmp_path / "feast"), project=unique_name, online_store="sqlite")
    store = open_store(settings, apply=True)
    sink = FeastSink(store, settings.offline_dir)
    conn = sink._provider.online_store._get_conn(store.config)
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: a commit does not wait for the disk
    with sqlite3.connect(Path(settings.directory) / "online.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # kept in the file for every connection
    read_latest = [sys.executable, "-c", (
        "import sys; from edgeray.featurestore import FeastSettings, FeatureReader, open_store;"
        "from edgeray.features.market import MarketFeatureSpec;"
        f"s = FeastSettings(directory={settings.directory!r}, project={unique_name!r}, online_store='sqlite');"
        "v = FeatureReader(open_store(s), 'market_features', MarketFeatureSpec().names).latest('A');"
        "print(v.values['ret_1'])")]
    for minute, value in ((0, 10.0), (1, 11.5)):  # each write is seen by a connection that never wrote
        sink.write(MARKET_VIEW, feature_rows("A", [minute], value))
        seen = subprocess.run(read_latest, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
        assert float(seen.stdout.strip()) == value
    store.teardown()


def test_nan_features_round_trip_as_nan(store_settings):
    settings, store = store_settings
    rows = feature_rows("W", [0], 1.0)
    rows["spread_bps"] = np.nan
    FeastSink(store, settings.offline_dir).write(MARKET_VIEW, rows)
    values = FeatureReader(store, MARKET_VIEW, NAMES).latest("W").values
    assert np.isnan(values["spread_bps"]) and values["ret_1"] == 1.0


def test_odds_view_is_keyed_by_game(store_settings):
    settings, store = store_settings
    values = {name: [float(i)] for i, name in enumerate(BOOK_NAMES)} | {"consensus_prob_a": [0.6],
                                                                      "consensus_move_a": [0.01]}
    frame = pd.DataFrame({"symbol": ["nba:1"], "event_ts": [pd.Timestamp("2022-01-01", tz="UTC")], **values})
    FeastSink(store, settings.offline_dir).write(ODDS_VIEW, frame)
    got = FeatureReader(store, ODDS_VIEW, ["consensus_prob_a", "consensus_move_a"]).latest("nba:1")
    assert got.values == {"consensus_prob_a": 0.6, "consensus_move_a": 0.01}


def test_redis_url_selects_redis_and_unknown_store_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", "redis://:secret@10.0.0.5:6380/2")
    settings = FeastSettings.from_env(str(tmp_path))
    assert settings.online_store == "redis"
    assert repo_config(settings).online_store.connection_string == "10.0.0.5:6380,db=2,password=secret"
    monkeypatch.delenv("REDIS_URL")
    assert FeastSettings.from_env(str(tmp_path)).online_store == "sqlite"
    with pytest.raises(ValueError, match="online_store must be 'sqlite' or 'redis', got 'dynamo'"):
        repo_config(FeastSettings(directory=str(tmp_path), online_store="dynamo"))


def test_reader_returns_what_get_online_features_returns(store_settings):
    """The reader's own read path (one HMGET on Redis, `online_read` on SQLite) against Feast's public API,
    for several entities: full rows, a NaN-bearing row, an all-NaN row, rows rewritten later, a missing one."""
    settings, store = store_settings
    sink = FeastSink(store, settings.offline_dir)
    nan_row = feature_rows("N", [4], 7.0)
    nan_row[["spread_bps", "ret_5"]] = np.nan
    all_nan = feature_rows("Z", [5], 0.0)
    all_nan[NAMES] = np.nan
    sink.write(MARKET_VIEW, pd.concat([feature_rows("A", [0], 1.5), feature_rows("B", [1], -2.25), nan_row, all_nan]))
    later = feature_rows("A", [9], 100.0)
    later["event_ts"] += pd.Timedelta(microseconds=123_456)
    sink.write(MARKET_VIEW, later)

    reader = FeatureReader(store, MARKET_VIEW, NAMES)
    refs = [f"{MARKET_VIEW}:{n}" for n in NAMES]
    for entity in ["A", "B", "N", "Z", "never-written"]:
        got = reader.latest(entity)
        response = store.get_online_features(features=refs, entity_rows=[{"symbol": entity}])
        expected = response.to_dict()
        if all(expected[n][0] is None for n in NAMES):
            assert got is None, entity
            continue
        stamp = response.proto.results[-1].event_timestamps[0]
        assert got.entity == entity and got.feature_set == MARKET_VIEW
        assert got.event_ts == pd.Timestamp(stamp.seconds * 1_000_000_000 + stamp.nanos, tz="UTC"), entity
        for n in NAMES:
            if expected[n][0] is None:
                assert np.isnan(got.values[n]), (entity, n)
            else:
                assert got.values[n] == expected[n][0], (entity, n)
    assert reader.latest("Z") is None and reader.latest("never-written") is None
    a = reader.latest("A")
    assert a.values["ret_1"] == 100.0
    # Feast keeps microseconds on Redis (SQLite keeps seconds, and get_online_features agreed above).
    assert a.event_ts == pd.Timestamp("2022-01-01 00:09:00.123456" if settings.online_store == "redis"
                                      else "2022-01-01 00:09:00", tz="UTC")
    n = reader.latest("N")
    assert np.isnan(n.values["spread_bps"]) and np.isnan(n.values["ret_5"]) and n.values["ret_1"] == 7.0
    # On Redis that was the reader's own HMGET on Feast's client, not a fallback to Feast's generic read.
    assert (reader._redis is not None) == (settings.online_store == "redis")
    # A write after the reader's first read is seen by the next read (nothing but keys is cached).
    sink.write(MARKET_VIEW, feature_rows("B", [20], 55.0))
    assert reader.latest("B").values["ret_1"] == 55.0
    assert reader.latest("B").values == {k: v[0] for k, v in store.get_online_features(
        features=refs, entity_rows=[{"symbol": "B"}]).to_dict().items() if k != "symbol"}


@pytest.mark.parametrize("view", [MARKET_VIEW, ODDS_VIEW])
def test_online_rows_are_what_feasts_own_conversion_writes(store_settings, view):
    """The sink hands Feast's online store the rows write_to_online_store would build (entity key, values with
    NaN as empty, naive UTC microsecond stamps), so skipping Feast's pandas/Arrow round trip changes nothing."""
    settings, store = store_settings
    names = NAMES if view == MARKET_VIEW else BOOK_NAMES
    key = "symbol" if view == MARKET_VIEW else "game_id"
    rng = np.random.default_rng(5)
    values = rng.normal(size=(4, len(names)))
    values[rng.random(values.shape) < 0.3] = np.nan
    values[0, 0], values[1, -1] = np.inf, -0.0
    frame = pd.DataFrame(values, columns=names)
    frame.insert(0, "event_ts", pd.to_datetime(["2022-01-01T00:00:00.123456789Z", "2022-01-01T00:01:00Z",
                                                "2021-12-31T23:59:59.999999999Z", "2022-03-01T12:00:00.5Z"],
                                               utc=True, format="ISO8601"))
    frame.insert(0, key, ["e1", "e2", "e3", "e4"])
    sink = FeastSink(store, settings.offline_dir)
    feast_rows = store._get_provider()._prep_rows_to_write_for_ingestion(store.get_feature_view(view), frame)
    assert sink.online_rows(view, frame) == feast_rows
    assert sink.online_rows(view, frame.assign(**{n: np.nan for n in names})) == []  # Feast writes nothing either


@pytest.mark.parametrize("keys", [["A"], ["A", "A", "A"], ["B", "A", "B", "C", "A"], ["x", "y"]])
def test_last_per_entity_is_drop_duplicates_keep_last(keys):
    from edgeray.featurestore import last_per_entity

    frame = pd.DataFrame({"symbol": keys, "i": range(len(keys))})
    expected = frame.drop_duplicates(subset=["symbol"], keep="last")["i"].to_numpy()
    assert last_per_entity(np.array(keys, dtype=object)).tolist() == expected.tolist()


def test_cluster_store_keeps_history_in_object_storage_and_definitions_in_postgresql(tmp_path, unique_name, redis_url,
                                                                                       s3_bucket):
    """The cluster form (feast.offline_uri, feast.registry_url): the streamer's node writes; a store opened elsewhere
    (another folder, as on another node) finds the views in the SQL registry and joins the S3 history point in time."""
    import pyarrow.fs as pafs

    from tests.conftest import postgres_url_or_skip

    def settings(folder: str) -> FeastSettings:
        return FeastSettings(directory=str(tmp_path / folder), project=unique_name, online_store="redis",
                             redis_url=redis_url, offline_uri=s3_bucket.uri(f"{unique_name}/offline"),
                             registry_url=postgres_url_or_skip())

    writer = settings("streamer-node")
    store = open_store(writer, apply=True)
    try:
        sink = FeastSink(store, writer)
        sink.write(MARKET_VIEW, feature_rows("A", [0, 1, 2], 10.0))
        assert sink.flush() == 3
        filesystem, path = writer.offline_location(MARKET_VIEW).filesystem()
        assert path.startswith(f"{s3_bucket.bucket}/{unique_name}/offline/")
        assert [f.extension for f in filesystem.get_file_info(pafs.FileSelector(path))] == ["parquet"]
        assert not (tmp_path / "streamer-node" / "offline").exists()  # nothing on the node's disk

        elsewhere = open_store(settings("training-node"))  # no apply: the definitions come from PostgreSQL
        assert {v.name for v in elsewhere.list_feature_views()} == {MARKET_VIEW, ODDS_VIEW}
        entity = pd.DataFrame({"symbol": ["A", "A"], "event_timestamp": pd.to_datetime(
            ["2022-01-01 00:01:30", "2022-01-01 00:00:59"], utc=True)})
        hist = elsewhere.get_historical_features(entity_df=entity, features=[f"{MARKET_VIEW}:ret_1"]).to_df()
        # As of 00:01:30 the row stamped 00:01 is seen, never the later 00:02 one; as of 00:00:59, 00:00's.
        assert dict(zip(hist["event_timestamp"].astype(str), hist["ret_1"])) == {
            "2022-01-01 00:01:30+00:00": 11.0, "2022-01-01 00:00:59+00:00": 10.0}
        assert FeatureReader(elsewhere, MARKET_VIEW, NAMES).latest("A").values["ret_1"] == 12.0
    finally:
        store.teardown()


def test_cluster_store_settings_are_checked_naming_the_field_and_never_a_secret(tmp_path):
    from edgeray.config import PipelineConfig
    from tests.conftest import pipeline_config

    def load(**feast):
        return PipelineConfig.model_validate(pipeline_config(tmp_path, "bad", feast=feast))

    with pytest.raises(ValueError, match=r"feast\.offline_uri: .*got 'bucket/without/scheme'"):
        load(offline_uri="bucket/without/scheme")
    secret = "s3cr3t-do-not-show"
    for setting in ({"offline_uri": f"KEY:{secret}@bucket/features"}, {"registry_url": f"mysql://u:{secret}@h/db"}):
        with pytest.raises(ValueError, match=f"feast\\.{next(iter(setting))}") as info:
            load(**setting)
        assert secret not in str(info.value)
