"""A bounded ring of recent per-event latencies with p50/p99 (thread-safe: actors read it while writing),
and a set of them keyed by stage for the decision loop's per-stage breakdown."""
from __future__ import annotations

import threading

import numpy as np

DEFAULT_SAMPLES = 200_000
STAGE_SAMPLES = 50_000  # per stage: one sample per batch (per row for ingest) is plenty for a p99


class LatencyRing:
    def __init__(self, capacity: int = DEFAULT_SAMPLES):
        self._values = np.zeros(capacity)
        self._n = 0
        self._lock = threading.Lock()

    def record_since(self, received_ns: np.ndarray, now_ns: int) -> np.ndarray:
        """Record now - received (in ms) for each event; returns those latencies."""
        latency_ms = (now_ns - np.asarray(received_ns, dtype=np.int64)) / 1e6
        self.record(latency_ms)
        return latency_ms

    def record(self, latency_ms) -> None:
        """Record durations already in ms (a scalar or an array)."""
        latency_ms = np.atleast_1d(np.asarray(latency_ms, dtype=float))
        with self._lock:
            idx = (self._n + np.arange(len(latency_ms))) % len(self._values)
            self._values[idx] = latency_ms
            self._n += len(latency_ms)

    def percentiles(self) -> dict:
        with self._lock:
            recent = self._values[: min(self._n, len(self._values))].copy()
        p50, p99 = (np.percentile(recent, [50, 99]).tolist() if len(recent) else (None, None))
        return {"latency_ms_p50": p50, "latency_ms_p99": p99, "samples": int(len(recent))}


class StageLatencies:
    """One LatencyRing per named stage; `summary()` gives {stage: {"p50", "p99", "samples"}} in ms."""

    def __init__(self, stages: tuple[str, ...], capacity: int = STAGE_SAMPLES):
        self.stages = stages
        self._rings = {s: LatencyRing(capacity) for s in stages}

    def record(self, stage: str, latency_ms) -> None:
        self._rings[stage].record(latency_ms)

    def summary(self) -> dict:
        out = {}
        for stage, ring in self._rings.items():
            p = ring.percentiles()
            if p["samples"]:
                out[stage] = {"p50": round(p["latency_ms_p50"], 3), "p99": round(p["latency_ms_p99"], 3), "samples": p["samples"]}
        return out
