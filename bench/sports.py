"""Sports models on real seasons: feature speed per 1,000 games, training time per model family,
and each model's log loss and Brier against the market's margin-free closing price on a held-out
later season. Prints JSON.
Each model's p-value against the market is the Diebold-Mariano test on per-game log loss.
Usage: python bench/sports.py [--sports nba,nfl,ncaam,mlb,ncaaf] [--all-models]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sports_features import bench as feature_bench  # noqa: E402
from edgeray.sports.features import build_features  # noqa: E402
from edgeray.sports.games import load_sport  # noqa: E402
from edgeray.sports.models import FAMILIES, train_and_evaluate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sports"
SPLITS = {"nba": ([2018, 2019, 2020], [2021]), "nfl": ([2017, 2018, 2019, 2020], [2021]),
          "ncaam": ([2018, 2019, 2020], [2021]), "mlb": ([2010, 2011, 2012], [2013]),
          "ncaaf": ([2016, 2017, 2018, 2019], [2021])}  # NCAAF 2020 has no moneylines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sports", default="nba,nfl,ncaam,mlb,ncaaf")
    parser.add_argument("--all-models", action="store_true", help="every model of every family, not each family's first")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: the benchmark uses the real sports archives")
    torch.set_num_threads(1)  # measured faster on this 2-core machine for these small networks
    out = {"bench": "sports", "machine": f"{platform.machine()} {os.cpu_count()} cpus", "sports": {}}
    for sport in args.sports.split(","):
        frame = build_features(load_sport(sport, DATA))
        train, test = SPLITS[sport]
        models = []
        for family, names in FAMILIES.items():
            for name in (names if args.all_models else names[:1]):
                _, report = train_and_evaluate(sport, family, name, {}, frame, train, test)
                models.append({"family": family, "name": name, "fit_s": report["fit_seconds"],
                               "log_loss": round(report["model"]["log_loss"], 4), "brier": round(report["model"]["brier"], 4),
                               "market_log_loss": round(report["market"]["log_loss"], 4),
                               "market_brier": round(report["market"]["brier"], 4),
                               "beats_market_log_loss": report["beats_market_log_loss"], "n_test": report["n"],
                               "p_value_vs_market": report["significance"]["p_value"],
                               "log_loss_diff_ci95": report["significance"]["ci95"]})
        out["sports"][sport] = {"features": feature_bench(sport, DATA, 3), "train_seasons": train, "test_seasons": test,
                                "models": models}
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
