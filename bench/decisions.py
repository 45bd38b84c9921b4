"""Decision loop throughput and end-to-end latency on the real BTC 1-minute file.

Market event in (ingestion receipt) -> features -> meta-controller -> risk -> veto -> audit
record written: decisions/s over the whole replay and per-decision latency p50/p99.
Usage: python bench/decisions.py [--batch-size N] [--rate R] [--repeats N]
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

import ray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # configs/risk.yaml and configs/veto.yaml are relative to the project

from actors.pipeline import Pipeline  # noqa: E402
from edgeray.config import PipelineConfig, SourceConfig  # noqa: E402

BTC = ROOT.parent / "shared" / "data" / "markets" / "btc_perp_1m_2022-01.csv"


def run_once(i: int, batch_size: int, max_in_flight: int, rate: float) -> dict:
    base = PipelineConfig.load(ROOT / "configs" / "pipeline.yaml").model_dump()
    tmp = Path(tempfile.mkdtemp(prefix="edgeray-bench-decisions-"))
    cfg = PipelineConfig.model_validate({
        **base, "namespace": f"benchdec{i}", "run_dir": str(tmp / "run"),
        "ingestion": {**base["ingestion"], "batch_size": batch_size, "max_in_flight": max_in_flight},
        "feast": {**base["feast"], "directory": str(tmp / "feast"), "project": f"benchdec{i}"},
    })
    pipeline = Pipeline.start(cfg, fresh=True)
    started = time.perf_counter()
    replay = ray.get(pipeline.replay_async([SourceConfig(type="bars", path=str(BTC), symbol="BTCUSDT-PERP")], rate=rate))
    status = pipeline.finish()
    elapsed = time.perf_counter() - started
    pipeline.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    d = status["decisions"]
    return {"events": replay["events"], "decisions": d["decisions"], "orders": d["orders"], "elapsed_s": round(elapsed, 2),
            "decisions_per_s": round(d["decisions"] / elapsed), "latency_ms_p50": round(d["latency_ms_p50"], 2),
            "latency_ms_p99": round(d["latency_ms_p99"], 2), "meta_controller_busy_s": round(d["busy_s"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--max-in-flight", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.0, help="event-seconds per wall-second (0: full speed)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not BTC.exists():
        sys.exit(f"{BTC} is absent: the benchmark replays the real BTC file")
    ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False, log_to_driver=False)
    runs = [run_once(i, args.batch_size, args.max_in_flight, args.rate) for i in range(args.repeats)]
    print(json.dumps({"bench": "decisions", "file": BTC.name, "batch_size": args.batch_size, "max_in_flight": args.max_in_flight,
                      "replay_rate": args.rate or "full speed", "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                      "runs": runs, "targets": {"decisions_per_s": 2000, "latency_ms_p99": 25}}, indent=2))


if __name__ == "__main__":
    main()
