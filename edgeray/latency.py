"""A bounded ring of recent per-event latencies with p50/p99 (thread-safe: actors read it while writing)."""
from __future__ import annotations

import threading

import numpy as np

DEFAULT_SAMPLES = 200_000


class LatencyRing:
    def __init__(self, capacity: int = DEFAULT_SAMPLES):
        self._values = np.zeros(capacity)
        self._n = 0
        self._lock = threading.Lock()

    def record_since(self, received_ns: np.ndarray, now_ns: int) -> np.ndarray:
        """Record now - received (in ms) for each event; returns those latencies."""
        latency_ms = (now_ns - np.asarray(received_ns, dtype=np.int64)) / 1e6
        with self._lock:
            idx = (self._n + np.arange(len(latency_ms))) % len(self._values)
            self._values[idx] = latency_ms
            self._n += len(latency_ms)
        return latency_ms

    def percentiles(self) -> dict:
        with self._lock:
            recent = self._values[: min(self._n, len(self._values))].copy()
        p50, p99 = (np.percentile(recent, [50, 99]).tolist() if len(recent) else (None, None))
        return {"latency_ms_p50": p50, "latency_ms_p99": p99, "samples": int(len(recent))}
