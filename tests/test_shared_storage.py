"""Durable state on cluster-grade storage: dead letters, the training-job store and the model registry's index in
the machine's PostgreSQL, model artefacts in a local S3-compatible server (moto), through pyarrow.fs.

Real parts only: a real PostgreSQL (skipped when none answers), a real moto server on a free port (the
`s3_bucket` fixture), real models saved and loaded. Every test works in its own namespace/queue/prefix, so runs
and other tests sharing the database never see each other's rows.
"""
from __future__ import annotations

import threading
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from edgeray.config import PipelineConfig
from edgeray.deadletter import DEADLETTER_TABLE, SqlDeadLetterStore, open_deadletter_store
from edgeray.sports.registry import INDEX_PREFIX, ModelRegistry, open_registry, use_storage
from edgeray.training.jobs import JOBS_TABLE, RESTART_REASON, JobStore
from tests.conftest import pipeline_config, postgres_url_or_skip
from tests.test_registry_performance import synthetic_games

SECRET = "s3cr3t-pw-never-shown"


@pytest.fixture(scope="module")
def pg_url() -> str:
    return postgres_url_or_skip()


@pytest.fixture
def name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _rejected(values) -> pd.DataFrame:
    return pd.DataFrame({"reason": "bad_price", "field": "price", "value": [str(v) for v in values],
                         "raw": [f'{{"price": {v}}}' for v in values]})


def _delete(url: str, table: str, column: str, *keys: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} = ANY(:keys)"), {"keys": list(keys)})
    engine.dispose()


# ------------------------------------------------------------------------------------------ dead letters
def test_dead_letters_on_postgresql_page_newest_first_keep_the_newest_rows_and_never_mix(pg_url, tmp_path, name):
    other = f"{name}x"
    cfg = PipelineConfig.model_validate(pipeline_config(
        tmp_path, name, storage={"state_url": pg_url}, ingestion={"symbols": ["BTC"], "deadletter_max_rows": 25}))
    try:
        ingest = open_deadletter_store(cfg, "ingestion")
        undecided = open_deadletter_store(cfg, "undecided")
        elsewhere = open_deadletter_store(cfg.model_copy(update={"namespace": other}), "ingestion")
        assert isinstance(ingest, SqlDeadLetterStore) and SECRET not in repr(ingest)
        assert ingest.append("bar", "a.csv", _rejected(range(10))) == 10
        assert ingest.append("bar", "b.csv", _rejected(range(10, 30))) == 20  # 30 written, 25 kept
        undecided.append("bar", "loop", _rejected([99]))
        elsewhere.append("odds", "c.csv", _rejected([7, 8]))

        # what another node's actor (a fresh store object) reads: the same rows, newest page first
        reader = open_deadletter_store(cfg, "ingestion")
        page = reader.read_page(limit=4)
        assert page["total"] == 25 and [r["value"] for r in page["items"]] == ["26", "27", "28", "29"]
        older = reader.read_page(limit=4, offset=4)
        assert [r["value"] for r in older["items"]] == ["22", "23", "24", "25"]
        assert [r["value"] for r in reader.read_page(limit=100)["items"]] == [str(v) for v in range(5, 30)]
        assert reader.read_page(limit=3, offset=24)["items"][0]["value"] == "5"  # the oldest kept
        first = older["items"][0]
        assert (first["kind"], first["source"], first["reason"], first["raw"]) == ("bar", "b.csv", "bad_price",
                                                                                 {"price": 22})
        # stores of another kind or namespace are apart
        assert [r["value"] for r in undecided.read_page()["items"]] == ["99"]
        assert elsewhere.total == 2 and {r["source"] for r in elsewhere.read_page()["items"]} == {"c.csv"}
        with pytest.raises(ValueError, match="limit and offset"):
            reader.read_page(limit=-1)
    finally:
        _delete(pg_url, DEADLETTER_TABLE, "namespace", name, other)


def test_dead_letters_stay_in_run_dir_files_without_a_database(tmp_path, name):
    cfg = PipelineConfig.model_validate(pipeline_config(tmp_path, name, ingestion={"symbols": ["BTC"]}))
    store = open_deadletter_store(cfg, "undecided")
    store.append("bar", "loop", _rejected([1, 2]))
    assert (tmp_path / "run" / "decision_deadletters.jsonl").read_text().count("\n") == 2
    with pytest.raises(ValueError, match="unknown name 'other'"):
        open_deadletter_store(cfg, "other")


