"""Actor checkpoints: one JSON document per (namespace, name), in local files or in a SQL database.

`storage.state_url` chooses. None: files under run_dir/state, one per name, replaced atomically so a crash
mid-write leaves the previous checkpoint intact (the embedded default). A SQLAlchemy URL (sqlite:///PATH or
postgresql+psycopg://...): rows of one table there, so an actor that Ray restarts on another node finds its
checkpoint. Names come from the actors' code, never from users.
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from edgeray.audit import sqlite_wal

if TYPE_CHECKING:
    from edgeray.config import PipelineConfig

STATE_TABLE = "edgeray_state"
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
URL_FIELD = "storage.state_url"
URL_EXAMPLES = "sqlite:///ABSOLUTE/PATH.db or postgresql+psycopg://USER@HOST:5432/DB"
# Taken while the table is created: PostgreSQL's CREATE TABLE IF NOT EXISTS still fails when two actors starting
# at once on a new database both create it (a duplicate pg_type row). Any fixed number unique to this table.
_CREATE_LOCK_KEY = 0x6564_6765_7261_7901


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"checkpoint value of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def encode(state: dict) -> str:
    """A checkpoint as JSON text, for both backends (NaN stays NaN: Python's json reads it back)."""
    return json.dumps(state, default=_json_default)


def check_database_url(url: str, field: str = URL_FIELD) -> str:
    """`url` when it names a database every actor of a run reaches alike; a ValueError naming `field` otherwise."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(f"{field}: {url!r} is not a database URL; expected {URL_EXAMPLES}") from None
    shown = parsed.render_as_string(hide_password=True)  # never echo a password into logs
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(f"{field}: {backend!r} databases are not supported ({shown}); expected {URL_EXAMPLES}")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        # An in-memory database dies with the process that holds it: no restarted actor would find anything.
        raise ValueError(f"{field}: SQLite needs a database file ({shown}); expected {URL_EXAMPLES}")
    if backend == "sqlite" and not Path(parsed.database).is_absolute():
        # Ray starts actors in their own working directories: a relative path would differ between actors.
        raise ValueError(f"{field}: SQLite needs an absolute path ({shown}); expected {URL_EXAMPLES}")
    return url


class FileStateStore:
    """One file per name under `directory` (NAME.json; frames NAME.parquet), each replaced atomically."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _replace(self, name: str, suffix: str, write) -> None:
        path = self.directory / f"{name}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        os.replace(tmp, path)

    def load(self, name: str) -> dict | None:
        path = self.directory / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def save(self, name: str, state: dict) -> None:
        text = encode(state)
        self._replace(name, ".json", lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def load_frame(self, name: str) -> pd.DataFrame | None:
        path = self.directory / f"{name}.parquet"
        return pd.read_parquet(path) if path.exists() else None

    def save_frame(self, name: str, frame: pd.DataFrame) -> None:
        self._replace(name, ".parquet", lambda tmp: frame.to_parquet(tmp, index=False))

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"FileStateStore({str(self.directory)!r})"


class SqlStateStore:
    """Rows (namespace, name, state as JSON text) of one table; a save is one upsert in its own committed
    transaction, so what `save` returned from survives this process, and this node."""

    def __init__(self, url: str, namespace: str):
        check_database_url(url)
        self.namespace = namespace
        # pre_ping: a database that restarted (or failed over) since the last checkpoint costs a reconnect, not a
        # failed checkpoint.
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            Path(self.engine.url.database).parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", sqlite_wal)  # synchronous=FULL: a committed save is on disk
        # Text, not JSON/JSONB: checkpoints hold NaN (warm-up features), which JSONB refuses.
        self.table = sa.Table(
            STATE_TABLE, sa.MetaData(),
            sa.Column("namespace", sa.String(), primary_key=True),
            sa.Column("name", sa.String(), primary_key=True),
            sa.Column("state", sa.Text(), nullable=False),
            sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        )
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK_KEY})
            conn.execute(sa.schema.CreateTable(self.table, if_not_exists=True))
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(self.table)
        self._upsert = insert.on_conflict_do_update(
            index_elements=["namespace", "name"], set_={"state": insert.excluded.state, "saved_at": insert.excluded.saved_at})

    def _key(self, name: str):
        return sa.and_(self.table.c.namespace == self.namespace, self.table.c.name == name)

    def load(self, name: str) -> dict | None:
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(self.table.c.state).where(self._key(name))).scalar_one_or_none()
        return None if text is None else json.loads(text)

    def save(self, name: str, state: dict) -> None:
        row = {"namespace": self.namespace, "name": name, "state": encode(state), "saved_at": datetime.now(timezone.utc)}
        with self.engine.begin() as conn:
            conn.execute(self._upsert, row)

    def load_frame(self, name: str) -> pd.DataFrame | None:
        state = self.load(name)
        if state is None:
            return None
        frame = pd.DataFrame(state["columns"])
        for column in state["utc_ns"]:
            frame[column] = pd.to_datetime(np.asarray(frame[column], dtype=np.int64), utc=True)
        return frame

    def save_frame(self, name: str, frame: pd.DataFrame) -> None:
        """The frame's columns as JSON lists; datetime columns as UTC epoch nanoseconds (naive ones read as UTC),
        which load_frame turns back into UTC timestamps."""
        columns, utc_ns = {}, []
        for column in frame.columns:
            values = frame[column]
            if pd.api.types.is_datetime64_any_dtype(values):
                utc_ns.append(column)
                values = pd.to_datetime(values, utc=True).to_numpy(dtype="datetime64[ns]").astype(np.int64)
            columns[column] = np.asarray(values).tolist()
        self.save(name, {"columns": columns, "utc_ns": utc_ns})

    def clear(self) -> None:
        """Every checkpoint of this namespace (other namespaces' rows stay)."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(self.table.c.namespace == self.namespace))

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"SqlStateStore({self.engine.url.render_as_string(hide_password=True)!r}, namespace={self.namespace!r})"


StateStore = FileStateStore | SqlStateStore


def open_state_store(cfg: "PipelineConfig") -> StateStore:
    """The store `cfg` names: its storage.state_url (rows keyed by cfg.namespace), else run_dir/state."""
    if cfg.storage.state_url:
        return SqlStateStore(cfg.storage.state_url, cfg.namespace)
    return FileStateStore(Path(cfg.run_dir) / "state")
