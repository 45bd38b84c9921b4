"""Market ingestion actor: replay, generator and push sources -> validated, ordered micro-batches
forwarded to the feature streamer under a bounded in-flight window (backpressure)."""
from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import ray

from actors.metrics import PipelineMetrics
from actors.window import InFlightWindow
from edgeray.config import PipelineConfig, SourceConfig
from edgeray.deadletter import DeadLetterStore
from edgeray.ingest import IngestCore
from edgeray.sources import load_source, micro_batches


def as_frame(rows: pd.DataFrame | pa.RecordBatch | pa.Table | list[dict]) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, (pa.RecordBatch, pa.Table)):
        return rows.to_pandas()
    return pd.DataFrame.from_records(rows)


@ray.remote(num_cpus=0, max_concurrency=4)  # threads: status/dead-letter reads answer during a replay
class IngestionActor:
    def __init__(self, config: dict, streamer: "ray.actor.ActorHandle"):
        self.cfg = PipelineConfig.model_validate(config)
        ing = self.cfg.ingestion
        self.deadletters = DeadLetterStore(Path(self.cfg.run_dir) / "deadletters.jsonl")
        self.core = IngestCore(self.deadletters, set(ing.symbols), pd.Timedelta(seconds=ing.lateness_seconds),
                               ing.dedup_capacity, set(ing.sports))
        self.streamer = streamer
        # A slow streamer blocks submission, which blocks our callers: slower, never lossy.
        self._in_flight = InFlightWindow(ing.max_in_flight)
        # One lock for validate -> reorder -> forward, so batches reach the streamer in release order.
        self._lock = threading.Lock()
        self._progress: dict = {"state": "idle"}
        self.metrics = PipelineMetrics()
        gc.freeze()  # long-lived start-up objects out of the collector's way (see FeatureStreamerActor)

    # -- sources ------------------------------------------------------------------------------
    def ingest(self, kind: str, rows, source: str = "push") -> dict:
        """Push entry (HTTP/WebSocket/live feeds): returns this batch's outcome with per-row errors."""
        frame = as_frame(rows)
        with self._lock:
            report = self.core.ingest(kind, frame, source)
            self._forward(report.released)
        self._record_metrics(kind, report)
        return {"received": report.received, "accepted": report.accepted, "duplicates": report.duplicates,
                "rejected": len(report.rejected), "errors": report.errors()}

    def replay(self, sources: list[dict], rate: float = 0.0, batch_size: int | None = None) -> dict:
        """Replay sources in event-time order; `rate` event-seconds per wall-second (0: full speed)."""
        batch_size = batch_size or self.cfg.ingestion.batch_size
        loaded = [(SourceConfig.model_validate(s), kind, frame) for s in sources for kind, frame in load_source(SourceConfig.model_validate(s))]
        total = sum(len(f) for _, _, f in loaded)
        done, started = 0, time.perf_counter()
        self._progress = {"state": "replaying", "done": 0, "total": total, "started": time.time()}
        for spec, kind, frame in loaded:
            first_ts = pd.to_datetime(frame["event_ts"].iloc[0], utc=True, errors="coerce") if len(frame) else None
            wall_start = time.perf_counter()
            for batch in micro_batches(frame, batch_size):
                if rate > 0 and first_ts is not None:
                    self._pace(batch, first_ts, wall_start, rate)
                self.ingest(kind, batch, source=spec.path or spec.type)
                done += len(batch)
                self._progress = {**self._progress, "done": done, "source": spec.path or spec.type}
        self.flush()
        elapsed = time.perf_counter() - started
        self._progress = {**self._progress, "state": "finished", "elapsed_s": elapsed}
        return {"events": done, "elapsed_s": elapsed}

    @staticmethod
    def _pace(batch: pd.DataFrame, first_ts: pd.Timestamp, wall_start: float, rate: float) -> None:
        """Hold a batch until its first event is due on the replay clock (pacing, not synchronisation)."""
        ts = pd.to_datetime(batch["event_ts"].iloc[0], utc=True, errors="coerce")
        if pd.isna(ts):
            return
        due = wall_start + (ts - first_ts).total_seconds() / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    # -- forwarding ---------------------------------------------------------------------------
    def _forward(self, batches: list[pa.RecordBatch]) -> None:
        for batch in batches:
            self._in_flight.submit(lambda: self.streamer.process.remote(batch))
            self.metrics.in_flight.set(len(self._in_flight))

    def flush(self) -> dict:
        """Release the reorder buffer and wait until the streamer has every event."""
        with self._lock:
            self._forward(self.core.flush())
            self._in_flight.drain()
        return self.status()

    def _record_metrics(self, kind: str, report) -> None:
        tags = {"kind": str(kind)}
        self.metrics.received.inc(report.received, tags)
        if report.accepted:
            self.metrics.accepted.inc(report.accepted, tags)
        if report.duplicates:
            self.metrics.duplicates.inc(report.duplicates, tags)
        for reason, n in report.rejected["reason"].value_counts().items():
            self.metrics.rejected.inc(int(n), {"kind": str(kind), "reason": reason})

    # -- reads --------------------------------------------------------------------------------
    def status(self) -> dict:
        return {**self.core.counters.as_dict(), "in_flight": len(self._in_flight),
                "max_in_flight": self._in_flight.limit, "max_in_flight_seen": self._in_flight.max_seen,
                "replay": dict(self._progress)}

    def dead_letters(self, limit: int = 100) -> list[dict]:
        return self.deadletters.read(limit)


