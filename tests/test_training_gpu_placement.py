"""GPU placement of training jobs on SIMULATED GPU nodes (ray.cluster_utils.Cluster nodes that declare
num_gpus; no physical GPU is needed or used). The cluster needs its own Ray instance, which would clash
with the shared `ray_session`, so the scenario runs in a subprocess and prints its observations as JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)  # polling interval only; the deadline bounds the wait
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def simulated_gpu_scenario(db_path: str) -> dict:
    """Head node without GPUs (runs the scheduler) plus one node declaring a single simulated GPU.
    Two 0.5-GPU jobs must share that GPU at the same time; a 1-GPU job must wait until both release it."""
    import ray
    from ray.cluster_utils import Cluster

    from actors.training_queue import TrainingQueueActor

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0,
                                                             "object_store_memory": 128 * 1024**2})
    try:
        gpu_node = cluster.add_node(num_cpus=3, num_gpus=1, object_store_memory=128 * 1024**2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        q = TrainingQueueActor.remote({"db_path": db_path, "max_concurrent": 3, "poll_s": 0.05})
        long_params = {"epochs": 100_000, "n_samples": 32, "batch_size": 32, "hidden": 4}
        halves = [ray.get(q.submit.remote(user, "torch_mlp_demo", long_params, 0, 0.5))["job_id"]
                  for user in ("ann", "bob")]
        whole = ray.get(q.submit.remote("cy", "torch_mlp_demo", {"epochs": 2, "n_samples": 32}, 0, 1.0))["job_id"]
        try:
            ray.get(q.submit.remote("cy", "torch_mlp_demo", {"epochs": 2}, 0, 2))
            too_big = None
        except ValueError as exc:
            too_big = str(exc)

        def halves_training():
            jobs = {i: ray.get(q.job.remote(i, "ops", True)) for i in (*halves, whole)}
            ok = all((jobs[i]["progress"] or {}).get("epoch", 0) >= 1 for i in halves)
            return ok and jobs

        sharing = _wait(halves_training, 120, "both 0.5-GPU jobs to train")
        stats = ray.get(q.gpu_stats.remote())
        for job_id in halves:
            ray.get(q.cancel.remote(job_id, "ops", True))
        finished = _wait(lambda: (j := ray.get(q.job.remote(whole, "ops", True)))["state"] == "completed" and j, 120,
                         "the 1-GPU job to complete")
        after = {i: ray.get(q.job.remote(i, "ops", True)) for i in halves}
        return {"gpu_node_id": gpu_node.node_id, "sharing": sharing, "whole": finished, "halves_after": after,
                "assignments": stats["assignments"], "cluster_gpus": stats["cluster_gpus"], "too_big": too_big}
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_placement_on_simulated_gpu_nodes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import json, sys; from tests.test_training_gpu_placement import simulated_gpu_scenario; "
            "print('RESULT' + json.dumps(simulated_gpu_scenario(sys.argv[1])))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "queue.sqlite")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])

    assert out["cluster_gpus"] == 1.0
    assert "num_gpus" in out["too_big"] and "largest node" in out["too_big"]
    halves = [j for j in out["sharing"].values() if j["num_gpus"] == 0.5]
    assert len(halves) == 2
    for job in halves:  # both on the GPU node, each holding half of the same GPU, at the same time
        assert job["state"] == "running"
        assert job["placement"]["node_id"] == out["gpu_node_id"]
        assert job["placement"]["num_gpus"] == 0.5 and job["placement"]["gpu_ids"] == ["0"]
    assert sorted(a["job_id"] for a in out["assignments"]) == sorted(j["job_id"] for j in halves)
    whole_at_snapshot = next(j for j in out["sharing"].values() if j["num_gpus"] == 1.0)
    assert "node_id" not in (whole_at_snapshot["placement"] or {})  # could not land while the halves ran

    whole = out["whole"]
    assert whole["placement"]["node_id"] == out["gpu_node_id"] and whole["placement"]["gpu_ids"] == ["0"]
    assert whole["placement"]["num_gpus"] == 1.0
    released = max(j["cancel_requested_at"] for j in out["halves_after"].values())
    assert whole["placement"]["landed_at"] >= released  # the whole GPU only after both halves let go
    assert all(j["state"] == "cancelled" for j in out["halves_after"].values())
