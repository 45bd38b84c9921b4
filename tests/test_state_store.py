"""The actors' checkpoint store (edgeray.storage.state): files, SQLite and the machine's PostgreSQL."""
from __future__ import annotations

import math
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from edgeray.config import PipelineConfig
from edgeray.storage.state import STATE_TABLE, FileStateStore, SqlStateStore, open_state_store
from tests.conftest import pipeline_config, postgres_url_or_skip

CHECKPOINT = {"counts": np.int64(7), "weights": np.array([0.5, 1.5]), "ratio": np.float32(0.25),
              "at": pd.Timestamp("2024-03-01 14:30:00.123456", tz="UTC"), "warmup": float("nan"),
              "stream": {"producer": "p1", "seq": 3}}


@pytest.fixture(params=["files", "sqlite", "postgresql"])
def open_store(request, tmp_path):
    """Opens stores of one backend; with a namespace of their own per test (the PostgreSQL rows are deleted after)."""
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    opened = []

    def open_(ns: str = namespace):
        if request.param == "files":
            store = FileStateStore(tmp_path / ns / "state")
        else:
            url = f"sqlite:///{tmp_path / 'state.db'}" if request.param == "sqlite" else postgres_url_or_skip()
            store = SqlStateStore(url, ns)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.clear()
        store.close()


def test_a_checkpoint_round_trips_with_numpy_values_and_timestamps(open_store):
    store = open_store()
    assert store.load("meta_controller") is None
    store.save("meta_controller", CHECKPOINT)
    got = store.load("meta_controller")
    assert math.isnan(got.pop("warmup"))
    assert got == {"counts": 7, "weights": [0.5, 1.5], "ratio": 0.25, "at": "2024-03-01T14:30:00.123456+00:00",
                   "stream": {"producer": "p1", "seq": 3}}


def test_a_save_replaces_the_last_one_and_another_store_object_reads_it(open_store):
    writer, reader = open_store(), open_store()
    writer.save("ingestion", {"seq": 1})
    writer.save("ingestion", {"seq": 2, "offsets": {"a": 10}})
    assert reader.load("ingestion") == {"seq": 2, "offsets": {"a": 10}}  # as a restarted actor would see it


def test_clear_removes_only_its_own_namespace(open_store):
    ours, theirs = open_store(), open_store(f"other-{uuid.uuid4().hex[:10]}")
    for store in (ours, theirs):
        store.save("meta_controller", {"seq": 1})
        store.save("ingestion", {"seq": 1})
    ours.clear()
    assert ours.load("meta_controller") is None and ours.load("ingestion") is None
    assert theirs.load("meta_controller") == {"seq": 1} and theirs.load("ingestion") == {"seq": 1}


def test_a_frame_round_trips_with_its_utc_timestamps(open_store):
    store = open_store()
    curve = pd.DataFrame({"ts": pd.to_datetime(np.array([1, 60_000_000_000], dtype=np.int64), utc=True),
                          "equity": [1_000_000.0, 1_000_012.5]})
    assert store.load_frame("equity_curve") is None
    store.save_frame("equity_curve", curve)
    got = open_store().load_frame("equity_curve")
    assert got["ts"].astype("int64").tolist() == [1, 60_000_000_000] and str(got["ts"].dt.tz) == "UTC"
    assert got["equity"].tolist() == [1_000_000.0, 1_000_012.5]


def test_each_save_is_one_row_per_name_in_postgresql(tmp_path):
    url, namespace = postgres_url_or_skip(), f"test-{uuid.uuid4().hex[:10]}"
    store = SqlStateStore(url, namespace)
    try:
        for seq in range(3):
            store.save("meta_controller", {"seq": seq})
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text(f'SELECT name, state FROM "{STATE_TABLE}" WHERE namespace = :ns'),
                                {"ns": namespace}).all()
        assert [(name, state) for name, state in rows] == [("meta_controller", '{"seq": 2}')]
    finally:
        store.clear()
        store.close()


def test_the_config_chooses_the_backend(tmp_path):
    files = PipelineConfig.model_validate(pipeline_config(tmp_path, "files"))
    store = open_state_store(files)
    assert isinstance(store, FileStateStore) and store.directory == tmp_path / "run" / "state"
    url = f"sqlite:///{tmp_path / 'state.db'}"
    sql = PipelineConfig.model_validate(pipeline_config(tmp_path, "ns1", storage={"state_url": url}))
    store = open_state_store(sql)
    assert isinstance(store, SqlStateStore) and store.namespace == "ns1"
    store.close()


@pytest.mark.parametrize("url, complaint", [
    ("mysql://root:hunter2@db/edgeray", "'mysql' databases are not supported"),
    ("runs/state.db", "is not a database URL"),
    ("sqlite://", "SQLite needs a database file"),
    ("sqlite:///:memory:", "SQLite needs a database file"),
    ("sqlite:///runs/state.db", "SQLite needs an absolute path"),
])
def test_a_bad_state_url_is_refused_naming_the_field(tmp_path, url, complaint):
    with pytest.raises(ValueError) as err:
        PipelineConfig.model_validate(pipeline_config(tmp_path, "bad", storage={"state_url": url}))
    message = str(err.value)
    assert "storage.state_url" in message and complaint in message


def test_the_store_never_echoes_a_password():
    with pytest.raises(ValueError, match="storage.state_url: 'mysql' databases") as err:
        SqlStateStore("mysql://root:hunter2@db/edgeray", "ns")
    assert "hunter2" not in str(err.value)  # nor reaches the actor's logs


def test_a_bad_state_url_names_the_field_and_never_shows_its_password():
    from edgeray.config import Config, ConfigError

    with pytest.raises(ConfigError) as caught:
        Config(storage={"state_url": "mysql://trader:hunter2@db.internal:3306/edgeray"})
    assert "storage.state_url" in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", ["sqlite:///audit.db", "mysql://u@db/x", "not a url"])
def test_an_audit_url_every_actor_would_not_read_alike_is_refused_naming_the_field(url):
    from edgeray.config import Config, ConfigError

    with pytest.raises(ConfigError, match=r"decisions\.audit_url"):
        Config(decisions={"audit_url": url})
