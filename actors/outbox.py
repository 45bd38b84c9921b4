"""A bounded queue between two stages of the loop, with natural batching.

A stage puts each batch it produces here and goes back to work; one sender thread takes whatever is
queued when the next stage is free (one small batch at a time when it keeps up, larger ones under
load, at most `max_batch_rows`, whole puts only, and only puts `joinable` with each other) and sends
it. Used between ingestion and the feature streamer, and between the streamer and the meta-controller.
A full queue blocks `put`, so a stage that cannot keep up slows the one before it instead of losing rows.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable


logger = logging.getLogger(__name__)


class Outbox:
    def __init__(self, send: Callable[[list], None], max_batch_rows: int, max_queue_rows: int,
                 joinable: Callable[[object, object], bool] = lambda first, other: True, name: str = "outbox"):
        # send(items) sends the items (frames or record batches, as put) as one batch; it gets them as put,
        # so a failure can be narrowed down to the put that caused it.
        self.send = send
        self.joinable = joinable
        self.max_batch_rows = max_batch_rows
        self.max_queue_rows = max_queue_rows
        self._frames: deque = deque()
        self._rows = 0
        self._sending = 0  # rows taken and not yet settled
        self._cond = threading.Condition()
        self.batches_sent = 0
        self.largest_batch = 0
        self.max_queued_rows = 0
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def put(self, rows) -> None:
        with self._cond:
            # Wait for room, unless the queue is empty: one batch larger than the bound still goes through.
            self._cond.wait_for(lambda: self._rows == 0 or self._rows + len(rows) <= self.max_queue_rows)
            self._frames.append(rows)
            self._rows += len(rows)
            self.max_queued_rows = max(self.max_queued_rows, self._rows)
            self._cond.notify_all()

    def join(self) -> None:
        """Return once every row put so far is settled."""
        with self._cond:
            self._cond.wait_for(lambda: self._rows == 0 and self._sending == 0)

    def _take(self) -> list:
        with self._cond:
            self._cond.wait_for(lambda: self._rows > 0)
            taken, n = [], 0
            while self._frames and (not taken or (n + len(self._frames[0]) <= self.max_batch_rows
                                                  and self.joinable(taken[0], self._frames[0]))):
                frame = self._frames.popleft()
                taken.append(frame)
                n += len(frame)
            self._rows -= n
            self._sending = n
            self._cond.notify_all()
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            n = sum(len(f) for f in taken)
            try:
                self.send(taken)
            except Exception:  # noqa: BLE001 - the sender must outlive one batch; `send` dead-letters its own failures
                logger.exception("%s: sending %d rows failed", threading.current_thread().name, n)
            finally:
                with self._cond:
                    self._sending = 0
                    self.batches_sent += 1
                    self.largest_batch = max(self.largest_batch, n)
                    self._cond.notify_all()

    def status(self) -> dict:
        with self._cond:
            return {"queued_rows": self._rows, "in_flight_rows": self._sending, "batches_sent": self.batches_sent,
                    "largest_batch_rows": self.largest_batch, "max_queued_rows": self.max_queued_rows,
                    "max_batch_rows": self.max_batch_rows, "max_queue_rows": self.max_queue_rows}
