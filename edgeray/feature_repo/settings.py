"""What the feature store is called and where it lives, without importing Feast (~11 s of import on a
busy 2-core box): the actors and shells that only name views or settings load this, and only the
processes that read or write the store pay for Feast itself."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MARKET_VIEW = "market_features"
ODDS_VIEW = "odds_features"
MARKET_PUSH = "market_push"
ODDS_PUSH = "odds_push"
TIMESTAMP_FIELD = "event_ts"
ENTITY_KEYS = {MARKET_VIEW: "symbol", ODDS_VIEW: "game_id"}


@dataclass(frozen=True)
class FeastSettings:
    directory: str  # registry, SQLite online store and parquet offline history live here (one machine)
    project: str = "edgeray"
    online_store: str = "sqlite"  # or "redis"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A cluster: the offline history under a pyarrow.fs URI every node reaches (s3://BUCKET/PREFIX[?endpoint_override=
    # HOST:PORT&scheme=http], gs://, file:///) and Feast's registry in a database (Feast's SQL registry), so a
    # restarted streamer, the API and training on any node see the same store.
    offline_uri: str | None = None
    registry_url: str | None = None

    @classmethod
    def from_env(cls, directory: str, project: str = "edgeray", online_store: str | None = None,
                 offline_uri: str | None = None, registry_url: str | None = None) -> "FeastSettings":
        """REDIS_URL in the environment switches the online store to Redis unless told otherwise."""
        url = os.environ.get("REDIS_URL")
        store = online_store or ("redis" if url else "sqlite")
        return cls(directory=directory, project=project, online_store=store, redis_url=url or cls.redis_url,
                   offline_uri=offline_uri, registry_url=registry_url)

    @property
    def offline_dir(self) -> Path:
        """The local offline history (without `offline_uri`)."""
        return Path(self.directory) / "offline"

    def offline_location(self, view: str) -> "OfflineLocation":
        """Where `view`'s history files go: a local folder, or the same place under `offline_uri`."""
        if self.offline_uri is None:
            return OfflineLocation(str(self.offline_dir / view))
        return OfflineLocation.from_uri(self.offline_uri, view)


@dataclass(frozen=True)
class OfflineLocation:
    """One view's history folder as Feast's FileSource names it (`path`, `s3_endpoint_override`) and as pyarrow.fs
    opens it (`filesystem()`); `uri` keeps the user's form (with its query) for pyarrow."""
    path: str
    s3_endpoint_override: str | None = None
    uri: str | None = None

    @classmethod
    def from_uri(cls, base: str, view: str) -> "OfflineLocation":
        from urllib.parse import parse_qs, urlsplit, urlunsplit

        parts = urlsplit(base)
        query = parse_qs(parts.query)
        endpoint = query.get("endpoint_override", [None])[0]
        if endpoint and "://" not in endpoint:  # Feast hands it to pyarrow as is; the scheme must ride along
            endpoint = f"{query.get('scheme', ['https'])[0]}://{endpoint}"
        folder = parts._replace(path=f"{parts.path.rstrip('/')}/{view}", fragment="")
        return cls(path=urlunsplit(folder._replace(query="")),
                   s3_endpoint_override=endpoint if parts.scheme == "s3" else None, uri=urlunsplit(folder))

    def filesystem(self):
        """(pyarrow filesystem, path in it)."""
        import pyarrow.fs as pafs

        if self.uri is None:
            return pafs.LocalFileSystem(), str(Path(self.path).resolve())  # pyarrow wants an absolute local path
        return pafs.FileSystem.from_uri(self.uri)


def offline_locations(offline: str | os.PathLike | FeastSettings):
    """view -> OfflineLocation, for a local offline folder or for a store's settings (their `offline_uri` when set)."""
    if isinstance(offline, FeastSettings):
        return offline.offline_location
    return lambda view: OfflineLocation(str(Path(offline) / view))
