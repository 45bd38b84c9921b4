"""Paced replay batching and the bounded-source watermark (edgeray/replay.py, IngestCore release_before)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from edgeray.deadletter import DeadLetterStore
from edgeray.ingest import IngestCore
from edgeray.replay import PacedBatcher, SourcePlan, plan_sources

T0 = pd.Timestamp("2024-01-02", tz="UTC")


def bars(minutes, symbol="SYN-A"):
    return pd.DataFrame({"event_ts": [T0 + pd.Timedelta(minutes=m) for m in minutes], "symbol": symbol,
                         "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0})


def replay(core: IngestCore, frame: pd.DataFrame, chunk: int, watermark: bool) -> tuple[list[int], list[pd.Timestamp]]:
    """Feed `frame` in chunks; per chunk the rows released by that call, and every released stamp in order."""
    plan = SourcePlan(frame, {})
    per_call, stamps = [], []
    for start in range(0, len(frame), chunk):
        end = min(start + chunk, len(frame))
        report = core.ingest("bar", frame.iloc[start:end], "replay", release_before=plan.release_before(end) if watermark else None)
        per_call.append(sum(b.num_rows for b in report.released))
        stamps += [ts for b in report.released for ts in b.column("event_ts").to_pylist()]
    stamps += [ts for b in core.flush() for ts in b.column("event_ts").to_pylist()]
    return per_call, stamps


def test_a_replay_releases_each_row_when_nothing_earlier_is_still_to_come(tmp_path):
    frame = bars([0, 1, 2, 3, 4, 5, 6, 8, 7, 9, 10, 11, 12, 13, 14, 15])  # minutes 7 and 8 swapped
    held = IngestCore(DeadLetterStore(tmp_path / "a.jsonl"), lateness=pd.Timedelta(minutes=2))
    held_calls, held_order = replay(held, frame, 4, watermark=False)
    early = IngestCore(DeadLetterStore(tmp_path / "b.jsonl"), lateness=pd.Timedelta(minutes=2))
    early_calls, early_order = replay(early, frame, 4, watermark=True)
    assert early_order == held_order == sorted(held_order) and len(early_order) == 16
    # Without the watermark the last two minutes of each chunk wait for the next chunk; with it a row
    # waits only while an earlier row of its symbol is still to come (minute 8 behind the swapped 7).
    assert held_calls == [2, 5, 3, 4]
    assert early_calls == [4, 3, 5, 4]


def test_the_early_release_dead_letters_exactly_what_the_event_time_watermark_does(tmp_path):
    # A row 40 minutes late (beyond the 2-minute lateness) holds the watermark back until it is fed, then is late.
    frame = bars([0, 1, 2, 3, 4, 5, 6, 8, 7, 9, 10, 11, 12, -40, 13, 14])
    held = IngestCore(DeadLetterStore(tmp_path / "a.jsonl"), lateness=pd.Timedelta(minutes=2))
    held_calls, held_order = replay(held, frame, 4, watermark=False)
    early = IngestCore(DeadLetterStore(tmp_path / "b.jsonl"), lateness=pd.Timedelta(minutes=2))
    early_calls, early_order = replay(early, frame, 4, watermark=True)
    assert early_order == held_order and len(early_order) == 15
    assert early.counters.as_dict() == held.counters.as_dict() and early.counters.rejected == 1
    assert held_calls == [2, 5, 3, 3] and early_calls == [2, 5, 3, 5]


def test_the_watermark_looks_across_later_sources_of_the_same_symbol():
    first, second = bars([0, 1, 2, 3]), bars([2.5, 4])
    plans = plan_sources([("bar", first), ("bar", second)])
    promised = plans[0].release_before(4)  # the first source is done, the second still holds minute 2.5
    assert promised["SYN-A"] == (T0 + pd.Timedelta(minutes=2.5)).value
    assert plans[1].release_before(2)["SYN-A"] == np.iinfo(np.int64).max


def test_a_paced_batch_leaves_when_its_oldest_row_has_waited_or_when_it_is_full():
    frame = bars(range(20)).assign(event_ts=T0 + pd.to_timedelta(np.arange(20) * 500_000, "ns"))  # every 0.5 ms
    plan = SourcePlan(frame, {})
    batcher = PacedBatcher(plan, 0, rate=1.0, max_wait_ms=2.0, now_ns=0)  # rate 1: event time = wall time
    # Oldest row due at 0: the batch closes 2 ms later and takes the 5 rows due by then (0, 0.5 ... 2 ms).
    assert min(batcher.waited_at(0), batcher.full_at(0, 100)) == 2_000_000
    assert batcher.take(0, 100, 2_000_000) == 5
    # Full first: with room for 3 rows the batch closes when the third is due (1 ms).
    assert min(batcher.waited_at(0), batcher.full_at(0, 3)) == 1_000_000 and batcher.take(0, 3, 1_000_000) == 3
    # The parts: when the oldest row has waited (x a backlog factor) and when the batch is full.
    assert batcher.waited_at(0) == 2_000_000 and batcher.waited_at(2, factor=3) == 1_000_000 + 6_000_000
    assert batcher.full_at(0, 3) == 1_000_000 and batcher.full_at(15, 100) == 9_500_000  # the source's last row
    # Behind schedule everything due leaves at once, up to the batch size.
    assert batcher.take(5, 8, 10**12) == 13


def test_a_row_behind_an_earlier_one_is_due_when_it_is_reached():
    plan = SourcePlan(bars([0, 5, 1, 6]), {})
    batcher = PacedBatcher(plan, 0, rate=60.0, max_wait_ms=0.0, now_ns=0)  # a minute of market time a second
    due_s = batcher.wall_due(np.arange(4)) / 1e9
    np.testing.assert_allclose(due_s, [0.0, 5.0, 5.0, 6.0])
