"""GPU training queue: a scheduler actor over the durable JobStore, and the Ray task that runs one job.

Identity: every HTTP-facing method takes the authenticated caller (`user`, `is_admin`) from the route; the
rules (own jobs only unless admin, no caller-chosen paths, bounded parameters) live in edgeray.training.jobs.
PermissionError means forbidden (HTTP 403), KeyError unknown or not yours (404), ValueError bad input (422).

Cancel: a running job's runner sees the cancel flag in the reply to its per-epoch progress report and stops
between epochs (cooperative). If it has not stopped `cancel_grace_s` after the request (a stuck epoch), the
scheduler also calls ray.cancel on the task (KeyboardInterrupt in the worker) as a backstop.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import ray
from ray.exceptions import TaskCancelledError

from edgeray.device import GPU_MEMORY_RESOURCE, parse_memory_budgets, parse_memory_gb, run_with_failover, select_device
from edgeray.gpu import gpu_stats as nvml_gpu_stats
from edgeray.training.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETENTION_S,
    JobCancelled,
    JobStore,
)

log = logging.getLogger(__name__)


DEFAULT_CONFIG = {
    "db_path": "runs/training/queue.sqlite",  # a SQLite file, or a database URL (storage.state_url)
    "queue": "default",  # the queue's name in that database (the pipeline's namespace)
    # Where jobs register models (edgeray.sports.registry.storage_settings): handed to each runner, never
    # stored with the job, so a database password stays out of job listings.
    "registry_storage": {},
    "max_concurrent": 2,
    "retention_s": DEFAULT_RETENTION_S,
    "max_attempts": DEFAULT_MAX_ATTEMPTS,
    "default_num_gpus": 1.0,  # what a submit without num_gpus asks for when the cluster has GPUs
    "cpus_per_job": 1.0,
    "cancel_grace_s": 30.0,
    "poll_s": 0.2,  # how long the scheduler loop waits on running tasks before re-checking the queue
    "start_paused": False,
    # GPU memory budgets per GPU index, e.g. {0: "8GB", 1: "6GB"}: a job declaring params.gpu_memory_gb more
    # than the largest is refused at submit. Placement by budget is Ray's, see _dispatch.
    "gpu_memory_budgets": {},
    # True on a cluster whose GPU workers scale from zero (cluster.yaml's gpu_worker, min_workers 0): a job asks
    # for its GPUs even while no GPU node is up, so Ray's autoscaler launches one. False: with no GPU in the
    # cluster a job runs on a CPU (a GPU request would wait forever on a fixed CPU-only cluster).
    "gpu_autoscaling": False,
}


@ray.remote(max_retries=0)  # the scheduler, not Ray, decides about retries (attempts / max_attempts)
def run_training_job(scheduler, job_id: str, attempt: int, task: str, params: dict,
                     registry_storage: dict | None = None) -> dict:
    """Run one job attempt; report placement, then progress per epoch, to the scheduler. The device is the
    device manager's pick (CUDA only when Ray gave this task a GPU); a device failure (out of memory, lost
    device) is retried smaller or on the next device (edgeray.device.run_with_failover), every try recorded
    as placement.device_attempts and in the result."""
    from edgeray.training import jobs as training_jobs
    from edgeray.training.tasks import device_settings, with_device_settings

    from edgeray.sports.registry import set_storage

    set_storage(registry_storage)  # a model this job registers goes to the configured index and artefact root
    ctx = ray.get_runtime_context()
    gpu_ids = [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
    # Ray sets CUDA_VISIBLE_DEVICES to this task's GPUs, so the first visible one is ours
    info = select_device(allow_cuda=bool(gpu_ids))
    placement = {"node_id": ctx.get_node_id(), "gpu_ids": gpu_ids, "device": info.name, "pid": os.getpid(),
                 "landed_at": time.time(), "device_info": info.to_dict()}
    if ray.get(scheduler.job_started.remote(job_id, attempt, placement)):
        return {"status": "cancelled", "error": "cancelled before the first epoch"}
    started = time.perf_counter()
    last_epoch = 0

    def progress(epoch: int, total_epochs: int, metrics: dict) -> None:
        nonlocal last_epoch
        last_epoch = epoch
        stop = ray.get(scheduler.report_progress.remote(job_id, attempt, epoch, total_epochs, metrics,
                                                        time.perf_counter() - started))
        if stop:
            raise JobCancelled(f"cancel requested; stopped after epoch {epoch}/{total_epochs}")

    def train(device: str, batch_size: int | None, precision: str) -> dict:
        # the registry through its module: cloudpickle ships this function by value (the module attribute is the
        # RemoteFunction), which would freeze a copy of the dict as the pickling process had it
        return training_jobs.TRAINING_TASKS[task](with_device_settings(task, params, batch_size, precision),
                                                  progress, device)

    def on_attempt(attempts: list[dict]) -> None:
        if len(attempts) > 1 and ray.get(scheduler.job_started.remote(
                job_id, attempt, {"device": attempts[-1]["device"], "device_attempts": attempts})):
            raise JobCancelled("cancel requested before a device-failover retry")

    try:
        batch_size, precision = device_settings(task, params)
        result, attempts = run_with_failover(train, info.name, batch_size, precision, on_attempt=on_attempt)
    except JobCancelled as exc:
        return {"status": "cancelled", "error": str(exc), "epochs_run": last_epoch,
                "result": {"device_attempts": getattr(exc, "device_attempts", [])}}
    except Exception as exc:  # the job's own failure is data for the user, not a scheduler crash
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "epochs_run": last_epoch,
                "result": {"device_attempts": getattr(exc, "device_attempts", [])}}
    out = result if isinstance(result, dict) else {"value": result}
    return {"status": "completed", "result": {**out, "device_attempts": attempts}, "epochs_run": last_epoch}


@ray.remote(num_cpus=0, max_concurrency=16)  # threads: runners report progress while the loop dispatches
class TrainingQueueActor:
    def __init__(self, config: dict | None = None):
        cfg = {**DEFAULT_CONFIG, **(config or {})}
        unknown = sorted(set(cfg) - set(DEFAULT_CONFIG))
        if unknown:
            raise ValueError(f"config.{unknown[0]}: unknown training-queue setting; known: {sorted(DEFAULT_CONFIG)}")
        if not isinstance(cfg["max_concurrent"], int) or cfg["max_concurrent"] < 1:
            raise ValueError(f"config.max_concurrent must be an integer >= 1, got {cfg['max_concurrent']!r}")
        cfg["gpu_memory_budgets"] = parse_memory_budgets(cfg["gpu_memory_budgets"], "config.gpu_memory_budgets")
        self.cfg = cfg
        self.store = JobStore(cfg["db_path"], queue=cfg["queue"], retention_s=cfg["retention_s"],
                              max_attempts=cfg["max_attempts"])
        self.recovered = self.store.recover()
        self._running: dict[str, tuple[ray.ObjectRef, int]] = {}  # job_id -> (runner ref, attempt)
        self._hard_cancelled: set[str] = set()
        self._lock = threading.RLock()
        self._paused = bool(cfg["start_paused"])
        self._stop = threading.Event()
        self._self = ray.get_runtime_context().current_actor
        self._node_id = ray.get_runtime_context().get_node_id()
        self._thread = threading.Thread(target=self._loop, name="training-queue", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ HTTP-facing API
    def submit(self, user: str, task: str, params: dict | None = None, priority: int = 0,
               num_gpus: float | None = None, server_params: dict | None = None) -> dict:
        """Queue a job owned by `user`, the authenticated caller. `params` are the caller's (no path-like keys,
        bounded); `server_params` are the server's own (data_dir, registry_dir), merged after that check."""
        num_gpus = self.cfg["default_num_gpus"] if num_gpus is None else num_gpus
        largest = self._largest_node_gpus()
        if isinstance(num_gpus, (int, float)) and largest > 0 and num_gpus > largest:  # Ray would never place it
            raise ValueError(f"num_gpus {num_gpus!r} exceeds the largest node's {largest:g} GPUs")
        if isinstance(params, dict) and params.get("gpu_memory_gb") is not None:
            self._check_gpu_memory(parse_memory_gb(params["gpu_memory_gb"], "params.gpu_memory_gb"))
        job = self.store.submit(user, task, params, priority, num_gpus,  # ValueError names the bad field
                                server_params=server_params)
        self._dispatch()
        return self.store.get(job["job_id"])

    def queue(self, user: str, is_admin: bool) -> list[dict]:
        """Running then queued jobs, queued ones in the order they will start; a non-admin sees only their own.
        Each queued job carries `queue_position` (1 = next to start) counted over everyone's queued jobs, so a
        user learns how long their wait is without seeing whose jobs are ahead."""
        self.store.purge()
        everyone = self.store.list_jobs(states=["running", "queued"])
        position = {j["job_id"]: i for i, j in enumerate((j for j in everyone if j["state"] == "queued"), 1)}
        visible = {j["job_id"] for j in self.store.visible_jobs(user, is_admin, states=["running", "queued"])}
        return [{**j, "queue_position": position.get(j["job_id"])} for j in everyone if j["job_id"] in visible]

    def jobs(self, user: str, is_admin: bool, states: list[str] | None = None) -> list[dict]:
        """The caller's jobs (an admin: everyone's), optionally only those in `states`."""
        self.store.purge()
        return self.store.visible_jobs(user, is_admin, states=states)

    def job(self, job_id: str, user: str, is_admin: bool) -> dict:
        """One job. KeyError for an unknown or purged id and, for a non-admin, for another user's job too
        (the same message), so ids cannot be probed."""
        return self.store.visible_job(job_id, user, is_admin)

    def user_jobs(self, user: str, is_admin: bool, of_user: str | None = None) -> list[dict]:
        """Jobs of `of_user` (default: the caller). A non-admin asking for someone else: PermissionError."""
        self.store.purge()
        return self.store.visible_jobs(user, is_admin, of_user=user if of_user is None else of_user)

    def cancel(self, job_id: str, user: str, is_admin: bool) -> dict:
        """Cancel as the caller: the owner or an admin, else PermissionError (the owner is not named)."""
        return self.store.cancel(job_id, user, is_admin)

    def gpu_stats(self, user: str | None = None, is_admin: bool = False) -> dict:
        """NVML stats of this actor's node plus which running job holds which Ray GPU id. The job's user is
        shown only to its owner and to admins (None otherwise)."""
        stats = nvml_gpu_stats()
        assignments = []
        for job in self.store.list_jobs(states=["running"]):
            placement = job["placement"] or {}
            if placement.get("gpu_ids"):
                shown = job["user"] if is_admin is True or (user is not None and job["user"] == user) else None
                assignments.append({"job_id": job["job_id"], "user": shown, "node_id": placement.get("node_id"),
                                    "gpu_ids": placement["gpu_ids"], "num_gpus": placement.get("num_gpus")})
        for device in stats.get("devices", []):
            # Ray's GPU ids are indices into the node's visible GPUs; NVML's are physical: equal unless the
            # raylet was started with CUDA_VISIBLE_DEVICES restricting it
            device["jobs"] = [a["job_id"] for a in assignments
                              if a["node_id"] == self._node_id and str(device["index"]) in a["gpu_ids"]]
        try:  # what the device manager picks in this (scheduler) process; each job picks on its own node
            device = select_device().to_dict()
        except Exception as exc:  # stats must answer even when torch cannot probe
            device = {"error": f"{type(exc).__name__}: {exc}"}
        budgets = {
            "configured_gb": {str(i): gb for i, gb in self.cfg["gpu_memory_budgets"].items()},
            "resource": GPU_MEMORY_RESOURCE,
            "declared_gb": {n["NodeID"]: n["Resources"][GPU_MEMORY_RESOURCE] for n in ray.nodes()
                            if n["Alive"] and GPU_MEMORY_RESOURCE in n["Resources"]},
            "available_gb": ray.available_resources().get(GPU_MEMORY_RESOURCE, 0.0),
            "jobs_gb": {j["job_id"]: (j["params"] or {}).get("gpu_memory_gb")
                        for j in self.store.list_jobs(states=["running"]) if (j["params"] or {}).get("gpu_memory_gb")},
        }
        return {**stats, "node_id": self._node_id, "cluster_gpus": ray.cluster_resources().get("GPU", 0.0),
                "assignments": assignments, "device": device, "memory_budgets": budgets}

    # ----------------------------------------------------------- admin / runner API
    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._dispatch()

    def recovery_report(self) -> dict:
        return self.recovered

    def job_started(self, job_id: str, attempt: int, placement: dict) -> bool:
        """Runner landed; returns True when it must not start (superseded or already cancelled)."""
        if not self.store.record_placement(job_id, attempt, placement):
            return True
        return self.store.get(job_id)["cancel_requested"]

    def report_progress(self, job_id: str, attempt: int, epoch: int, total_epochs: int, metrics: dict,
                        elapsed_s: float) -> bool:
        return self.store.report_progress(job_id, attempt, epoch, total_epochs, metrics, elapsed_s)

    def shutdown(self) -> None:
        """Stop the scheduler loop (tests, orderly shutdown). Running tasks are left to finish."""
        self._stop.set()
        self._thread.join(timeout=10)

    # ----------------------------------------------------------------- internals
    def _largest_node_gpus(self) -> float:
        return max((n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n["Alive"]), default=0.0)

    def _check_gpu_memory(self, gb: float) -> None:
        """Refuse a job no GPU could ever hold: over the largest configured per-GPU budget, or over every
        node's declared gpu_memory_gb resource (Ray would leave it pending forever)."""
        budgets = self.cfg["gpu_memory_budgets"]
        if budgets and gb > max(budgets.values()):
            index = max(budgets, key=budgets.get)
            raise ValueError(f"params.gpu_memory_gb {gb:g} exceeds the largest GPU memory budget "
                             f"({budgets[index]:g} GB on GPU {index}; budgets {budgets})")
        declared = [n["Resources"].get(GPU_MEMORY_RESOURCE, 0.0) for n in ray.nodes() if n["Alive"]]
        if any(declared) and gb > max(declared):
            raise ValueError(f"params.gpu_memory_gb {gb:g} exceeds every node's {GPU_MEMORY_RESOURCE} resource "
                             f"(largest {max(declared):g})")

    def _dispatch(self) -> None:
        with self._lock:
            if self._paused:
                return
            cluster = ray.cluster_resources()
            ask_for_gpus = cluster.get("GPU", 0.0) > 0 or bool(self.cfg["gpu_autoscaling"])
            for job in self.store.claim_next(self.cfg["max_concurrent"]):
                num_gpus = job["num_gpus"] if ask_for_gpus else 0.0
                resources = {"num_gpus": num_gpus, "num_cpus": float(self.cfg["cpus_per_job"])}
                gb = (job["params"] or {}).get("gpu_memory_gb")
                # Budget placement is a Ray custom resource, not bookkeeping here: each GPU node declares
                # `gpu_memory_gb` (its GPU's budget; ray start --resources), so Ray holds the memory with the GPU
                # atomically, across nodes and across restarts of this actor, and a job waits (pending in Ray,
                # as for GPUs) until a GPU with room frees. Per-GPU exactly on one-GPU nodes; on a multi-GPU node
                # the budget is the node's total and Ray picks which of its GPUs. No node declaring it: no budget.
                if num_gpus > 0 and gb and cluster.get(GPU_MEMORY_RESOURCE, 0.0) > 0:
                    resources["resources"] = {GPU_MEMORY_RESOURCE: float(gb)}
                self.store.record_placement(job["job_id"], job["attempts"], dict(resources))
                ref = run_training_job.options(**resources, name=f"train-{job['task']}-{job['job_id']}").remote(
                    self._self, job["job_id"], job["attempts"], job["task"], job["params"],
                    self.cfg["registry_storage"])
                self._running[job["job_id"]] = (ref, job["attempts"])

    def _collect(self, ref: ray.ObjectRef) -> None:
        with self._lock:
            job_id, attempt = next((j, a) for j, (r, a) in self._running.items() if r == ref)
            del self._running[job_id]
            self._hard_cancelled.discard(job_id)
        try:
            out = ray.get(ref)
        except TaskCancelledError:
            self.store.finish(job_id, attempt, "cancelled", error="cancelled: task interrupted by ray.cancel")
        except Exception as exc:  # worker or node died: the attempt failed
            self.store.finish(job_id, attempt, "failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        else:
            self.store.finish(job_id, attempt, out["status"], result=out.get("result"), error=out.get("error"))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.purge()
                for job in self.store.cancel_overdue(self.cfg["cancel_grace_s"]):
                    with self._lock:
                        entry = self._running.get(job["job_id"])
                        if entry is not None and job["job_id"] not in self._hard_cancelled:
                            ray.cancel(entry[0], force=False)
                            self._hard_cancelled.add(job["job_id"])
                self._dispatch()
                with self._lock:
                    refs = [ref for ref, _ in self._running.values()]
                if refs:
                    ready, _ = ray.wait(refs, num_returns=1, timeout=self.cfg["poll_s"])
                    for ref in ready:
                        self._collect(ref)
                else:
                    self._stop.wait(self.cfg["poll_s"])
            except Exception:  # keep scheduling: one bad job must not stop the queue
                log.exception("training-queue scheduler loop error")
                self._stop.wait(self.cfg["poll_s"])
