"""Market ingestion actor: replay, generator and push sources -> validated, ordered micro-batches
forwarded to the feature streamer under a bounded in-flight window (backpressure).

Restarts: Ray retries an interrupted `replay` call on the restarted actor. So that it resumes
instead of starting over (which once put 11,098 duplicate rows into the offline history), the
replay commits at points where the streamer has acknowledged everything released so far: the rows
fed per source, the core's counters, reorder buffer and watermarks, and the last batch number, in
the state store (run_dir/state/ingestion.json, or storage.state_url's database). The restarted
actor loads that and continues exactly from there.
"""
from __future__ import annotations

import gc
import threading
import time
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import ray

from actors.metrics import PipelineMetrics
from actors.outbox import Outbox
from actors.window import InFlightWindow
from edgeray.config import PipelineConfig, SourceConfig
from edgeray.deadletter import open_deadletter_store
from edgeray.events import batch_kind
from edgeray.ingest import IngestCore
from edgeray.replay import PacedBatcher, plan_sources
from edgeray.sources import load_source, source_identity
from edgeray.storage.state import open_state_store


def as_frame(rows: pd.DataFrame | pa.RecordBatch | pa.Table | list[dict]) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, (pa.RecordBatch, pa.Table)):
        return rows.to_pandas()
    # pd.DataFrame([{}]) keeps the one (empty) row; from_records([{}]) would silently have none.
    return pd.DataFrame(list(rows))


CHECKPOINT = "ingestion"  # its name in the state store
BACKLOG_WAIT_FACTOR = 4  # a paced batch waits at most this many max_batch_wait_ms while the streamer is behind
BACKLOG_POLL_NS = 500_000  # how often a waiting batch looks at the outbox again


