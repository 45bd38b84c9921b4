"""Training queue: the durable job store (no Ray), NVML stats, and the scheduler actor on the shared Ray session."""
from __future__ import annotations

import json
import sys
import time
import types

import pytest

from edgeray.gpu import gpu_stats
from edgeray.training.jobs import RESTART_REASON, JobStore
from edgeray.training.tasks import torch_mlp_demo

DAY = 24 * 3600.0
ADMIN = ("ops", True)  # (user, is_admin) as the HTTP layer passes the authenticated caller


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _demo(epochs: int = 2, **extra) -> dict:
    return {"epochs": epochs, "n_samples": 32, "batch_size": 32, "hidden": 4, **extra}


# --------------------------------------------------------------------- store (no Ray)
def test_dispatch_is_priority_first_fifo_within_priority_and_capped(tmp_path):
    store = JobStore(tmp_path / "q.sqlite")
    ids = {name: store.submit("ann", "torch_mlp_demo", _demo(), prio, 0.0)["job_id"]
           for name, prio in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)]}
    first = store.claim_next(2)
    assert [j["job_id"] for j in first] == [ids["b"], ids["d"]]
    assert all(j["state"] == "running" and j["attempts"] == 1 for j in first)
    assert store.claim_next(2) == []  # both slots taken
    assert store.finish(ids["b"], 1, "completed", result={"ok": 1})
    assert [j["job_id"] for j in store.claim_next(2)] == [ids["a"]]
    queued = store.list_jobs(states=["queued"])
    assert [j["job_id"] for j in queued] == [ids["c"], ids["e"]]


@pytest.mark.parametrize("kwargs, field", [
    ({"task": "no_such_task"}, "task"),
    ({"params": {"epochs": -3}}, "epochs"),
    ({"params": {"epochs": 0}}, "epochs"),
    ({"params": {"epochs": "3"}}, "epochs"),
    ({"params": {"epochs": 2, "n_samples": 0}}, "n_samples"),
    ({"params": {"epochs": 2, "bogus": 1}}, "bogus"),
    ({"params": [1, 2]}, "params"),
    ({"priority": 1.5}, "priority"),
    ({"priority": "high"}, "priority"),
    ({"priority": True}, "priority"),
    ({"num_gpus": -0.5}, "num_gpus"),
    ({"num_gpus": 1.5}, "num_gpus"),
    ({"num_gpus": float("nan")}, "num_gpus"),
    ({"user": "  "}, "user"),
])
def test_bad_submission_raises_value_error_naming_field(tmp_path, kwargs, field):
    args = {"user": "ann", "task": "torch_mlp_demo", "params": _demo(), "priority": 0, "num_gpus": 0.5, **kwargs}
    store = JobStore(tmp_path / "q.sqlite")
    with pytest.raises(ValueError, match=field):
        store.submit(**args)
    assert store.list_jobs() == []  # nothing half-stored


def test_cancel_queued_never_runs_and_running_gets_stop_flag(tmp_path):
    store = JobStore(tmp_path / "q.sqlite")
    running = store.submit("ann", "torch_mlp_demo", _demo(10), 1, 0.0)["job_id"]
    queued = store.submit("bob", "torch_mlp_demo", _demo(), 0, 0.0)["job_id"]
    store.claim_next(1)
    assert store.report_progress(running, 1, 1, 10, {"loss": 0.7}, 1.0) is False
    assert store.cancel(queued)["state"] == "cancelled"
    assert store.claim_next(5) == []  # the cancelled job is never claimed
    job = store.cancel(running)
    assert job["state"] == "running" and job["cancel_requested"]
    assert store.report_progress(running, 1, 2, 10, {"loss": 0.6}, 2.0) is True
    assert store.finish(running, 1, "cancelled", error="stopped")
    assert store.get(queued)["attempts"] == 0 and store.get(queued)["started_at"] is None
    with pytest.raises(ValueError, match="already cancelled"):
        store.cancel(running)
    with pytest.raises(KeyError, match="unknown job_id 'nope'"):
        store.cancel("nope")


def test_eta_is_mean_epoch_time_so_far_times_epochs_left(tmp_path):
    store = JobStore(tmp_path / "q.sqlite")
    job_id = store.submit("ann", "torch_mlp_demo", _demo(10), 0, 0.0)["job_id"]
    assert store.get(job_id)["eta_s"] is None  # queued: no estimate
    store.claim_next(1)
    store.report_progress(job_id, 1, 2, 10, {"loss": 0.5}, 5.0)
    assert store.get(job_id)["eta_s"] == pytest.approx(2.5 * 8)  # 5 s / 2 epochs, 8 left
    store.report_progress(job_id, 1, 5, 10, {"loss": float("nan")}, 10.0)
    job = store.get(job_id)
    assert job["eta_s"] == pytest.approx(2.0 * 5)
    assert [h["epoch"] for h in job["progress"]["history"]] == [2, 5]
    assert job["progress"]["metrics"] == {"loss": None}  # diverged loss kept JSON-safe


