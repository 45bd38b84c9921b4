"""Feast integration: store construction, the streaming sink and the online read path."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import edgeray.feature_repo.feast_import  # noqa: F401  (first: Feast imported fast, see there)
from feast import FeatureStore
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp

from edgeray.columns import Columns, column
from edgeray.events import FeatureVector
from edgeray.feature_repo.definitions import ENTITY_KEYS, TIMESTAMP_FIELD, build_definitions
from edgeray.feature_repo.settings import FeastSettings, offline_locations
from edgeray.features.market import MarketFeatureSpec
from edgeray.regime import float_matrix
from edgeray.watermark import timestamps_ns

_EPOCH = datetime(1970, 1, 1)  # Feast's online rows carry naive UTC datetimes


def _redis_connection_string(url: str) -> str:
    u = urlparse(url)
    db = (u.path or "/0").lstrip("/") or "0"
    parts = [f"{u.hostname or '127.0.0.1'}:{u.port or 6379}", f"db={db}"]
    if u.password:
        parts.append(f"password={u.password}")
    return ",".join(parts)


def repo_config(settings: FeastSettings) -> RepoConfig:
    Path(settings.directory).mkdir(parents=True, exist_ok=True)
    if settings.online_store == "redis":
        online = {"type": "redis", "connection_string": _redis_connection_string(settings.redis_url)}
    elif settings.online_store == "sqlite":
        online = {"type": "sqlite", "path": str(Path(settings.directory) / "online.db")}
    else:
        raise ValueError(f"online_store must be 'sqlite' or 'redis', got {settings.online_store!r}")
    # Feast's SQL registry on a cluster (every node reads the same definitions); a local file otherwise.
    registry = ({"registry_type": "sql", "path": settings.registry_url, "cache_ttl_seconds": 60}
                if settings.registry_url else str(Path(settings.directory) / "registry.db"))
    return RepoConfig(project=settings.project, registry=registry,
                      provider="local", online_store=online, offline_store={"type": "file"},
                      entity_key_serialization_version=3)


def open_store(settings: FeastSettings, market_spec: MarketFeatureSpec | None = None, apply: bool = False) -> FeatureStore:
    store = FeatureStore(config=repo_config(settings))
    if apply:
        store.apply(build_definitions(settings, market_spec))
    return store


def last_per_entity(keys: np.ndarray) -> np.ndarray:
    """Positions of each entity's last row, in row order (drop_duplicates(keep="last") cost ~0.8 ms a micro-batch)."""
    if len(keys) and (keys == keys[-1]).all():  # one symbol: the common case
        return np.array([len(keys) - 1])
    _, first_from_end = np.unique(keys[::-1], return_index=True)
    return np.sort(len(keys) - 1 - first_from_end)


