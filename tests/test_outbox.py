"""The decision outbox between the feature streamer and the loop (actors/outbox.py): natural batching, a bound."""
from __future__ import annotations

import threading

import pandas as pd

from actors.outbox import Outbox


def rows(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"i": range(start, start + n)})


class GatedLoop:
    """A loop that takes a batch and holds it until the test opens the gate."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.taken = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)

    def send(self, frames):
        self.batches.append([int(i) for f in frames for i in f["i"]])
        self.taken.release()
        self.gate.acquire()


def test_rows_queued_while_the_loop_is_busy_leave_as_one_batch_in_order():
    loop = GatedLoop()
    outbox = Outbox(loop.send, max_batch_rows=7, max_queue_rows=100)
    outbox.put(rows(0, 2))
    loop.taken.acquire()  # the loop is free: the first put leaves alone, at once
    for k in range(5):  # while it is busy, five puts of 2 rows queue up
        outbox.put(rows(2 + 2 * k, 2))
    for _ in range(3):
        loop.gate.release()
    outbox.join()
    # Whole puts only, at most 7 rows a batch: 2, then 6 (three puts), then 4 (two puts); nothing lost or reordered.
    assert loop.batches == [[0, 1], [2, 3, 4, 5, 6, 7], [8, 9, 10, 11]]
    assert outbox.status()["largest_batch_rows"] == 6 and outbox.status()["queued_rows"] == 0


def test_a_full_queue_blocks_the_producer_until_the_loop_takes_rows():
    loop = GatedLoop()
    outbox = Outbox(loop.send, max_batch_rows=1000, max_queue_rows=4)
    outbox.put(rows(0, 1))
    loop.taken.acquire()
    outbox.put(rows(1, 4))  # fills the queue
    blocked_put_done = threading.Event()
    producer = threading.Thread(target=lambda: (outbox.put(rows(5, 1)), blocked_put_done.set()))
    producer.start()
    assert not blocked_put_done.wait(0.2)  # a bounded wait for something that must not happen
    assert outbox.status()["queued_rows"] == 4
    loop.gate.release()  # the loop takes the 4 queued rows: room again
    assert blocked_put_done.wait(30)
    for _ in range(2):
        loop.gate.release()
    outbox.join()
    producer.join()
    assert [i for b in loop.batches for i in b] == list(range(6)) and outbox.status()["max_queued_rows"] == 4


def test_the_window_counts_calls_not_yet_answered_apart_from_calls_not_yet_settled(ray_session):
    """Paced ingestion holds a batch while the streamer has not answered (actors/ingestion.py: _backlogged). The
    window settles answered calls only when it needs a slot, so its length alone said "behind" all the time."""
    import ray

    from actors.window import InFlightWindow

    @ray.remote(num_cpus=0)
    class Gate:
        def __init__(self):
            import threading
            self.open = threading.Event()

        def call(self, seq: int) -> int:
            self.open.wait(timeout=60)
            return seq

        def release(self) -> None:
            self.open.set()

    gate = Gate.options(max_concurrency=4).remote()
    window = InFlightWindow(4, lambda payload, seq, after: gate.call.remote(seq))
    assert window.unanswered() == 0
    window.submit("a")
    window.submit("b")
    assert window.unanswered() == 2 and len(window) == 2
    ray.get(gate.release.remote())
    ray.wait([c.ref for c in window.calls], num_returns=2)
    assert window.unanswered() == 0 and len(window) == 2  # answered, not yet settled
    window.drain()
    assert len(window) == 0 and window.acked == 2
