"""GCS fault tolerance on the external Redis: the head's GCS is SIGKILLed mid-replay and restarted; the detached
pipeline actors and the decision loop carry on.

A simulated cluster (ray.cluster_utils.Cluster: a head and one worker, real raylets on this machine) whose GCS keeps
its tables in Redis (RAY_REDIS_ADDRESS, under a namespace of its own, RAY_external_storage_namespace, so it shares
the Redis with other users), the pipeline started with detached actors (the loop and ingestion on the worker, the
feature streamer on the head), a paced replay of a bars CSV. Mid-replay the GCS process is killed; while it is down
the loop must keep deciding (actor calls go worker to worker, not through GCS) and the handles must answer; then the
GCS is restarted on the same port, reloads its tables from Redis, and the raylets and the driver reconnect. After
the replay a NEW driver finds the detached actors by name (the named-actor table came back from Redis) and drains
them; the audit log in PostgreSQL must show every bar decided exactly once. The namespace's Redis keys are deleted
at the end (only those).

Usage: python scripts/gcs_fault_tolerance.py [--bars N] [--rate BARS_PER_S] [--redis 127.0.0.1:6379]
PostgreSQL: EDGERAY_TEST_POSTGRES_URL, else postgresql+psycopg://postgres@127.0.0.1:5432/test (a scratch database
is created in it and dropped). Prints one JSON line. tests/test_gcs_ft.py runs it and asserts on that JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYMBOL = "BTCUSDT-PERP"
LOOP, INGEST, STREAM = "edgeray_loop", "edgeray_ingest", "edgeray_stream"  # the custom resources (cluster.yaml)


def redis_keys(address: str, namespace: str) -> int:
    """How many Redis keys carry this GCS storage namespace (Ray prefixes every key it writes with it)."""
    import redis

    host, port = address.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    try:
        return sum(1 for _ in client.scan_iter(match=f"*{namespace}*", count=1000))
    finally:
        client.close()


def write_bars(path: Path, n_bars: int) -> Path:
    """A bars CSV in the layout of the real BTC perp file (timestamp, open, high, low, close, volume)."""
    from edgeray.generator import generate_bars

    bars = generate_bars(symbols=(SYMBOL,), n_bars=n_bars, seed=5)
    bars = bars.rename(columns={"event_ts": "timestamp"}) if "event_ts" in bars else bars
    bars["timestamp"] = bars["timestamp"].dt.tz_localize(None)
    bars[["timestamp", "open", "high", "low", "close", "volume"]].to_csv(path, index=False)
    return path


def gcs_restart_scenario(base_url: str, workdir: str, redis_address: str = "127.0.0.1:6379", n_bars: int = 3000,
                         rate_bars_s: float = 150, down_decisions: int = 200) -> dict:
    """Runs the scenario above (in this process: it sets RAY_* variables and starts its own Ray) and returns what
    happened. `down_decisions`: the GCS stays down until the loop has decided this many more bars (bounded)."""
    import pandas as pd
    import ray
    from ray._private import gcs_utils
    from ray._private import state as ray_state
    from ray.cluster_utils import Cluster

    from actors.pipeline import META_CONTROLLER, Pipeline
    from edgeray.audit import AuditLog
    from edgeray.config import SourceConfig
    from tests.conftest import free_port
    from tests.conftest import wait_until as _wait
    from tests.test_cluster import cluster_pipeline_config, scratch_database

    workdir = Path(workdir)
    namespace = f"edgeray_gcsft_{uuid.uuid4().hex[:10]}"
    # Read by the head's Node (RAY_REDIS_ADDRESS) and by the GCS process it spawns (RayConfig reads RAY_<name>).
    os.environ["RAY_REDIS_ADDRESS"] = redis_address
    os.environ["RAY_external_storage_namespace"] = namespace
    os.environ.pop("RAY_ADDRESS", None)  # our own cluster, never one the shell points at
    mb = 1024**2
    gcs_port = free_port()  # never Redis' 6379; the restarted GCS binds the same port, so clients find it again
    out: dict = {"redis_namespace": namespace, "gcs_port": gcs_port}
    started = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {STREAM: 1}, "object_store_memory": 128 * mb, "gcs_server_port": gcs_port,
        "include_dashboard": False, "dashboard_port": free_port()})
    try:
        cluster.add_node(num_cpus=1, resources={LOOP: 1, INGEST: 1}, object_store_memory=96 * mb)
        cluster.wait_for_nodes()
        head = cluster.head_node
        assert head.redis_address.endswith(redis_address.rsplit(":", 1)[1]), head.redis_address
        name = f"g{uuid.uuid4().hex[:10]}"
        ray.init(address=cluster.address, namespace=name, log_to_driver=False)
        csv = write_bars(workdir / "bars.csv", n_bars)
        with scratch_database(base_url) as url:
            cfg = cluster_pipeline_config(workdir, name, url)
            pipeline = Pipeline.start(cfg, detached=True, fresh=True)
            meta, ingestion = pipeline.decision[META_CONTROLLER], pipeline.ingestion
            decided = lambda: ray.get(meta.status.remote(), timeout=30)["decisions"]  # noqa: E731
            handles = {"meta_controller": meta, "ingestion": ingestion, "feature_streamer": pipeline.streamer}
            ids = {role: h._actor_id.hex() for role, h in handles.items()}

            def table() -> dict:
                """The GCS actor table (ray.util.state needs the dashboard), this pipeline's named actors."""
                return {a["Name"]: a for a in ray_state.actors().values() if a["Name"] and a["State"] == "ALIVE"}

            before_table = table()
            out["detached"] = sorted(n for n, a in before_table.items() if a.get("IsDetached"))
            out["startup_s"] = round(time.monotonic() - started, 2)
            source = SourceConfig(type="bars", path=str(csv), symbol=SYMBOL)
            ref = pipeline.replay_async([source], rate=60 * rate_bars_s)  # bar-minutes per wall-second
            _wait(lambda: decided() >= n_bars // 4, 120, "a quarter of the bars decided")
            assert not ray.wait([ref], timeout=0)[0], "the replay finished before the GCS was killed"
            out["redis_keys_before_kill"] = redis_keys(redis_address, namespace)

            at_kill = decided()
            killed = time.monotonic()
            head.kill_gcs_server()  # SIGKILL, as a crash
            # GCS down: the loop keeps deciding and every handle answers (polled until the loop has moved on).
            _wait(lambda: decided() >= at_kill + down_decisions, 45, f"{down_decisions} decisions with GCS down")
            answered_down = {role: bool(ray.get(h.status.remote(), timeout=30)) for role, h in handles.items()}
            down_s = time.monotonic() - killed
            out["gcs_down"] = {"decided_at_kill": at_kill, "decided_while_down": decided() - at_kill,
                               "handles_answered": answered_down, "down_s": round(down_s, 2),
                               "gcs_alive": head.all_processes.get("gcs_server") is not None}

            restarting = time.monotonic()
            head.start_gcs_server()  # reloads its tables from Redis, on the same port

            def gcs_answers():
                try:
                    return table()
                except Exception:  # noqa: BLE001 - the driver's GCS client reconnecting
                    return None

            after_table = _wait(gcs_answers, 60, "the restarted GCS to answer")
            out["gcs_answered_s"] = round(time.monotonic() - restarting, 2)
            _wait(lambda: sum(n["Alive"] for n in ray.nodes()) == 2, 60, "both raylets registered again")
            out["nodes_alive_after"] = sum(n["Alive"] for n in ray.nodes())
            out["actors_same_after_restart"] = all(
                after_table.get(role, {}).get("ActorID") == ids[role] for role in ids)
            out["actor_restarts"] = {role: after_table[role]["NumRestarts"] for role in ids if role in after_table}
            out["named_lookup_after"] = all(
                ray.get_actor(role, namespace=name)._actor_id.hex() == ids[role] for role in ids)

            @ray.remote(num_cpus=0)
            def scheduled() -> str:  # a new task needs GCS-backed scheduling (worker lease, function table)
                return ray.get_runtime_context().get_node_id()

            out["new_task_after"] = bool(ray.get(scheduled.remote(), timeout=60))
            after_restart = decided()
            _wait(lambda: decided() > after_restart or ray.wait([ref], timeout=0)[0], 60, "decisions after restart")
            replay = ray.get(ref, timeout=300)
            out["replay"] = {k: replay[k] for k in ("elapsed_s",) if k in replay}

            # A new driver: the detached actors outlive the first one and are found by name in the restored tables.
            ray.shutdown()
            ray.init(address=cluster.address, namespace=name, log_to_driver=False)
            attached = Pipeline.attach(cfg)
            out["reattached_same_actors"] = {
                role: h._actor_id.hex() == ids[role]
                for role, h in (("meta_controller", attached.decision[META_CONTROLLER]),
                                ("ingestion", attached.ingestion), ("feature_streamer", attached.streamer))}
            status = attached.finish()
            out["ingestion"] = {k: status["ingestion"][k] for k in ("received", "accepted")}
            out["decisions_status"] = status["decisions"]["decisions"]
            out["undecided_rows"] = status["features"]["undecided_rows"]
            out["decision_errors"] = status["features"]["decision_errors"]
            attached.shutdown()

            audit = AuditLog(url)
            everything = (pd.Timestamp("1900-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))
            decisions = pd.DataFrame(audit.range(*everything, stage="decision", limit=10_000_000))
            audit.close()
            keys = decisions["payload"].map(lambda p: p["symbol"]) + "@" + decisions["event_ts"].astype(str)
            out.update(bars=n_bars, decision_rows=len(decisions), decision_ids=int(decisions["decision_id"].nunique()),
                       bars_decided=int(keys.nunique()))
            out["decisions_lost"] = out["bars"] - out["bars_decided"]
            out["decisions_duplicated"] = out["decision_rows"] - out["bars_decided"]
        out["wall_s"] = round(time.monotonic() - started, 2)
        return out
    finally:
        ray.shutdown()
        cluster.shutdown()
        # Only this run's namespace: the Redis is shared with the tests' Feast online store and other clusters.
        host, port = redis_address.rsplit(":", 1)
        gcs_utils.cleanup_redis_storage(host, int(port), "", False, namespace)
        out["redis_keys_after_cleanup"] = redis_keys(redis_address, namespace)
        for var in ("RAY_REDIS_ADDRESS", "RAY_external_storage_namespace"):
            os.environ.pop(var, None)


def main() -> None:
    from tests.conftest import POSTGRES_URL

    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=3000, help="bars in the replayed CSV")
    parser.add_argument("--rate", type=float, default=150.0, help="bars per second (paced replay)")
    parser.add_argument("--down-decisions", type=int, default=200,
                        help="keep the GCS down until the loop has decided this many more bars")
    parser.add_argument("--redis", default="127.0.0.1:6379", help="host:port of the Redis the GCS persists to")
    args = parser.parse_args()
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        out = gcs_restart_scenario(POSTGRES_URL, tmp, args.redis, args.bars, args.rate, args.down_decisions)
    print(json.dumps(out))
    proven = (out["decisions_lost"] == 0 and out["decisions_duplicated"] == 0
              and out["gcs_down"]["decided_while_down"] > 0 and out["actors_same_after_restart"] and all(out["reattached_same_actors"].values())
              and out["redis_keys_after_cleanup"] == 0)
    sys.exit(0 if proven else 1)


if __name__ == "__main__":
    main()