# ---------------------------------------------------------------------------------------- training jobs
@pytest.fixture(params=["sqlite", "postgresql"])
def job_location(request, tmp_path, name):
    """Where a queue lives: a SQLite file (the default) or PostgreSQL (rows of this test's queue, removed after)."""
    if request.param == "sqlite":
        yield str(tmp_path / "queue.sqlite")
        return
    url = postgres_url_or_skip()
    yield url
    _delete(url, JOBS_TABLE, "queue", name, f"{name}x")


def _demo() -> dict:
    return {"epochs": 2, "n_samples": 64}


def test_two_schedulers_claiming_at_once_never_get_the_same_job_or_exceed_the_cap(job_location, name):
    import edgeray.training.tasks  # noqa: F401  (registers torch_mlp_demo)

    stores = [JobStore(job_location, queue=name) for _ in range(2)]
    submitted = [stores[0].submit("ann", "torch_mlp_demo", _demo(), 0, 0.0)["job_id"] for _ in range(30)]
    claimed: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def claim(i: int) -> None:
        start.wait()
        for _ in range(20):
            claimed[i] += [job["job_id"] for job in stores[i].claim_next(8)]
            # a finished job frees a slot, so both keep claiming until the queue is empty
            for job_id in claimed[i][-2:]:
                stores[i].finish(job_id, 1, "completed", result={})

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = claimed[0] + claimed[1]
    assert len(everything) == len(set(everything))  # no job claimed twice
    assert set(everything) == set(submitted)
    assert stores[0].running_count() <= 8
    assert all(job["attempts"] == 1 for job in stores[1].list_jobs())
    for store in stores:
        store.close()


def test_a_restarted_scheduler_finds_and_recovers_its_queue_and_only_its_own(job_location, name):
    import edgeray.training.tasks  # noqa: F401

    store = JobStore(job_location, queue=name, max_attempts=2)
    neighbour = JobStore(job_location, queue=f"{name}x")
    retry = store.submit("ann", "torch_mlp_demo", _demo(), 9, 0.0)["job_id"]
    once = store.submit("ann", "torch_mlp_demo", _demo(), 8, 0.0, max_attempts=1)["job_id"]
    waiting = store.submit("bob", "torch_mlp_demo", _demo(), 0, 0.0)["job_id"]
    theirs = neighbour.submit("cy", "torch_mlp_demo", _demo(), 99, 0.0)["job_id"]
    assert [j["job_id"] for j in store.claim_next(2)] == [retry, once]  # the neighbour's priority 99 is not ours
    store.cancel(waiting, "bob", False)
    store.close()

    restarted = JobStore(job_location, queue=name)  # another process or node
    assert restarted.recover() == {"requeued": [retry], "failed": [once]}
    assert restarted.get(once)["error"] == RESTART_REASON and restarted.get(waiting)["state"] == "cancelled"
    assert restarted.report_progress(retry, 1, 1, 2, {"loss": 1.0}, 0.1) is True  # the orphaned attempt stops
    assert [j["job_id"] for j in restarted.claim_next(5)] == [retry] and restarted.get(retry)["attempts"] == 2
    with pytest.raises(KeyError, match="unknown job_id"):
        restarted.get(theirs)
    assert [j["job_id"] for j in neighbour.list_jobs()] == [theirs]

    before = restarted.list_jobs()
    restarted.load_state(restarted.state_dict())  # a snapshot restores this queue only, in its order
    assert restarted.list_jobs() == before and neighbour.get(theirs)["state"] == "queued"


def test_a_training_queue_actor_restarted_elsewhere_finds_its_jobs_in_postgresql(pg_url, ray_session, name):
    from actors.training_queue import TrainingQueueActor
    from tests.test_training_queue import ADMIN, _wait

    config = {"db_path": pg_url, "queue": name, "poll_s": 0.05, "start_paused": True}
    try:
        first = TrainingQueueActor.remote(config)
        job = ray_session.get(first.submit.remote("ann", "torch_mlp_demo", {"epochs": 2, "n_samples": 32}, 0, 0.0))
        ray_session.kill(first)  # its node is gone; nothing of it survives but the database
        second = TrainingQueueActor.remote({**config, "start_paused": False})
        done = _wait(lambda: (j := ray_session.get(second.job.remote(job["job_id"], *ADMIN)))["state"] == "completed"
                     and j, what="the queued job to complete on the new actor")
        assert done["attempts"] == 1 and done["progress"]["epoch"] == 2
        ray_session.kill(second)
    finally:
        _delete(pg_url, JOBS_TABLE, "queue", name)


# ------------------------------------------------------------------------------------------ registry
@pytest.fixture(scope="module")
def real_model():
    from edgeray.sports.models import make_model

    games = synthetic_games()
    model = make_model("statistical", "nba", None, {}).fit(games[games.season < 2020])
    return model, games[games.season == 2020]


