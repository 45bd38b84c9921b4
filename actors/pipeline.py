"""Pipeline bootstrap: named, supervised actors in one namespace, started from configs/pipeline.yaml."""
from __future__ import annotations

import os
from dataclasses import dataclass

import ray

from actors.feature_streamer import FeatureStreamerActor, feast_settings
from actors.ingestion import IngestionActor
from edgeray.config import PipelineConfig, SourceConfig
from edgeray.featurestore import open_store
from edgeray.sources import source_available

INGESTION = "ingestion"
FEATURE_STREAMER = "feature_streamer"


def ensure_ray(cfg: PipelineConfig) -> None:
    """Join the cluster named by RAY_ADDRESS / config (as under `ray job submit`), else start a local one."""
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=cfg.namespace)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, object_store_memory=cfg.ray.object_store_memory_mb * 1024**2,
                 namespace=cfg.namespace)


def resolve_sources(cfg: PipelineConfig) -> list[SourceConfig]:
    """Configured sources whose files exist; the seeded generator when none do."""
    available = [s for s in cfg.sources if source_available(s)]
    return available or [cfg.fallback]


@dataclass
class Pipeline:
    cfg: PipelineConfig
    streamer: ray.actor.ActorHandle
    ingestion: ray.actor.ActorHandle

    @classmethod
    def start(cls, cfg: PipelineConfig, detached: bool = False, streamer_delay_s: float = 0.0) -> "Pipeline":
        """Start (or attach to, if already running) the named actors; Feast definitions are applied first."""
        ensure_ray(cfg)
        open_store(feast_settings(cfg), cfg.features.spec(), apply=True)
        common = dict(namespace=cfg.namespace, get_if_exists=True, max_restarts=cfg.max_restarts,
                      max_task_retries=cfg.max_restarts, lifetime="detached" if detached else None)
        config = cfg.model_dump()
        streamer = FeatureStreamerActor.options(name=FEATURE_STREAMER, **common).remote(config, streamer_delay_s)
        ingestion = IngestionActor.options(name=INGESTION, **common).remote(config, streamer)
        pipeline = cls(cfg, streamer, ingestion)
        pipeline.status()  # returns once both actors are constructed, so the first batch is not timed on start-up
        return pipeline

    @classmethod
    def attach(cls, cfg: PipelineConfig) -> "Pipeline":
        ensure_ray(cfg)
        get = lambda name: ray.get_actor(name, namespace=cfg.namespace)  # noqa: E731
        return cls(cfg, get(FEATURE_STREAMER), get(INGESTION))

    def replay_async(self, sources: list[SourceConfig] | None = None, rate: float | None = None) -> ray.ObjectRef:
        sources = sources or resolve_sources(self.cfg)
        return self.ingestion.replay.remote([s.model_dump() for s in sources],
                                            self.cfg.replay_rate if rate is None else rate)

    def finish(self) -> dict:
        """Drain ingestion into the streamer and write the offline history; return the status."""
        ray.get(self.ingestion.flush.remote())
        ray.get(self.streamer.flush.remote())
        return self.status()

    def status(self) -> dict:
        ingestion, features = ray.get([self.ingestion.status.remote(), self.streamer.status.remote()])
        return {"ingestion": ingestion, "features": features}

    def shutdown(self) -> None:
        for handle in (self.ingestion, self.streamer):
            ray.kill(handle, no_restart=True)