class FeastSink:
    """Writes the latest vector per entity online on every micro-batch and buffers history for
    bulk parquet appends to the offline store (one file per flush, never one per event)."""

    def __init__(self, store: FeatureStore, offline: Path | FeastSettings, flush_rows: int = 200_000):
        """`offline`: the local offline folder, or the store's settings (their `offline_uri` when set)."""
        self.store = store
        self._location = offline_locations(offline)
        self.flush_rows = flush_rows
        self._buffers: dict[str, list[pd.DataFrame]] = {}
        self._buffered_rows: dict[str, int] = {}
        self._part = 0
        self._lock = threading.Lock()
        self.online_rows_written = 0
        self.offline_rows_written = 0
        self._views: dict = {}
        self._provider = store._get_provider()  # Feast-internal accessor, stable since 0.2x; the store's own writer
        self._relax_sqlite_sync()

    def _relax_sqlite_sync(self) -> None:
        """On the SQLite online store: WAL with synchronous=NORMAL on the writer's connection. Feast's connection
        keeps SQLite's rollback journal, whose commit fsyncs several times: ~0.9 ms a micro-batch here against
        ~0.08 ms, and the streamer waits for it before it takes the next batch. The online store holds only the
        latest vector per entity, which every later batch rewrites (the offline history is the record), so a
        commit that an OS crash loses costs nothing a replay does not restore; an app crash loses nothing in WAL.
        Readers in other processes (the API's FeatureReader) read a WAL database as before."""
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        online = getattr(self._provider, "online_store", None)
        if isinstance(online, SqliteOnlineStore):
            conn = online._get_conn(self.store.config)  # Feast-internal, as _get_provider: the store's one connection
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: stays set in the database file
            conn.execute("PRAGMA synchronous=NORMAL")  # per connection: this writer's commits stop fsyncing

    def _view(self, view: str):
        if view not in self._views:
            self._views[view] = self.store.get_feature_view(view)
        return self._views[view]

    def online_rows(self, view: str, frame: pd.DataFrame, rows: np.ndarray | None = None) -> list[tuple]:
        """The (entity key, feature values, event time, created time) rows Feast's write_to_online_store would
        write for `frame`'s `rows` (positions; default all; one row per entity): NaN as an empty value, event times
        as naive UTC datetimes at microsecond precision; none when every feature value is missing, where Feast
        writes nothing either."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey

        key = ENTITY_KEYS[view]
        names = [f.name for f in self._view(view).features]
        rows = np.arange(len(frame)) if rows is None else rows
        values = float_matrix(frame, names)[rows]
        if np.isnan(values).all():
            return []
        micros = timestamps_ns(frame[TIMESTAMP_FIELD])[rows] // 1000
        stamps = [_EPOCH + timedelta(microseconds=int(us)) for us in micros]
        return [(EntityKey(join_keys=[key], entity_values=[ValueProto(string_val=str(entity))]),
                 {n: ValueProto(double_val=v) if v == v else ValueProto() for n, v in zip(names, row)}, stamp, None)
                for entity, row, stamp in zip(column(frame, key)[rows].tolist(), values.tolist(), stamps)]

    def warm_up(self, feature_refs: list[str]) -> None:
        """Open the online-store connection and load the registry now, so the first live batch
        does not pay for it (it showed up as the p99 of a whole replay)."""
        for view, key in ENTITY_KEYS.items():
            refs = [r for r in feature_refs if r.startswith(f"{view}:")]
            if refs:
                self.store.get_online_features(features=refs, entity_rows=[{key: "__warm_up__"}])

    def write(self, view: str, features: pd.DataFrame | Columns) -> None:
        """`features`: a DataFrame, or the streamer's Columns (market view: keyed by symbol)."""
        if features.empty:
            return
        key = ENTITY_KEYS[view]
        frame = features.rename(columns={"symbol": key}) if key != "symbol" else features
        latest = last_per_entity(column(frame, key))
        rows = self.online_rows(view, frame, latest)
        if rows:
            # Feast's own online store writes them (Redis or SQLite); its write_to_online_store would first turn the
            # frame into Arrow and back into these same protos, ~2 ms a micro-batch of pandas/Arrow work
            # (tests/test_featurestore.py checks the rows equal Feast's conversion).
            self._provider.online_write_batch(self.store.config, self._view(view), rows, progress=None)
        self.online_rows_written += len(latest)
        with self._lock:
            self._buffers.setdefault(view, []).append(frame)
            self._buffered_rows[view] = self._buffered_rows.get(view, 0) + len(frame)
            full = self._buffered_rows[view] >= self.flush_rows
        if full:
            self.flush(view)

    def flush(self, view: str | None = None) -> int:
        written = 0
        with self._lock:
            for v in [view] if view else list(self._buffers):
                frames = self._buffers.pop(v, [])
                self._buffered_rows[v] = 0
                if not frames:
                    continue
                key = ENTITY_KEYS[v]
                # Only the view's own columns: the streamer's frames also carry the decision loop's prices and stamps.
                names = [key, TIMESTAMP_FIELD, *(f.name for f in self._view(v).features)]
                if all(isinstance(f, Columns) for f in frames):  # one frame for the whole history, not one a batch
                    history = Columns.concat([f.select(names) for f in frames]).to_frame()
                else:
                    history = pd.concat([f.to_frame() if isinstance(f, Columns) else f for f in frames],
                                        ignore_index=True)[names]
                history[TIMESTAMP_FIELD] = pd.to_datetime(history[TIMESTAMP_FIELD], utc=True)
                filesystem, folder = self._location(v).filesystem()
                filesystem.create_dir(folder, recursive=True)
                self._part += 1
                pq.write_table(pa.Table.from_pandas(history, preserve_index=False),
                               f"{folder}/part-{time.time_ns()}-{self._part:06d}.parquet", filesystem=filesystem)
                written += len(history)
        self.offline_rows_written += written
        return written


