"""Feature streaming actor: ordered micro-batches -> point-in-time features -> the decision loop and Feast
(latest vector per entity online on every batch, history appended offline in bulk).

The online write stays on this thread on purpose: a background writer thread that coalesced batches
(one write per round) measured worse on 2 cores, 12,900 against 17,100 events/s attached in bench/ingest.py
and paced_10k p99 105 against 75 ms, because it fights this thread for the GIL (2026-12-02)."""
from __future__ import annotations

import gc
import json
import logging
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import ray

from actors.metrics import PipelineMetrics
from actors.outbox import Outbox
from actors.delivery import ResendingSender
from actors.window import OutOfOrderError
from edgeray.columns import Columns, column, plain, take
from edgeray.config import PipelineConfig
from edgeray.deadletter import open_deadletter_store
from edgeray.events import EventKind, batch_kind
from edgeray.feature_repo.settings import MARKET_VIEW, ODDS_VIEW, FeastSettings
from edgeray.features.books import NAMES as BOOK_NAMES, MultiBookOddsState
from edgeray.features.market import MarketFeatureState
from edgeray.latency import LatencyRing
from edgeray.watermark import timestamps_ns



NEVER = -(2**63)
logger = logging.getLogger(__name__)


def feast_settings(cfg: PipelineConfig) -> FeastSettings:
    f = cfg.feast
    return FeastSettings.from_env(f.directory, f.project, f.online_store, f.offline_uri, f.registry_url)


def _is_results(frame: pd.DataFrame) -> bool:
    return "score_a" in frame


def decision_frame(events: pd.DataFrame | Columns, features: pd.DataFrame | dict, arrived_ns: int | None = None,
                   sent_ns: int | None = None) -> Columns:
    """Feature rows plus the prices the executor fills against (quotes: the mid), the receipt
    stamp the end-to-end latency is measured from, and (for the per-stage breakdown) when the batch
    reached the streamer (`features_in_ns`) and left it (`features_out_ns`), both wall-clock ns like
    `received_ns`. `features`: a frame, or MarketFeatureState.update_columns' columns. Columns, not a frame:
    see edgeray/columns.py."""
    if isinstance(features, pd.DataFrame):
        features = Columns.from_frame(features)
    columns = {name: features[name] for name in (features.columns if isinstance(features, Columns) else features)}
    if not isinstance(columns["event_ts"], np.ndarray):  # a DataFrame's tz-aware stamps, as datetime64 in UTC
        columns["event_ts"] = plain(columns["event_ts"])
    bid, ask = column(events, "bid", float), column(events, "ask", float)
    mid = (bid + ask) / 2.0
    close = column(events, "close", float) if "close" in events else mid
    opened = column(events, "open", float) if "open" in events else mid
    n = len(bid)
    out = {**columns, "open": opened, "close": close, "bid": bid, "ask": ask, "received_ns": column(events, "received_ns"),
           "features_in_ns": np.full(n, arrived_ns if arrived_ns is not None else time.time_ns(), dtype=np.int64)}
    if sent_ns is not None:
        out["features_out_ns"] = np.full(n, sent_ns, dtype=np.int64)
    return Columns(out, n)


