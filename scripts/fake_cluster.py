"""cluster.yaml's node types proven on Ray's fake multi-node provider (cluster.fake.yaml): nodes are local processes
that the autoscaler launches like cloud instances. The script
1. tries `ray up` / (at the end) `ray down` on the config and records why they fail in Ray 2.60 (see README);
2. starts the head the way Ray documents for this provider (`RAY_FAKE_CLUSTER=1 ray start --head
   --autoscaling-config=...`), on free ports, in a temp dir of its own; the autoscaler launches the CPU worker
   (min_workers 1);
3. submits `edgeray run` with `ray job submit --working-dir .` (a small generator replay), with checkpoints and the
   audit log in a scratch PostgreSQL database and run_dir a file:// URI, and reads the results from there (the
   audit log, summary.json), not from the job's temporary working-dir copy;
4. queues a training job asking for one GPU on the training queue (actors/training_queue.py) with gpu_autoscaling
   on (sports.gpu_autoscaling), while no GPU node is up: times the GPU worker type's launch and the job's completion
   from submit, and records where it ran (Ray placement, node type, GPU ids); then submits a training job whose Ray
   task asks for one GPU (`ray job submit`) and records where that ran (the GPU node is normally up by then; a
   launch is timed only if none is);
5. tears the cluster down: every process it started (found by its own temp dir and as descendants of its
   `ray start`), never a bare `ray stop` (other people's Ray runs on this machine).
Prints one JSON line (its "verdict" says what was proven). Exits 1 unless the `edgeray run` decided every bar once,
the queued job ran on the GPU node launched for it (num_gpus 1.0, Ray GPU ids ["0"]), the `ray job submit` GPU job
ran on a GPU node, and no process of the cluster is left.

Usage: python scripts/fake_cluster.py [--bars N (per symbol)] [--keep-logs]
PostgreSQL: EDGERAY_TEST_POSTGRES_URL, else postgresql+psycopg://postgres@127.0.0.1:5432/test.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent  # the venv's ray and edgeray commands
LOOP, INGEST, STREAM = "edgeray_loop", "edgeray_ingest", "edgeray_stream"
# `ray start --head` turns token authentication on (token: ~/.ray/auth_token), but a client whose RAY_AUTH_MODE is
# unset when ray is imported connects without the token and is refused (InvalidAuthToken): this driver and the CLIs
# it runs set it, before anything imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")


def train_demo() -> None:
    """The GPU job's entrypoint (`--train-demo`): the training queue's torch demo task in a Ray task asking for one
    GPU, as the queue's runner asks (run_training_job.options(num_gpus=...)); on the device the device manager
    picks (no CUDA behind a fake GPU node). Prints where it ran."""
    import ray

    @ray.remote(num_gpus=1, num_cpus=1)
    def fit() -> dict:
        from edgeray.device import select_device
        from edgeray.training.tasks import torch_mlp_demo

        ctx = ray.get_runtime_context()
        result = torch_mlp_demo({"epochs": 2, "n_samples": 512}, lambda *a: None, device=select_device().name)
        return {"node_id": ctx.get_node_id(), "gpu_ids": ctx.get_accelerator_ids().get("GPU", []),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), **result}

    ray.init()
    print("RESULT" + json.dumps(ray.get(fit.remote(), timeout=600)))


def cli(args: list[str], env: dict, timeout: float) -> dict:
    """Run a ray CLI command; its exit status and the last lines of its output."""
    try:
        proc = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"rc": None, "error": f"timed out after {timeout}s"}
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return {"rc": proc.returncode, "last": lines[-1][-400:] if lines else ""}


def node_type(node: dict) -> str:
    resources = node["Resources"]
    return "gpu_worker" if "GPU" in resources else "cpu_worker" if LOOP in resources else "head" \
        if STREAM in resources else "?"


def alive_nodes() -> list[dict]:
    import ray

    return [{"node_id": n["NodeID"], "type": node_type(n)} for n in ray.nodes() if n["Alive"]]


def own_processes(root_pid: int, temp_dir: str) -> list:
    """Every process this cluster consists of: descendants of our `ray start` (the head's processes, the worker
    nodes the autoscaler started from it, their workers) and any process naming our temp dir, with descendants."""
    import psutil

    found = {}
    roots = []
    try:
        roots.append(psutil.Process(root_pid))
    except psutil.NoSuchProcess:
        pass
    for proc in psutil.process_iter(["cmdline"]):
        if temp_dir in " ".join(proc.info["cmdline"] or []):
            roots.append(proc)
    for proc in roots:
        try:
            for p in [proc, *proc.children(recursive=True)]:
                found[p.pid] = p
        except psutil.NoSuchProcess:
            pass
    found.pop(os.getpid(), None)
    return list(found.values())


def teardown(head: subprocess.Popen, temp_dir: str) -> dict:
    import psutil

    procs = own_processes(head.pid, temp_dir)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)  # bounded: what is left is SIGKILLed
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=15)
    head.wait(timeout=15)
    return {"processes_stopped": len(procs), "killed_after_sigterm": len(alive),
            "left": len(own_processes(head.pid, temp_dir))}


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=1000, help="generator bars per symbol for `edgeray run`")
    parser.add_argument("--keep-logs", action="store_true", help="leave the cluster's temp dir (logs) in place")
    parser.add_argument("--train-demo", action="store_true", help=argparse.SUPPRESS)  # the GPU job's entrypoint
    args = parser.parse_args()
    if args.train_demo:
        return train_demo()

    import pandas as pd
    import ray
    import yaml
    from ray._private.services import get_node_ip_address
    from ray.job_submission import JobStatus, JobSubmissionClient

    from edgeray.audit import AuditLog
    from tests.conftest import POSTGRES_URL
    from tests.conftest import wait_until as _wait
    from tests.test_cluster import scratch_database

    started = time.monotonic()
    out: dict = {}
    # Short: Ray's unix sockets live under it (108-byte path limit). Ours alone, so teardown finds our processes.
    tmp = Path(tempfile.mkdtemp(prefix="erfc_", dir="/tmp"))
    gcs_port, dash_port, client_port, agent_port = free_ports(4)  # never Redis' 6379, nor Ray's defaults
    ip = get_node_ip_address()
    config = yaml.safe_load((ROOT / "cluster.fake.yaml").read_text())
    config["provider"]["gcs_address"] = f"{ip}:{gcs_port}"
    cluster_yaml = tmp / "cluster.yaml"
    cluster_yaml.write_text(yaml.safe_dump(config))
    os.environ.pop("RAY_ADDRESS", None)
    env = {k: v for k, v in os.environ.items() if k != "RAY_REDIS_ADDRESS"}
    env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    out["ray_up"] = cli(["up", "-y", "--no-config-cache", str(cluster_yaml)], env, 120)

    head_res = dict(config["available_node_types"]["ray.head.default"]["resources"])
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs_port}", f"--dashboard-port={dash_port}",
           "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client_port}",
           f"--dashboard-agent-listen-port={agent_port}", f"--temp-dir={tmp / 'ray'}",
           f"--num-cpus={head_res.pop('CPU')}", f"--object-store-memory={head_res.pop('object_store_memory')}",
           f"--resources={json.dumps(head_res)}", f"--autoscaling-config={cluster_yaml}", "--disable-usage-stats"]
    head = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(tmp / "head.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    dashboard = f"http://127.0.0.1:{dash_port}"
    try:
        def connect():
            if head.poll() is not None:
                raise RuntimeError(f"ray start exited {head.returncode}: {(tmp / 'head.log').read_text()[-2000:]}")
            try:
                ray.init(address=f"{ip}:{gcs_port}", namespace="fake-cluster-probe", log_to_driver=False)
                return True
            except ConnectionError:
                return False

        _wait(connect, 180, "the head to start")
        # min_workers: the autoscaler launches the CPU worker on its own.
        _wait(lambda: {n["type"] for n in alive_nodes()} >= {"head", "cpu_worker"}, 240, "the CPU worker")
        out["nodes_at_start"] = alive_nodes()
        out["started_s"] = round(time.monotonic() - started, 1)
        client = JobSubmissionClient(dashboard)
        _wait(lambda: client.list_jobs() is not None, 120, "the job API")

        with scratch_database(POSTGRES_URL) as url:
            # The run's config: the repo's, with the cluster settings (placement, PostgreSQL, run_dir in storage).
            cfg = yaml.safe_load((ROOT / "configs" / "pipeline.yaml").read_text())
            namespace = f"fake_{uuid.uuid4().hex[:8]}"
            cfg.update(namespace=namespace, run_dir=f"file://{tmp / 'results'}", sources=[],
                       ray={**cfg["ray"], "placement": {"loop_resource": LOOP, "ingest_resource": INGEST,
                                                         "stream_resource": STREAM}})
            cfg["storage"] = {**(cfg.get("storage") or {}), "state_url": url}
            cfg["decisions"].update(audit_url=url, risk_config=str(ROOT / "configs" / "risk.yaml"),
                                    veto_config=str(ROOT / "configs" / "veto.yaml"))
            cfg["feast"].update(directory=str(tmp / "feast"), project=namespace, online_store="sqlite")
            run_config = tmp / "pipeline.yaml"
            run_config.write_text(yaml.safe_dump(cfg))
            submission = f"edgeray-run-{uuid.uuid4().hex[:8]}"
            # Anything the job keeps locally (its home, run_dir's staging copy) stays in our temp dir.
            job_env = {"EDGERAY_HOME": str(tmp / "home"), "EDGERAY_STAGING": str(tmp / "staging")}
            submitted = time.monotonic()
            out["edgeray_run_submit"] = cli(
                ["job", "submit", "--address", dashboard, "--submission-id", submission, "--working-dir", ".",
                 "--runtime-env-json", json.dumps({"env_vars": job_env}), "--",
                 "edgeray", "run", "--config", str(run_config), "--n-bars", str(args.bars)], env, 600)
            status = client.get_job_status(submission)
            out["edgeray_run"] = {"submission_id": submission, "status": str(status.value),
                                  "wall_s": round(time.monotonic() - submitted, 1)}
            if status != JobStatus.SUCCEEDED:
                out["edgeray_run"]["logs_tail"] = client.get_job_logs(submission)[-3000:]
            else:
                # The results, from the configured storage: the audit log in PostgreSQL, summary.json at run_dir.
                audit = AuditLog(url)
                everything = (pd.Timestamp("1900-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))
                decisions = pd.DataFrame(audit.range(*everything, stage="decision", limit=10_000_000))
                audit.close()
                keys = decisions["payload"].map(lambda p: p["symbol"]) + "@" + decisions["event_ts"].astype(str)
                summary = json.loads((tmp / "results" / "summary.json").read_text())
                nodes = {n["node_id"]: n["type"] for n in alive_nodes()}
                out["edgeray_run"].update(
                    bars=2 * args.bars, decisions=len(decisions), bars_decided=int(keys.nunique()),
                    summary_decisions=summary["decisions"]["decisions"],
                    summary_received=summary["ingestion"]["received"],
                    placed={"meta_controller": nodes.get(summary["decisions"]["node_id"]),
                            "ingestion": nodes.get(summary["ingestion"].get("node_id")),
                            "feature_streamer": nodes.get(summary["features"].get("node_id"))},
                    results_files=sorted(p.name for p in (tmp / "results").iterdir()))

            # A training job on the training queue asking for a GPU, while no GPU node is up. gpu_autoscaling (the
            # product's sports.gpu_autoscaling): the queue asks Ray for the GPU anyway, so the autoscaler launches
            # the GPU worker type and the job runs there.
            from actors.training_queue import TrainingQueueActor

            gpu_before = [n["node_id"] for n in alive_nodes() if n["type"] == "gpu_worker"]
            queue = TrainingQueueActor.options(name="training_queue", namespace=namespace).remote(
                {"db_path": url, "queue": namespace, "gpu_autoscaling": True})
            ray.get(queue.recovery_report.remote(), timeout=120)  # constructed: the clock starts at submit
            queued = time.monotonic()
            job = ray.get(queue.submit.remote("fake-cluster", "torch_mlp_demo", {"epochs": 2}, 0, 1.0), timeout=120)
            seen: dict = {}

            def queue_job_done():
                if "gpu_node" not in seen:
                    up = next((n for n in alive_nodes() if n["type"] == "gpu_worker"), None)
                    if up:
                        seen.update(gpu_node=up, gpu_up_s=round(time.monotonic() - queued, 1))
                j = ray.get(queue.job.remote(job["job_id"], "fake-cluster", True))
                return j if j["state"] in ("completed", "failed", "cancelled") else None

            try:
                done = _wait(queue_job_done, 420, "the queued training job")
            except AssertionError:  # never finished: record how far it got, then fail
                j = ray.get(queue.job.remote(job["job_id"], "fake-cluster", True))
                out["queue_job"] = {"state": j["state"], "placement": j.get("placement"), **seen,
                                    "error": "timed out after 420 s"}
                raise
            completed_s = round(time.monotonic() - queued, 1)
            placement = done.get("placement") or {}
            nodes = {n["node_id"]: n["type"] for n in alive_nodes()}
            gpu_node = seen.get("gpu_node") or next(
                ({"node_id": i, "type": t} for i, t in nodes.items() if t == "gpu_worker"), None)
            out["queue_job"] = {
                "config": {"gpu_autoscaling": True}, "asked_num_gpus": job["num_gpus"],
                "gpu_nodes_before": len(gpu_before), "state": done["state"],
                "gpu_node_up_s": seen.get("gpu_up_s"), "completed_s": completed_s,
                "placement": {"num_gpus": placement.get("num_gpus"), "gpu_ids": placement.get("gpu_ids"),
                              "device": placement.get("device"), "node": nodes.get(placement.get("node_id"))},
                "ran_on_launched_gpu_node": bool(gpu_node and not gpu_before
                                                 and placement.get("node_id") == gpu_node["node_id"]),
                "gpu_node_id": gpu_node and gpu_node["node_id"]}
            if done["state"] != "completed":
                out["queue_job"]["error"] = (done.get("error") or "")[-2000:]
            ray.get(queue.shutdown.remote(), timeout=60)
            ray.kill(queue)

        # A training job submitted with `ray job submit` whose Ray task asks for a GPU. The queued job above has
        # normally launched the GPU worker already (idle_timeout_minutes: 5 keeps it up), so this shows a job
        # placed on the GPU node; it times a launch only when no GPU node is up at submit.
        gpu_submission = f"edgeray-train-{uuid.uuid4().hex[:8]}"
        up_before = [n["node_id"] for n in alive_nodes() if n["type"] == "gpu_worker"]
        out["gpu_job"] = {"gpu_node_up_at_submit": bool(up_before)}
        asked = time.monotonic()
        out["gpu_job_submit"] = cli(
            ["job", "submit", "--address", dashboard, "--submission-id", gpu_submission, "--no-wait",
             "--working-dir", ".", "--", "python", "scripts/fake_cluster.py",
             "--train-demo"], env, 300)
        gpu_node = _wait(lambda: next((n for n in alive_nodes() if n["type"] == "gpu_worker"), None), 300,
                         "a GPU worker")
        if not up_before:
            out["gpu_job"]["launched_s"] = round(time.monotonic() - asked, 1)
        _wait(lambda: client.get_job_status(gpu_submission).is_terminal(), 300, "the GPU job to finish")
        logs = client.get_job_logs(gpu_submission)
        line = next((x for x in logs.splitlines() if x.startswith("RESULT")), None)
        result = json.loads(line[len("RESULT"):]) if line else {"logs_tail": logs[-2000:]}
        out["gpu_job"].update(
            node_id=gpu_node["node_id"], job_status=str(client.get_job_status(gpu_submission).value),
            job_s=round(time.monotonic() - asked, 1), ran_on_gpu_node=result.get("node_id") == gpu_node["node_id"],
            **{k: result.get(k) for k in ("gpu_ids", "cuda_visible_devices", "device", "final_loss", "logs_tail")
               if k in result})
        out["nodes_seen"] = alive_nodes()
    finally:
        ray.shutdown()
        out["ray_down"] = cli(["down", "-y", str(cluster_yaml)], env, 120)
        out["teardown"] = teardown(head, str(tmp))
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
        out["wall_s"] = round(time.monotonic() - started, 1)
        run, qjob, gjob = out.get("edgeray_run", {}), out.get("queue_job", {}), out.get("gpu_job", {})
        placed = qjob.get("placement") or {}
        # The queued job must have run on the GPU node launched for it (none up before), holding Ray's GPU 0.
        queued_on_gpu = bool(qjob.get("state") == "completed" and qjob.get("ran_on_launched_gpu_node")
                             and placed.get("num_gpus") == 1.0 and placed.get("node") == "gpu_worker"
                             and placed.get("gpu_ids") == ["0"])
        every_bar_once = bool(run.get("bars") and run.get("decisions") == run.get("bars_decided") == run["bars"])
        proven = bool(run.get("status") == "SUCCEEDED" and every_bar_once and queued_on_gpu
                      and gjob.get("job_status") == "SUCCEEDED" and gjob.get("ran_on_gpu_node")
                      and out["teardown"]["left"] == 0)
        out["verdict"] = {"edgeray_run_decided_every_bar_once": every_bar_once,
                          "queued_job_on_launched_gpu_node": queued_on_gpu,
                          "gpu_job_on_gpu_node": bool(gjob.get("ran_on_gpu_node")), "proven": proven}
        print(json.dumps(out, default=str))
    sys.exit(0 if proven else 1)


if __name__ == "__main__":
    main()
