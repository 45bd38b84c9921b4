"""The `edgeray` command line."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from pydantic import ValidationError

from edgeray.config import PipelineConfig, SourceConfig

app = typer.Typer(help="edgeray: find and size an edge in betting and trading markets, on Ray.", no_args_is_help=True)
console = Console()
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML", exists=True, dir_okay=False)]


def _load_config(path: Path) -> PipelineConfig:
    try:
        return PipelineConfig.load(path)
    except ValidationError as exc:
        for err in exc.errors():
            console.print(f"[red]{path}: {'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})[/]")
        raise typer.Exit(2) from None


def _summary_table(status: dict, elapsed_s: float) -> Table:
    ing, feat = status["ingestion"], status["features"]
    table = Table(title="edgeray run", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("events in (received)", f"{ing['received']:,}"),
        ("accepted", f"{ing['accepted']:,}"),
        ("rejected", f"{ing['rejected']:,}"),
        *[(f"  rejected: {reason}", f"{n:,}") for reason, n in sorted(ing["rejected_by_reason"].items())],
        ("duplicates", f"{ing['duplicates']:,}"),
        ("received = accepted + rejected + duplicates",
         str(ing["received"] == ing["accepted"] + ing["rejected"] + ing["duplicates"])),
        ("feature rows computed", f"{feat['feature_rows']:,}"),
        ("online rows written (latest per entity per batch)", f"{feat['online_rows_written']:,}"),
        ("offline history rows written", f"{feat['offline_rows_written']:,}"),
        ("replay wall time", f"{elapsed_s:.2f} s"),
        ("throughput", f"{ing['received'] / elapsed_s:,.0f} events/s" if elapsed_s else "-"),
        ("event-to-feature latency p50", f"{feat['latency_ms_p50']:.2f} ms" if feat["latency_ms_p50"] is not None else "-"),
        ("event-to-feature latency p99", f"{feat['latency_ms_p99']:.2f} ms" if feat["latency_ms_p99"] is not None else "-"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


@app.command()
def run(config: ConfigOption = Path("configs/pipeline.yaml"),
        source: Annotated[Optional[Path], typer.Option(help="Replay this bars CSV instead of the configured sources")] = None,
        symbol: Annotated[str, typer.Option(help="Symbol for --source")] = "BTCUSDT-PERP",
        rate: Annotated[Optional[float], typer.Option(help="Event-seconds per wall-second; 0 = full speed")] = None,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the summary as JSON here")] = None,
        keep: Annotated[bool, typer.Option(help="Leave the actors running (detached) after the replay")] = False) -> None:
    """The main job: replay market data through ingestion and feature streaming into Feast."""
    import ray

    from actors.pipeline import Pipeline, resolve_sources

    cfg = _load_config(config)
    sources = [SourceConfig(type="bars", path=str(source), symbol=symbol)] if source else resolve_sources(cfg)
    for s in sources:
        console.print(f"source: [bold]{s.type}[/] {s.path or ''} {s.symbol or ''}")
    pipeline = Pipeline.start(cfg, detached=keep, fresh=True)
    ref = pipeline.replay_async(sources, rate)
    with Progress(TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("replay", total=None)
        while True:
            ready, _ = ray.wait([ref], timeout=0.25)  # poll for the progress bar only
            replay = ray.get(pipeline.ingestion.status.remote())["replay"]
            progress.update(task, completed=replay.get("done", 0), total=replay.get("total"))
            if ready:
                result = ray.get(ref)
                break
    status = pipeline.finish()
    console.print(_summary_table(status, result["elapsed_s"]))
    if pipeline.decision:
        status["decision_report"] = _decision_report(pipeline, status, cfg)
    if json_out:
        json_out.write_text(json.dumps({**status, "elapsed_s": result["elapsed_s"]}, indent=2, default=str))
    if not keep:
        pipeline.shutdown()


def _decision_report(pipeline, status: dict, cfg: PipelineConfig) -> dict:
    """Decisions, verdicts by reason, holds, PnL, Sharpe, drawdown, per-strategy pulls, PNG curve."""
    import ray

    from edgeray.report import performance, plot_equity

    loop = pipeline.decision
    equity = ray.get(loop["executor"].equity_curve.remote())
    arms = ray.get(loop["meta_controller"].arms.remote())
    pending = ray.get(loop["veto_gate"].pending.remote())
    perf = performance(equity)
    png = plot_equity(equity, Path(cfg.run_dir) / "equity_curve.png") if len(equity) else None
    d = status["decisions"]
    table = Table(title="decision loop", header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("decisions", f"{d['decisions']:,}")
    table.add_row("orders proposed", f"{d['orders']:,}")
    for key, n in sorted(d["verdicts"].items()):
        table.add_row(f"  {key.replace('_', ' ', 1)}", f"{n:,}")
    table.add_row("veto holds waiting for a human", f"{len(pending):,}")
    table.add_row("PnL", f"{perf['pnl']:,.2f}")
    table.add_row("Sharpe (annualised, per-bar)", f"{perf['sharpe']:.2f}" if perf["sharpe"] is not None else "-")
    table.add_row("max drawdown", f"{perf['max_drawdown']:.2%}")
    table.add_row("decision latency p50 / p99", f"{d['latency_ms_p50'] or 0:.1f} / {d['latency_ms_p99'] or 0:.1f} ms")
    for shadow in d["shadows"]:
        table.add_row(f"shadow {shadow['name']} delta PnL vs live", f"{shadow['delta_pnl_vs_live']:,.2f}")
    console.print(table)
    arm_table = Table(title="strategies (LinUCB arms)", header_style="bold")
    for col in ("arm", "enabled", "pulls", "mean reward", "risk budget"):
        arm_table.add_column(col, justify="right" if col != "arm" else "left")
    for a in arms:
        arm_table.add_row(a["arm"], str(a["enabled"]), f"{a['pulls']:,}", f"{a['mean_reward']:.5f}", f"{a['risk_budget']:.2f}")
    console.print(arm_table)
    if png:
        console.print(f"equity curve: [bold]{png}[/]")
    return {**perf, "arms": arms, "holds_pending": len(pending), "equity_png": str(png) if png else None}


def _risk_actor(config: Path):
    import ray

    from actors.pipeline import RISK_MONITOR, ensure_ray

    cfg = _load_config(config)
    ensure_ray(cfg)
    try:
        return ray.get_actor(RISK_MONITOR, namespace=cfg.namespace)
    except ValueError:
        console.print(f"[red]no running decision loop in namespace {cfg.namespace!r} (start one with `edgeray run --keep`)[/]")
        raise typer.Exit(1) from None


@app.command("kill-switch")
def kill_switch(reason: Annotated[str, typer.Option(help="Why (goes to the audit log)")],
                config: ConfigOption = Path("configs/pipeline.yaml")) -> None:
    """Halt every new decision and cancel unfilled orders in the running loop (audited)."""
    import getpass

    import ray

    event = ray.get(_risk_actor(config).kill.remote(reason, f"cli:{getpass.getuser()}"))
    console.print(f"[red bold]kill switch ON[/] at {event['ts']}; cancelled {len(event['cancelled_orders'])} unfilled orders")


@app.command()
def resume(config: ConfigOption = Path("configs/pipeline.yaml")) -> None:
    """Lift the kill switch (audited)."""
    import getpass

    import ray

    event = ray.get(_risk_actor(config).resume.remote(f"cli:{getpass.getuser()}"))
    console.print(f"[green]kill switch off[/] at {event['ts']}")


def _seasons(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        console.print(f"[red]seasons: expected comma-separated years like 2019,2020, got {text!r}[/]")
        raise typer.Exit(2) from None


@app.command()
def train(sport: Annotated[str, typer.Option(help="ncaam, nba or nfl")],
          model: Annotated[str, typer.Option(help="Model family: statistical, ensemble, neural, lstm")],
          name: Annotated[Optional[str], typer.Option(help="Model within the family (default: the family's first)")] = None,
          train_seasons: Annotated[Optional[str], typer.Option(help="e.g. 2018,2019,2020 (default: 3 before the test season)")] = None,
          test_seasons: Annotated[Optional[str], typer.Option(help="e.g. 2021 (default: the latest season)")] = None,
          data_dir: Annotated[Optional[Path], typer.Option(help="Folder with the sports CSV files")] = None,
          registry: Annotated[Path, typer.Option(help="Model registry folder")] = Path("runs/registry"),
          device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
          json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON here")] = None) -> None:
    """Train a sport model on earlier seasons, evaluate it against the market on later ones, register it."""
    from edgeray.sports.train import train_sport_model

    params = {"sport": sport.lower(), "family": model.lower(), "name": name, "train_seasons": _seasons(train_seasons),
              "test_seasons": _seasons(test_seasons), "data_dir": str(data_dir) if data_dir else None,
              "registry_dir": str(registry)}
    with Progress(TextColumn("[bold]train {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"{params['sport']}/{params['family']}", total=None, info="")

        def on_epoch(epoch: int, total: int, info: dict) -> None:
            loss = info.get("loss")
            progress.update(task, completed=epoch, total=total, info=f"loss {loss:.4f}" if isinstance(loss, float) else "")

        try:
            result = train_sport_model(params, on_epoch, device)
        except ValueError as exc:
            progress.stop()
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None
    report, perf = result["report"], result["performance"]
    table = Table(title=f"{report['sport']} {report['family']}/{report['name']}: test seasons {report['test_seasons']}",
                  header_style="bold")
    for col in ("metric", "model", "market"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for metric in ("log_loss", "brier", "accuracy", "auc"):
        m, k = report["model"].get(metric), report["market"].get(metric)
        table.add_row(metric, f"{m:.4f}" if m is not None else "-", f"{k:.4f}" if k is not None else "-")
    table.add_row("bets / ROI (edge >= 2 pts, closing odds)", f"{perf['n_bets']:,} / {perf['roi']:.2%}", "")
    console.print(table)
    console.print(report["summary"])
    console.print(f"registered as model {result['model_id']} (version {result['version']}) in {registry}")
    if json_out:
        from edgeray.audit import jsonable

        json_out.write_text(json.dumps(jsonable(result), indent=2))


underdog_app = typer.Typer(help="The NCAAM underdog model: train, predict, backtest, compare.", no_args_is_help=True)
app.add_typer(underdog_app, name="underdog")
UnderdogDir = Annotated[Path, typer.Option("--model-dir", help="Artefacts of the trained run")]
SportsData = Annotated[Path, typer.Option("--data-dir", help="Folder with ncaab_sbr_closing_2012_2022.csv")]
DEFAULT_UNDERDOG_DIR = Path("runs/underdog")
DEFAULT_SPORTS_DATA = Path("../shared/data/sports")


def _underdog_call(fn, *args, **kwargs):
    """Clear errors, not tracebacks: no trained model, too few games, a bad tier or date."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


