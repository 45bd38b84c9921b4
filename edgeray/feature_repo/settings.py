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
