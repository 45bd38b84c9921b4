"""Feast integration: store construction, the streaming sink and the online read path."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
from feast import FeatureStore
from feast.repo_config import RepoConfig

from edgeray.events import FeatureVector
from edgeray.feature_repo.definitions import ENTITY_KEYS, TIMESTAMP_FIELD, build_definitions
from edgeray.features.market import MarketFeatureSpec


@dataclass(frozen=True)
class FeastSettings:
    directory: str  # registry, SQLite online store and parquet offline history live here
    project: str = "edgeray"
    online_store: str = "sqlite"  # or "redis"
    redis_url: str = "redis://127.0.0.1:6379/0"

    @classmethod
    def from_env(cls, directory: str, project: str = "edgeray", online_store: str | None = None) -> "FeastSettings":
        """REDIS_URL in the environment switches the online store to Redis unless told otherwise."""
        url = os.environ.get("REDIS_URL")
        store = online_store or ("redis" if url else "sqlite")
        return cls(directory=directory, project=project, online_store=store, redis_url=url or cls.redis_url)

    @property
    def offline_dir(self) -> Path:
        return Path(self.directory) / "offline"


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
    return RepoConfig(project=settings.project, registry=str(Path(settings.directory) / "registry.db"),
                      provider="local", online_store=online, offline_store={"type": "file"},
                      entity_key_serialization_version=3)


def open_store(settings: FeastSettings, market_spec: MarketFeatureSpec | None = None, apply: bool = False) -> FeatureStore:
    store = FeatureStore(config=repo_config(settings))
    if apply:
        store.apply(build_definitions(settings.offline_dir, market_spec))
    return store


class FeastSink:
    """Writes the latest vector per entity online on every micro-batch and buffers history for
    bulk parquet appends to the offline store (one file per flush, never one per event)."""

    def __init__(self, store: FeatureStore, offline_dir: Path, flush_rows: int = 200_000):
        self.store = store
        self.offline_dir = Path(offline_dir)
        self.flush_rows = flush_rows
        self._buffers: dict[str, list[pd.DataFrame]] = {}
        self._buffered_rows: dict[str, int] = {}
        self._part = 0
        self._lock = threading.Lock()
        self.online_rows_written = 0
        self.offline_rows_written = 0

    def warm_up(self, feature_refs: list[str]) -> None:
        """Open the online-store connection and load the registry now, so the first live batch
        does not pay for it (it showed up as the p99 of a whole replay)."""
        for view, key in ENTITY_KEYS.items():
            refs = [r for r in feature_refs if r.startswith(f"{view}:")]
            if refs:
                self.store.get_online_features(features=refs, entity_rows=[{key: "__warm_up__"}])

    def write(self, view: str, features: pd.DataFrame) -> None:
        if features.empty:
            return
        key = ENTITY_KEYS[view]
        frame = features.rename(columns={"symbol": key}) if key != "symbol" else features
        latest = frame.drop_duplicates(subset=[key], keep="last")
        self.store.write_to_online_store(view, latest)
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
                history = pd.concat(frames, ignore_index=True)
                history[TIMESTAMP_FIELD] = pd.to_datetime(history[TIMESTAMP_FIELD], utc=True)
                target = self.offline_dir / v
                target.mkdir(parents=True, exist_ok=True)
                self._part += 1
                history.to_parquet(target / f"part-{time.time_ns()}-{self._part:06d}.parquet", index=False)
                written += len(history)
        self.offline_rows_written += written
        return written


class FeatureReader:
    """The decision loop's read path: the latest feature vector for an entity from the online store."""

    def __init__(self, store: FeatureStore, view: str, feature_names: list[str]):
        self.store = store
        self.view = view
        self.key = ENTITY_KEYS[view]
        self.refs = [f"{view}:{n}" for n in feature_names]
        self.names = feature_names

    def latest(self, entity: str) -> FeatureVector | None:
        response = self.store.get_online_features(features=self.refs, entity_rows=[{self.key: entity}])
        values = response.to_dict()
        if all(values[n][0] is None for n in self.names):
            return None
        # Feast keeps the event time per entity and view; to_dict() would round it to seconds.
        stamp = response.proto.results[-1].event_timestamps[0]
        return FeatureVector(
            entity=entity, event_ts=pd.Timestamp(stamp.seconds * 1_000_000_000 + stamp.nanos, tz="UTC"),
            feature_set=self.view,
            values={n: float("nan") if values[n][0] is None else float(values[n][0]) for n in self.names})
