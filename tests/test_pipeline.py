"""The pipeline end to end on a real local Ray, real Feast (SQLite and Redis) and real data files."""
from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd
import pytest
import ray

from actors.feature_streamer import feast_settings
from actors.pipeline import FEATURE_STREAMER, INGESTION, Pipeline
from edgeray.config import PipelineConfig, SourceConfig
from edgeray.deadletter import DeadLetterStore
from edgeray.feature_repo.definitions import MARKET_VIEW, ODDS_VIEW
from edgeray.featurestore import FeatureReader, open_store
from edgeray.odds import american_to_decimal, implied_probability
from tests.conftest import pipeline_config, shared_file
from tests.reference import reference_features


@pytest.fixture
def start_pipeline(ray_session):
    started = []

    def start(cfg: dict, **kwargs) -> Pipeline:
        pipeline = Pipeline.start(PipelineConfig.model_validate(cfg), **kwargs)
        started.append(pipeline)
        return pipeline

    yield start
    for pipeline in started:
        pipeline.shutdown()
        open_store(feast_settings(pipeline.cfg)).teardown()


def replay(pipeline: Pipeline, sources: list[dict]) -> dict:
    ray.get(pipeline.replay_async([SourceConfig.model_validate(s) for s in sources], rate=0))
    return pipeline.finish()


