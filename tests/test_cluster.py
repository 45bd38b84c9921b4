"""Placement and node loss on a SIMULATED multi-node cluster (ray.cluster_utils.Cluster: a head and worker nodes,
each a real raylet with its own worker processes, on this one machine), with the checkpoints and the audit log in
the test PostgreSQL. A node is killed the way a machine dies (its raylet and object store SIGKILLed, no graceful
drain); the actors it hosted must come back on another node declaring their resource, reload their state from
PostgreSQL, and the audit log must show every bar decided exactly once.

The cluster needs its own Ray instance, which would clash with the shared `ray_session`, so each scenario runs in a
subprocess and prints its observations as JSON (as tests/test_training_gpu_placement.py does). bench/cluster.py
runs the same scenario and prints its figures."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import wait_until as _wait

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["SYN-A", "SYN-B"]
LOOP, INGEST, STREAM = "edgeray_loop", "edgeray_ingest", "edgeray_stream"  # the custom resources (cluster.yaml)
# GCS declares a node dead after this many missed health checks this far apart (Ray's defaults: 3000 ms x 5, so
# ~15 s from the crash); shortened here so the test is quick. bench/cluster.py reports the figure for both.
FAST_HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                      "health_check_timeout_ms": 500}




def crash(cluster, node) -> None:
    """Kill a worker node the way a machine dies: its raylet, object store and agents SIGKILLed (no drain), then,
    at once, every worker process it had started (remove_node alone leaves them running, orphaned, for a while:
    an actor there kept answering calls after its node was gone)."""
    import psutil
    from ray._private import ray_constants

    raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
    processes = raylet.children(recursive=True)
    cluster.remove_node(node, allow_graceful=False)
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


@contextmanager
def scratch_database(base_url: str):
    """A PostgreSQL database of its own (checkpoints and the audit table in it), dropped afterwards."""
    import sqlalchemy as sa

    name = f"edgeray_cluster_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield str(sa.engine.make_url(base_url).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def cluster_pipeline_config(workdir: Path, name: str, url: str, **overrides):
    """The pipeline as a cluster runs it: state and audit in the PostgreSQL database `url`, each role on the nodes
    declaring its resource, frequent commits and checkpoints so a node loss lands between them."""
    import yaml

    from edgeray.config import PipelineConfig
    from tests.conftest import pipeline_config

    veto = Path(workdir) / "veto.yaml"
    veto.write_text(yaml.safe_dump({"default_action": "approve", "hold_timeout_s": 300, "timeout_action": "reject",
                                    "rules": []}))
    return PipelineConfig.model_validate(pipeline_config(
        workdir, name, max_restarts=3, storage={"state_url": url},
        ray={"placement": {"loop_resource": LOOP, "ingest_resource": INGEST, "stream_resource": STREAM}},
        ingestion={"batch_size": 200, "commit_interval_s": 0.5},
        decisions={"enabled": True, "audit_url": url, "edge_model_warmup_rows": 600, "veto_config": str(veto),
                   "risk_config": str(ROOT / "configs" / "risk.yaml"), "checkpoint_interval_ms": 250},
        **overrides))


def node_loss_scenario(base_url: str, workdir: str, kills: list[str], n_bars: int = 2500, rate_bars_s: float = 100,
                       system_config: dict | None = None, serve_replicas: int = 0, tune_storage: str | None = None,
                       feast_offline: str | None = None) -> dict:
    """Head (the driver, GCS and the feature streamer: `edgeray_stream`) plus a worker declaring the loop's resource
    and one declaring ingestion's; a paced replay of the generator; for each role in `kills` ("meta_controller" or
    "ingestion"), a spare worker joins before the replay (what the autoscaler would start) and, once the replay is
    under way, the node hosting that role is killed. Returns what happened, read back from PostgreSQL and the offline store.
    With `serve_replicas`, the Serve app answers throughout and two training jobs are submitted over HTTP before the
    replay (the queue's scheduler lives on the loop's node, so it dies with the meta-controller's); with
    `tune_storage` (a URI every node reaches), a model sweep runs on the surviving nodes after the replay. With
    `feast_offline` (a URI), the offline feature history goes there and Feast's registry into the run's database."""
    import pandas as pd
    import ray
    from ray.cluster_utils import Cluster

    from actors.feature_streamer import feast_settings
    from actors.pipeline import INGESTION, META_CONTROLLER, Pipeline
    from edgeray.audit import AuditLog
    from edgeray.feature_repo.settings import MARKET_VIEW

    mb = 1024**2
    api = ("edgeray_api",) if serve_replicas else ()  # the Serve replicas' resource: one per worker, so a kill takes one
    worker = lambda *roles, cpus=1: dict(num_cpus=cpus, resources={r: 1 for r in roles + api},  # noqa: E731
                                         object_store_memory=96 * mb)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {STREAM: 1}, "object_store_memory": 128 * mb, "include_dashboard": False,
        "_system_config": system_config if system_config is not None else FAST_HEALTH_CHECKS})
    workdir = Path(workdir)
    name = f"c{uuid.uuid4().hex[:10]}"
    out: dict = {"kills": []}
    try:
        # One worker for the loop, one for ingestion, so each kill below takes one role's node; a spare declares both.
        # The ingestion node has no CPU (its actors need none), so no training job runs there: the job requeued by
        # the first kill cannot be killed again by the second (two attempts are a job's default).
        nodes = [cluster.add_node(**worker(LOOP)), cluster.add_node(**worker(INGEST, cpus=0))]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace=name, log_to_driver=False)
        with scratch_database(base_url) as url:
            shared_feast = {"feast": {"offline_uri": feast_offline, "registry_url": url}} if feast_offline else {}
            cfg = cluster_pipeline_config(workdir, name, url, fallback={"type": "generator", "symbols": SYMBOLS,
                                                                        "n_bars": n_bars, "seed": 11}, **shared_feast)
            pipeline = Pipeline.start(cfg, fresh=True)
            meta, ingestion = pipeline.decision[META_CONTROLLER], pipeline.ingestion
            status_of = {META_CONTROLLER: lambda: ray.get(meta.status.remote(), timeout=60),
                         INGESTION: lambda: ray.get(ingestion.status.remote(), timeout=60)}
            out["placed"] = {role: status_of[role]()["node_id"] for role in status_of}
            out["placed"]["feature_streamer"] = ray.get(pipeline.streamer.status.remote())["node_id"]
            out["head"], out["workers"] = cluster.head_node.node_id, [n.node_id for n in nodes]
            out["placed_at_start"] = dict(out["placed"])
            poller = serve_api_poller(cfg, serve_replicas) if serve_replicas else None
            if poller:
                out["replicas_at_start"] = poller.replica_nodes()
                jobs = training_jobs(poller.client)
                out["placed"]["training_queue"] = actor_node("TrainingQueueActor")
            # The replacements the autoscaler would start, one per kill, joined once the roles are placed and before
            # the replay: a node start takes seconds, and made mid-replay it let the replay end before a kill.
            for _ in kills:
                cluster.add_node(**worker(LOOP, INGEST))
            cluster.wait_for_nodes()
            ref = pipeline.replay_async(rate=60 * rate_bars_s)  # bar-minutes per wall-second
            total = 2 * n_bars
            for i, role in enumerate(kills):
                # Mid-replay: the kills spread over the first ~half of it, each after decisions and a checkpoint.
                target = total * (i + 1) // (2 * len(kills) + 1)
                _wait(lambda: status_of[META_CONTROLLER]()["decisions"] >= target, 120, f"{target} decisions")
                assert not ray.wait([ref], timeout=0)[0], "the replay finished before the node was killed"
                if poller and role == META_CONTROLLER:
                    jobs.wait_running()  # the long job is training when its scheduler's node dies
                before = status_of[role]()
                victim = next(n for n in cluster.worker_nodes if n.node_id == before["node_id"])
                decided = before.get("decisions", status_of[META_CONTROLLER]()["decisions"])
                out["nodes_at_kill"] = len(cluster.worker_nodes) + 1
                killed_at = time.monotonic()
                crash(cluster, victim)
                after = status_of[role]()  # queued until the actor has restarted elsewhere and answers
                answered_s = time.monotonic() - killed_at
                _wait(lambda: status_of[META_CONTROLLER]()["decisions"] > decided, 120, "decisions to resume")
                out["kills"].append({"role": role, "node": victim.node_id, "moved_to": after["node_id"],
                                     "decided_before": decided, "answered_s": answered_s,
                                     "decisions_resumed_s": time.monotonic() - killed_at,
                                     "co_hosted": [r for r, n in out["placed"].items() if n == victim.node_id]})
                out["placed"] = {r: status_of[r]()["node_id"] if r in status_of else n for r, n in out["placed"].items()}
            replay = ray.get(ref, timeout=300)
            if poller:
                out["training"] = jobs.finish()
                out["training"]["queue_node"] = actor_node("TrainingQueueActor")
                out["http"] = poller.stop()
            if tune_storage:
                out["tune"] = model_sweep(tune_storage)
                out["tune"]["nodes_alive"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
            status = pipeline.finish()
            out["replay"], out["ingestion"], out["features"] = replay, status["ingestion"], status["features"]
            out["decisions_status"] = status["decisions"]["decisions"]
            pipeline.shutdown()

            audit = AuditLog(url)
            everything = (pd.Timestamp("1900-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))
            decisions = pd.DataFrame(audit.range(*everything, stage="decision", limit=10_000_000))
            out["bars"] = total
            out["decision_rows"] = len(decisions)
            out["decision_ids"] = int(decisions["decision_id"].nunique())
            # The bars decided, told apart by (symbol, bar time) from the payload rather than by id: rows == bars
            # decided means no bar was decided twice, even under two ids.
            keys = decisions["payload"].map(lambda p: p["symbol"]) + "@" + decisions["event_ts"].astype(str)
            out["bars_decided"] = int(keys.nunique())
            out["stage_counts"] = {stage: [audit.count(stage), int(pd.DataFrame(
                audit.range(*everything, stage=stage, limit=10_000_000))["decision_id"].nunique())]
                for stage in ("risk", "fill") if audit.count(stage)}
            audit.close()
            import pyarrow.dataset as ds

            filesystem, folder = feast_settings(cfg).offline_location(MARKET_VIEW).filesystem()
            history = ds.dataset(folder, filesystem=filesystem, format="parquet").to_table().to_pandas()
            out["offline_on_node_disk"] = bool(glob.glob(str(feast_settings(cfg).offline_dir / "**" / "*.parquet"),
                                                         recursive=True))
            entity = "entity" if "entity" in history else "symbol"
            out["offline_rows"] = len(history)
            out["offline_duplicates"] = int(history.duplicated([entity, "event_ts"]).sum())
        return out
    finally:
        ray.shutdown()
        cluster.shutdown()


def actor_node(class_name: str) -> str | None:
    """The node of the live actor of this class (the GCS actor table: ray.util.state needs the dashboard)."""
    from ray._private.state import actors

    return next((a["Address"]["NodeID"] for a in actors().values()
                 if a["ActorClassName"] == class_name and a["State"] == "ALIVE"), None)


class training_jobs:
    """Two jobs through the HTTP API: a long one (cancelled once it trains again after its scheduler's node died)
    and a short one; finish() says what became of each, read back over HTTP."""

    def __init__(self, client):
        from tests.conftest import TRADER

        self.client, self.headers = client, TRADER
        demo = {"n_samples": 32, "batch_size": 32, "hidden": 4}
        self.long = self._submit({**demo, "epochs": 100_000}, priority=1)
        self.short = self._submit({**demo, "epochs": 2}, priority=0)

    def _submit(self, params: dict, priority: int) -> str:
        r = self.client.post("/api/training/submit", headers=self.headers,
                             json={"task": "torch_mlp_demo", "params": params, "priority": priority})
        assert r.status_code == 200, r.text
        return r.json()["job_id"]

    def job(self, job_id: str) -> dict:
        r = self.client.get(f"/api/training/job/{job_id}", headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()

    def _training(self, attempts: int) -> bool:
        job = self.job(self.long)
        return job["state"] == "running" and job["attempts"] == attempts and (job["progress"] or {}).get("epoch", 0) >= 1

    def wait_running(self) -> None:
        _wait(lambda: self._training(1), 120, "the long training job to train")

    def finish(self) -> dict:
        """Once the long job trains again (attempt 2, requeued by the restarted scheduler), cancel it; wait until
        both jobs are finished."""
        _wait(lambda: self._training(2), 120, "the requeued job to train again")
        assert self.client.post(f"/api/training/job/{self.long}/cancel", headers=self.headers).status_code == 200
        finished = ("completed", "failed", "cancelled")
        _wait(lambda: all(self.job(j)["state"] in finished for j in (self.long, self.short)), 120, "both jobs to finish")
        return {name: {k: self.job(j)[k] for k in ("state", "attempts", "error")}
                for name, j in (("long", self.long), ("short", self.short))}


def model_sweep(storage: str) -> dict:
    """tune.sports.run_sweep with three one-CPU trials whose fits wait until all three have started (so they run at
    once: on three one-CPU nodes, one on each), results on `storage`; where each trial ran and what the storage
    holds afterwards."""
    import pyarrow.fs as pafs

    from tests.test_registry_performance import synthetic_games
    from tune.sports import run_sweep

    trials = 3
    barrier = _trial_barrier().remote(trials)
    result = run_sweep("nba", "statistical", synthetic_games(seed=1, seasons=(2018, 2019), games_per_season=150),
                       [2018], [2019], trials, search="random", scheduler="fifo", max_concurrent=trials,
                       storage_path=storage, fixed_params={"cv_splits": 2}, factory=BarrierFactory(barrier))
    filesystem, path = pafs.FileSystem.from_uri(storage)
    stored = filesystem.get_file_info(pafs.FileSelector(f"{path}/{result['experiment']}", recursive=True))
    return {"trial_nodes": [t["node_id"] for t in result["trials"]], "completed": result["n_completed"],
            "stored_results": sum(1 for f in stored if f.base_name == "result.json" and f.size > 0),
            "storage_path": result["storage_path"]}


def _trial_barrier():
    import asyncio

    import ray

    @ray.remote(num_cpus=0)
    class TrialBarrier:
        """Each trial's fit arrives here and waits until all have (a condition, not a clock; bounded)."""

        def __init__(self, n: int):
            self.n, self.arrived, self.all_in = n, 0, asyncio.Event()

        async def arrive(self, timeout_s: float = 120) -> int:
            self.arrived += 1
            if self.arrived >= self.n:
                self.all_in.set()
            await asyncio.wait_for(self.all_in.wait(), timeout_s)
            return self.arrived

    return TrialBarrier


class BarrierFactory:
    """tune.sports' model factory, with fits that first wait at the barrier."""

    def __init__(self, barrier):
        self.barrier = barrier

    def __call__(self, family, sport, name=None, params=None):
        from tune.sports import default_factory

        return BarrierModel(default_factory(family, sport, name, params), self.barrier)


class BarrierModel:
    def __init__(self, model, barrier):
        self.model, self.barrier = model, barrier

    def fit(self, frame, progress=None, device="cpu"):
        import ray

        ray.get(self.barrier.arrive.remote())
        return self.model.fit(frame, progress=progress, device=device)

    def predict_proba(self, frame):
        return self.model.predict_proba(frame)


class serve_api_poller:
    """The Serve app with `replicas` replicas (spread: each asks for the edgeray_api resource one per worker
    declares) behind the HTTP proxy on the head, on a free port; a thread GETs /api/pipeline/status (it reads the
    three pipeline actors) back to back and records every answer until stop()."""

    def __init__(self, cfg, replicas: int):
        import threading

        import httpx
        from ray import serve

        from serve.app import build_deployment
        from tests.conftest import VIEWER, free_port, key_entries

        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        app = build_deployment().options(num_replicas=replicas, ray_actor_options={
            "num_cpus": 0, "resources": {"edgeray_api": 0.001}}).bind(cfg.model_dump(), key_entries())
        serve.run(app, name="edgeray", route_prefix="/")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=VIEWER)
        self.answers: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                r = self.client.get("/api/pipeline/status")
                answer = {"status": r.status_code, "retry_after": r.headers.get("retry-after"),
                          **({"body": r.text[:300]} if r.status_code >= 500 else {})}
            except Exception as exc:  # noqa: BLE001 - a refused or dropped connection is an answer too
                answer = {"status": None, "error": type(exc).__name__}
            self.answers.append({**answer, "s": time.monotonic() - started})

    @staticmethod
    def replica_nodes() -> list[str]:
        from ray._private.state import actors  # the GCS actor table (ray.util.state needs the dashboard)

        return sorted(a["Address"]["NodeID"] for a in actors().values()
                      if a["ActorClassName"] == "ServeReplica:edgeray:EdgerayAPI" and a["State"] == "ALIVE")

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=120)
        self.client.close()
        codes: dict[str, int] = {}
        for a in self.answers:
            codes[str(a["status"])] = codes.get(str(a["status"]), 0) + 1
        server_errors = [a for a in self.answers if a["status"] is None or a["status"] >= 500]
        return {"requests": len(self.answers), "codes": codes, "slowest_s": max(a["s"] for a in self.answers),
                "server_errors": server_errors[:20],
                "server_errors_without_retry_after": sum(1 for a in server_errors
                                                         if a["status"] != 503 or not a.get("retry_after"))}