def test_retention_purges_only_finished_jobs_older_than_seven_days(tmp_path):
    clock = Clock()
    store = JobStore(tmp_path / "q.sqlite", clock=clock)
    done = store.submit("ann", "torch_mlp_demo", _demo(), 0, 0.0)["job_id"]
    waiting = store.submit("ann", "torch_mlp_demo", _demo(), -5, 0.0)["job_id"]
    store.claim_next(1)
    store.finish(done, 1, "completed", result={})
    clock.t += 7 * DAY - 1
    assert store.purge() == []
    clock.t += 2
    assert store.purge() == [done]
    with pytest.raises(KeyError, match="purged"):
        store.get(done)
    assert store.get(waiting)["state"] == "queued"  # unfinished jobs are never purged


def test_restart_requeues_running_with_attempts_left_and_fails_the_rest(tmp_path):
    path = tmp_path / "q.sqlite"
    store = JobStore(path, max_attempts=2)
    retry = store.submit("ann", "torch_mlp_demo", _demo(), 9, 0.0)["job_id"]
    once = store.submit("ann", "torch_mlp_demo", _demo(), 8, 0.0, max_attempts=1)["job_id"]
    waiting = store.submit("bob", "torch_mlp_demo", _demo(), 0, 0.0)["job_id"]
    store.claim_next(2)
    store.close()

    reopened = JobStore(path)  # what a restarted actor does
    assert reopened.recover() == {"requeued": [retry], "failed": [once]}
    assert reopened.get(retry)["state"] == "queued" and reopened.get(retry)["attempts"] == 1
    assert reopened.get(once)["state"] == "failed" and reopened.get(once)["error"] == RESTART_REASON
    assert reopened.get(waiting)["state"] == "queued"
    # the orphaned runner of attempt 1 is told to stop and cannot overwrite the job
    assert reopened.report_progress(retry, 1, 1, 2, {"loss": 1.0}, 0.1) is True
    assert reopened.finish(retry, 1, "completed", result={}) is False
    assert [j["job_id"] for j in reopened.claim_next(1)] == [retry]
    assert reopened.get(retry)["attempts"] == 2


def test_state_dict_round_trip_gives_same_later_dispatch(tmp_path):
    clock = Clock()
    store = JobStore(tmp_path / "a.sqlite", retention_s=3 * DAY, clock=clock)
    for prio in (0, 3, 0, 3, 1):
        store.submit("ann", "torch_mlp_demo", _demo(), prio, 0.25)
    store.claim_next(1)
    state = store.state_dict()
    state = json.loads(json.dumps(state))  # must be plain JSON
    copy = JobStore.from_state(state, tmp_path / "b.sqlite", clock=clock)
    assert copy.list_jobs() == store.list_jobs()
    assert copy.retention_s == 3 * DAY
    assert [j["job_id"] for j in copy.claim_next(3)] == [j["job_id"] for j in store.claim_next(3)]


def test_torch_mlp_demo_reports_every_epoch_and_learns():
    calls = []
    result = torch_mlp_demo({"epochs": 6, "n_samples": 128, "seed": 1}, lambda e, t, m: calls.append((e, t, m)), "cpu")
    assert [(e, t) for e, t, _ in calls] == [(e, 6) for e in range(1, 7)]
    assert result["final_loss"] < result["first_loss"] == pytest.approx(calls[0][2]["loss"])
    assert result["device"] == "cpu" and result["train_accuracy"] > 0.6


# --------------------------------------------------------------------- NVML
def _fake_nvml(devices, init_error=None, util_error_index=None):
    class NVMLError(Exception):
        pass

    def util(handle):
        if handle == util_error_index:
            raise NVMLError("Not Supported")
        return types.SimpleNamespace(gpu=devices[handle]["util"], memory=devices[handle]["mem_util"])

    def init():
        if init_error:
            raise NVMLError(init_error)

    return types.SimpleNamespace(
        NVMLError=NVMLError, NVML_TEMPERATURE_GPU=0, nvmlInit=init, nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: len(devices), nvmlSystemGetDriverVersion=lambda: b"570.1",
        nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetName=lambda h: devices[h]["name"],
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=devices[h]["used"], total=devices[h]["total"]),
        nvmlDeviceGetUtilizationRates=util, nvmlDeviceGetTemperature=lambda h, kind: devices[h]["temp"])


