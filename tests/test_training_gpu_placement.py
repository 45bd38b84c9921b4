"""GPU placement of training jobs on SIMULATED GPU nodes (ray.cluster_utils.Cluster nodes that declare
num_gpus; no physical GPU is needed or used). The cluster needs its own Ray instance, which would clash
with the shared `ray_session`, so the scenario runs in a subprocess and prints its observations as JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_until as _wait

ROOT = Path(__file__).resolve().parents[1]


def sharing_phase(ray, db_path: str, gpu_node_id: str) -> dict:
    """One node declaring a single simulated GPU is left: two 0.5-GPU jobs must share that GPU at the same time;
    a 1-GPU job must wait until both release it."""
    from actors.training_queue import TrainingQueueActor

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
    return {"gpu_node_id": gpu_node_id, "sharing": sharing, "whole": finished, "halves_after": after,
            "assignments": stats["assignments"], "cluster_gpus": stats["cluster_gpus"], "too_big": too_big}


def run_scenario(name: str, tmp_path) -> dict:
    """Run the scenario function `name` of this module in a fresh Python (its own Ray) and return what it printed."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = (f"import json, sys; from tests.test_training_gpu_placement import {name}; "
            f"print('RESULT' + json.dumps({name}(sys.argv[1])))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[len("RESULT"):])


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict:
    """Both phases on one simulated cluster (a cluster start is the slow part): budgets, then sharing."""
    return run_scenario("simulated_gpu_scenario", tmp_path_factory.mktemp("gpu_placement"))


def test_placement_on_simulated_gpu_nodes(scenario):
    out = scenario["sharing"]

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


