"""Ray custom metrics (shown in the Ray dashboard's Metrics view / Prometheus), defined once."""
from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 250, 1000]


class PipelineMetrics:
    def __init__(self) -> None:
        self.received = Counter("edgeray_events_received_total", "Events received by ingestion", tag_keys=("kind",))
        self.accepted = Counter("edgeray_events_accepted_total", "Events that passed validation and dedup", tag_keys=("kind",))
        self.rejected = Counter("edgeray_events_rejected_total", "Events dead-lettered", tag_keys=("kind", "reason"))
        self.duplicates = Counter("edgeray_events_duplicate_total", "Duplicate events dropped", tag_keys=("kind",))
        self.in_flight = Gauge("edgeray_ingest_in_flight_batches", "Micro-batches between ingestion and features")
        self.events_per_second = Gauge("edgeray_features_events_per_second", "Feature streamer throughput")
        self.latency_ms = Histogram("edgeray_event_to_feature_latency_ms", "Ingestion receipt to online feature write",
                                    boundaries=LATENCY_BOUNDARIES_MS)


STAGE_BOUNDARIES_MS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2500]


class DecisionStageMetrics:
    """Per-stage durations of the decision loop (see actors/meta_controller.py STAGES), one histogram
    tagged by `stage` so the Ray dashboard can split it."""

    def __init__(self) -> None:
        self.stage_ms = Histogram("edgeray_decision_stage_ms", "Decision loop time per stage and batch (ingest: per row)",
                                  boundaries=STAGE_BOUNDARIES_MS, tag_keys=("stage",))

    def observe(self, stage: str, value_ms: float) -> None:
        self.stage_ms.observe(float(value_ms), tags={"stage": stage})