def test_gpu_stats_reads_each_device(monkeypatch):
    gib = 1024 ** 3
    devices = [{"name": b"NVIDIA H100", "used": 2 * gib, "total": 8 * gib, "util": 40, "mem_util": 10, "temp": 55},
               {"name": "NVIDIA A10", "used": 0, "total": 24 * gib, "util": 0, "mem_util": 0, "temp": 30}]
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(devices, util_error_index=1))
    stats = gpu_stats()
    assert stats["available"] and stats["count"] == 2 and stats["driver_version"] == "570.1"
    first, second = stats["devices"]
    assert first["name"] == "NVIDIA H100" and first["memory_used_mib"] == 2048 and first["memory_total_mib"] == 8192
    assert first["memory_used_pct"] == 25.0 and first["utilization_gpu_pct"] == 40 and first["temperature_c"] == 55
    assert second["utilization_gpu_pct"] is None  # unsupported query -> None, not a crash
    assert second["memory_total_mib"] == 24 * 1024


def test_gpu_stats_says_unavailable_instead_of_raising(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([], init_error="Driver Not Loaded"))
    stats = gpu_stats()
    assert stats["available"] is False and "Driver Not Loaded" in stats["reason"]
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([]))
    assert gpu_stats() == {"available": False, "reason": "NVML found no NVIDIA GPUs"}