def _tiers(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",")] if text else None


@underdog_app.command("train")
def underdog_train(tiers: Annotated[Optional[str], typer.Option(help="e.g. moderate,heavy")] = None,
                   seasons: Annotated[Optional[str], typer.Option(help="e.g. 2018,2019,2020")] = None,
                   model_dir: UnderdogDir = DEFAULT_UNDERDOG_DIR, data_dir: SportsData = DEFAULT_SPORTS_DATA) -> None:
    """Train the base and market-aware models on underdog games (chronological 70/30 validation)."""
    from edgeray.underdog.model import train as train_underdog

    with console.status("training the underdog models (two L2 logistic regressions, 1,500 steps each)"):
        metrics = _underdog_call(train_underdog, data_dir, model_dir, tiers=_tiers(tiers), seasons=_seasons(seasons))
    table = Table(title="underdog model: validation (latest 30%) vs the market", header_style="bold")
    for col in ("tier", "games", "log loss", "market", "Brier", "market", "ECE"):
        table.add_column(col, justify="right" if col != "tier" else "left")
    for tier, m in (metrics.get("validation_by_tier") or {"all": metrics.get("validation", {})}).items():
        model, market = m.get("model", m), m.get("market", {})
        table.add_row(tier, f"{m.get('n', 0):,}", f"{model.get('log_loss', float('nan')):.4f}", f"{market.get('log_loss', float('nan')):.4f}",
                      f"{model.get('brier', float('nan')):.4f}", f"{market.get('brier', float('nan')):.4f}", f"{model.get('ece', float('nan')):.3f}")
    console.print(table)
    console.print(f"artefacts in {model_dir}")


