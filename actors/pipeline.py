"""Pipeline bootstrap: named, supervised actors in one namespace, started from configs/pipeline.yaml."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import ray

from actors.audit import AuditActor
from actors.feature_streamer import FeatureStreamerActor
from actors.ingestion import IngestionActor
from actors.meta_controller import MetaControllerActor
from actors.policy_server import PolicyServerActor
from edgeray.config import PipelineConfig, SourceConfig
from edgeray.sources import source_available
from edgeray.storage.state import open_state_store

INGESTION = "ingestion"
FEATURE_STREAMER = "feature_streamer"
META_CONTROLLER = "meta_controller"
AUDIT = "audit"
POLICY_SERVER = "policy_server"
# The ledger, risk monitor and veto gate run inside the meta-controller's process (policies/kernel.py).
DECISION_ACTORS = (META_CONTROLLER, AUDIT)


def ensure_ray(cfg: PipelineConfig) -> None:
    """Join the cluster named by RAY_ADDRESS / config (as under `ray job submit`), else start a local one."""
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=cfg.namespace)
    else:
        ray.init(**local_ray_options(cfg))


def local_ray_options(cfg: PipelineConfig) -> dict:
    """ray.init's arguments for a Ray this process starts itself. With GPU memory budgets configured
    (sports.gpu_memory_budgets), the node declares their sum as the resource the training queue places jobs by
    (a cluster's GPU nodes declare theirs in cluster.yaml)."""
    from edgeray.device import GPU_MEMORY_RESOURCE, parse_memory_budgets

    options = {"num_cpus": cfg.ray.num_cpus, "object_store_memory": cfg.ray.object_store_memory_mb * 1024**2,
               "namespace": cfg.namespace}
    budgets = parse_memory_budgets(cfg.sports.gpu_memory_budgets, "sports.gpu_memory_budgets")
    if budgets:
        options["resources"] = {GPU_MEMORY_RESOURCE: sum(budgets.values())}
    return options


def resolve_sources(cfg: PipelineConfig) -> list[SourceConfig]:
    """Configured sources whose files exist; the seeded generator when none do."""
    available = [s for s in cfg.sources if source_available(s)]
    return available or [cfg.fallback]


@dataclass
class Pipeline:
    cfg: PipelineConfig
    streamer: ray.actor.ActorHandle
    ingestion: ray.actor.ActorHandle
    decision: dict[str, ray.actor.ActorHandle] | None = None  # the decision-loop actors by name

    @classmethod
    def start(cls, cfg: PipelineConfig, detached: bool = False, streamer_delay_s: float = 0.0,
              fresh: bool = False) -> "Pipeline":
        """Start (or attach to, if already running) the named actors; the streamer applies the Feast
        definitions when it starts. `fresh` discards the decision loop's checkpoints and audit from an earlier run."""
        ensure_ray(cfg)
        # max_task_retries=-1: a call made to (or in flight on) an actor whose node died is retried until the actor
        # has restarted elsewhere, however many attempts fail meanwhile (each refused connection to the dead node
        # counts as one: with a finite count a replay ran out of retries before its node was declared dead). It
        # still fails once the actor is gone for good (max_restarts spent), and an exception the actor raises is
        # never retried.
        common = dict(namespace=cfg.namespace, get_if_exists=True, max_restarts=cfg.max_restarts,
                      max_task_retries=-1, lifetime="detached" if detached else None)
        config = cfg.model_dump()
        decision = cls._start_decision_loop(cfg, common, fresh) if cfg.decisions.enabled else None
        meta = decision[META_CONTROLLER] if decision else None
        where = cfg.ray.placement.options  # ray.placement: the nodes each role may run on (None: any)
        streamer = FeatureStreamerActor.options(name=FEATURE_STREAMER, **common, **where(cfg.ray.placement.stream_resource)).remote(
            config, streamer_delay_s, meta)
        ingestion = IngestionActor.options(name=INGESTION, **common, **where(cfg.ray.placement.ingest_resource)).remote(config, streamer)
        pipeline = cls(cfg, streamer, ingestion, decision)
        pipeline.status()  # returns once both actors are constructed, so the first batch is not timed on start-up
        return pipeline

    @staticmethod
    def _start_decision_loop(cfg: PipelineConfig, common: dict, fresh: bool) -> dict:
        if fresh:
            store = open_state_store(cfg)  # run_dir/state, or this namespace's rows at storage.state_url
            store.clear()
            store.close()
            url = cfg.audit_url
            if url.startswith("sqlite:///"):
                db = Path(url.removeprefix("sqlite:///"))
                for leftover in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):  # WAL mode
                    leftover.unlink(missing_ok=True)
        d = cfg.decisions
        common = {**common, **cfg.ray.placement.options(cfg.ray.placement.loop_resource)}  # the loop's nodes
        audit = AuditActor.options(name=AUDIT, **common).remote(cfg.audit_url)
        actors = {AUDIT: audit}
        policy = None
        if d.sizer.name == "rl_policy":
            retrain = d.sizer.retrain_on_drift.model_dump() if d.sizer.retrain_on_drift else None
            policy = actors[POLICY_SERVER] = PolicyServerActor.options(name=POLICY_SERVER, **common).remote(
                d.sizer.checkpoint, d.sizer.shadow_checkpoint, retrain, audit, d.sizer.checkpoint_roots)
        actors[META_CONTROLLER] = MetaControllerActor.options(name=META_CONTROLLER, **common).remote(
            cfg.model_dump(), audit, policy)
        return actors

    @classmethod
    def attach(cls, cfg: PipelineConfig) -> "Pipeline":
        ensure_ray(cfg)
        get = lambda name: ray.get_actor(name, namespace=cfg.namespace)  # noqa: E731
        names = DECISION_ACTORS + ((POLICY_SERVER,) if cfg.decisions.sizer.name == "rl_policy" else ())
        decision = {name: get(name) for name in names} if cfg.decisions.enabled else None
        return cls(cfg, get(FEATURE_STREAMER), get(INGESTION), decision)

    def replay_async(self, sources: list[SourceConfig] | None = None, rate: float | None = None) -> ray.ObjectRef:
        sources = sources or resolve_sources(self.cfg)
        return self.ingestion.replay.remote([s.model_dump() for s in sources],
                                            self.cfg.replay_rate if rate is None else rate)

    def finish(self) -> dict:
        """Drain ingestion into the streamer and write the offline history; return the status."""
        ray.get(self.ingestion.flush.remote())
        ray.get(self.streamer.flush.remote())
        if self.decision:
            ray.get(self.decision[META_CONTROLLER].flush.remote())
        return self.status()

    def status(self) -> dict:
        ingestion, features = ray.get([self.ingestion.status.remote(), self.streamer.status.remote()])
        status = {"ingestion": ingestion, "features": features}
        if self.decision:
            status["decisions"], status["risk"] = ray.get([self.decision[META_CONTROLLER].status.remote(),
                                                           self.decision[META_CONTROLLER].risk_status.remote()])
            if POLICY_SERVER in self.decision:
                status["policy"] = ray.get(self.decision[POLICY_SERVER].status.remote())
        return status

    def shutdown(self) -> None:
        for handle in (self.ingestion, self.streamer, *(self.decision or {}).values()):
            ray.kill(handle, no_restart=True)
