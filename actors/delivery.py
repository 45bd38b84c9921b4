"""Numbered, resendable delivery to a receiver that checkpoints lazily (the meta-controller).

The receiver checkpoints every few hundred ms instead of after every batch, so after it restarts its state is
older than the last batches it answered. The sender therefore keeps every batch until a reply's `durable_seq`
says a checkpoint covers it; a restarted receiver answers the next batch with `resend_after` (the last batch its
checkpoint holds) instead of deciding it, and the sender resends what it kept after that one, in order, then goes
on. The receiver skips a batch it already has, and decides a resent one exactly as before (same state, same rows),
so with the audit log's one row per (decision_id, stage) nothing is lost or written twice.
"""
from __future__ import annotations

import uuid
from collections import deque
from typing import Any, Callable


class ResendingSender:
    def __init__(self, call: Callable[[Any, int, int, str], dict]):
        # call(payload, seq, after, producer) -> the receiver's reply; it raises when the receiver failed on the
        # payload (after Ray's own retries): that payload is given up (the caller dead-letters it), never resent.
        self.call = call
        self.producer = uuid.uuid4().hex  # a restarted sender numbers from 1 again, under a new name
        self.kept: deque[tuple[int, Any]] = deque()
        self.next_seq = 1
        self.last_sent = 0
        self.resent = 0  # batches sent again to a restarted receiver

    def send(self, payload: Any) -> list[tuple[Any, BaseException]]:
        """Deliver `payload` (after whatever a restarted receiver asks for first). Returns the payloads given up
        on the way, with their errors: normally none, or `payload` itself."""
        seq = self.next_seq
        self.next_seq += 1
        self.kept.append((seq, payload))
        failed: list[tuple[Any, BaseException]] = []
        reply = self._call(seq, payload, self.last_sent, failed)
        while reply is not None and reply.get("resend_after") is not None:
            reply = self._resend(reply["resend_after"], failed)
        durable = (reply or {}).get("durable_seq", 0)
        while self.kept and self.kept[0][0] <= durable:
            self.kept.popleft()
        return failed

    def _resend(self, base: int, failed: list) -> dict | None:
        """Send every kept batch after `base` in order; the last reply (the newest batch's)."""
        after, reply = base, None
        for seq, payload in [k for k in self.kept if k[0] > base]:
            reply = self._call(seq, payload, after, failed)
            if reply is not None and reply.get("resend_after") is not None:
                return reply  # restarted again meanwhile: start over from what it has now
            after = seq
            self.resent += 1
        return reply

    def _call(self, seq: int, payload: Any, after: int, failed: list) -> dict | None:
        self.last_sent = seq
        try:
            return self.call(payload, seq, after, self.producer)
        except Exception as error:  # noqa: BLE001 - the receiver failed on this payload: given up, never resent
            self.kept = deque(k for k in self.kept if k[0] != seq)
            failed.append((payload, error))
            return None