@underdog_app.command("predict")
def underdog_predict(date: Annotated[Optional[str], typer.Option(help="YYYYMMDD (default: the latest date in the data)")] = None,
                     min_odds: Annotated[int, typer.Option(help="American odds, e.g. 110")] = 100,
                     max_odds: Annotated[Optional[int], typer.Option(help="American odds, e.g. 299")] = None,
                     model_dir: UnderdogDir = DEFAULT_UNDERDOG_DIR, data_dir: SportsData = DEFAULT_SPORTS_DATA) -> None:
    """Underdog picks for a date with edge, EV per $10, fractional Kelly and a confidence class."""
    from edgeray.underdog.model import predict

    picks = _underdog_call(predict, model_dir, data_dir, date=date, min_odds=min_odds, max_odds=max_odds)
    table = Table(title=f"underdog picks ({len(picks)} games)", header_style="bold")
    for col in ("date", "team", "opponent", "odds", "model p", "market p", "edge", "EV/$10", "Kelly", "confidence"):
        table.add_column(col, justify="left" if col in ("date", "team", "opponent", "confidence") else "right")
    for _, r in picks.iterrows():
        table.add_row(str(pd_date(r["date"])), str(r["team"]), str(r["opponent"]), f"{r['american_odds']:+.0f}", f"{r['model_prob']:.3f}",
                      f"{r['market_prob']:.3f}", f"{r['edge']:+.3f}", f"{r['ev_per_10']:+.2f}", f"{r['kelly']:.3f}", str(r["confidence"]))
    console.print(table)


