"""Issue 11 (security review of ingestion): each defect reproduced, on the core and on real Ray actors."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from typer.testing import CliRunner

import edgeray.ingest
from edgeray.storage.state import open_state_store
from actors.feature_streamer import FeatureStreamerActor, feast_settings
from actors.ingestion import IngestionActor
from actors.pipeline import Pipeline
from edgeray.cli import app
from edgeray.config import PipelineConfig, SourceConfig
from edgeray.deadletter import DeadLetterStore
from edgeray.events import EventKind
from edgeray.feature_repo.definitions import MARKET_VIEW
from edgeray.featurestore import open_store
from edgeray.ingest import IngestCore
from edgeray.validation import validate
from tests.conftest import pipeline_config, shared_file
from tests.reference import reference_features
from tests.test_decision_loop import poll_until

NOW = pd.Timestamp("2024-01-02T12:00:00Z")


def bar(minute: int, symbol: str = "BTC", close: float = 100.0, **kw) -> dict:
    row = {"event_ts": (NOW - pd.Timedelta(hours=1) + pd.Timedelta(minutes=minute)).isoformat(), "symbol": symbol,
           "open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 5.0}
    return row | kw


def core(tmp_path, **kw) -> IngestCore:
    return IngestCore(DeadLetterStore(tmp_path / "dl.jsonl"), {"BTC", "ETH"}, pd.Timedelta(0), **kw)


def letters(tmp_path) -> list[dict]:
    return DeadLetterStore(tmp_path / "dl.jsonl").read_page(10_000)["items"]


# -- 1. event-time sanity --------------------------------------------------------------------------

def test_bars_stamped_in_the_future_are_rejected_and_later_genuine_bars_are_not_late(tmp_path):
    future = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=23)).isoformat()
    c = core(tmp_path)
    first = c.ingest("bar", pd.DataFrame([bar(0, event_ts=future), bar(1, event_ts=future)]))
    assert first.rejected[["reason", "field", "value"]].values.tolist() == [["future", "event_ts", future]] * 2
    later = c.ingest("bar", pd.DataFrame([bar(2), bar(3)]))
    assert later.accepted == 2 and later.rejected.empty  # not `late` behind a watermark in the future


def test_the_future_skew_is_configurable_and_unparseable_stamps_stay_bad_timestamp():
    rows = pd.DataFrame([bar(0, event_ts=(NOW + pd.Timedelta(seconds=200)).isoformat()),
                         bar(1, event_ts=(NOW + pd.Timedelta(seconds=400)).isoformat()),
                         bar(2, event_ts="yesterday"), bar(3, event_ts="1850-01-01T00:00:00Z")])
    result = validate("bar", rows, {"BTC"}, now=NOW)  # default 300 s
    assert result.rejected[["row", "reason"]].values.tolist() == [[1, "future"], [2, "bad_timestamp"], [3, "bad_timestamp"]]
    tight = validate("bar", rows, {"BTC"}, now=NOW, max_future_skew=pd.Timedelta(seconds=60))
    assert tight.rejected["reason"].tolist()[:2] == ["future", "future"]


@pytest.fixture(scope="module")
def pushed(ray_session, tmp_path_factory):
    """One pipeline for the push tests below (starting one costs ~30 s on two cores)."""
    tmp = tmp_path_factory.mktemp("push")
    pipeline = _start(tmp, "push_" + tmp.name[-6:].replace("-", "_"),
                      ingestion={"max_future_skew_seconds": 5, "lateness_seconds": 0})
    yield pipeline
    _stop(pipeline)


def test_the_ingestion_config_skew_reaches_the_actor(pushed):
    soon = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=60)).isoformat()
    out = ray.get(pushed.ingestion.ingest.remote("bar", [bar(0, symbol="SYN-A", event_ts=soon)], "push", True))
    assert [(e["reason"], e["field"]) for e in out["errors"]] == [("future", "event_ts")]


# -- 2. ids from content only ------------------------------------------------------------------------

def test_a_caller_id_reused_across_symbols_dedups_nothing_and_is_kept_as_source_id(tmp_path):
    c = core(tmp_path)
    report = c.ingest("bar", pd.DataFrame([bar(0, "BTC", event_id="42"), bar(0, "ETH", event_id="42"),
                                           bar(1, "BTC", event_id=7)]))
    assert report.accepted == 3 and report.duplicates == 0
    out = pd.concat([b.to_pandas() for b in c.flush() + report.released])
    assert sorted(out["source_id"]) == ["42", "42", "7"]
    assert out["event_id"].nunique() == 3


# -- 3. conflicts -----------------------------------------------------------------------------------

def test_a_different_version_of_an_accepted_bar_is_a_conflict_naming_both_versions(tmp_path):
    c = core(tmp_path)
    c.ingest("bar", pd.DataFrame([bar(0, close=2.0)]))
    resend = c.ingest("bar", pd.DataFrame([bar(0, close=2.0, source="other-feed")]))
    assert resend.duplicates == 1 and resend.rejected.empty  # an exact resend is harmless
    genuine = c.ingest("bar", pd.DataFrame([bar(0, close=43000.0)]))
    assert genuine.duplicates == 0 and genuine.rejected["reason"].tolist() == ["conflict"]
    value = genuine.rejected["value"].iloc[0]
    assert "first {" in value and "close: 2.0" in value and "vs this {" in value and "close: 43000.0" in value
    assert genuine.rejected["field"].iloc[0] == "open,high,low,close"
    # Inside one batch too.
    same_batch = c.ingest("bar", pd.DataFrame([bar(5, close=2.0), bar(5, close=3.0), bar(5, close=2.0)]))
    assert (same_batch.accepted, same_batch.duplicates, same_batch.rejected["reason"].tolist()) == (1, 1, ["conflict"])
    counters = c.counters
    assert counters.received == counters.accepted + counters.rejected + counters.duplicates == 6
    assert counters.rejected_by_reason == {"conflict": 2}
    assert [r["reason"] for r in letters(tmp_path)] == ["conflict", "conflict"]


def test_a_conflict_with_a_version_no_longer_cached_still_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(edgeray.ingest, "RECENT_VALUES_ROWS", 2)  # a small cache, to evict without 50,000 rows
    c = core(tmp_path)
    for m in range(5):
        c.ingest("bar", pd.DataFrame([bar(m)]))
    assert len(c._seen) == 5  # identities outlive the value cache
    old = c.ingest("bar", pd.DataFrame([bar(0, close=50.0)]))
    assert old.rejected["reason"].tolist() == ["conflict"]
    assert "no longer cached" in old.rejected["value"].iloc[0] and "close: 50.0" in old.rejected["value"].iloc[0]


def test_dedup_and_value_memory_stay_bounded(tmp_path):
    c = core(tmp_path, dedup_capacity=10)
    for start in range(0, 100, 5):
        c.ingest("bar", pd.DataFrame([bar(m) for m in range(start, start + 5)]))
    assert len(c._seen) <= 15 and c._recent_rows <= 15


# -- 4. strict types for pushes -----------------------------------------------------------------------

STRICT_BAD = [
    (bar(0) | {"close": "100.0"}, "close", '"100.0"'),
    (bar(0) | {"close": True}, "close", "true"),
    (bar(0, event_id=True), "event_id", "true"),
    (bar(0, symbol=123), "symbol", "123"),
    (bar(0, event_ts=1704196800), "event_ts", "1704196800"),  # a number without epoch_unit
    (bar(0, event_ts=True), "event_ts", "true"),
]


@pytest.mark.parametrize("row, field, value", STRICT_BAD, ids=[f"{f}={v}" for _, f, v in STRICT_BAD])
def test_strict_pushes_refuse_values_of_the_wrong_json_type(row, field, value):
    result = validate("bar", pd.DataFrame([bar(1), row]), {"BTC"}, now=NOW, strict=True)
    assert result.n_accepted == 1
    assert result.rejected[["row", "reason", "field", "value"]].values.tolist() == [[1, "wrong_type", field, value]]


def test_strict_bool_and_string_fields_of_odds():
    odds = {"event_ts": "2024-01-01T00:00:00Z", "symbol": "nba:1", "sport": "nba", "team_a": "x", "team_b": "y",
            "odds_a_american": -110, "odds_b_american": -110}
    rows = pd.DataFrame([odds, odds | {"symbol": "nba:2", "is_close": "true"}, odds | {"symbol": "nba:3", "team_a": 5},
                         odds | {"symbol": "nba:4", "is_close": True}])
    result = validate("odds", rows, known_sports={"nba"}, now=NOW, strict=True)
    assert result.rejected[["row", "reason", "field"]].values.tolist() == [[1, "wrong_type", "is_close"], [2, "wrong_type", "team_a"]]
    assert result.accepted["is_close"].tolist() == [False, True]


@pytest.mark.parametrize("unit, value", [("s", 1704196800), ("ms", 1704196800_000), ("us", 1704196800_000_000),
                                         ("ns", 1704196800_000_000_000)])
def test_strict_numeric_timestamps_are_read_in_the_unit_given(unit, value):
    result = validate("bar", pd.DataFrame([bar(0, event_ts=value), bar(1, event_ts="2024-01-02T12:01:00")]),
                      {"BTC"}, now=NOW, strict=True, epoch_unit=unit)
    assert result.rejected.empty
    assert [str(t) for t in pd.to_datetime(result.accepted["event_ts"], utc=True)] == [
        "2024-01-02 12:00:00+00:00", "2024-01-02 12:01:00+00:00"]  # naive ISO read as UTC


def test_a_1970_bar_from_epoch_seconds_read_as_nanoseconds_is_no_longer_accepted_from_a_push():
    strict = validate("bar", pd.DataFrame([bar(0, event_ts=1704196800)]), {"BTC"}, now=NOW, strict=True)
    assert strict.rejected["reason"].tolist() == ["wrong_type"]
    with pytest.raises(ValueError, match="epoch_unit.*'minutes'"):
        validate("bar", pd.DataFrame([bar(0)]), {"BTC"}, strict=True, epoch_unit="minutes")
    # File replays keep lenient parsing: numbers are epoch nanoseconds, numeric strings are numbers.
    lenient = validate("bar", pd.DataFrame([bar(0, event_ts=1704196800_000_000_000) | {"close": "100.0"}]), {"BTC"}, now=NOW)
    assert lenient.rejected.empty and lenient.accepted["close"].tolist() == [100.0]


# -- 5. empty rows never 500 --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [k.value for k in EventKind])
def test_empty_rows_of_every_kind_are_rejected_and_counted_by_the_actor(pushed, kind):
    before = ray.get(pushed.ingestion.status.remote())
    out = ray.get(pushed.ingestion.ingest.remote(kind, [{}, {}], "push", True))
    assert (out["received"], out["accepted"], out["rejected"]) == (2, 0, 2)
    assert {e["reason"] for e in out["errors"]} == {"missing_field"}
    assert ray.get(pushed.ingestion.ingest.remote(kind, [], "push", True))["received"] == 0
    after = ray.get(pushed.ingestion.status.remote())
    assert after["received"] - before["received"] == after["rejected"] - before["rejected"] == 2


# -- 6. dead letters bounded and paged ----------------------------------------------------------------

def _rejects(n: int, start: int = 0, raw_size: int = 10) -> pd.DataFrame:
    return pd.DataFrame({"row": range(n), "reason": "missing_field", "field": "close",
                         "value": [str(start + i) for i in range(n)],
                         "raw": [json.dumps({"i": start + i, "pad": "x" * raw_size}) for i in range(n)]})


def test_dead_letters_rotate_under_a_size_cap_and_drop_the_oldest_file(tmp_path):
    store = DeadLetterStore(tmp_path / "dl.jsonl", max_bytes=20_000, keep_files=3)
    for k in range(40):
        store.append("bar", "test", _rejects(25, start=25 * k))
    files = sorted(glob.glob(str(tmp_path / "dl.jsonl*")))
    assert [f.rsplit("/", 1)[1] for f in files] == ["dl.jsonl", "dl.jsonl.1", "dl.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 20_000 for f in files)
    page = store.read_page(3)
    assert [r["value"] for r in page["items"]] == ["997", "998", "999"]  # newest page, oldest first
    # total is the retained count, the same for a fresh reader of the files
    assert page["total"] == DeadLetterStore(tmp_path / "dl.jsonl", max_bytes=20_000).total < 1000
    oldest = store.read_page(2, offset=page["total"] - 2)["items"]
    assert int(oldest[0]["value"]) == 1000 - page["total"]  # the page ends at the oldest retained record
    across = store.read_page(4, offset=store._counts[0] - 2)["items"]  # spans the live file and .1
    assert [int(r["value"]) for r in across] == list(range(1000 - store._counts[0] - 2, 1000 - store._counts[0] + 2))
    assert store.read_page(5, offset=10_000)["items"] == []


def test_a_huge_raw_row_is_stored_truncated_and_flagged(tmp_path):
    store = DeadLetterStore(tmp_path / "dl.jsonl")
    store.append("bar", "push", pd.concat([_rejects(1, raw_size=1_000_000), _rejects(1, start=1)], ignore_index=True))
    assert (tmp_path / "dl.jsonl").stat().st_size < 10_000
    huge, small = store.read_page(2)["items"]
    assert huge["raw_truncated"] is True and len(huge["raw"]) == 4096 and huge["raw"].startswith('{"i": 0')
    assert "raw_truncated" not in small and small["raw"]["i"] == 1


def test_the_cli_pages_dead_letters_with_offset(tmp_path):
    cfg = pipeline_config(tmp_path, "cli")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    store = DeadLetterStore(tmp_path / "run" / "deadletters.jsonl")
    store.append("bar", "test", _rejects(30))
    result = CliRunner().invoke(app, ["dead-letters", "--config", str(tmp_path / "cfg.json"), "--limit", "2",
                                      "--offset", "5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "dead letters 24-25 of 30" in result.output
    assert '"i": 23' in result.output and '"i": 24' in result.output and '"i": 29' not in result.output


# -- 7. downstream failures -------------------------------------------------------------------------

MARK = "inject-fault"


@ray.remote(num_cpus=0)
class FaultyStreamer(FeatureStreamerActor.__ray_actor_class__):
    """INJECTED FAULT: the real feature streamer, except that it raises on a batch holding a row whose
    source_id is MARK, every time it is sent."""

    def process(self, batch, seq=None, after=None, producer=None):
        if MARK in batch.column("source_id").to_pylist():
            raise RuntimeError("injected fault: a marked row")
        return super().process(batch, seq, after, producer)


@ray.remote(num_cpus=0)
class FaultyDecisions:
    """INJECTED FAULT: stands in for the meta-controller; decides (counts) every batch, except that
    it raises on one holding a row with close == 13.0."""

    def __init__(self):
        self.decided = 0

    def decide_batch(self, frame, seq=None, after=None, producer=None):
        if (frame["close"] == 13.0).any():
            raise ValueError("injected fault: close 13.0")
        self.decided += len(frame)
        return {"decisions": len(frame), "durable_seq": seq}  # as if checkpointed at once: nothing to resend

    def count(self):
        return self.decided


def _rows(first_minute: int, n: int, close: float = 100.0, **kw) -> list[dict]:
    return [bar(first_minute + i, symbol="SYN-A", close=close, **kw) for i in range(n)]


def test_a_failing_streamer_batch_is_retried_then_dead_lettered_and_never_fails_another_call(
        ray_session, tmp_path, unique_name):
    cfg = PipelineConfig.model_validate(pipeline_config(
        tmp_path, unique_name, ingestion={"lateness_seconds": 0, "max_in_flight": 1, "downstream_retries": 2}))
    open_store(feast_settings(cfg), cfg.features.spec(), apply=True)
    streamer = FaultyStreamer.remote(cfg.model_dump())
    ingestion = IngestionActor.remote(cfg.model_dump(), streamer)
    try:
        ok = [ray.get(ingestion.ingest.remote("bar", _rows(0, 5), "push", True))]
        marked = _rows(5, 3)
        marked[1]["event_id"] = MARK
        ok.append(ray.get(ingestion.ingest.remote("bar", marked, "push", True)))
        # The next, unrelated calls wait for the slot the failing batch holds: they must still succeed.
        ok += [ray.get(ingestion.ingest.remote("bar", _rows(8 + 4 * k, 4), "push", True)) for k in range(3)]
        assert [o["accepted"] for o in ok] == [5, 3, 4, 4, 4]
        status = ray.get(ingestion.flush.remote())
        features = ray.get(streamer.status.remote())
        assert status["downstream_errors"] == 3
        assert features["events_processed"] == status["emitted"] - 3 == 17  # every other batch processed
        failed = [r for r in ray.get(ingestion.dead_letters.remote(100))["items"] if r["reason"] == "downstream_error"]
        assert len(failed) == 3 and all("injected fault" in r["value"] for r in failed)
        assert sorted(r["raw"]["close"] for r in failed) == [100.0] * 3
    finally:
        for handle in (ingestion, streamer):
            ray.kill(handle, no_restart=True)
        open_store(feast_settings(cfg)).teardown()


def test_a_failing_decision_batch_is_recorded_and_the_streamer_carries_on(ray_session, tmp_path, unique_name):
    cfg = PipelineConfig.model_validate(pipeline_config(tmp_path, unique_name, ingestion={"lateness_seconds": 0}))
    open_store(feast_settings(cfg), cfg.features.spec(), apply=True)
    meta = FaultyDecisions.remote()
    streamer = FeatureStreamerActor.remote(cfg.model_dump(), 0.0, meta)
    ingestion = IngestionActor.remote(cfg.model_dump(), streamer)
    try:
        results = [ray.get(ingestion.ingest.remote("bar", _rows(0, 5), "push", True)),
                   ray.get(ingestion.ingest.remote("bar", _rows(5, 2, close=13.0), "push", True))]
        results += [ray.get(ingestion.ingest.remote("bar", _rows(7 + 3 * k, 3), "push", True)) for k in range(3)]
        assert [r["accepted"] for r in results] == [5, 2, 3, 3, 3]
        ray.get(ingestion.flush.remote())
        ray.get(streamer.flush.remote())
        status = ray.get(streamer.status.remote())
        assert (status["decision_errors"], status["undecided_rows"]) == (1, 2)
        assert "injected fault: close 13.0" in status["last_decision_error"]
        assert ray.get(meta.count.remote()) == 14 and status["events_processed"] == 16
        undecided = DeadLetterStore(tmp_path / "run" / "decision_deadletters.jsonl").read_page(10)["items"]
        assert [(r["reason"], r["raw"]["close"]) for r in undecided] == [("decision_error", 13.0)] * 2
    finally:
        for handle in (ingestion, streamer, meta):
            ray.kill(handle, no_restart=True)
        open_store(feast_settings(cfg)).teardown()


# -- 9. a killed ingestion actor resumes its replay ---------------------------------------------------

def _start(tmp_path, name, **overrides) -> Pipeline:
    return Pipeline.start(PipelineConfig.model_validate(pipeline_config(tmp_path, name, **overrides)))


def _stop(pipeline: Pipeline) -> None:
    pipeline.shutdown()
    open_store(feast_settings(pipeline.cfg)).teardown()


def test_an_ingestion_restart_mid_replay_resumes_without_duplicates_or_lost_counts(ray_session, tmp_path, unique_name):
    bars = pd.read_csv(shared_file("markets/btc_perp_1m_2022-01.csv")).iloc[:15_000]
    path = tmp_path / "btc.csv"
    bars.to_csv(path, index=False)
    pipeline = _start(tmp_path, unique_name, ingestion={"batch_size": 250, "commit_interval_s": 0.2})
    try:
        # Paced (2,500 bars/s: ~6 s in all) so the kill lands mid-replay: at full speed the streamer now keeps up with
        # ingestion and the replay could end before a commit was seen.
        ref = pipeline.ingestion.replay.remote([{"type": "bars", "path": str(path), "symbol": "BTCUSDT-PERP"}], 60 * 2_500)
        # Kill once a commit covers rows (a kill before any commit restarts from row 0, correctly, but proves no resume).
        state = open_state_store(pipeline.cfg)  # what the restarted actor will read
        poll_until(ref, lambda: sum((state.load("ingestion") or {}).get("offsets", {}).values()), 3_000)
        assert not ray.wait([ref], timeout=0)[0], "the replay finished before the kill"
        ray.kill(pipeline.ingestion, no_restart=False)  # a crash: Ray restarts the actor and retries replay()
        ray.get(ref)
        status = pipeline.finish()
        ing, feat = status["ingestion"], status["features"]
        assert ing["replay"]["resumed_from"] > 0  # it resumed, not started over
        assert ing["received"] == len(bars) == ing["accepted"] + ing["rejected"] + ing["duplicates"]
        assert ing["restarted"] is False  # every counter came back from the state file
        assert feat["events_processed"] == feat["offline_rows_written"] == len(bars)

        files = glob.glob(str(feast_settings(pipeline.cfg).offline_dir / MARKET_VIEW / "*.parquet"))
        history = pd.concat([pd.read_parquet(f) for f in files]).sort_values("event_ts").reset_index(drop=True)
        assert not history.duplicated(["entity" if "entity" in history else "symbol", "event_ts"]).any()
        # The same values as an uninterrupted run of these rows (which test_pipeline checks against this reference).
        names = pipeline.cfg.features.spec().names
        expected = reference_features(bars.assign(bid=np.nan, ask=np.nan))
        np.testing.assert_allclose(history[names].to_numpy(float), expected.to_numpy(float), rtol=1e-7, atol=1e-12,
                                   equal_nan=True)
    finally:
        _stop(pipeline)


def test_a_source_is_identified_by_its_file_and_a_changed_file_does_not_resume(tmp_path):
    from edgeray.sources import source_identity

    path = tmp_path / "a.csv"
    path.write_text("timestamp,open\n")
    spec = SourceConfig(type="bars", path=str(path), symbol="X")
    before = source_identity(spec)
    assert before == source_identity(spec)
    path.write_text("timestamp,open\n1,2\n")
    assert source_identity(spec) != before
    assert source_identity(SourceConfig(type="generator", seed=1)) != source_identity(SourceConfig(type="generator", seed=2))
