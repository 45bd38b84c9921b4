"""The decision path's per-micro-batch cost with no actors at all: what one process could do at small batches.

Replays the real BTC file through the project's own pieces in this process, batch by batch: ingestion core
(validation, reorder) -> market features -> DecisionKernel (ledger, decide, risk, veto) -> shadows -> audit write
(SQLite WAL, synchronous=FULL, as the loop's default) -> a checkpoint at most every 250 ms (as
decisions.checkpoint_interval_ms). Prints, per batch size, the service time per batch (p50/p99) and the rows/s
that service time allows, with and without the audit write. A paced row's latency would be at least its wait for
the batch to fill plus this service time, so it bounds what folding the stages into one process could reach.

    python bench/one_process.py [--batch-sizes 5 10 25]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # configs/risk.yaml and configs/veto.yaml are relative to the project

from bench.decisions import SOURCE, bench_config  # noqa: E402
from actors.feature_streamer import decision_frame  # noqa: E402
from actors.meta_controller import policy_window  # noqa: E402
from edgeray.audit import AuditLog  # noqa: E402
from edgeray.columns import Columns  # noqa: E402
from edgeray.deadletter import DeadLetterStore  # noqa: E402
from edgeray.features.market import MarketFeatureState  # noqa: E402
from edgeray.ingest import IngestCore  # noqa: E402
from edgeray.sources import load_source, micro_batches  # noqa: E402
from edgeray.storage.state import FileStateStore  # noqa: E402
from policies.kernel import DecisionKernel  # noqa: E402

WARM_UP_BATCHES = 200  # the edge model's fit and first-call costs are not a steady batch


def run(batch_rows: int, audit: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="edgeray-bench-one-process-"))
    cfg = bench_config(90, tmp, batch_rows, 2)
    core = IngestCore(DeadLetterStore(tmp / "deadletters.jsonl"), lateness=pd.Timedelta(seconds=cfg.ingestion.lateness_seconds))
    market = MarketFeatureState(cfg.features.spec())
    kernel = DecisionKernel(cfg, policy_window(None))
    log = AuditLog(f"sqlite:///{tmp}/audit.db")
    store = FileStateStore(tmp / "state")
    (kind, frame), = list(load_source(SOURCE))
    service_ms, checkpointed = [], time.perf_counter()
    interval_s = cfg.decisions.checkpoint_interval_ms / 1e3
    for chunk in micro_batches(frame, batch_rows):
        started = time.perf_counter()
        for batch in core.ingest(kind, chunk, "replay").released:
            events = Columns.from_arrow(batch)  # as the streamer reads an ingested batch
            out = kernel.step(decision_frame(events, market.update_columns(events, "bar")))
            records = out.records + (kernel.engine.shadow_step(out.batch) if out.batch is not None else [])
            if audit and records:
                log.append(records)
        if time.perf_counter() - checkpointed >= interval_s:
            store.save("meta_controller", kernel.state_dict())
            checkpointed = time.perf_counter()
        service_ms.append((time.perf_counter() - started) * 1e3)
    shutil.rmtree(tmp, ignore_errors=True)
    steady = np.array(service_ms[WARM_UP_BATCHES:])
    p50, p99 = np.percentile(steady, [50, 99])
    return {"batch_rows": batch_rows, "audit": audit, "batches": len(steady), "service_ms_p50": round(float(p50), 2),
            "service_ms_p99": round(float(p99), 2), "rows_per_s_capacity": round(batch_rows / (steady.mean() / 1e3))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[5, 10, 25])
    args = parser.parse_args()
    runs = [run(n, audit) for n in args.batch_sizes for audit in (True, False)]
    print(json.dumps({"bench": "one_process", "file": SOURCE.path.split("/")[-1],
                      "machine": f"{platform.machine()} {os.cpu_count()} cpus", "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