def pd_date(value) -> str:
    import pandas as pd

    return pd.Timestamp(value).strftime("%Y-%m-%d")


@underdog_app.command("backtest")
def underdog_backtest(seasons: Annotated[Optional[str], typer.Option(help="e.g. 2020,2021")] = None,
                      tiers: Annotated[Optional[str], typer.Option(help="e.g. moderate,heavy")] = None,
                      min_edge: Annotated[float, typer.Option(help="Minimum model - market probability")] = 0.03,
                      bankroll: Annotated[float, typer.Option(help="Initial bankroll")] = 1000.0,
                      model_dir: UnderdogDir = DEFAULT_UNDERDOG_DIR, data_dir: SportsData = DEFAULT_SPORTS_DATA,
                      json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics as JSON")] = None) -> None:
    """Backtest the underdog model's bets (quarter Kelly, capped at 10%) on games after its training window."""
    from edgeray.backtest.engine import SizingSpec, run_bets
    from edgeray.backtest.metrics import by_odds_range_frame
    from edgeray.backtest.plots import plot_equity, plot_reliability, plot_roi_by_odds
    from edgeray.underdog.model import backtest_opportunities

    opportunities = _underdog_call(backtest_opportunities, model_dir, data_dir, seasons=_seasons(seasons), tiers=_tiers(tiers))
    spec = SizingSpec(method="kelly", kelly_fraction=0.25, kelly_cap=0.10, min_edge=min_edge)
    result = _underdog_call(run_bets, opportunities, spec, bankroll)
    m = result.metrics
    out = model_dir / "backtest"
    pngs = [plot_equity({"underdog quarter Kelly": result.equity}, out / "equity.png"), plot_roi_by_odds(m, out / "roi_by_odds.png")]
    placed = result.bets[result.bets["placed"]]
    if len(placed):
        pngs.append(plot_reliability(placed["model_prob"].to_numpy(), placed["won"].to_numpy(), out / "reliability.png"))
    summary = Table(title=f"underdog backtest: {m['total_bets']:,} bets", header_style="bold")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key, fmt in (("win_rate", "{:.1%}"), ("profit", "{:,.2f}"), ("roi", "{:.2%}"), ("max_drawdown", "{:.1%}"),
                     ("sharpe", "{:.2f}"), ("clv_mean_points", "{:.2f}"), ("ece", "{:.3f}"), ("brier", "{:.4f}")):
        value = m.get(key)
        summary.add_row(key, fmt.format(value) if isinstance(value, (int, float)) and value == value else "-")
    lo, hi = m.get("roi_ci95", [float("nan")] * 2)
    summary.add_row("ROI 95% CI (bootstrap by date)", f"[{lo:.2%}, {hi:.2%}]")
    console.print(summary)
    buckets = by_odds_range_frame(m)
    table = Table(title="by odds range", header_style="bold")
    for col in ("range", "bets", "win rate", "profit", "ROI", "ROI 95% CI"):
        table.add_column(col, justify="left" if col == "range" else "right")
    for label, r in buckets.iterrows():
        if r.get("bets", 0):
            table.add_row(str(label), f"{int(r['bets']):,}", f"{r['win_rate']:.1%}", f"{r['profit']:,.2f}", f"{r['roi']:.1%}",
                          f"[{r['roi_ci_low']:.1%}, {r['roi_ci_high']:.1%}]")
    console.print(table)
    console.print("plots: " + ", ".join(str(p) for p in pngs))
    if json_out:
        json_out.write_text(json.dumps(result.to_dict(), indent=2, default=str))


@underdog_app.command("compare")
def underdog_compare(seasons: Annotated[Optional[str], typer.Option(help="e.g. 2020,2021")] = None,
                     model_dir: UnderdogDir = DEFAULT_UNDERDOG_DIR, data_dir: SportsData = DEFAULT_SPORTS_DATA) -> None:
    """The underdog model vs the general model on the same underdog games."""
    from edgeray.underdog.model import compare

    result = _underdog_call(compare, model_dir, data_dir, seasons=_seasons(seasons))
    console.print_json(data=json.loads(json.dumps(result, default=str)))


@app.command()
def features(symbol: str, config: ConfigOption = Path("configs/pipeline.yaml")) -> None:
    """Show the latest online feature vector for a symbol (the decision loop's read path)."""
    from actors.feature_streamer import feast_settings
    from edgeray.feature_repo.definitions import MARKET_VIEW
    from edgeray.featurestore import FeatureReader, open_store

    cfg = _load_config(config)
    reader = FeatureReader(open_store(feast_settings(cfg)), MARKET_VIEW, cfg.features.spec().names)
    vector = reader.latest(symbol)
    if vector is None:
        console.print(f"[red]symbol {symbol!r}: no features in the online store[/]")
        raise typer.Exit(1)
    table = Table(title=f"{symbol} @ {vector.event_ts}")
    table.add_column("feature")
    table.add_column("value", justify="right")
    for name, value in vector.values.items():
        table.add_row(name, f"{value:.6g}")
    console.print(table)


@app.command("dead-letters")
def dead_letters(config: ConfigOption = Path("configs/pipeline.yaml"),
                 limit: Annotated[int, typer.Option(help="How many records", min=0)] = 20,
                 offset: Annotated[int, typer.Option(help="Skip this many of the newest first", min=0)] = 0) -> None:
    """Show rejected rows and why they were rejected, newest page first (read from the end of the files)."""
    from edgeray.deadletter import DeadLetterStore

    cfg = _load_config(config)
    ing = cfg.ingestion
    store = DeadLetterStore(Path(cfg.run_dir) / "deadletters.jsonl", ing.deadletter_max_bytes, ing.deadletter_keep_files)
    page = store.read_page(limit, offset)
    first = max(page["total"] - offset - len(page["items"]), 0)
    table = Table(title=f"dead letters {first + 1}-{first + len(page['items'])} of {page['total']} ({store.path})")
    for col in ("kind", "reason", "field", "value", "raw"):
        table.add_column(col, overflow="fold")
    for rec in page["items"]:
        raw = rec["raw"] if isinstance(rec["raw"], str) else json.dumps(rec["raw"])
        table.add_row(rec["kind"], rec["reason"], rec["field"], str(rec["value"]), raw[:120])
    console.print(table)


def _fail(message: str) -> None:
    console.print(f"[red]{message}[/]")
    raise typer.Exit(2)


keys_app = typer.Typer(help="API keys for the HTTP API (a YAML file of names, roles and SHA-256 digests).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
KeyFileOption = Annotated[str, typer.Option("--file", help="key file (EDGERAY_API_KEYS_FILE)")]


@keys_app.command("add")
def keys_add(name: Annotated[str, typer.Option(help="who holds the key (shown in job lists and the audit log)")],
             role: Annotated[str, typer.Option(help="viewer, trader, admin or feed")],
             file: KeyFileOption = os.environ.get("EDGERAY_API_KEYS_FILE", "~/.config/edgeray/api_keys.yaml")) -> None:
    """Create a key; it is printed once and only its digest is stored."""
    from edgeray.auth import KeyConfigError, add_key

    try:
        key = add_key(file, name, role)
    except KeyConfigError as exc:
        _fail(str(exc))
    console.print(f"key for {name} ({role}), shown once; send it as the X-API-Key header:")
    print(key)


@keys_app.command("list")
def keys_list(file: KeyFileOption = os.environ.get("EDGERAY_API_KEYS_FILE", "~/.config/edgeray/api_keys.yaml")) -> None:
    """Names and roles in the key file (never keys or digests)."""
    from edgeray.auth import KeyConfigError, load_key_file

    try:
        entries = load_key_file(file)
    except KeyConfigError as exc:
        _fail(str(exc))
    for entry in entries:
        print(f"{entry.name}\t{entry.role}")


if __name__ == "__main__":
    app()
