"""The SQL side of durable state: one way to open a configured database and create edgeray's tables in it.

Used by the dead letters, the training-job store and the model registry's index (the actor checkpoints in
edgeray.storage.state predate it and do the same). The URL is checked like `storage.state_url` (PostgreSQL, or
SQLite at an absolute path); errors name the config field and never show the password.
"""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from edgeray.audit import sqlite_wal
from edgeray.storage.state import URL_FIELD, check_database_url

# Held while tables are created: PostgreSQL's CREATE TABLE IF NOT EXISTS still fails when two processes create
# the same table at once on a fresh database (a duplicate pg_type row). Any fixed number unique to edgeray.
_CREATE_LOCK_KEY = 0x6564_6765_7261_7902


def _begin_immediate(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def open_engine(url: str, field: str = URL_FIELD, *, immediate: bool = False) -> sa.Engine:
    """An engine on a checked database URL. `immediate` (SQLite only): every transaction starts with BEGIN
    IMMEDIATE, taking the write lock at once, so a read-then-write transaction (claiming a job) is serialised
    with every other writer, in this process or another; PostgreSQL gets the same from row locks."""
    check_database_url(url, field)
    # pre_ping: a database that restarted (or failed over) since the last use costs a reconnect, not an error.
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
        sa.event.listen(engine, "connect", sqlite_wal)
        if immediate:
            # pysqlite would begin transactions lazily (only before a write); let SQLAlchemy emit BEGIN itself.
            sa.event.listen(engine, "connect", lambda dbapi_conn, _record: setattr(dbapi_conn, "isolation_level", None))
            sa.event.listen(engine, "begin", _begin_immediate)
    return engine


def create_tables(engine: sa.Engine, metadata: sa.MetaData) -> None:
    """Create `metadata`'s tables (and indexes) that do not exist yet; safe when several processes start at once."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK_KEY})
        metadata.create_all(conn, checkfirst=True)


def shown(engine: sa.Engine) -> str:
    """The engine's URL without its password, for messages and reprs."""
    return engine.url.render_as_string(hide_password=True)
