"""A bounded window of outstanding actor calls: the caller blocks (backpressure) instead of
queueing without limit.

Calls are settled oldest first, and a failed one is dealt with by the window, never raised into
whichever later, unrelated caller happens to be waiting for a slot (that once failed an innocent
push with a 500 and dropped the batch it had just released). A failed call is retried up to
`retries` times, then handed to `on_give_up(payload, error)`. Every call carries its sequence
number and the one it must follow (`send(payload, seq, after)`), so a receiver that checks `after`
refuses the calls queued behind a failure, and the retry resends them all in their original order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import ray


@dataclass
class _Call:
    seq: int
    payload: Any
    ref: ray.ObjectRef | None = None
    attempts: int = 0


class InFlightWindow:
    def __init__(self, limit: int, send: Callable[[Any, int, int], ray.ObjectRef], retries: int = 0,
                 on_give_up: Callable[[Any, BaseException], None] | None = None, last_seq: int = 0):
        self.limit = limit
        self.send = send
        self.retries = retries
        self.on_give_up = on_give_up
        self.calls: list[_Call] = []
        self.acked = last_seq  # the last call that succeeded or was given up
        self.next_seq = last_seq + 1
        self.max_seen = 0
        self.failures = 0  # calls given up

    def submit(self, payload: Any) -> None:
        """Wait until a slot is free, then send `payload`."""
        while len(self.calls) >= self.limit:
            self._settle_oldest()
        call = _Call(self.next_seq, payload)
        self.next_seq += 1
        self._send(call, self.calls[-1].seq if self.calls else self.acked)
        self.calls.append(call)
        self.max_seen = max(self.max_seen, len(self.calls))

    def unanswered(self) -> int:
        """Calls the receiver has not answered yet (settled or not): a read-only look, safe from any thread."""
        refs = [c.ref for c in list(self.calls) if c.ref is not None]
        if not refs:
            return 0
        return len(ray.wait(refs, num_returns=len(refs), timeout=0)[1])

    def drain(self) -> None:
        """Wait until every call is settled (succeeded or given up)."""
        while self.calls:
            self._settle_oldest()

    def _send(self, call: _Call, after: int) -> None:
        call.ref = self.send(call.payload, call.seq, after)

    def _settle_oldest(self) -> None:
        oldest = self.calls[0]
        try:
            ray.get(oldest.ref)
        except Exception as exc:  # noqa: BLE001 - any failure downstream is the window's to handle
            # The calls behind it were refused (or, by a receiver that lost its state, taken: it
            # drops a resent seq it already has), so wait them out and resend them after it.
            rest = [c.ref for c in self.calls[1:]]
            if rest:
                ray.wait(rest, num_returns=len(rest))
            oldest.attempts += 1
            if oldest.attempts > self.retries:
                self.calls.pop(0)
                self.failures += 1
                if self.on_give_up is not None:
                    self.on_give_up(oldest.payload, exc)
            after = self.acked
            for call in self.calls:
                self._send(call, after)
                after = call.seq
            return
        self.calls.pop(0)
        self.acked = oldest.seq

    def __len__(self) -> int:
        return len(self.calls)


class OutOfOrderError(RuntimeError):
    """Raised by a receiver for a call whose predecessor it has not processed (see InFlightWindow)."""
