"""Decision loop throughput, end-to-end latency and where the time goes, on the real BTC 1-minute file.

Market event in (ingestion receipt) -> features -> meta-controller -> risk -> veto -> audit
record written: decisions/s over the whole replay and per-decision latency p50/p99, for a paced
replay (default 1,000 bars/s) and one at full speed; the paced run's per-stage p99 (the
meta-controller's `stages_ms`); and the in-process floor: the same engine and risk/veto/ledger
cores as plain calls in this process on the same rows, so the actors' overhead is a ratio.
Usage: python bench/decisions.py [--batch-size N] [--rate R (paced; 0: skip it)] [--repeats N] [--no-full-speed]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # configs/risk.yaml and configs/veto.yaml are relative to the project

from actors.feature_streamer import decision_frame  # noqa: E402
from actors.meta_controller import policy_window  # noqa: E402
from actors.pipeline import Pipeline  # noqa: E402
from edgeray.columns import Columns  # noqa: E402
from edgeray.config import PipelineConfig, SourceConfig  # noqa: E402
from edgeray.deadletter import DeadLetterStore  # noqa: E402
from edgeray.features.market import MarketFeatureState  # noqa: E402
from edgeray.ingest import IngestCore  # noqa: E402
from edgeray.sources import load_source, micro_batches  # noqa: E402
from policies.kernel import DecisionKernel  # noqa: E402

BTC = ROOT.parent / "shared" / "data" / "markets" / "btc_perp_1m_2022-01.csv"
SOURCE = SourceConfig(type="bars", path=str(BTC), symbol="BTCUSDT-PERP")


def bench_config(i: int, tmp: Path, batch_size: int, max_in_flight: int, max_batch_wait_ms: float | None = None) -> PipelineConfig:
    base = PipelineConfig.load(ROOT / "configs" / "pipeline.yaml").model_dump()
    wait = {} if max_batch_wait_ms is None else {"max_batch_wait_ms": max_batch_wait_ms}
    return PipelineConfig.model_validate({
        **base, "namespace": f"benchdec{i}", "run_dir": str(tmp / "run"),
        "ingestion": {**base["ingestion"], "batch_size": batch_size, "max_in_flight": max_in_flight, **wait},
        "feast": {**base["feast"], "directory": str(tmp / "feast"), "project": f"benchdec{i}"},
    })


def run_once(i: int, batch_size: int, max_in_flight: int, rate: float, max_batch_wait_ms: float | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="edgeray-bench-decisions-"))
    cfg = bench_config(i, tmp, batch_size, max_in_flight, max_batch_wait_ms)
    pipeline = Pipeline.start(cfg, fresh=True)
    started = time.perf_counter()
    replay = ray.get(pipeline.replay_async([SOURCE], rate=rate))
    status = pipeline.finish()
    elapsed = time.perf_counter() - started
    pipeline.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    d = status["decisions"]
    return {"rate": rate or "full speed", "events": replay["events"], "decisions": d["decisions"], "orders": d["orders"],
            "elapsed_s": round(elapsed, 2), "decisions_per_s": round(d["decisions"] / elapsed),
            "latency_ms_p50": round(d["latency_ms_p50"], 2), "latency_ms_p99": round(d["latency_ms_p99"], 2),
            "meta_controller_busy_s": round(d["busy_s"], 2), "stages_ms": d.get("stages_ms", {})}


def feature_rows(cfg: PipelineConfig, batch_size: int) -> list[Columns]:
    """The decision batches the streamer would send, built once with the project's ingest and feature code."""
    tmp = Path(tempfile.mkdtemp(prefix="edgeray-bench-floor-"))
    core = IngestCore(DeadLetterStore(tmp / "deadletters.jsonl"), lateness=pd.Timedelta(seconds=cfg.ingestion.lateness_seconds))
    released = []
    for kind, frame in load_source(SOURCE):
        for chunk in micro_batches(frame, batch_size):
            released += core.ingest(kind, chunk, "replay").released
    released += core.flush()
    market = MarketFeatureState(cfg.features.spec())
    frames = []
    for batch in released:
        events = Columns.from_arrow(batch)
        frames.append(decision_frame(events, market.update_columns(events, "bar")))
    rows = Columns.concat(frames)
    shutil.rmtree(tmp, ignore_errors=True)
    return [rows.take(np.arange(start, min(start + batch_size, len(rows)))) for start in range(0, len(rows), batch_size)]


