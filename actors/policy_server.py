"""Policy-server actor: serves a trained RL sizing policy to the decision loop, hot-swaps checkpoints without
stopping the loop, runs a shadow candidate beside it, and watches the policy's inputs for drift.

Hot swap: the new checkpoint is loaded off to the side and then replaces the live policy in one assignment
between two `act` calls (requests run one at a time on the actor's main thread; `act` also reads the live policy
once), so every micro-batch is served whole by exactly one version and none waits for or misses a policy. Each
answer names the version that produced it.

Drift is watched off the request path. `act` only appends the (float32, uncopied) observation batch, with the
detector and policy version that served it, to a bounded buffer; a background thread folds the buffered batches
into their detector in arrival order, one `observe` per batch as before, so the same batches raise the same
alerts, audit records and retraining jobs, just milliseconds later. It wakes every DRIFT_FOLD_ROWS buffered rows
or DRIFT_FOLD_MS, and before each batch waits (at most DRIFT_FOLD_MS) for no `act` to be running. `status()`
reports the rows not yet folded (`drift_lag_rows`). Past DRIFT_MAX_LAG_ROWS of backlog `act` folds the backlog
itself (backpressure: nothing is dropped). A finished retraining job is also picked up by that thread, so the
checkpoint load no longer lands in an `act` call.

Every checkpoint it loads (the configured one, the shadow, a swap, a retrained one) must resolve inside one of
`checkpoint_roots` (decisions.sizer.checkpoint_roots): swap and shadow take a path from an HTTP caller.
Loading itself never unpickles (policies.rl_policy), so the roots bound which files are read, not what code runs.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import ray

from edgeray.drift import DriftDetector, DriftReference
from edgeray.latency import LatencyRing
from edgeray.paths import member
from envs.trading import CompactObservations

# policies.rl_policy (torch and RLlib, ~3 s of import) is loaded by the actor when it loads a policy, not by
# every process that imports this module to start the pipeline.
if TYPE_CHECKING:
    from policies.rl_policy import RLPolicy

DEFAULT_CHECKPOINT_ROOTS = ("runs/rl",)  # = SizerConfig.checkpoint_roots' default
DRIFT_FOLD_ROWS = 1_000       # wake the drift folder once this many rows wait ...
DRIFT_FOLD_MS = 20.0          # ... or after this long
DRIFT_MAX_LAG_ROWS = 50_000   # beyond this backlog `act` folds it itself (25 detector windows)


@ray.remote(num_cpus=0)
def retrain_policy(retrain: dict, out_dir: str) -> str:
    """Train a fresh policy (tune.rl) and return its checkpoint dir; runs as a Ray task beside the loop."""
    from tune.rl import train

    return train(retrain["algo"], retrain["env"], retrain["steps"], out_dir, env_config=retrain.get("env_config"),
                 eval_episodes=2)["checkpoint"]


@ray.remote(num_cpus=0)
class PolicyServerActor:
    def __init__(self, checkpoint: str, shadow_checkpoint: str | None = None, retrain: dict | None = None,
                 audit=None, checkpoint_roots: list[str] | tuple[str, ...] = DEFAULT_CHECKPOINT_ROOTS):
        self.roots = [str(r) for r in ([checkpoint_roots] if isinstance(checkpoint_roots, str) else checkpoint_roots)]
        if retrain:
            self._check_retrain_dir(retrain)
        self.live = self._load(checkpoint)
        self.shadow = self._load(shadow_checkpoint) if shadow_checkpoint else None
        self.retrain, self.audit = retrain, audit
        self.detector = self._detector(self.live.checkpoint_dir)
        self.alerts: list[dict] = []
        self.swaps: list[dict] = []
        self.latency = LatencyRing()
        self.rows_served = 0
        self._retraining: ray.ObjectRef | None = None
        self.retrained: list[str] = []
        self.retrain_errors: list[str] = []
        # Drift off the request path (see the module docstring). `act` appends, the folder thread pops; the lock
        # guards the detectors, alerts and retraining state, and `act` never takes it (short of backpressure).
        self._pending: deque[tuple[np.ndarray, DriftDetector, str]] = deque()
        self._rows_buffered = 0   # written by act only
        self._rows_folded = 0     # written under _lock only
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.drift_errors: list[str] = []
        self.drift_inline_folds = 0
        self._folder = threading.Thread(target=self._fold_loop, name="drift-folder", daemon=True)
        self._folder.start()

    def _load(self, checkpoint: str) -> RLPolicy:
        from policies.rl_policy import RLPolicy

        return RLPolicy.load(checkpoint, roots=self.roots)  # ValueError names `checkpoint` and the roots

    def _check_retrain_dir(self, retrain: dict) -> None:
        """Refuse at start, not after a training run, a retrain output its result could never be loaded from."""
        out = Path(retrain.get("out_dir", "runs/rl/retrain")).resolve()
        resolved = [Path(r).resolve() for r in self.roots]
        if not any(out.is_relative_to(r) for r in resolved):
            raise ValueError(f"retrain_on_drift.out_dir {retrain.get('out_dir')!r} is outside the checkpoint roots "
                             f"{[str(r) for r in resolved]}: retrained policies could not be loaded")

    @staticmethod
    def _detector(checkpoint_dir: Path) -> DriftDetector | None:
        from policies.rl_policy import DRIFT_REFERENCE

        path = member(checkpoint_dir, DRIFT_REFERENCE)
        return DriftDetector(DriftReference.from_dict(json.loads(path.read_text()))) if path.is_file() else None

    def act(self, obs: np.ndarray | CompactObservations) -> dict:
        started = time.perf_counter_ns()
        self._idle.clear()
        try:
            # The loop sends CompactObservations (its windows overlap: ~4x less to carry than the expanded batch).
            obs = obs.expand() if isinstance(obs, CompactObservations) else np.asarray(obs, dtype=np.float32)
            live, shadow, detector = self.live, self.shadow, self.detector  # one version serves the whole batch
            answer = {"actions": live.act(obs), "version": live.version}
            if shadow is not None:
                answer |= {"shadow_actions": shadow.act(obs), "shadow_version": shadow.version}
            self.latency.record_since(np.array([started]), time.perf_counter_ns())
            self.rows_served += len(obs)
            if detector is not None and len(obs):
                self._pending.append((obs, detector, live.version))
                self._rows_buffered += len(obs)
                lag = self._rows_buffered - self._rows_folded
                if lag >= DRIFT_MAX_LAG_ROWS:
                    self.drift_inline_folds += 1
                    self._fold_pending(yield_to_requests=False)
                elif lag >= DRIFT_FOLD_ROWS:
                    self._wake.set()
            return answer
        finally:
            self._idle.set()

    # -- drift, off the request path ---------------------------------------------------------------------------
    def _fold_loop(self) -> None:
        while True:
            self._wake.wait(DRIFT_FOLD_MS / 1e3)
            self._wake.clear()
            try:
                self._fold_pending(yield_to_requests=True)
                self._collect_retrained()
            except Exception as exc:  # noqa: BLE001 - the folder must outlive any one bad batch
                self.drift_errors.append(f"{type(exc).__name__}: {exc}"[:2000])
                del self.drift_errors[:-5]

    def _fold_pending(self, yield_to_requests: bool) -> None:
        """Fold every buffered batch into the detector that was live when it was served, oldest first."""
        while self._pending:
            if yield_to_requests:
                self._idle.wait(DRIFT_FOLD_MS / 1e3)  # let a running act finish first (bounded: lag must not grow)
            with self._lock:
                if not self._pending:
                    return
                obs, detector, version = self._pending.popleft()
                try:
                    self._on_alerts(detector.observe(features=obs), version)
                finally:
                    self._rows_folded += len(obs)

    def observe_rewards(self, rewards) -> list[dict]:
        """Rewards in the training env's units (per-step reward) for the reward-drift check (synchronous: off the
        request path already, and the caller gets the alerts they raise)."""
        with self._lock:
            detector = self.detector
            if detector is None:
                return []
            return self._on_alerts(detector.observe(rewards=np.asarray(rewards, dtype=float)), self.live.version)

    def _on_alerts(self, alerts, version: str) -> list[dict]:
        """Record, audit and (once at a time) start retraining for alerts; called with _lock held."""
        fired = [{**a.to_dict(), "policy_version": version, "ts": time.time()} for a in alerts]
        if not fired:
            return []
        self.alerts.extend(fired)
        if self.audit is not None:
            now = pd.Timestamp.now(tz="UTC")
            self.audit.append.remote([{"decision_id": f"drift-{uuid.uuid4().hex[:16]}", "stage": "drift_alert",
                                       "event_ts": now, "payload": a} for a in fired])
        if self.retrain and self._retraining is None:
            out = Path(self.retrain.get("out_dir", "runs/rl/retrain")) / f"after-drift-{int(time.time())}"
            self._retraining = retrain_policy.remote(self.retrain, str(out))
        return fired

    def _collect_retrained(self) -> None:
        """A finished retraining job becomes the shadow candidate; a human (or caller) promotes it."""
        pending = self._retraining
        if pending is None or not ray.wait([pending], timeout=0)[0]:
            return
        with self._lock:
            if self._retraining is not pending:
                return  # the other thread collected it
            ref, self._retraining = pending, None
            try:
                checkpoint = ray.get(ref)
                self.set_shadow(checkpoint)  # roots-checked like any other checkpoint
            except Exception as exc:  # noqa: BLE001 - a failed retraining must not stop the folder or a caller
                self.retrain_errors.append(f"{type(exc).__name__}: {exc}"[:2000])
                return
            self.retrained.append(checkpoint)

    # -- control -----------------------------------------------------------------------------------------------
    def swap(self, checkpoint: str) -> dict:
        candidate = self._load(checkpoint)  # fails here, before anything changes, if the checkpoint is bad
        detector = self._detector(candidate.checkpoint_dir)
        with self._lock:
            if candidate.meta.obs_dim != self.live.meta.obs_dim:
                raise ValueError(f"checkpoint {checkpoint!r} expects obs_dim {candidate.meta.obs_dim}, "
                                 f"the live policy {self.live.meta.obs_dim}")
            # Batches already buffered stay with the detector that was live when they were served.
            previous, self.live = self.live.version, candidate
            self.detector = detector or self.detector
            record = {"from": previous, "to": candidate.version, "at_rows_served": self.rows_served, "ts": time.time()}
            self.swaps.append(record)
            return record

    def set_shadow(self, checkpoint: str | None) -> dict:
        shadow = self._load(checkpoint) if checkpoint else None
        with self._lock:
            self.shadow = shadow
            return {"shadow_version": shadow.version if shadow else None}

    def promote_shadow(self) -> dict:
        with self._lock:
            if self.shadow is None:
                raise ValueError("no shadow policy to promote")
            record = self.swap(str(self.shadow.checkpoint_dir))
            self.shadow = None
            return record

    def wait_retrained(self, timeout_s: float) -> str | None:
        """Block until a drift-triggered retraining finishes (for callers that want to promote it). Buffered
        observations are folded first, so a retraining their alerts start is waited for too."""
        self._fold_pending(yield_to_requests=False)
        # The folder thread may still be inside the last fold (the queue already empty): its alerts start
        # the retraining under the lock, so read the handle only once that fold is over.
        with self._lock:
            pending = self._retraining
        if pending is not None:
            ray.wait([pending], timeout=timeout_s)
            self._collect_retrained()
        return self.retrained[-1] if self.retrained else None

    def status(self) -> dict:
        """`drift_lag_rows`: rows served but not yet folded into the drift detector (0 once it has caught up)."""
        with self._lock:
            return {"version": self.live.version, "algo": self.live.meta.algo, "env": self.live.meta.env,
                    "shadow_version": self.shadow.version if self.shadow else None, "rows_served": self.rows_served,
                    **self.latency.percentiles(), "swaps": list(self.swaps), "alerts": list(self.alerts[-20:]),
                    "alerts_total": len(self.alerts), "drift": self.detector.status() if self.detector else None,
                    "drift_lag_rows": self._rows_buffered - self._rows_folded,
                    "drift_inline_folds": self.drift_inline_folds, "drift_errors": list(self.drift_errors),
                    "retraining": self._retraining is not None, "retrained": list(self.retrained),
                    "retrain_errors": list(self.retrain_errors[-5:]), "checkpoint_roots": list(self.roots)}
