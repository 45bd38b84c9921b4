"""A bounded window of outstanding actor calls: the caller blocks (backpressure) instead of
queueing without limit, and a failed call surfaces when it is waited on instead of vanishing."""
from __future__ import annotations

import ray


class InFlightWindow:
    def __init__(self, limit: int):
        self.limit = limit
        self.refs: list[ray.ObjectRef] = []
        self.max_seen = 0

    def submit(self, call) -> ray.ObjectRef:
        """Wait until a slot is free, then start `call()` (a zero-argument `.remote` call)."""
        while len(self.refs) >= self.limit:
            done, self.refs = ray.wait(self.refs, num_returns=1)
            ray.get(done)
        ref = call()
        self.refs.append(ref)
        self.max_seen = max(self.max_seen, len(self.refs))
        return ref

    def drain(self) -> list:
        results, self.refs = ray.get(self.refs), []
        return results

    def __len__(self) -> int:
        return len(self.refs)