def in_process_floor(batch_size: int) -> dict:
    """The meta-controller's per-batch work (the DecisionKernel: ledger step, decide, risk, veto, reward
    registration) as plain calls with no actor around it: no audit write, no checkpoint, no streamer.
    A row's latency floor is its batch's time."""
    tmp = Path(tempfile.mkdtemp(prefix="edgeray-bench-floor-"))
    cfg = bench_config(99, tmp, batch_size, 2)
    batches = feature_rows(cfg, batch_size)
    kernel = DecisionKernel(cfg, policy_window(cfg.decisions.sizer.checkpoint))
    per_batch_ms, decisions = [], 0
    started = time.perf_counter()
    for frame in batches:
        t = time.perf_counter_ns()
        out = kernel.step(frame)
        per_batch_ms.append((time.perf_counter_ns() - t) / 1e6)  # a row's latency ends here, as in the actor
        if out.batch is not None:
            kernel.engine.shadow_step(out.batch)
        decisions += out.decisions
    elapsed = time.perf_counter() - started
    shutil.rmtree(tmp, ignore_errors=True)
    # Every row of a batch waits for the whole batch: weight each batch's time by its rows.
    weighted = np.repeat(per_batch_ms, [len(b) for b in batches])
    p50, p99 = np.percentile(weighted, [50, 99])
    return {"batch_size": batch_size, "batches": len(batches), "decisions": decisions,
            "decisions_per_s": round(decisions / elapsed), "latency_ms_p50": round(float(p50), 2),
            "latency_ms_p99": round(float(p99), 2)}


def median_of(runs: list[dict], key: str):
    return round(statistics.median(r[key] for r in runs), 2) if runs else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=2)
    parser.add_argument("--rate", type=float, default=60_000.0,
                        help="paced run: event-seconds per wall-second (60000 = 1,000 one-minute bars/s; 0: skip it)")
    parser.add_argument("--no-full-speed", action="store_true", help="skip the full-speed run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-batch-wait-ms", type=float, default=None,
                        help="ingestion.max_batch_wait_ms for the paced run (default: the config's)")
    args = parser.parse_args()
    if not BTC.exists():
        sys.exit(f"{BTC} is absent: the benchmark replays the real BTC file")
    floor = in_process_floor(args.batch_size)  # before Ray starts, so it has the CPUs to itself
    ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False, log_to_driver=False)
    paced = [run_once(i, args.batch_size, args.max_in_flight, args.rate, args.max_batch_wait_ms)
             for i in range(args.repeats)] if args.rate else []
    full = [] if args.no_full_speed else [run_once(100 + i, args.batch_size, args.max_in_flight, 0)
                                           for i in range(args.repeats)]
    stages = paced[0]["stages_ms"] if paced else {}
    print(json.dumps({
        "bench": "decisions", "file": BTC.name, "batch_size": args.batch_size, "max_in_flight": args.max_in_flight,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "paced": {"rate_bars_per_s": round(args.rate / 60) if args.rate else None,
                  "latency_ms_p50": median_of(paced, "latency_ms_p50"), "latency_ms_p99": median_of(paced, "latency_ms_p99"),
                  "decisions_per_s": median_of(paced, "decisions_per_s")},
        "full_speed": {"decisions_per_s": median_of(full, "decisions_per_s"), "latency_ms_p50": median_of(full, "latency_ms_p50"),
                       "latency_ms_p99": median_of(full, "latency_ms_p99")},
        "stages_ms_p99": {s: v["p99"] for s, v in stages.items()},
        "stages_ms_p50": {s: v["p50"] for s, v in stages.items()},
        "in_process_floor": floor,
        "actor_overhead_p99_ratio": (round(median_of(paced, "latency_ms_p99") / floor["latency_ms_p99"], 1)
                                     if paced and floor["latency_ms_p99"] else None),
        "runs": paced + full, "targets": {"decisions_per_s": 2000, "latency_ms_p99": 25}}, indent=2))


if __name__ == "__main__":
    main()
