"""Per-symbol "processed up to" event times, so a batch retried after an actor restart (the actor
died after checkpointing, before answering) is recognised and skipped instead of applied twice."""
from __future__ import annotations

import pandas as pd

NEVER = -(2**63)


class SymbolWatermark:
    def __init__(self, state: dict[str, int] | None = None):
        self._done_ns: dict[str, int] = dict(state or {})

    def fresh(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows stamped strictly after their symbol's watermark."""
        last = frame["symbol"].map(lambda s: self._done_ns.get(s, NEVER)).to_numpy("int64")
        stamps = pd.to_datetime(frame["event_ts"], utc=True).array.asi8
        return frame[stamps > last].reset_index(drop=True)

    def advance(self, frame: pd.DataFrame) -> None:
        if len(frame):
            stamps = pd.Series(pd.to_datetime(frame["event_ts"], utc=True).array.asi8, index=frame.index)
            self._done_ns.update({s: int(t) for s, t in stamps.groupby(frame["symbol"]).max().items()})

    def state_dict(self) -> dict[str, int]:
        return dict(self._done_ns)