class FeatureReader:
    """The decision loop's read path: the latest feature vector for an entity from the online store.

    `FeatureStore.get_online_features` costs ~0.7-1.6 ms for one entity, almost none of it Redis: it resolves
    the feature refs against the registry, builds entity protos from the rows, groups refs per view, fills a
    GetOnlineFeaturesResponse and `to_dict()` converts it again. The loop asks the same question (one view,
    fixed features, a handful of entities) thousands of times, so the reader resolves everything once and
    per read does only the I/O and the decoding:

    * Redis: one HMGET on Feast's own persistent client (the online store's `_get_client`, the connection
      pool `get_online_features` uses too), with the hash key and field names built by Feast's own helpers
      (`_redis_key`/`serialize_entity_key`, `_mmh3`, `_ts:<view>`, the versioned view name) and the reply
      decoded with Feast's protos and `feast_value_type_to_python_type`. It therefore reads exactly the bytes
      Feast wrote, in Feast's encoding; tests/test_featurestore.py compares it with `get_online_features`.
      The event time is Feast's stored Timestamp proto, to the microsecond Feast keeps.
    * Any other online store (SQLite) or Feast's GLIDE client: the online store's `online_read` with a
      prebuilt entity key proto, which skips the response building and pandas but keeps the store's own I/O.

    The view's definition is read from the registry once, on the first read: re-applying a changed view
    (other features, feature view versioning) needs a new reader.
    """

    MAX_CACHED_KEYS = 10_000  # entity -> key bytes/proto; the loop has a handful of symbols

    def __init__(self, store: FeatureStore, view: str, feature_names: list[str]):
        self.store = store
        self.view = view
        self.key = ENTITY_KEYS[view]
        self.refs = [f"{view}:{n}" for n in feature_names]
        self.names = list(feature_names)
        self._bound = False
        self._lock = threading.Lock()  # the API reads from a thread pool; binding happens once
        self._keys: dict[str, object] = {}

    def _bind(self) -> None:
        from feast.infra.online_stores.redis import RedisClient, RedisOnlineStore, _versioned_fv_name

        with self._lock:
            if self._bound:
                return
            config = self.store.config
            self._config = config
            self._table = self.store.get_feature_view(self.view)
            self._online = self.store._get_provider().online_store
            join_key = next(c for c in self._table.entity_columns if c.name == self.key)
            self._key_type = join_key.dtype.to_value_type()
            self._redis = None
            if isinstance(self._online, RedisOnlineStore) and config.online_store.client == RedisClient.redis:
                fv_name = _versioned_fv_name(self._table, config)
                self._redis = self._online._get_client(config.online_store)
                self._fields = [_mmh3(f"{fv_name}:{n}") for n in self.names] + [f"_ts:{fv_name}".encode()]
            self._bound = True

    def _entity_key(self, entity: str):
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import python_values_to_proto_values

        cached = self._keys.get(entity)
        if cached is None:
            proto = EntityKey(join_keys=[self.key],
                              entity_values=python_values_to_proto_values([entity], self._key_type))
            cached = proto if self._redis is None else _redis_key(
                self._config.project, proto, entity_key_serialization_version=self._config.entity_key_serialization_version)
            if len(self._keys) >= self.MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[entity] = cached
        return cached

    def latest(self, entity: str) -> FeatureVector | None:
        if not self._bound:
            self._bind()
        if self._redis is not None:
            *raw, stamp_bytes = self._redis.hmget(self._entity_key(entity), self._fields)
            values = [None if b is None else feast_value_type_to_python_type(ValueProto.FromString(b)) for b in raw]
            if all(v is None for v in values):
                return None
            stamp = Timestamp.FromString(stamp_bytes or b"")
            event_ts = pd.Timestamp(stamp.seconds * 1_000_000_000 + stamp.nanos, tz="UTC")
        else:
            row_ts, row = self._online.online_read(self._config, self._table, [self._entity_key(entity)],
                                                   list(self.names))[0]
            row = row or {}
            values = [feast_value_type_to_python_type(row[n]) if n in row else None for n in self.names]
            if all(v is None for v in values):
                return None
            event_ts = pd.Timestamp(row_ts)
            event_ts = event_ts.tz_localize("UTC") if event_ts.tzinfo is None else event_ts.tz_convert("UTC")
        return FeatureVector(entity=entity, event_ts=event_ts, feature_set=self.view,
                             values={n: float("nan") if v is None else float(v) for n, v in zip(self.names, values)})