@ray.remote(num_cpus=0, max_concurrency=4)  # threads: status/dead-letter reads answer during a replay
class IngestionActor:
    def __init__(self, config: dict, streamer: "ray.actor.ActorHandle"):
        self.cfg = PipelineConfig.model_validate(config)
        ing = self.cfg.ingestion
        self.deadletters = open_deadletter_store(self.cfg, "ingestion")  # run_dir's files or storage.state_url
        self.core = IngestCore(self.deadletters, set(ing.symbols), pd.Timedelta(seconds=ing.lateness_seconds),
                               ing.dedup_capacity, set(ing.sports), pd.Timedelta(seconds=ing.max_future_skew_seconds))
        self.streamer = streamer
        self.state_store = open_state_store(self.cfg)
        # Only a restart of this actor resumes; a new actor in the same run_dir starts a new run.
        reconstructed = ray.get_runtime_context().was_current_actor_reconstructed
        state = self.state_store.load(CHECKPOINT) if reconstructed else None
        if state:
            self.core.load_state(state["core"])
        # Batches are numbered per producer, so the streamer skips a batch it has already processed.
        self.producer: str = state["producer"] if state else uuid.uuid4().hex
        self._replay_task: str | None = state["replay_task"] if state else None
        self._offsets: dict[str, int] = dict(state["offsets"]) if state else {}
        self.downstream_errors: int = state["downstream_errors"] if state else 0
        # True when counters may miss rows: pushed after the last commit, or no state to restore.
        self.restarted = bool(state["counters_incomplete"]) if state else reconstructed
        self._dirty = False
        # A slow streamer blocks submission, which blocks our callers: slower, never lossy. A failing one
        # is retried, then its batch dead-lettered: never raised into an unrelated ingest call.
        self._in_flight = InFlightWindow(ing.max_in_flight, self._send, ing.downstream_retries, self._downstream_failed,
                                         last_seq=state["last_seq"] if state else 0)
        # Released batches queue here while the window is full and leave joined (same kind, up to batch_size
        # rows): small paced batches do not each pay a streamer call when the streamer falls behind.
        self._outbox = Outbox(self._submit_joined, ing.batch_size, ing.max_in_flight * ing.batch_size,
                              joinable=lambda first, other: batch_kind(first) == batch_kind(other), name="ingestion-outbox")
        # One lock for validate -> reorder -> forward, so batches reach the streamer in release order.
        self._lock = threading.RLock()
        self._progress: dict = {"state": "idle"}
        self.metrics = PipelineMetrics()
        if not state:
            self._commit()  # replaces a state file an earlier run left in this run_dir
        gc.freeze()  # long-lived start-up objects out of the collector's way (see FeatureStreamerActor)

    # -- sources ------------------------------------------------------------------------------
    def ingest(self, kind: str, rows, source: str = "push", strict: bool = False, epoch_unit: str | None = None) -> dict:
        """Push entry (HTTP/WebSocket/live feeds): returns this batch's outcome with per-row errors.
        The Serve layer pushes with strict=True: values must have their JSON types (see validation.validate);
        `epoch_unit` ("s", "ms", "us", "ns") lets event_ts be a number."""
        report = self._ingest(kind, as_frame(rows), source, strict, epoch_unit, push=True)
        return {"received": report.received, "accepted": report.accepted, "duplicates": report.duplicates,
                "rejected": len(report.rejected), "errors": report.errors()}

    def _ingest(self, kind: str, frame: pd.DataFrame, source: str, strict: bool = False,
                epoch_unit: str | None = None, push: bool = False, release_before: dict | None = None,
                received_ns=None):
        with self._lock:
            report = self.core.ingest(kind, frame, source, strict, epoch_unit, release_before, received_ns)
            self._forward(report.released)
            if push and not self._dirty:
                # A push is not replayed after a restart: say so in the state, cheaply, once per commit.
                self._dirty = True
                self.state_store.save(CHECKPOINT, {**self._state(), "counters_incomplete": True})
        self._record_metrics(kind, report)
        return report

    def replay(self, sources: list[dict], rate: float = 0.0, batch_size: int | None = None) -> dict:
        """Replay sources in event-time order; `rate` event-seconds per wall-second (0: full speed).
        Retried by Ray after a restart of this actor, it resumes from the last commit."""
        batch_size = batch_size or self.cfg.ingestion.batch_size
        task = ray.get_runtime_context().get_task_id()
        with self._lock:
            if task != self._replay_task:  # a new replay, not this one resumed
                self._replay_task, self._offsets = task, {}
        specs = [SourceConfig.model_validate(s) for s in sources]
        loaded = [(spec, f"{source_identity(spec)}#{j}", kind, frame)
                  for spec in specs for j, (kind, frame) in enumerate(load_source(spec))]
        total = sum(len(f) for *_, f in loaded)
        done = sum(min(self._offsets.get(key, 0), len(f)) for _, key, _, f in loaded)
        started = last_commit = time.perf_counter()
        self._progress = {"state": "replaying", "done": done, "total": total, "started": time.time(),
                          "resumed_from": done}
        plans = plan_sources([(kind, frame) for _, _, kind, frame in loaded])
        for (spec, key, kind, frame), plan in zip(loaded, plans):
            pos = self._offsets.get(key, 0)
            paced = rate > 0 and plan.due is not None
            batcher = PacedBatcher(plan, pos, rate, self.cfg.ingestion.max_batch_wait_ms, time.perf_counter_ns()) if paced else None
            while pos < len(frame):
                received_ns = None
                if batcher is not None:
                    self._wait_for_batch(batcher, pos, batch_size)
                    end = batcher.take(pos, batch_size, time.perf_counter_ns())
                    # Each row arrived when it was due: the wait for its batch to leave is latency too.
                    received_ns = (batcher.wall_due(np.arange(pos, end)) + (time.time_ns() - time.perf_counter_ns())).astype(np.int64)
                else:
                    end = min(pos + batch_size, len(frame))
                batch = frame.iloc[pos:end]
                with self._lock:
                    self._ingest(kind, batch, spec.path or spec.type, release_before=plan.release_before(end),
                                 received_ns=received_ns)
                    self._offsets[key] = self._offsets.get(key, 0) + len(batch)
                done += len(batch)
                pos = end
                self._progress = {**self._progress, "done": done, "source": spec.path or spec.type}
                if time.perf_counter() - last_commit >= self.cfg.ingestion.commit_interval_s:
                    self._drain_and_commit()
                    last_commit = time.perf_counter()
        self.flush()
        elapsed = time.perf_counter() - started
        self._progress = {**self._progress, "state": "finished", "elapsed_s": elapsed}
        return {"events": done, "elapsed_s": elapsed}

    def _wait_for_batch(self, batcher: PacedBatcher, pos: int, batch_size: int) -> None:
        """Pacing, not synchronisation: hold the batch starting at `pos` until it is full or its oldest row has
        waited max_batch_wait_ms. While the streamer is behind (its window full, or batches queued in the outbox),
        rows would only wait there, so the batch keeps filling until it is full, the queue has drained, or the oldest row has
        waited BACKLOG_WAIT_FACTOR x max_batch_wait_ms: fewer, larger batches exactly when CPU is short."""
        full, waited = batcher.full_at(pos, batch_size), batcher.waited_at(pos)
        patience = batcher.waited_at(pos, BACKLOG_WAIT_FACTOR)
        while True:
            now = time.perf_counter_ns()
            if now >= full or now >= patience or (now >= waited and not self._backlogged()):
                return
            until = min(full, waited) if now < waited else min(full, patience, now + BACKLOG_POLL_NS)
            time.sleep(max(until - now, 0) / 1e9)

    def _backlogged(self) -> bool:
        """The streamer is behind: it has not answered a call yet, or batches wait in the outbox (read without the
        lock: a stale answer only changes how long one batch fills). Not "its window is full": the window settles
        answered calls only when it needs a slot, so it looked full all the time and every paced batch waited the
        whole backlog cap (bench/decisions.py paced p50 38-41 ms against 19-21 ms now, README)."""
        return self._in_flight.unanswered() > 0 or self._outbox.status()["queued_rows"] > 0

    # -- forwarding ---------------------------------------------------------------------------
    def _send(self, batch: pa.RecordBatch, seq: int, after: int) -> ray.ObjectRef:
        return self.streamer.process.remote(batch, seq, after, self.producer)

    def _forward(self, batches: list[pa.RecordBatch]) -> None:
        for batch in batches:
            self._outbox.put(batch)

    def _submit_joined(self, batches: list[pa.RecordBatch]) -> None:
        """The outbox's sender thread: the only one that submits into the window (drains wait for it first)."""
        joined = batches[0] if len(batches) == 1 else pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
        self._in_flight.submit(joined)
        self.metrics.in_flight.set(len(self._in_flight))

    def _downstream_failed(self, batch: pa.RecordBatch, error: BaseException) -> None:
        """The streamer failed on this batch after every retry: its rows are dead letters, not lost."""
        rows = batch.to_pandas().drop(columns=["received_ns"])
        text = f"{type(error).__name__}: {error}"[-2000:]
        self.deadletters.append(batch_kind(batch).value, "downstream", pd.DataFrame({
            "row": range(len(rows)), "reason": "downstream_error", "field": "feature_streamer", "value": text,
            "raw": rows.to_json(orient="records", lines=True, date_format="iso").splitlines()}))
        self.downstream_errors += len(rows)
        self.metrics.rejected.inc(len(rows), {"kind": "any", "reason": "downstream_error"})

    def flush(self) -> dict:
        """Release the reorder buffer and wait until the streamer has every event."""
        with self._lock:
            self._forward(self.core.flush())
            self._drain_and_commit()
        return self.status()

    def _drain_and_commit(self) -> None:
        with self._lock:  # no new puts meanwhile; the sender is idle once the outbox is joined
            self._outbox.join()
            self._in_flight.drain()
            self._commit()

    def _state(self) -> dict:
        return {"producer": self.producer, "last_seq": self._in_flight.acked, "core": self.core.state_dict(),
                "replay_task": self._replay_task, "offsets": self._offsets,
                "downstream_errors": self.downstream_errors, "counters_incomplete": self.restarted}

    def _commit(self) -> None:
        """Only called with nothing in flight: everything released so far is acknowledged."""
        self.state_store.save(CHECKPOINT, self._state())
        self._dirty = False

    def _record_metrics(self, kind: str, report) -> None:
        tags = {"kind": str(kind)}
        # Ray counters refuse an increment of 0 (an empty push once answered 500 because of it).
        for counter, n in ((self.metrics.received, report.received), (self.metrics.accepted, report.accepted),
                           (self.metrics.duplicates, report.duplicates)):
            if n:
                counter.inc(n, tags)
        if report.rejected.empty:
            return
        for reason, n in report.rejected["reason"].value_counts().items():
            self.metrics.rejected.inc(int(n), {"kind": str(kind), "reason": reason})

    # -- reads --------------------------------------------------------------------------------
    def status(self) -> dict:
        return {**self.core.counters.as_dict(), "in_flight": len(self._in_flight), "queue": self._outbox.status(),
                "max_in_flight": self._in_flight.limit, "max_in_flight_seen": self._in_flight.max_seen,
                "downstream_errors": self.downstream_errors, "restarted": self.restarted,
                "dead_letters": self.deadletters.total, "replay": dict(self._progress),
                "node_id": ray.get_runtime_context().get_node_id()}  # where it runs (it moves when its node dies)

    def dead_letters(self, limit: int = 100, offset: int = 0) -> dict:
        """{"total", "offset", "limit", "items"}: `limit` records skipping the `offset` newest, oldest first."""
        return self.deadletters.read_page(limit, offset)