def simulated_gpu_scenario(tmp_dir: str) -> dict:
    """SIMULATED GPU nodes with memory budgets: two one-GPU nodes declaring the Ray resource gpu_memory_gb (8 and
    6, the specification's example; no physical GPU is used) and a queue configured with the same per-GPU budgets. Workers run
    tests.fake_device.install_fake_oom_task, which adds `fake_oom_demo` (the real demo task behind an injected
    CUDA out-of-memory error for batches over 16 rows). Then the 6 GB node leaves and `sharing_phase` runs on
    the one GPU left."""
    import ray
    from ray.cluster_utils import Cluster

    from actors.training_queue import TrainingQueueActor

    db_path = str(Path(tmp_dir) / "budgets.sqlite")

    # the head is one of the two GPU nodes (it also runs the scheduler, which takes no CPU): one node fewer to start
    node_args = {"num_cpus": 3, "num_gpus": 1, "object_store_memory": 128 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "resources": {"gpu_memory_gb": 8}})
    try:
        nodes = {8: cluster.head_node, 6: cluster.add_node(**node_args, resources={"gpu_memory_gb": 6})}
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": "tests.fake_device.install_fake_oom_task"})
        q = TrainingQueueActor.remote({"db_path": db_path, "max_concurrent": 4, "poll_s": 0.05,
                                       "gpu_memory_budgets": {0: "8GB", 1: "6GB"}})
        refused = {}
        for label, gb in (("over_budget", 10), ("bad_value", "lots")):
            try:
                ray.get(q.submit.remote("cy", "torch_mlp_demo", {"epochs": 2, "gpu_memory_gb": gb}, 0, 0.5))
            except ValueError as exc:
                refused[label] = str(exc)
        long_params = {"epochs": 100_000, "n_samples": 32, "batch_size": 32, "hidden": 4, "gpu_memory_gb": 5}
        # two 5 GB jobs: half a GPU each would let them share one GPU, their budgets do not
        first, second = (ray.get(q.submit.remote(u, "torch_mlp_demo", long_params, 0, 0.5))["job_id"]
                         for u in ("ann", "bob"))

        def get(job_id):
            return ray.get(q.job.remote(job_id, "ops", True))

        _wait(lambda: all((get(i)["progress"] or {}).get("epoch", 0) >= 1 for i in (first, second)), 120,
              "both 5 GB jobs to train")
        # a third 5 GB job: half a GPU is free on each node, 5 GB on neither, so it must wait
        waiting = ray.get(q.submit.remote("cy", "torch_mlp_demo", {"epochs": 2, "n_samples": 32, "gpu_memory_gb": 5},
                                          0, 0.5))["job_id"]
        # a 3 GB job fits beside the 5 GB one on the 8 GB node; its first try fails with the injected OOM
        oom = ray.get(q.submit.remote("dee", "fake_oom_demo", {"epochs": 2, "n_samples": 32, "batch_size": 32,
                                                               "gpu_memory_gb": 3}, 0, 0.5))["job_id"]

        def oom_done():
            jobs = {i: get(i) for i in (first, second, waiting, oom)}
            return jobs[oom]["state"] in ("completed", "failed") and jobs

        snapshot = _wait(oom_done, 120, "the 3 GB job to end")
        stats = ray.get(q.gpu_stats.remote())
        ray.get(q.cancel.remote(first, "ops", True))
        landed = _wait(lambda: (j := get(waiting))["state"] == "completed" and j, 120, "the waiting job to run")
        ray.get(q.cancel.remote(second, "ops", True))
        first_after = _wait(lambda: (j := get(first))["state"] == "cancelled" and j, 60, "the first job to stop")
        _wait(lambda: get(second)["state"] == "cancelled", 60, "the second job to stop")
        budgets = {"nodes": {str(gb): n.node_id for gb, n in nodes.items()}, "snapshot": snapshot, "landed": landed,
                   "first_after": first_after, "refused": refused, "budgets": stats["memory_budgets"],
                   "device": stats["device"], "ids": {"first": first, "second": second, "waiting": waiting, "oom": oom}}
        ray.get(q.shutdown.remote())
        ray.kill(q)
        cluster.remove_node(nodes[6])
        _wait(lambda: ray.cluster_resources().get("GPU", 0.0) == 1.0, 60, "the 6 GB node to leave")
        sharing = sharing_phase(ray, str(Path(tmp_dir) / "sharing.sqlite"), nodes[8].node_id)
        return {"budgets": budgets, "sharing": sharing}
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_memory_budgets_and_oom_failover_on_simulated_gpu_nodes(scenario):
    out = scenario["budgets"]
    ids, snap = out["ids"], out["snapshot"]

    assert "params.gpu_memory_gb 10 exceeds the largest GPU memory budget (8 GB on GPU 0" in out["refused"]["over_budget"]
    assert "params.gpu_memory_gb" in out["refused"]["bad_value"]
    first, second = snap[ids["first"]], snap[ids["second"]]
    assert {first["placement"]["node_id"], second["placement"]["node_id"]} == set(out["nodes"].values())
    assert first["placement"]["resources"] == {"gpu_memory_gb": 5.0}
    assert "node_id" not in (snap[ids["waiting"]]["placement"] or {})  # GPU share free, budget not: it waited
    landed = out["landed"]["placement"]
    assert landed["landed_at"] >= out["first_after"]["cancel_requested_at"]  # only once 5 GB were released

    oom = snap[ids["oom"]]
    assert oom["state"] == "completed", (oom["error"], oom["result"])
    assert oom["placement"]["node_id"] == out["nodes"]["8"]  # 3 GB fit only beside the 5 GB job on the 8 GB node
    attempts = oom["result"]["device_attempts"]
    assert [(a["device"], a["batch_size"]) for a in attempts] == [("cpu", 32), ("cpu", 16)]  # no CUDA here
    assert attempts[0]["reason"].startswith("out_of_memory: OutOfMemoryError: CUDA out of memory (fake)")
    assert attempts[1]["reason"] is None and oom["result"]["batch_size"] == 16
    assert oom["placement"]["device_attempts"] == attempts

    assert out["budgets"]["configured_gb"] == {"0": 8.0, "1": 6.0}
    assert sorted(out["budgets"]["declared_gb"].values()) == [6.0, 8.0]
    assert out["device"]["name"] == "cpu"
