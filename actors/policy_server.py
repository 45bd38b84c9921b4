"""Policy-server actor: serves a trained RL sizing policy to the decision loop, hot-swaps checkpoints without
stopping the loop, runs a shadow candidate beside it, and watches the policy's inputs for drift.

Hot swap: the new checkpoint is loaded off to the side and then replaces the live policy in one assignment
between two `act` calls (the actor is single-threaded), so every micro-batch is served whole by exactly one
version and none waits for or misses a policy. Each answer names the version that produced it.

Every checkpoint it loads (the configured one, the shadow, a swap, a retrained one) must resolve inside one of
`checkpoint_roots` (decisions.sizer.checkpoint_roots): swap and shadow take a path from an HTTP caller.
Loading itself never unpickles (policies.rl_policy), so the roots bound which files are read, not what code runs.
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from edgeray.drift import DriftDetector, DriftReference
from edgeray.latency import LatencyRing
from edgeray.paths import member
from policies.rl_policy import DRIFT_REFERENCE, RLPolicy

DEFAULT_CHECKPOINT_ROOTS = ("runs/rl",)  # = SizerConfig.checkpoint_roots' default


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

    def _load(self, checkpoint: str) -> RLPolicy:
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
        path = member(checkpoint_dir, DRIFT_REFERENCE)
        return DriftDetector(DriftReference.from_dict(json.loads(path.read_text()))) if path.is_file() else None

    def act(self, obs: np.ndarray) -> dict:
        started = time.perf_counter_ns()
        answer = {"actions": self.live.act(obs), "version": self.live.version}
        if self.shadow is not None:
            answer |= {"shadow_actions": self.shadow.act(obs), "shadow_version": self.shadow.version}
        self.latency.record_since(np.array([started]), time.perf_counter_ns())
        self.rows_served += len(obs)
        if self.detector is not None:
            self._on_alerts(self.detector.observe(features=obs))
        self._collect_retrained()
        return answer

    def observe_rewards(self, rewards) -> list[dict]:
        """Rewards in the training env's units (per-step reward) for the reward-drift check."""
        return self._on_alerts(self.detector.observe(rewards=np.asarray(rewards, dtype=float))) if self.detector else []

    def _on_alerts(self, alerts) -> list[dict]:
        fired = [{**a.to_dict(), "policy_version": self.live.version, "ts": time.time()} for a in alerts]
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
        if self._retraining is None:
            return
        done, _ = ray.wait([self._retraining], timeout=0)
        if done:
            ref, self._retraining = self._retraining, None
            try:
                checkpoint = ray.get(ref)
                self.set_shadow(checkpoint)  # roots-checked like any other checkpoint
            except Exception as exc:  # noqa: BLE001 - a failed retraining must not fail the act() it surfaced in
                self.retrain_errors.append(f"{type(exc).__name__}: {exc}"[:2000])
                return
            self.retrained.append(checkpoint)

    # -- control -----------------------------------------------------------------------------------------------
    def swap(self, checkpoint: str) -> dict:
        candidate = self._load(checkpoint)  # fails here, before anything changes, if the checkpoint is bad
        if candidate.meta.obs_dim != self.live.meta.obs_dim:
            raise ValueError(f"checkpoint {checkpoint!r} expects obs_dim {candidate.meta.obs_dim}, "
                             f"the live policy {self.live.meta.obs_dim}")
        previous, self.live = self.live.version, candidate
        self.detector = self._detector(candidate.checkpoint_dir) or self.detector
        record = {"from": previous, "to": candidate.version, "at_rows_served": self.rows_served, "ts": time.time()}
        self.swaps.append(record)
        return record

    def set_shadow(self, checkpoint: str | None) -> dict:
        self.shadow = self._load(checkpoint) if checkpoint else None
        return {"shadow_version": self.shadow.version if self.shadow else None}

    def promote_shadow(self) -> dict:
        if self.shadow is None:
            raise ValueError("no shadow policy to promote")
        record = self.swap(str(self.shadow.checkpoint_dir))
        self.shadow = None
        return record

    def wait_retrained(self, timeout_s: float) -> str | None:
        """Block until a drift-triggered retraining finishes (for callers that want to promote it)."""
        if self._retraining is not None:
            ray.wait([self._retraining], timeout=timeout_s)
            self._collect_retrained()
        return self.retrained[-1] if self.retrained else None

    def status(self) -> dict:
        return {"version": self.live.version, "algo": self.live.meta.algo, "env": self.live.meta.env,
                "shadow_version": self.shadow.version if self.shadow else None, "rows_served": self.rows_served,
                **self.latency.percentiles(), "swaps": list(self.swaps), "alerts": list(self.alerts[-20:]),
                "alerts_total": len(self.alerts), "drift": self.detector.status() if self.detector else None,
                "retraining": self._retraining is not None, "retrained": list(self.retrained),
                "retrain_errors": list(self.retrain_errors[-5:]), "checkpoint_roots": list(self.roots)}