def run_scenario(*args, timeout: float = 400) -> dict:
    """node_loss_scenario in a subprocess of its own (its own Ray); its result."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import json, sys; from tests.test_cluster import node_loss_scenario; "
            "print('RESULT' + json.dumps(node_loss_scenario(*json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-6000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_meta_controller_and_ingestion_nodes_die_mid_replay_every_bar_is_decided_once_and_serve_answers(tmp_path, s3_bucket):
    from tests.conftest import postgres_url_or_skip

    out = run_scenario(postgres_url_or_skip(), str(tmp_path), ["meta_controller", "ingestion"], 2500, 100, None, 2,
                       s3_bucket.uri("tune"), s3_bucket.uri(f"{tmp_path.name}/offline"))
    features = {k: out["features"][k] for k in ("events_processed", "batches_already_processed", "rows_already_processed",
                                                "decision_batches_resent", "undecided_rows")}
    print(json.dumps({**{k: out[k] for k in ("kills", "bars", "decision_rows", "bars_decided", "offline_rows")},
                      "features": features, "http": out.get("http")}))  # shown when the test fails
    # Placement: the streamer on the head (the only node declaring edgeray_stream), the loop and ingestion each on
    # the worker declaring its resource.
    assert out["placed_at_start"] == {"meta_controller": out["workers"][0], "ingestion": out["workers"][1],
                                      "feature_streamer": out["head"]}
    meta_kill, ingest_kill = out["kills"]
    # The training queue's scheduler lives with the loop, so it died with the meta-controller's node.
    assert meta_kill["role"] == "meta_controller" and meta_kill["co_hosted"] == ["meta_controller", "training_queue"]
    assert ingest_kill["role"] == "ingestion" and ingest_kill["co_hosted"] == ["ingestion"]
    for kill in out["kills"]:
        assert kill["node"] != out["head"]
        assert kill["moved_to"] not in (kill["node"], out["head"])  # restarted on another loop/ingest worker
        assert kill["decided_before"] > 0
    assert 0 < meta_kill["decided_before"] < out["bars"]  # killed mid-replay
    # Exactly once, from the audit log in PostgreSQL: every bar decided, none twice.
    assert out["decision_rows"] == out["decision_ids"] == out["bars_decided"] == out["bars"]
    for stage, (rows, ids) in out["stage_counts"].items():
        assert rows == ids, stage
    assert out["stage_counts"].get("risk", [0])[0] > 0
    # The offline feature history, in the shared (S3) store and not on a node's disk: every bar once, no duplicate
    # (symbol, ts).
    assert out["offline_duplicates"] == 0 and out["offline_rows"] == out["bars"]
    assert not out["offline_on_node_disk"]
    assert out["features"]["events_processed"] == out["bars"]
    assert out["features"]["decision_errors"] == 0 and out["features"]["undecided_rows"] == 0
    ing = out["ingestion"]
    assert ing["received"] == out["bars"] == ing["accepted"]
    assert ing["replay"]["resumed_from"] > 0  # the restarted ingestion resumed from its PostgreSQL checkpoint
    # Serve through both node losses: one replica on each worker, so each crash took one down mid-request.
    assert out["replicas_at_start"] == sorted(out["workers"])
    http = out["http"]
    assert http["requests"] >= 20 and http["codes"].get("200", 0) >= http["requests"] - len(out["kills"])
    assert set(http["codes"]) <= {"200", "500", "503"}, http
    for error in http["server_errors"]:
        # The app's own 5xx is 503 with Retry-After (a backing actor restarting). Ray Serve's proxy answers a plain
        # 500 to the one request in flight on a replica whose node died (ray/serve/_private/http_util.py maps
        # RayActorError to 500): at most one per crash here, since the poller sends one request at a time.
        assert (error["status"] == 503 and error["retry_after"]) or (
            error["status"] == 500 and error["body"] == "Internal Server Error"), error
    assert http["codes"].get("500", 0) <= len(out["kills"])
    assert http["slowest_s"] < 60  # a call waiting on a restarting actor waits for it, boundedly
    # The training queue lost no job: its scheduler came back on another loop node (state in PostgreSQL) and
    # requeued the job that was training when it died, which trained again (attempt 2) until cancelled.
    training = out["training"]
    assert training["queue_node"] not in (meta_kill["node"], out["head"], None)
    assert training["long"]["state"] == "cancelled" and training["long"]["attempts"] == 2, training
    assert training["short"]["state"] == "completed", training
    # A model sweep after the node losses: three one-CPU trials at once on three one-CPU nodes, so the head and both
    # surviving workers ran one each, and every trial's result is in the shared (S3) storage.
    tune = out["tune"]
    assert tune["completed"] == 3 and sorted(tune["trial_nodes"]) == tune["nodes_alive"], json.dumps(tune)
    assert len(set(tune["trial_nodes"]) - {out["head"]}) == 2
    assert tune["stored_results"] == 3 and tune["storage_path"].startswith("s3://"), tune


def test_placement_is_off_by_default_and_cluster_yaml_declares_what_it_asks_for():
    import yaml

    from edgeray.config import PipelineConfig
    from tests.conftest import pipeline_config

    default = PipelineConfig.model_validate(pipeline_config(ROOT / "unused", "t")).ray.placement
    assert [default.options(r) for r in (default.loop_resource, default.ingest_resource, default.stream_resource)] == [{}] * 3
    placed = default.model_copy(update={"loop_resource": LOOP})
    assert placed.options(placed.loop_resource) == {"resources": {LOOP: 0.001}}
    nodes = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    assert nodes["head"]["resources"].get(STREAM) == 1  # the streamer's node
    assert {LOOP, INGEST} <= set(nodes["cpu_worker"]["resources"]) and nodes["cpu_worker"]["min_workers"] >= 2
    assert not {LOOP, INGEST, STREAM} & set(nodes["gpu_worker"]["resources"]) and nodes["gpu_worker"]["resources"]["GPU"] >= 1
