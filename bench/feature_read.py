"""Online feature read latency for one symbol: Feast on Redis, Feast on SQLite, raw Redis.

For each online store two paths read the same entity Feast wrote:
- `reader`: `edgeray.featurestore.FeatureReader.latest`, what the decision loop, `GET /api/features/{symbol}`
  and `edgeray features` use (on Redis one HMGET on Feast's client, decoded with Feast's protos);
- `get_online_features`: plain `FeatureStore.get_online_features(...).to_dict()` for the same refs and entity.
Raw Redis (one HGETALL of a hash holding the same ten floats) is the floor.
Prints JSON with p50/p99 in milliseconds.

    python bench/feature_read.py
"""
from __future__ import annotations

import gc
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
    gc.collect()  # each path starts without the previous setup's garbage (a gen-2 pass is milliseconds)
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
    refs = [f"{MARKET_VIEW}:{n}" for n in NAMES]
    rows = [{"symbol": "BTCUSDT-PERP"}]
    plain = lambda: store.get_online_features(features=refs, entity_rows=rows).to_dict()  # noqa: E731
    assert reader.latest("BTCUSDT-PERP").values == {n: plain()[n][0] for n in NAMES}
    try:
        return {"reader": percentiles(lambda: reader.latest("BTCUSDT-PERP")), "get_online_features": percentiles(plain)}
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
                      "raw_redis_hgetall": raw_redis(), "decision_loop_path": "reader (FeatureReader.latest)",
                      "target_p99_ms": 1.0, "loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0])}, indent=2))


if __name__ == "__main__":
    main()
