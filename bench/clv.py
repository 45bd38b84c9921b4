"""Where an edge is measured: opening vs closing lines, margin-free CLV, the line-movement model and the value
strategy on the real multi-book odds stream. Prints one JSON object.

- `sports.<sport>` (MLB moneylines, NFL spreads): a model trained on earlier seasons, bets placed at the open
  (edgeray.clv.sport_clv_report): open/close/model log loss, CLV points and ROI with 95% CIs.
- `line_movement`: the open->close move model on MLB 2013 (edgeray.sports.linemove), against blind baselines.
- `stream`: the value strategy on streams/mlb_h2h_2026-07.csv in the core (edgeray.value.stream_value_report), and
  the same file replayed through the real actors with the decision loop attached (`through_loop`: events/s through
  ingestion, bets booked after risk and veto and their CLV against each book's closing line).
Usage: python bench/clv.py [--no-loop] [--min-edge 0.02]
"""
from __future__ import annotations

import argparse
import json
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

from edgeray.clv import sport_clv_report  # noqa: E402
from edgeray.sports.games import load_sport  # noqa: E402
from edgeray.sports.linemove import line_movement_report  # noqa: E402
from edgeray.value import score_bets, stream_value_report, validated_quotes  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
STREAM = DATA / "streams" / "mlb_h2h_2026-07.csv"
SPORT_KEYS = ("forecast_games", "bets", "open_log_loss", "close_log_loss", "model_log_loss", "clv_points_mean", "clv_points_ci",
              "clv_price_pct_mean", "clv_price_pct_ci", "roi", "roi_ci", "model_minus_open_log_loss", "edge_claimed")
STREAM_KEYS = ("bets", "games", "clv_points_mean", "clv_points_ci", "clv_points_consensus_mean", "clv_points_consensus_ci",
               "clv_price_pct_mean", "clv_price_pct_ci", "positive_clv_share", "feature_rows_per_s")


def rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return rounded(value.item())
    return value


def sports() -> dict:
    out = {}
    for sport, market in (("mlb", "moneyline"), ("nfl", "spread")):
        report = sport_clv_report(sport, DATA / "sports")
        out[sport] = {"market": market, **{k: report.get(k) for k in SPORT_KEYS}}
    return out


def line_movement() -> dict:
    """The default model, and the conservative one: no starting pitchers (the archive names the pitcher who did
    start, which a late scratch makes unknown at the open) and only games two or more days earlier (MLB openers can
    be posted before the previous night's games close)."""
    games = load_sport("mlb", DATA / "sports")
    keep = ("bets", "direction_accuracy", "clv_points_mean", "clv_points_ci", "roi", "roi_ci")
    out = {"train_seasons": [2010, 2011, 2012], "test_season": 2013}
    for name, kwargs in (("default", {}), ("conservative", {"pitchers": False, "lag_days": 2, "team_features": False})):
        report = line_movement_report(games, [2010, 2011, 2012], [2013], **kwargs)
        out[name] = {"settings": kwargs, "model": {k: report["model_bets"].get(k) for k in keep},
                     "model_all_games": {k: report["model_bets_all_games"].get(k) for k in keep},
                     "edge_claimed": report["edge_claimed"]}
        out.setdefault("baselines", {name: {k: b.get(k) for k in keep} for name, b in report["baselines"].items()})
    return out


def through_loop(min_edge: float) -> dict:
    """The stream file through ingestion, the streamer and the meta-controller (as `edgeray run` would replay it)."""
    import ray

    from actors.pipeline import META_CONTROLLER, Pipeline
    from edgeray.audit import AuditLog
    from edgeray.config import PipelineConfig, SourceConfig

    ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False, log_to_driver=False)
    tmp = Path(tempfile.mkdtemp(prefix="edgeray-clv-"))
    base = PipelineConfig.load(ROOT / "configs" / "pipeline.yaml").model_dump()
    cfg = PipelineConfig.model_validate({
        **base, "namespace": "benchclv", "run_dir": str(tmp / "run"),
        "feast": {**base["feast"], "directory": str(tmp / "feast"), "project": "benchclv"},
        "decisions": {**base["decisions"], "value": {**base["decisions"]["value"], "min_edge": min_edge}}})
    pipeline = Pipeline.start(cfg)
    started = time.perf_counter()
    replay = ray.get(pipeline.replay_async([SourceConfig(type="odds_stream", path=str(STREAM), sport="mlb")], rate=0))
    status = pipeline.finish()
    loop_s = time.perf_counter() - started
    book = ray.get(pipeline.decision[META_CONTROLLER].bet_book.remote())
    audit = AuditLog(cfg.audit_url)
    proposals = {r["decision_id"]: r for r in audit.range("2000-01-01", "2100-01-01", stage="bet_decision", limit=1_000_000)}
    booked = audit.range("2000-01-01", "2100-01-01", stage="bet", limit=1_000_000)
    pipeline.shutdown()
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)

    quotes = validated_quotes(STREAM)[0]
    bets = pd.DataFrame([{"symbol": proposals[r["decision_id"]]["payload"]["game"], "event_ts": r["event_ts"],
                          "side": r["payload"]["side"], "bookmaker": r["payload"]["bookmaker"],
                          "decimal_odds": r["payload"]["decimal_odds"], "stake": r["payload"]["stake"],
                          "book_prob_fair": proposals[r["decision_id"]]["payload"]["book_prob_fair"]} for r in booked])
    scored = score_bets(bets, quotes) if len(bets) else {}
    verdicts = {k: v for k, v in status["decisions"]["verdicts"].items() if k.startswith("bet_")}
    return {"events": replay["events"], "replay_s": round(replay["elapsed_s"], 3),
            "events_per_s": round(replay["events"] / replay["elapsed_s"]),
            "events_per_s_until_decided": round(replay["events"] / loop_s),
            "proposed": len(proposals), "booked": len(booked), "verdicts": verdicts,
            "open_stake": round(sum(b["stake"] for b in book["open"]), 2),
            **{k: scored.get(k) for k in ("clv_points_mean", "clv_points_ci", "clv_price_pct_mean", "clv_price_pct_ci")}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-loop", action="store_true", help="skip the replay through the Ray actors")
    parser.add_argument("--min-edge", type=float, default=0.02, help="the value strategy's edge threshold")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: the benchmark reads the real archives and stream")
    started = time.perf_counter()
    stream = {f"min_edge_{e}": {k: (stream_value_report(STREAM, min_edge=e) or {}).get(k) for k in STREAM_KEYS}
              for e in sorted({args.min_edge, 0.04})}
    out = {"bench": "clv", "machine": f"{platform.machine()} {__import__('os').cpu_count()} cpus",
           "sports": sports(), "line_movement": line_movement(), "stream": stream}
    if not args.no_loop:
        out["stream"]["through_loop"] = through_loop(args.min_edge)
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(rounded(out), indent=1, default=str))


if __name__ == "__main__":
    main()
