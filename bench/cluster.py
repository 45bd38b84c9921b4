"""Node loss mid-replay on a simulated multi-node cluster: how long the decision loop stops, and what it loses.

A head (GCS, the driver, the feature streamer) plus a worker declaring the loop's resource and one declaring
ingestion's (ray.cluster_utils.Cluster: real raylets, one machine); checkpoints and the audit log in PostgreSQL.
A spare worker joins before the replay and, mid-replay, the node hosting the meta-controller is crashed (raylet, object store and its
worker processes SIGKILLed). failover_s: from the crash until the meta-controller, restarted on another node from
its PostgreSQL checkpoint, has decided past the bar it had reached before the crash (the batches since that
checkpoint resent and decided again included); meta_answered_s: until it first answers a call. The losses are
counted in the audit log: decisions_lost = bars without a decision, decisions_duplicated = decision rows beyond
one per bar. Ray declares a node dead after `health_check_failure_threshold` missed checks `health_check_period_ms`
apart; `--health-checks default` keeps Ray's defaults, `fast` uses the test's 500 ms x 3.
Usage: python bench/cluster.py [--health-checks default|fast] [--bars N (per symbol)] [--rate BARS_PER_S]
PostgreSQL: EDGERAY_TEST_POSTGRES_URL, else postgresql+psycopg://postgres@127.0.0.1:5432/test (a scratch database
is created in it and dropped).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
os.environ.pop("RAY_ADDRESS", None)  # its own cluster, never one this shell points at

from tests.conftest import POSTGRES_URL  # noqa: E402
from tests.test_cluster import FAST_HEALTH_CHECKS, node_loss_scenario  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--health-checks", choices=("default", "fast"), default="default")
    parser.add_argument("--bars", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=100.0, help="bars per second per symbol (paced replay)")
    args = parser.parse_args()
    system_config = FAST_HEALTH_CHECKS if args.health_checks == "fast" else {}
    with tempfile.TemporaryDirectory() as tmp:
        out = node_loss_scenario(POSTGRES_URL, tmp, ["meta_controller"], args.bars, args.rate, system_config)
    kill = out["kills"][0]
    print(json.dumps({
        "nodes": out["nodes_at_kill"], "failover_s": round(kill["decisions_resumed_s"], 2),
        "decisions_lost": out["bars"] - out["bars_decided"],
        "decisions_duplicated": out["decision_rows"] - out["bars_decided"],
        "meta_answered_s": round(kill["answered_s"], 2), "bars": out["bars"], "decided_before_kill": kill["decided_before"],
        "moved": kill["node"] != kill["moved_to"], "batches_resent": out["features"]["decision_batches_resent"],
        "offline_duplicates": out["offline_duplicates"],
        "health_checks": system_config or "ray defaults"}))


if __name__ == "__main__":
    main()