# --------------------------------------------------------------------- the actor on Ray
def _wait(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll scheduler state until predicate returns truthy, failing after a deadline (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)  # polling interval only; the deadline is what bounds the wait
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def make_queue(ray_session, tmp_path):
    from actors.training_queue import TrainingQueueActor

    made = []

    def make(**config):
        actor = TrainingQueueActor.remote({"db_path": str(tmp_path / "queue.sqlite"), "poll_s": 0.05, **config})
        made.append(actor)
        return actor

    yield make
    for actor in made:
        ray_session.kill(actor)


def test_actor_runs_jobs_by_priority_with_progress_on_cpu_cluster(ray_session, make_queue):
    q = make_queue(max_concurrent=1, start_paused=True)
    low = ray_session.get(q.submit.remote("ann", "torch_mlp_demo", _demo(3), 0))
    high = ray_session.get(q.submit.remote("bob", "torch_mlp_demo", _demo(3), 5))
    low2 = ray_session.get(q.submit.remote("ann", "torch_mlp_demo", _demo(3), 0))
    assert [j["job_id"] for j in ray_session.get(q.queue.remote(*ADMIN))] == [high["job_id"], low["job_id"], low2["job_id"]]
    ray_session.get(q.resume.remote())
    ids = [high["job_id"], low["job_id"], low2["job_id"]]
    jobs = _wait(lambda: (js := [ray_session.get(q.job.remote(i, *ADMIN)) for i in ids])
                 and all(j["state"] == "completed" for j in js) and js, what="three jobs to complete")
    for before, after in zip(jobs, jobs[1:]):  # max_concurrent=1: strictly one after another, in priority order
        assert after["started_at"] >= before["finished_at"]
    for job in jobs:
        assert job["progress"]["epoch"] == 3 and len(job["progress"]["history"]) == 3 and job["eta_s"] == 0.0
        assert job["placement"]["num_gpus"] == 0.0 and job["placement"]["gpu_ids"] == []  # no GPUs: CPU task
        assert job["result"]["final_loss"] == pytest.approx(job["progress"]["history"][-1]["loss"])
    assert [j["job_id"] for j in ray_session.get(q.user_jobs.remote("ann", False))] == [low2["job_id"], low["job_id"]]
    stats = ray_session.get(q.gpu_stats.remote())
    assert stats["cluster_gpus"] == 0.0 and stats["assignments"] == [] and "available" in stats


def test_actor_cancels_queued_and_running_jobs_and_caps_concurrency(ray_session, make_queue):
    q = make_queue(max_concurrent=2)
    long_a, long_b, waiting = (ray_session.get(q.submit.remote("ann", "torch_mlp_demo", _demo(100_000), 0))["job_id"]
                               for _ in range(3))

    def both_training():
        js = {j["job_id"]: j for j in ray_session.get(q.jobs.remote(*ADMIN))}
        ok = all((js[i]["progress"] or {}).get("epoch", 0) >= 2 for i in (long_a, long_b))
        return ok and js

    snapshot = _wait(both_training, what="two long jobs to report progress")
    assert snapshot[waiting]["state"] == "queued"  # max_concurrent=2
    assert snapshot[long_a]["eta_s"] > 0
    assert ray_session.get(q.cancel.remote(waiting, "ann", False))["state"] == "cancelled"
    for job_id in (long_a, long_b):
        assert ray_session.get(q.cancel.remote(job_id, "ann", False))["cancel_requested"]
    final = _wait(lambda: (js := [ray_session.get(q.job.remote(i, *ADMIN)) for i in (long_a, long_b)])
                  and all(j["state"] == "cancelled" for j in js) and js, what="running jobs to stop")
    for job in final:
        assert job["progress"]["epoch"] < 100_000 and "cancel requested" in job["error"]
    never = ray_session.get(q.job.remote(waiting, *ADMIN))
    assert never["attempts"] == 0 and never["started_at"] is None and never["placement"] is None
    with pytest.raises(KeyError, match="unknown job_id"):
        ray_session.get(q.job.remote("missing", *ADMIN))
    with pytest.raises(ValueError, match="epochs"):
        ray_session.get(q.submit.remote("ann", "torch_mlp_demo", {"epochs": -1}, 0))
    with pytest.raises(ValueError, match="priority"):
        ray_session.get(q.submit.remote("ann", "torch_mlp_demo", _demo(), "1"))


def test_restarted_scheduler_keeps_queue_and_requeues_running_job(ray_session, make_queue):
    first = make_queue(max_concurrent=1)
    running = ray_session.get(first.submit.remote("ann", "torch_mlp_demo", _demo(100_000), 1))["job_id"]
    queued = ray_session.get(first.submit.remote("bob", "torch_mlp_demo", _demo(2), 0))["job_id"]
    _wait(lambda: (ray_session.get(first.job.remote(running, *ADMIN))["progress"] or {}).get("epoch", 0) >= 1,
          what="the long job to start training")
    # The crash point made exact: the loop stops, then the actor dies. (Killed mid-loop, a dying scheduler
    # can still see its runner fail as its owner goes and dispatch the next job before it is gone, and the
    # recovery would then requeue that one instead; nothing is lost either way, but this test names which.)
    ray_session.get(first.shutdown.remote())
    ray_session.kill(first)

    second = make_queue(max_concurrent=1, start_paused=True)  # same SQLite file
    assert ray_session.get(second.recovery_report.remote()) == {"requeued": [running], "failed": []}
    assert [(j["job_id"], j["state"]) for j in ray_session.get(second.queue.remote(*ADMIN))] == [
        (running, "queued"), (queued, "queued")]
    ray_session.get(second.resume.remote())
    _wait(lambda: ray_session.get(second.job.remote(running, *ADMIN))["state"] == "running"
          and (ray_session.get(second.job.remote(running, *ADMIN))["progress"] or {}).get("epoch", 0) >= 1,
          what="the re-queued job to train again")
    assert ray_session.get(second.job.remote(running, *ADMIN))["attempts"] == 2
    ray_session.get(second.cancel.remote(running, *ADMIN))
    done = _wait(lambda: (j := ray_session.get(second.job.remote(queued, *ADMIN)))["state"] == "completed" and j,
                 what="the queued job to complete after the restart")
    assert done["attempts"] == 1 and done["result"]["epochs"] == 2


def test_gpu_autoscaling_asks_for_the_gpu_while_no_gpu_node_is_up(ray_session, make_queue):
    """This CPU-only Ray stands for a cluster whose GPU workers scale from zero: with gpu_autoscaling the job asks
    Ray for its GPU (what makes the autoscaler launch a GPU node) and waits instead of training on a CPU."""
    q = make_queue(max_concurrent=1, gpu_autoscaling=True, cancel_grace_s=0.1)
    job_id = ray_session.get(q.submit.remote("ann", "torch_mlp_demo", _demo(2), 0, 1.0))["job_id"]
    job = _wait(lambda: (j := ray_session.get(q.job.remote(job_id, *ADMIN)))["placement"] and j,
                what="the job's placement request")
    assert job["placement"]["num_gpus"] == 1.0 and job["state"] == "running"
    assert ray_session.get(q.gpu_stats.remote())["cluster_gpus"] == 0.0  # so it cannot have started
    assert ray_session.get(q.cancel.remote(job_id, "ann", False))["cancel_requested"]
    final = _wait(lambda: (j := ray_session.get(q.job.remote(job_id, *ADMIN)))["state"] == "cancelled" and j,
                  what="the pending job to be cancelled")
    assert final["progress"] is None  # never trained on a CPU
