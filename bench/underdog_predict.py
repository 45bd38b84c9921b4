"""Underdog predictions for one day's slate: how long `predict` takes once the model is loaded and the
sport's features are cached (the first call builds them; later calls, as the API and a notebook make them,
price the slate). Trains a model first when --model-dir holds none. Prints JSON.
Usage: python bench/underdog_predict.py [--sport ncaam] [--repeats 50] [--model-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeray.underdog import model as underdog_model  # noqa: E402
from edgeray.underdog.model import predict, train  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sports"
TRAIN_SEASONS = {"ncaam": [2019, 2020], "nba": [2019, 2020], "nfl": [2018, 2019, 2020], "mlb": [2011, 2012],
                 "ncaaf": [2018, 2019]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sport", default="ncaam", choices=sorted(TRAIN_SEASONS))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()
    model_dir = args.model_dir or Path(tempfile.mkdtemp()) / "underdog"
    if not (model_dir / "latest").exists():
        train(DATA, model_dir, seasons=TRAIN_SEASONS[args.sport], sport=args.sport)
    underdog_model._FRAMES.clear()  # the first call as a fresh process makes it: features built from the files
    t = time.perf_counter()
    first = predict(model_dir, DATA)
    first_ms = (time.perf_counter() - t) * 1000
    slate_day = first.attrs["date"].replace("-", "")
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        picks = predict(model_dir, DATA, date=slate_day)
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"bench": "underdog_predict", "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                      "sport": args.sport, "date": first.attrs["date"], "games_on_slate": len(picks),
                      "first_call_ms": round(first_ms, 1), "predict_ms_p50": round(float(np.percentile(times, 50)), 2),
                      "predict_ms_p99": round(float(np.percentile(times, 99)), 2), "repeats": args.repeats,
                      "target_ms": 100}, indent=2))


if __name__ == "__main__":
    main()