def offline_history(pipeline: Pipeline, view: str) -> pd.DataFrame:
    files = glob.glob(str(feast_settings(pipeline.cfg).offline_dir / view / "*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]).sort_values("event_ts").reset_index(drop=True)


@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_btc_replay_counts_add_up_and_features_equal_a_pandas_recomputation(
        start_pipeline, tmp_path, unique_name, online_store, redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    path = shared_file("markets/btc_perp_1m_2022-01.csv")
    pipeline = start_pipeline(pipeline_config(tmp_path, unique_name, online_store))
    status = replay(pipeline, [{"type": "bars", "path": str(path), "symbol": "BTCUSDT-PERP"}])
    ing, feat = status["ingestion"], status["features"]
    assert ing["received"] == ing["accepted"] + ing["rejected"] + ing["duplicates"] == 45_031
    assert ing["emitted"] == ing["accepted"] == feat["events_processed"] == feat["feature_rows"] == 45_031
    assert feat["offline_rows_written"] == 45_031 and feat["latency_ms_p99"] > 0

    bars = pd.read_csv(path).assign(bid=np.nan, ask=np.nan)
    expected = reference_features(bars)
    history = offline_history(pipeline, MARKET_VIEW)
    assert (history["event_ts"].to_numpy() == pd.to_datetime(bars["timestamp"], utc=True).to_numpy()).all()
    names = pipeline.cfg.features.spec().names
    np.testing.assert_allclose(history[names].to_numpy(float), expected.to_numpy(float), rtol=1e-7, atol=1e-12, equal_nan=True)

    # No look-ahead: the value stamped t equals the reference computed from bars up to t only.
    for k in (0, 61, 30_000, len(bars) - 1):
        truncated = reference_features(bars.iloc[: k + 1])
        np.testing.assert_allclose(history.loc[k, names].to_numpy(float), truncated.iloc[-1].to_numpy(float),
                                   rtol=1e-7, atol=1e-12, equal_nan=True)

    online = FeatureReader(open_store(feast_settings(pipeline.cfg)), MARKET_VIEW, names).latest("BTCUSDT-PERP")
    assert online.event_ts == pd.Timestamp(bars["timestamp"].iloc[-1], tz="UTC")
    np.testing.assert_allclose(list(online.values.values()), expected.iloc[-1].to_numpy(float), rtol=1e-9, equal_nan=True)


def test_bad_file_gets_every_bad_row_dead_lettered_with_its_reason(start_pipeline, tmp_path, unique_name):
    good = pd.read_csv(shared_file("markets/btc_perp_1m_2022-01.csv"), dtype={"timestamp": str}).iloc[:400]
    bad = {  # position in the file -> (row, expected reason)
        50: (dict(good.iloc[50]) | {"close": "NaN"}, "missing_field"),
        100: (dict(good.iloc[100]) | {"low": -3.0}, "nonpositive_price"),
        150: (dict(good.iloc[150]) | {"timestamp": "2022-13-45 99:00:00"}, "bad_timestamp"),
        200: (dict(good.iloc[200]) | {"high": 1.0}, "high_below_open_close_or_low"),
        250: (dict(good.iloc[250]) | {"volume": -10}, "negative_volume"),
        # 290 minutes behind the stream, far past the 2-minute lateness window
        300: (dict(good.iloc[10]) | {"timestamp": good.iloc[10]["timestamp"].replace(":00.000000", ":30.000000")}, "late"),
    }
    rows = [bad[i][0] if i in bad else dict(r) for i, r in good.iterrows()]
    rows.insert(351, dict(good.iloc[350]))  # an exact duplicate
    path = tmp_path / "bad.csv"
    pd.DataFrame(rows).to_csv(path, index=False)

    pipeline = start_pipeline(pipeline_config(tmp_path, unique_name, ingestion={"batch_size": 64}))
    status = replay(pipeline, [{"type": "bars", "path": str(path), "symbol": "BTCUSDT-PERP"}])["ingestion"]
    assert status["received"] == 401
    assert status["duplicates"] == 1
    assert status["rejected"] == len(bad)
    assert status["accepted"] == 401 - 1 - len(bad)
    assert status["received"] == status["accepted"] + status["rejected"] + status["duplicates"]

    letters = DeadLetterStore(tmp_path / "run" / "deadletters.jsonl").read_page(1000)["items"]
    assert sorted(r["reason"] for r in letters) == sorted(reason for _, reason in bad.values())
    by_reason = {r["reason"]: r for r in letters}
    assert by_reason["bad_timestamp"]["raw"]["event_ts"] == "2022-13-45 99:00:00"
    assert by_reason["negative_volume"]["field"] == "volume" and by_reason["negative_volume"]["value"] == "-10.0"
    page = ray.get(pipeline.ingestion.dead_letters.remote(2, 1))
    assert (page["total"], page["offset"], page["limit"]) == (len(bad), 1, 2)
    assert page["items"] == letters[-3:-1]  # skipping the newest, the two before it, oldest first


def test_slow_consumer_slows_ingestion_and_nothing_is_dropped(start_pipeline, tmp_path, unique_name):
    cfg = pipeline_config(tmp_path, unique_name, ingestion={"batch_size": 100, "max_in_flight": 2, "lateness_seconds": 0})
    # The streamer sleeps per batch to play a consumer slower than the producer.
    pipeline = start_pipeline(cfg, streamer_delay_s=0.02)
    status = replay(pipeline, [{"type": "generator", "symbols": ["SYN-A", "SYN-B"], "n_bars": 1500, "seed": 1}])
    ing, feat = status["ingestion"], status["features"]
    assert ing["max_in_flight_seen"] == 2  # the window filled and was never exceeded
    assert ing["accepted"] == ing["received"] == feat["events_processed"] == 3000


def test_actors_are_named_in_the_namespace_and_restart_after_a_crash(start_pipeline, tmp_path, unique_name):
    pipeline = start_pipeline(pipeline_config(tmp_path, unique_name, ingestion={"lateness_seconds": 0}))
    assert ray.get_actor(INGESTION, namespace=unique_name)._actor_id == pipeline.ingestion._actor_id
    streamer = ray.get_actor(FEATURE_STREAMER, namespace=unique_name)
    rows = [{"event_ts": f"2024-01-02T00:0{i}:00Z", "symbol": "SYN-A", "open": 1, "high": 1, "low": 1, "close": 1}
            for i in range(3)]
    ray.get(pipeline.ingestion.ingest.remote("bar", rows[:1]))
    old_pid = ray.get(streamer.__ray_call__.remote(lambda actor: os.getpid()))
    ray.kill(streamer, no_restart=False)  # simulate a crash; max_restarts brings it back
    # ray.kill lands asynchronously: until the old process is gone it may still take a call, and its count dies with
    # it. Each call below blocks until an instance answers (max_task_retries=-1), so this waits on the restart itself.
    while ray.get(streamer.__ray_call__.remote(lambda actor: os.getpid())) == old_pid:
        pass
    result = ray.get(pipeline.ingestion.ingest.remote("bar", rows[1:]))
    assert result["accepted"] == 2
    status = pipeline.finish()
    assert status["features"]["events_processed"] == 2  # the restarted streamer took the later batch, and only it


def test_sports_odds_replay_dead_letters_impossible_odds_and_serves_fair_probabilities(
        start_pipeline, tmp_path, unique_name):
    path = shared_file("sports/nfl_sbr_2011_2021.csv")
    pipeline = start_pipeline(pipeline_config(tmp_path, unique_name))
    status = replay(pipeline, [{"type": "sports", "path": str(path)}])
    ing = status["ingestion"]
    assert ing["received"] == 2 * 2956
    assert ing["rejected_by_reason"] == {"impossible_odds": 10}
    assert status["features"]["events_by_kind"] == {"odds": 2946, "result": 2956}
    reader = FeatureReader(open_store(feast_settings(pipeline.cfg)), ODDS_VIEW, ["consensus_prob_a", "best_overround", "n_books"])
    got = reader.latest("nfl:20110908:Packers:Saints")  # -250 / +210
    p_a, p_b = implied_probability(american_to_decimal(-250)), implied_probability(american_to_decimal(210))
    assert got.values["consensus_prob_a"] == pytest.approx(p_a / (p_a + p_b))  # one book: its own fair price
    assert got.values["best_overround"] == pytest.approx(p_a + p_b - 1) and got.values["n_books"] == 1


def test_multi_book_odds_stream_through_the_loop_gives_the_cores_features_and_bets(start_pipeline, tmp_path, unique_name):
    """The real stream (its first 35 games) replayed through ingestion, the streamer and the meta-controller:
    Feast holds the core's multi-book features, and the loop proposes exactly the bets the core's value strategy
    makes on the same quotes, each through risk and veto into the audit log and the bet book. Quotes pushed in
    the API's shape (per-book OddsQuote rows) take the same path."""
    from edgeray.audit import AuditLog
    from edgeray.features.books import NAMES as BOOK_NAMES, MultiBookOddsState
    from edgeray.value import ValueConfig, ValueStrategy, validated_quotes

    raw = pd.read_csv(shared_file("streams/mlb_h2h_2026-07.csv"))
    path = tmp_path / "stream.csv"
    raw[raw["commence_time_utc"] < "2026-07-08"].to_csv(path, index=False)
    cfg = pipeline_config(tmp_path, unique_name, decisions={"enabled": True, "shadows": [], "value": {"min_edge": 0.02}})
    pipeline = start_pipeline(cfg)
    status = replay(pipeline, [{"type": "odds_stream", "path": str(path), "sport": "mlb"}])
    quotes = validated_quotes(path)[0]
    assert status["ingestion"]["accepted"] == status["features"]["events_by_kind"]["odds"] == len(quotes) > 3_000

    core = MultiBookOddsState().update(quotes)
    latest = core.groupby("symbol").tail(1).set_index("symbol")
    reader = FeatureReader(open_store(feast_settings(pipeline.cfg)), ODDS_VIEW, BOOK_NAMES)
    for game in latest.index[:5]:
        got = reader.latest(game).values
        assert got == pytest.approx({n: float(latest.loc[game, n]) for n in BOOK_NAMES}, nan_ok=True)

    expected = ValueStrategy(ValueConfig(min_edge=0.02)).decide(core)
    audit = AuditLog(pipeline.cfg.audit_url)
    proposals = audit.range("2026-01-01", "2027-01-01", stage="bet_decision", limit=10_000)
    assert len(expected) > 5
    assert sorted((p["payload"]["game"], p["payload"]["side"], p["payload"]["bookmaker"]) for p in proposals) == \
        sorted(zip(expected["symbol"], expected["side"], expected["bookmaker"]))
    ids = {p["decision_id"] for p in proposals}
    assert {r["decision_id"] for r in audit.range("2026-01-01", "2027-01-01", stage="risk", limit=10_000)} >= ids
    booked = audit.range("2026-01-01", "2027-01-01", stage="bet", limit=10_000)
    book = ray.get(pipeline.decision["meta_controller"].bet_book.remote())
    assert booked and book["placed"] == len(booked) and book["open_bets"] == len(booked)
    assert sum(b["stake"] for b in book["open"]) == pytest.approx(sum(r["payload"]["stake"] for r in booked))

    pushed = [{"event_ts": f"2026-07-09T10:0{i}:00Z", "symbol": "mlb:pushed-game", "sport": "mlb", "team_a": "H",
               "team_b": "A", "odds_a_american": -120 + i, "odds_b_american": 105 - i, "bookmaker": f"book{i}"}
              for i in range(3)]
    assert ray.get(pipeline.ingestion.ingest.remote("odds", pushed, strict=True))["accepted"] == 3
    pipeline.finish()
    got = reader.latest("mlb:pushed-game").values
    assert got["n_books"] == 3 and 0.5 < got["consensus_prob_a"] < 0.56
