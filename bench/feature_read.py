"""Online feature read latency for one symbol: Feast on Redis, Feast on SQLite, raw Redis.

The decision loop reads through `edgeray.featurestore.FeatureReader.latest` (Feast); raw Redis
(one HGETALL of a hash holding the same ten floats) is the floor to compare Feast against.
Prints JSON with p50/p99 in milliseconds.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeray.feature_repo.definitions import MARKET_VIEW  # noqa: E402
from edgeray.featurestore import FeastSettings, FeastSink, FeatureReader, open_store  # noqa: E402
from edgeray.features.market import MarketFeatureSpec  # noqa: E402

N_READS = 3000
WARMUP = 200
NAMES = MarketFeatureSpec().names
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def percentiles(fn) -> dict:
    for _ in range(WARMUP):
        fn()
    samples = np.empty(N_READS)
    for i in range(N_READS):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    p50, p99 = np.percentile(samples * 1e3, [50, 99])
    return {"p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4), "reads": N_READS}


def feast_path(online_store: str) -> dict:
    project = f"bench_{uuid.uuid4().hex[:8]}"
    settings = FeastSettings(directory=tempfile.mkdtemp(), project=project, online_store=online_store, redis_url=REDIS_URL)
    store = open_store(settings, apply=True)
    row = pd.DataFrame({n: [float(i)] for i, n in enumerate(NAMES)})
    row.insert(0, "event_ts", pd.Timestamp("2022-01-01", tz="UTC"))
    row.insert(0, "symbol", "BTCUSDT-PERP")
    FeastSink(store, settings.offline_dir).write(MARKET_VIEW, row)
    reader = FeatureReader(store, MARKET_VIEW, NAMES)
    assert reader.latest("BTCUSDT-PERP").values["ret_1"] == 0.0
    try:
        return percentiles(lambda: reader.latest("BTCUSDT-PERP"))
    finally:
        store.teardown()


def raw_redis() -> dict:
    client = redis.Redis.from_url(REDIS_URL)
    key = f"edgeray:bench:{uuid.uuid4().hex[:8]}"
    client.hset(key, mapping={n: float(i) for i, n in enumerate(NAMES)})
    try:
        return percentiles(lambda: {k.decode(): float(v) for k, v in client.hgetall(key).items()})
    finally:
        client.delete(key)


def main() -> None:
    print(json.dumps({"bench": "feature_read", "entity": "BTCUSDT-PERP", "features": len(NAMES),
                      "feast_redis": feast_path("redis"), "feast_sqlite": feast_path("sqlite"),
                      "raw_redis_hgetall": raw_redis(), "decision_loop_path": "feast (FeatureReader.latest)",
                      "target_p99_ms": 1.0}, indent=2))


if __name__ == "__main__":
    main()
