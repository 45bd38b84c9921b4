"""Point-in-time sports feature speed on each sport's full archive file; prints JSON.

ms per 1,000 games is the best of --repeats runs of build_features on the whole game table (loading excluded,
reported separately). Target from issue 5: under 20 ms per 1,000 games.
Usage: python bench/sports_features.py [--repeats N] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeray.sports.features import build_features, feature_columns  # noqa: E402
from edgeray.sports.games import SPORTS, find_sport_files, read_sport  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sports"
TARGET_MS_PER_1000 = 20.0


def bench(sport: str, data_dir: Path, repeats: int) -> dict:
    t = time.perf_counter()
    table = read_sport(sport, data_dir)
    load_s = time.perf_counter() - t
    games = table.games
    build_features(games)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        frame = build_features(games)
        times.append(time.perf_counter() - t)
    best = min(times)
    ms = best * 1000 / len(games) * 1000
    files = table.info["source"]
    return {"sport": sport, "file": files if isinstance(files, list) else [files], "games": len(games), "features": len(feature_columns(frame)),
            "ms_per_1000_games": round(ms, 3), "ms_per_1000_games_median": round(sorted(times)[len(times) // 2]
                                                                                * 1e6 / len(games), 3),
            "build_s": round(best, 4), "load_s": round(load_s, 3), "rejected_rows": table.info["rows_rejected"],
            **({"weather_join_rate": round(table.info["weather_join_rate"], 4)} if sport == "nfl" else {}),
            "meets_target": ms < TARGET_MS_PER_1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    missing = [s for s in SPORTS if not find_sport_files(s, args.data_dir)]
    if missing:
        sys.exit(f"no archive for {missing} in {args.data_dir}")
    results = [bench(s, args.data_dir, args.repeats) for s in SPORTS]
    print(json.dumps({"bench": "sports_features", "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                      "python": platform.python_version(), "target_ms_per_1000_games": TARGET_MS_PER_1000,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