@ray.remote(num_cpus=0)
class FeatureStreamerActor:
    def __init__(self, config: dict, process_delay_s: float = 0.0, meta_controller=None):
        self.cfg = PipelineConfig.model_validate(config)
        # Market feature rows go on to the decision loop under their own bounded in-flight window.
        self.meta = meta_controller
        # One decision batch outstanding at a time, numbered and kept until the meta-controller's checkpoint covers
        # it (see actors/delivery.py). With two outstanding, a restart re-ran both queued calls and could run the later
        # one first (seen: 1,000 of 3,000 rows lost). The streamer keeps computing features while one is out. A
        # failing decide_batch has its rows dead-lettered; it never fails a later, unrelated `process` call.
        self._decisions = ResendingSender(
            lambda rows, seq, after, producer: ray.get(self.meta.decide_batch.remote(rows, seq, after, producer)))
        # Feature batches do not wait for the loop: their decision rows queue here (bounded) and leave
        # in batches sized by how fast the loop takes them (see actors/outbox.py).
        self._outbox = Outbox(self._send_decisions, self.cfg.decisions.max_batch_rows, self.cfg.decisions.max_queue_rows,
                              name="decision-outbox") if meta_controller is not None else None
        # Odds feature rows (the value strategy's input) and game results (which settle its bets) go to the loop
        # the same way, in their own queue: a bet decision never waits behind market bars or holds them up.
        self._bet_outbox = Outbox(self._send_bets, self.cfg.decisions.max_batch_rows, self.cfg.decisions.max_queue_rows,
                                  joinable=lambda first, other: _is_results(first) == _is_results(other),
                                  name="bet-outbox") if meta_controller is not None else None
        self.undecided = open_deadletter_store(self.cfg, "undecided")
        self.decision_errors = 0
        self.undecided_rows = 0
        self.last_decision_error: str | None = None
        # Exactly once from the ingestion actor: its batches are numbered per producer (see InFlightWindow).
        self._producer: str | None = None
        self._last_seq: int | None = None
        self.batches_already_processed = 0
        # Defence in depth against a replayed stream: per (kind, symbol) the last event_ts processed
        # and the ids seen at exactly that ts (two quote ticks may share a timestamp).
        self._last_ts: dict[tuple[str, str], tuple[int, set[int]]] = {}
        self.rows_already_processed = 0
        # Feast here, not at the module's top: processes that only start the pipeline (the driver, a Serve
        # replica) then never import it. The definitions are applied here, before the first batch can arrive.
        from edgeray.featurestore import FeastSink, open_store

        settings = feast_settings(self.cfg)
        store = open_store(settings, self.cfg.features.spec(), apply=True)
        self.sink = FeastSink(store, settings, self.cfg.feast.offline_flush_rows)
        self.market = MarketFeatureState(self.cfg.features.spec())
        self.sink.warm_up([f"{MARKET_VIEW}:{n}" for n in self.market.spec.names])
        self.odds = MultiBookOddsState()
        # Only for demonstrating backpressure with a deliberately slow consumer.
        self.process_delay_s = process_delay_s
        self.events_by_kind: dict[str, int] = {}
        self.feature_rows = 0
        self._latency = LatencyRing()
        self._arrived_ns: int | None = None
        self._first_ns: int | None = None
        self._last_ns = 0
        self.metrics = PipelineMetrics()
        # Feast, pandas and protobuf leave millions of long-lived objects; without freezing them a
        # generation-2 collection mid-stream stalled one batch for ~250 ms (the whole replay's p99).
        gc.freeze()

    def process(self, batch: pa.RecordBatch, seq: int | None = None, after: int | None = None,
                producer: str | None = None) -> int:
        """Compute and store the features of one ordered micro-batch; returns the rows processed.
        `seq`/`after`/`producer`: the ingestion actor's batch numbering; a batch numbered as one already processed
        has only its unseen rows processed, one whose predecessor is missing is refused (OutOfOrderError) so it is
        resent in order."""
        if seq is not None:
            if producer != self._producer:
                self._producer, self._last_seq = producer, None
            if self._last_seq is not None:
                if seq <= self._last_seq:
                    # Not skipped whole: a restarted ingestion actor resends from its last commit under the same
                    # numbering, but a paced replay cuts batches by the clock (and the outbox joins them under load),
                    # so batch n may now reach past the old batch n. Skipping it lost those rows (10 of 5,000 bars in
                    # tests/test_cluster.py); _unseen below drops the rows already processed, row by row.
                    self.batches_already_processed += 1
                elif after != self._last_seq:
                    raise OutOfOrderError(f"batch {seq} follows {after}, but the last batch processed is {self._last_seq}")
        self._arrived_ns = time.time_ns()  # released by ingestion (plus transport): the ingest/features boundary
        if self.process_delay_s:
            time.sleep(self.process_delay_s)
        kind = batch_kind(batch)
        # Market rows stay columns on the way to the loop (edgeray/columns.py); odds and results go through pandas.
        rows = Columns.from_arrow(batch) if kind in (EventKind.BAR, EventKind.QUOTE) else batch.to_pandas()
        frame = self._unseen(kind.value, rows)
        if not frame.empty:
            self._compute(kind, frame)
        # Only now, after it succeeded: a batch that failed is resent and must not be taken as processed.
        self._mark_processed(kind.value, frame)
        if seq is not None:
            self._last_seq = seq if self._last_seq is None else max(self._last_seq, seq)
        return len(frame)

    def _compute(self, kind: EventKind, frame: pd.DataFrame) -> None:
        if kind in (EventKind.BAR, EventKind.QUOTE):
            columns, view = self.market.update_columns(frame, kind.value), MARKET_VIEW
            if self.meta is None:
                features = Columns(columns, len(frame))
            else:
                # The loop is handed the features it needs, so it does not wait for the store write (or read
                # them back); the store takes the same frame (it reads only its view's columns).
                features = decision_frame(frame, columns, self._arrived_ns, sent_ns=time.time_ns())
                self._outbox.put(features)  # the outbox's queue counts as queue wait
        elif kind is EventKind.ODDS:
            features, view = self.odds.update(frame), ODDS_VIEW
        else:
            features, view = None, None  # game results carry no features; they settle the loop's bets
            if self.meta is not None:
                self._bet_outbox.put(frame[["symbol", "event_ts", "score_a", "score_b"]])
        if features is not None:
            if view == ODDS_VIEW:
                if self.meta is not None:
                    self._bet_outbox.put(features)
                # One row per game and instant: the state after every book's quote at that instant.
                features = features[["symbol", "event_ts", *BOOK_NAMES]].drop_duplicates(["symbol", "event_ts"], keep="last")
            self.sink.write(view, features)
            self.feature_rows += len(features)
        now = time.time_ns()
        self._record_latency(self._latency.record_since(column(frame, "received_ns"), now))
        self.events_by_kind[kind.value] = self.events_by_kind.get(kind.value, 0) + len(frame)
        self._first_ns = self._first_ns or now
        self._last_ns = now

    def _unseen(self, kind: str, frame: pd.DataFrame | Columns) -> pd.DataFrame | Columns:
        """The rows not processed before: stamped after their symbol's last processed row, or at that
        same instant under an id not seen there. Rows arrive in event-time order per symbol."""
        stamps = timestamps_ns(frame["event_ts"])
        symbols = column(frame, "symbol")
        ids = column(frame, "event_id")
        codes, uniq = pd.factorize(symbols)
        last = np.fromiter((self._last_ts.get((kind, s), (NEVER,))[0] for s in uniq), np.int64, len(uniq))[codes]
        keep = stamps > last
        for i in np.flatnonzero(stamps == last):
            keep[i] = int(ids[i]) not in self._last_ts[(kind, symbols[i])][1]
        self.rows_already_processed += int((~keep).sum())
        return frame if keep.all() else take(frame, keep)

    def _mark_processed(self, kind: str, frame: pd.DataFrame | Columns) -> None:
        """Per symbol: the batch's latest event_ts and the ids seen at exactly that instant."""
        if frame.empty:
            return
        stamps = timestamps_ns(frame["event_ts"])
        codes, uniq = pd.factorize(column(frame, "symbol"))
        latest = np.full(len(uniq), NEVER, dtype=np.int64)
        np.maximum.at(latest, codes, stamps)
        at_latest = stamps == latest[codes]
        ids = column(frame, "event_id")
        for c, sym in enumerate(uniq):
            ts = int(latest[c])
            seen = {int(i) for i in ids[at_latest & (codes == c)]}
            prev = self._last_ts.get((kind, sym))
            self._last_ts[(kind, sym)] = (ts, prev[1] | seen if prev is not None and prev[0] == ts else seen)

    def _send_decisions(self, frames: list[pd.DataFrame]) -> None:
        """The outbox's sender thread: one decide call at a time, settled before the next (see self._decisions).
        A joined batch that fails is resent put by put, so only the put that fails is dead-lettered."""
        joined = Columns.concat(frames)
        for rows, error in self._decisions.send(joined):
            if rows is not joined or len(frames) == 1:
                self._decision_failed(rows, error)
                continue
            for put in frames:
                for failed, put_error in self._decisions.send(put):
                    self._decision_failed(failed, put_error)

    def _send_bets(self, frames: list[pd.DataFrame]) -> None:
        """The bet outbox's sender thread: odds feature rows to the value strategy, results to settlement; one call
        at a time (Ray retries it on a restarted meta-controller, which skips what its checkpoint says is done)."""
        joined = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        call = self.meta.settle if _is_results(joined) else self.meta.decide_bets
        try:
            ray.get(call.remote(joined))
        except Exception as error:  # noqa: BLE001 - recorded and dead-lettered, never raised into ingestion
            self._decision_failed(joined, error)

    def _decision_failed(self, rows: pd.DataFrame | Columns, error: BaseException) -> None:
        """The meta-controller failed on these rows: keep going, and say so (status, log, dead letters)."""
        if isinstance(rows, Columns):
            rows = rows.to_frame()
        text = str(error)[-2000:]
        self.decision_errors += 1
        self.undecided_rows += len(rows)
        self.last_decision_error = text
        logger.error("decide_batch failed on %d rows (%s .. %s): %s", len(rows), rows["event_ts"].min(),
                     rows["event_ts"].max(), text)
        raw = rows[[c for c in ("symbol", "event_ts", "close") if c in rows]]
        self.undecided.append("decision", "feature_streamer", pd.DataFrame({
            "row": np.arange(len(rows)), "reason": "decision_error", "field": "decide_batch", "value": text,
            "raw": [json.dumps(r, default=str) for r in raw.to_dict("records")]}))

    def _record_latency(self, latency_ms: np.ndarray) -> None:
        # A sample per batch keeps the metrics call cheap while the histogram stays representative.
        for value in latency_ms[:: max(1, len(latency_ms) // 16)]:
            self.metrics.latency_ms.observe(float(value))
        elapsed = (self._last_ns - self._first_ns) / 1e9 if self._first_ns else 0
        if elapsed > 0:
            self.metrics.events_per_second.set(self.events_processed / elapsed)

    @property
    def events_processed(self) -> int:
        return sum(self.events_by_kind.values())

    def settle_decisions(self) -> None:
        """Return once every feature row processed so far has been decided (or dead-lettered)."""
        if self._outbox is not None:
            self._outbox.join()
            self._bet_outbox.join()

    def flush(self) -> int:
        self.settle_decisions()
        return self.sink.flush()

    def status(self) -> dict:
        latency = self._latency.percentiles()
        return {"events_processed": self.events_processed, "events_by_kind": dict(self.events_by_kind),
                "feature_rows": self.feature_rows, "online_rows_written": self.sink.online_rows_written,
                "offline_rows_written": self.sink.offline_rows_written,
                "latency_ms_p50": latency["latency_ms_p50"], "latency_ms_p99": latency["latency_ms_p99"],
                "batches_already_processed": self.batches_already_processed,
                "rows_already_processed": self.rows_already_processed,
                "decision_errors": self.decision_errors, "undecided_rows": self.undecided_rows,
                "last_decision_error": self.last_decision_error,
                "decision_queue": self._outbox.status() if self._outbox is not None else None,
                "decision_batches_kept": len(self._decisions.kept) if self.meta is not None else 0,
                "decision_batches_resent": self._decisions.resent if self.meta is not None else 0,
                "bet_queue": self._bet_outbox.status() if self._bet_outbox is not None else None,
                "odds_books": len(self.odds.books), "odds_off_board_quotes": self.odds.off_board,
                "node_id": ray.get_runtime_context().get_node_id()}