def test_registry_index_in_postgresql_and_artefacts_in_s3_load_on_another_node(pg_url, s3_bucket, tmp_path, name,
                                                                               real_model):
    model, test = real_model
    artifact_uri = s3_bucket.uri(f"{name}/registry")
    cfg = PipelineConfig.model_validate(pipeline_config(
        tmp_path, name, storage={"state_url": pg_url, "artifact_uri": artifact_uri},
        sports={"registry_dir": str(tmp_path / "node-a")}))
    try:
        record = open_registry(cfg).register(model, {"log_loss": 0.6}, tags=[name])
        assert record["artefact_path"].startswith(f"s3://{s3_bucket.bucket}/{name}/registry/artefacts/nba/")
        assert "endpoint_override" not in record["artefact_path"]
        assert not (tmp_path / "node-a").exists()  # nothing local: index and artefacts are both shared

        # "another node": a fresh registry with another local folder, the same database and bucket
        other = open_registry(cfg.model_copy(update={"sports": cfg.sports.model_copy(
            update={"registry_dir": str(tmp_path / "node-b")})}))
        found = other.resolve(name)
        assert found["model_id"] == record["model_id"] and found["metrics"] == {"log_loss": 0.6}
        loaded = other.load(found["model_id"])
        np.testing.assert_array_equal(loaded.predict_proba(test), model.predict_proba(test))

        # a training job's registry, named by its folder only, uses the storage the scheduler set
        with use_storage(pg_url, artifact_uri):
            assert ModelRegistry(tmp_path / "node-c").get(record["model_id"])["tags"] == [name]
    finally:
        engine = sa.create_engine(pg_url)
        with engine.begin() as conn:
            ids = conn.execute(sa.text(f"SELECT model_id FROM {INDEX_PREFIX}model_tags WHERE tag = :t"),
                               {"t": name}).scalars().all()
            if ids:
                conn.execute(sa.text(f"DELETE FROM {INDEX_PREFIX}model_tags WHERE model_id = ANY(:ids)"), {"ids": ids})
                conn.execute(sa.text(f"DELETE FROM {INDEX_PREFIX}models WHERE model_id = ANY(:ids)"), {"ids": ids})
        engine.dispose()


def test_registry_on_a_file_uri_refuses_an_index_row_that_points_outside_its_artefacts(tmp_path, real_model):
    model, test = real_model
    registry = ModelRegistry(tmp_path / "reg", artifact_uri=f"file://{tmp_path / 'objects'}")
    record = registry.register(model, {})
    assert (tmp_path / "objects" / "artefacts" / "nba").is_dir() and not (tmp_path / "reg" / "artefacts").exists()
    np.testing.assert_array_equal(registry.load(record["model_id"]).predict_proba(test), model.predict_proba(test))
    with registry.engine.begin() as conn:  # a tampered index must not make the registry unpickle another file
        conn.execute(sa.text("UPDATE models SET artefact_path = '../../elsewhere' WHERE model_id = :i"),
                     {"i": record["model_id"]})
    with pytest.raises(RuntimeError, match="outside the registry's artefacts"):
        registry.load(record["model_id"])


# ------------------------------------------------------------------------------------------ bad config
@pytest.mark.parametrize("storage, field", [
    ({"state_url": f"mysql://edgeray:{SECRET}@db:3306/edgeray"}, "storage.state_url"),
    ({"artifact_uri": f"ftp://edgeray:{SECRET}@host/models"}, "storage.artifact_uri"),
    ({"artifact_uri": f"s3://KEY:{SECRET}@/models"}, "storage.artifact_uri"),
    ({"artifact_uri": "file://relative/models"}, "storage.artifact_uri"),
    ({"artifact_uri": "/not/a/uri"}, "storage.artifact_uri"),
])
def test_a_bad_storage_setting_names_its_field_and_never_the_password(tmp_path, storage, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as info:
        PipelineConfig.model_validate(pipeline_config(tmp_path, "bad", storage=storage))
    assert SECRET not in str(info.value)


def test_a_bad_queue_database_names_its_setting_without_the_password(tmp_path):
    with pytest.raises(ValueError, match="db_path") as info:
        JobStore(f"mysql://edgeray:{SECRET}@db/edgeray")
    assert SECRET not in str(info.value)
    with pytest.raises(ValueError, match="storage.artifact_uri") as info:
        ModelRegistry(tmp_path / "reg", artifact_uri=f"gs://KEY:{SECRET}@/models")
    assert SECRET not in str(info.value)
