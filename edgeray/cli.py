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
# markup=False: user text (file names, values, error messages with [...] in them) prints as it is.
console = Console(markup=False, highlight=False)
err_console = Console(stderr=True, markup=False, highlight=False)
ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", "-c", dir_okay=False,
    help="Pipeline YAML (default: ./configs/pipeline.yaml if it exists, else the packaged default)")]
REPO_CONFIG = Path("configs/pipeline.yaml")
_DEBUG = {"on": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors")] = False) -> None:
    """edgeray: find and size an edge in betting and trading markets, on Ray."""
    _DEBUG["on"] = _DEBUG["on"] or debug


def _error(message: str, code: int = 2, hint: str | None = None):
    """A user mistake: one or two plain lines on stderr, exit `code` (a traceback only under --debug)."""
    err_console.print(message, style="red", soft_wrap=True)
    if hint:
        err_console.print(hint, soft_wrap=True)
    raise typer.Exit(code)


def _config_path(path: Path | None) -> tuple[Path, bool]:
    """The config to use and whether it is the packaged default (outputs then go under ./runs)."""
    from edgeray.config import DEFAULT_PIPELINE

    if path is not None:
        if not path.exists():
            _error(f"--config {path}: no such file", hint="write one with `edgeray init DIR`, or leave --config out for the packaged default")
        if path.is_dir():
            _error(f"--config {path}: is a folder; give its pipeline.yaml")
        return path, False
    if REPO_CONFIG.exists():
        return REPO_CONFIG, False
    return DEFAULT_PIPELINE, True


def _load_config(path: Path | None) -> PipelineConfig:
    from edgeray.config import ConfigFileError

    path, packaged = _config_path(path)
    try:
        return PipelineConfig.load(path, outputs_base=Path.cwd() if packaged else None)
    except ConfigFileError as exc:
        _error(str(exc))
    except ValidationError as exc:
        for err in exc.errors():
            err_console.print(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})",
                              style="red", soft_wrap=True)
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


MapOption = Annotated[Optional[list[str]], typer.Option(
    "--map", metavar="FILE_COLUMN=FIELD", help="Rename a file column for --source: FILE_COLUMN=FIELD, e.g. open_time=event_ts (repeatable)")]


@app.command()
def run(config: ConfigOption = None,
        source: Annotated[Optional[Path], typer.Option(help="Replay this bars CSV (or multi-book odds stream) instead of the configured sources")] = None,
        symbol: Annotated[str, typer.Option(help="Symbol for --source (added to ingestion.symbols for this run)")] = "BTCUSDT-PERP",
        fmt: Annotated[str, typer.Option("--format", help="--source layout: auto, ohlcv or kline")] = "auto",
        ts_unit: Annotated[str, typer.Option(help="--source timestamps: auto, iso, s, ms, us or ns")] = "auto",
        columns: MapOption = None,
        sport: Annotated[Optional[str], typer.Option(help="The games' sport when --source is an odds stream (mlb, nba, ...)")] = None,
        n_bars: Annotated[Optional[int], typer.Option(help="Bars per symbol of the seeded generator (default: the config's fallback.n_bars)", min=1)] = None,
        rate: Annotated[Optional[float], typer.Option(help="Event-seconds per wall-second; 0 = full speed")] = None,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the summary as JSON here")] = None,
        keep: Annotated[bool, typer.Option(help="Leave the actors running (detached) after the replay")] = False,
        check: Annotated[bool, typer.Option("--check", help="Check the config and the sources, then stop (Ray is not started)")] = False,
        debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors")] = False) -> None:
    """The main job: replay market data through ingestion and feature streaming into Feast."""
    _DEBUG["on"] = _DEBUG["on"] or debug
    cfg = _outputs_outside_job_copy(_load_config(config))
    cfg, sources = _plan_sources(cfg, source, symbol, fmt, ts_unit, columns, n_bars, check, sport)
    if check:
        console.print(f"check passed: config and {len(sources)} source(s) readable; outputs would go to "
                      f"{cfg.results_uri or cfg.run_dir}", soft_wrap=True)
        return
    try:
        _run(cfg, sources, rate, json_out, keep)
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the user; the traceback with --debug
        if _DEBUG["on"]:
            raise
        _error(f"edgeray run failed: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}",
               code=1, hint="run again with --debug for the traceback")


def _outputs_outside_job_copy(cfg: PipelineConfig) -> PipelineConfig:
    """Under `ray job submit --working-dir`, outputs configured inside Ray's temporary copy of that folder
    (deleted after the job) go to EDGERAY_HOME/jobs/<submission id>/ instead, and the job says so."""
    from edgeray.storage import job_home, outside_job_copy, submitted_job, where

    job = submitted_job()
    if job is None or not job["working_dir"]:
        return cfg
    home, copy = job_home(job["submission_id"]), Path.cwd()
    data = cfg.model_dump()
    data["run_dir"] = outside_job_copy(cfg.run_dir, copy, home)
    data["feast"]["directory"] = outside_job_copy(cfg.feast.directory, copy, home)
    for key in ("registry_dir", "queue_db"):
        data["sports"][key] = outside_job_copy(data["sports"][key], copy, home)
    if data != cfg.model_dump():
        console.print(f"ray job {job['submission_id']}: outputs kept outside Ray's temporary working-dir copy, in "
                      f"{where(home)}", soft_wrap=True)
    return PipelineConfig.model_validate(data)


def _column_map(items: list[str] | None, example: str = "open_time=event_ts") -> dict[str, str]:
    mapping = {}
    for item in items or []:
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            _error(f"--map {item!r}: expected FILE_COLUMN=FIELD, e.g. --map {example}")
        mapping[src.strip()] = dst.strip()
    return mapping


def _is_odds_stream(path: Path) -> bool:
    """Whether a --source file's header is the multi-book odds stream layout (an unreadable file is left to the
    bars reader, which says what is wrong with it)."""
    from edgeray.loaders.odds_stream import is_odds_stream

    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return is_odds_stream(fh.readline().split(","))
    except OSError:
        return False


def _plan_sources(cfg: PipelineConfig, source: Path | None, symbol: str, fmt: str, ts_unit: str,
                  columns: list[str] | None, n_bars: int | None, check: bool = False,
                  sport: str | None = None) -> tuple[PipelineConfig, list[SourceConfig]]:
    """Resolve and check the sources before Ray starts: a bad file is reported in seconds, not minutes."""
    from edgeray.deadletter import open_deadletter_store
    from edgeray.sources import SourceError, inspect_source, source_available

    if cfg.decisions.enabled:
        for key in ("risk_config", "veto_config"):
            path = Path(getattr(cfg.decisions, key))
            if not path.is_file():
                _error(f"decisions.{key}: no such file {path}",
                       hint="relative paths in a config are read from the config's folder; `edgeray init DIR` writes both files")
    if fmt not in ("auto", "ohlcv", "kline"):
        _error(f"--format {fmt!r}: expected auto, ohlcv or kline")
    if ts_unit not in ("auto", "iso", "s", "ms", "us", "ns"):
        _error(f"--ts-unit {ts_unit!r}: expected auto, iso, s, ms, us or ns")
    mapping = _column_map(columns)
    if columns and source is None:
        _error("--map applies to --source; for configured sources put `columns: {FILE_COLUMN: FIELD}` in the source")
    if source is not None and _is_odds_stream(source):
        if sport is None:
            _error(f"--sport: {source.name} is a multi-book odds stream and its games have no sport column",
                   hint="pass the sport, e.g. --sport mlb")
        try:
            sources = [SourceConfig(type="odds_stream", path=str(source.resolve()), sport=sport)]
        except ValidationError as exc:
            _error(f"--sport {sport!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}")
    elif source is not None:
        sources = [SourceConfig(type="bars", path=str(source.resolve()), symbol=symbol, format=fmt, ts_unit=ts_unit, columns=mapping)]
    else:
        sources = [s for s in cfg.sources if source_available(s)] or [cfg.fallback]  # as actors.pipeline.resolve_sources
        for s in cfg.sources:
            if s not in sources:
                console.print(f"configured source {s.path} not found; skipped", style="yellow")
        if n_bars is not None:
            sources = [s.model_copy(update={"n_bars": n_bars}) if s.type == "generator" else s for s in sources]
    for s in sources:
        try:
            report = inspect_source(s)
        except SourceError as exc:
            if _DEBUG["on"]:
                raise
            _error(str(exc), hint=exc.hint)
        console.print(f"source: {s.type} {s.path or ''} {s.symbol or ''}".rstrip())
        if report.detected:
            console.print(f"detected {report.detected}")
        if report.bad_lines is not None and len(report.bad_lines):
            store = open_deadletter_store(cfg, "ingestion")
            if not check:
                store.append(
                    "odds" if s.type in ("sports", "odds_stream") else "bar", s.path or s.type, report.bad_lines)
            first = report.bad_lines.iloc[0]
            console.print(f"{Path(s.path).name}: {len(report.bad_lines):,} unreadable lines skipped"
                          + (" (not written: --check)" if check else f" and dead-lettered to {store.where}")
                          + f"; first: {first['field']}: {first['value']}", style="yellow", soft_wrap=True)
    universe = list(cfg.ingestion.symbols)
    for s in sources:
        wanted = [s.symbol] if s.symbol else (list(s.symbols) if s.type == "generator" else [])
        for sym in wanted:
            if s.type != "sports" and sym not in universe:
                universe.append(sym)
                console.print(f"symbol {sym} is not in the config's ingestion.symbols; added for this run", soft_wrap=True)
    if universe != list(cfg.ingestion.symbols):
        data = cfg.model_dump()
        data["ingestion"]["symbols"] = universe
        cfg = PipelineConfig.model_validate(data)
    return cfg, sources


def _run(cfg: PipelineConfig, sources: list[SourceConfig], rate: float | None, json_out: Path | None, keep: bool) -> None:
    import ray

    from actors.pipeline import Pipeline

    pipeline = Pipeline.start(cfg, detached=keep, fresh=True)
    ref = pipeline.replay_async(sources, rate)
    with Progress(TextColumn("replay", style="bold", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
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
    summary = {**status, "elapsed_s": result["elapsed_s"]}
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.run_dir) / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2, default=str))
    if not keep:
        pipeline.shutdown()  # closes the audit log, so the published copy is complete
    from edgeray.storage import publish, where

    if cfg.results_uri:
        written = publish(cfg.run_dir, cfg.results_uri)
        console.print(f"results published to {cfg.results_uri} ({len(written)} files; staged in {cfg.run_dir}"
                      + ("; the actors run on, so publish again when they stop" if keep else "") + ")", soft_wrap=True)
    console.print(f"results in {where(cfg.results_uri or cfg.run_dir)} (summary.json, audit.db, equity_curve.png, "
                  f"deadletters.jsonl; Feast store: {cfg.feast.directory})" + (f"; summary: {json_out}" if json_out else ""),
                  soft_wrap=True)


INIT_FILES = ("pipeline.yaml", "risk.yaml", "veto.yaml", "serve.yaml")


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Folder to write (created if missing)")],
         force: Annotated[bool, typer.Option(help="Overwrite existing files")] = False) -> None:
    """Write an editable project folder: pipeline.yaml, risk.yaml, veto.yaml, serve.yaml (commented)."""
    import shutil

    from edgeray.config import DEFAULTS_DIR

    if directory.exists() and not directory.is_dir():
        _error(f"{directory}: exists and is not a folder")
    existing = [name for name in INIT_FILES if (directory / name).exists()]
    if existing and not force:
        _error(f"{directory}: already has {', '.join(existing)}; nothing written", hint="pass --force to overwrite them")
    directory.mkdir(parents=True, exist_ok=True)
    for name in INIT_FILES:
        shutil.copyfile(DEFAULTS_DIR / name, directory / name)
    console.print(f"wrote {', '.join(INIT_FILES)} to {directory}")
    console.print(f"next: edgeray run --config {directory / 'pipeline.yaml'}   (outputs go to {directory / 'runs'})")


def _decision_report(pipeline, status: dict, cfg: PipelineConfig) -> dict:
    """Decisions, verdicts by reason, holds, PnL, Sharpe, drawdown, per-strategy pulls, PNG curve."""
    import ray

    from edgeray.report import performance, plot_equity

    loop = pipeline.decision
    equity = ray.get(loop["meta_controller"].equity_curve.remote())
    arms = ray.get(loop["meta_controller"].arms.remote())
    pending = ray.get(loop["meta_controller"].pending.remote())
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
    table.add_row("decision latency p50 / p99 (receipt to audited)", f"{d['latency_ms_p50'] or 0:.1f} / {d['latency_ms_p99'] or 0:.1f} ms")
    # Where it went: queueing (waiting for the stage ahead) apart from each stage's own service time.
    for stage, p in d.get("stages_ms", {}).items():
        table.add_row(f"  {stage.replace('_', ' ')} p50 / p99", f"{p['p50']:.1f} / {p['p99']:.1f} ms")
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
        console.print(f"equity curve: {png}")
    return {**perf, "arms": arms, "holds_pending": len(pending), "equity_png": str(png) if png else None}


def _loop_actor(config: Path):
    """The running loop's meta-controller (it owns the risk monitor and the ledger)."""
    import ray

    from actors.pipeline import META_CONTROLLER, ensure_ray

    cfg = _load_config(config)
    ensure_ray(cfg)
    try:
        return ray.get_actor(META_CONTROLLER, namespace=cfg.namespace)
    except ValueError:
        _error(f"no running decision loop in namespace {cfg.namespace!r} (start one with `edgeray run --keep`)", code=1)


@app.command("kill-switch")
def kill_switch(reason: Annotated[str, typer.Option(help="Why (goes to the audit log)")],
                config: ConfigOption = None) -> None:
    """Halt every new decision and cancel unfilled orders in the running loop (audited)."""
    import getpass

    import ray

    event = ray.get(_loop_actor(config).kill.remote(reason, f"cli:{getpass.getuser()}"))
    console.print(f"kill switch ON at {event['ts']}; cancelled {len(event['cancelled_orders'])} unfilled orders", style="bold red")


@app.command()
def resume(config: ConfigOption = None) -> None:
    """Lift the kill switch (audited)."""
    import getpass

    import ray

    event = ray.get(_loop_actor(config).resume.remote(f"cli:{getpass.getuser()}"))
    console.print(f"kill switch off at {event['ts']}", style="green")


def _seasons(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        _error(f"seasons: expected comma-separated years like 2019,2020, got {text!r}")


@app.command()
def train(sport: Annotated[str, typer.Option(help="ncaam (ncaab), nba, nfl, mlb or ncaaf")],
          model: Annotated[str, typer.Option(help="Model family: statistical, ensemble, neural, lstm")],
          name: Annotated[Optional[str], typer.Option(help="Model within the family (default: the family's first)")] = None,
          train_seasons: Annotated[Optional[str], typer.Option(help="e.g. 2018,2019,2020 (default: 3 before the test season)")] = None,
          test_seasons: Annotated[Optional[str], typer.Option(help="e.g. 2021 (default: the latest season)")] = None,
          data_dir: Annotated[Optional[Path], typer.Option(help="Folder with the sports CSV files")] = None,
          registry: Annotated[Path, typer.Option(help="Model registry folder")] = Path("runs/registry"),
          device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
          allow_earlier: Annotated[bool, typer.Option("--allow-earlier", help="Allow test seasons before the training "
                                                      "ones (out of sample, but not a forward test)")] = False,
          json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON here")] = None) -> None:
    """Train a sport model on earlier seasons, evaluate it against the market on later ones, register it."""
    from edgeray.sports.train import train_sport_model

    params = {"sport": sport.lower(), "family": model.lower(), "name": name, "train_seasons": _seasons(train_seasons),
              "test_seasons": _seasons(test_seasons), "data_dir": str(data_dir) if data_dir else None,
              "registry_dir": str(registry), "allow_earlier": allow_earlier}
    with Progress(TextColumn("train {task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"{params['sport']}/{params['family']}", total=None, info="")

        def on_epoch(epoch: int, total: int, info: dict) -> None:
            loss = info.get("loss")
            progress.update(task, completed=epoch, total=total, info=f"loss {loss:.4f}" if isinstance(loss, float) else "")

        try:
            result = train_sport_model(params, on_epoch, device)
        except ValueError as exc:
            progress.stop()
            _error(str(exc))
    report, perf = result["report"], result["performance"]
    table = Table(title=f"{report['sport']} {report['family']}/{report['name']}: test seasons {report['test_seasons']} "
                        f"({report['evaluation']} {report['train_seasons']})",
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


sports_app = typer.Typer(help="Sports archives: which files and layouts edgeray finds, and what it reads from them.",
                         no_args_is_help=True)
app.add_typer(sports_app, name="sports")


SPORTS_FORMAT_HINT = ("`edgeray sports formats` lists the layouts and their columns; a file of your own: --format generic "
                      "--sport S, with --map FILE_COLUMN=COLUMN for names that differ")


@sports_app.command("check")
def sports_check(path: Annotated[Path, typer.Argument(help="A sports CSV, or a folder of them")],
                 sport: Annotated[Optional[str], typer.Option(help="Only this sport (ncaam/ncaab, nba, nfl, mlb, ncaaf)")] = None,
                 fmt: Annotated[str, typer.Option("--format", help="A file's layout (default: detected from its header)")] = "auto",
                 columns: Annotated[Optional[list[str]], typer.Option(
                     "--map", metavar="FILE_COLUMN=COLUMN", help="Rename a column of the file first, e.g. gamedate=date (repeatable)")] = None,
                 json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON here")] = None) -> None:
    """Read sports archives as training and backtests would: the layout found, games, rejected rows, seasons."""
    from edgeray.sports.formats import SPORTS, SportsFormatError, canonical_sport, detect, read_header
    from edgeray.sports.games import SportsFile, find_sport_files, read_sport

    try:
        wanted = [canonical_sport(sport)] if sport else list(SPORTS)
        mapping = _column_map(columns, "gamedate=date")
        if path.is_file():  # the header (or --format) says which sport, and must agree with --sport
            spec = detect([mapping.get(c, c) for c in read_header(path)], sport=sport, fmt=fmt, where=path.name)
            files = [SportsFile(spec.sport or wanted[0], str(path), fmt, mapping)]
        elif columns:
            _error("--map applies to one file; give the file rather than its folder")
        elif path.is_dir():
            files = [f for s in wanted for f in find_sport_files(s, path)]
        else:
            _error(f"{path}: no such file or folder")
        if not files:
            _error(f"{path}: no CSV there fits a sports format{' for ' + wanted[0] if sport else ''}",
                   hint="`edgeray sports formats` lists the layouts and their columns")
        tables = {s: read_sport(s, sources=[f for f in files if f.sport == s])
                  for s in dict.fromkeys(f.sport for f in files)}
    except SportsFormatError as exc:
        _error(str(exc), hint=SPORTS_FORMAT_HINT)
    except (ValueError, FileNotFoundError) as exc:
        _error(str(exc))
    table = Table(title=f"sports archives in {path}", header_style="bold")
    for col in ("sport", "files", "format", "games", "rejected rows", "seasons"):
        table.add_column(col, justify="right" if col in ("games", "rejected rows") else "left", overflow="fold")
    report = {}
    for s, t in tables.items():
        seasons = sorted(int(x) for x in t.games["season"].unique())
        files_of = [Path(f.path).name for f in files if f.sport == s]
        fmts = t.info["format"] if isinstance(t.info["format"], list) else [t.info["format"]]
        span = f"{seasons[0]}-{seasons[-1]} ({len(seasons)})" if seasons else "-"
        table.add_row(s, ", ".join(files_of), ", ".join(fmts), f"{len(t.games):,}", f"{t.info['rows_rejected']:,}", span)
        report[s] = {"files": files_of, "formats": fmts, "games": len(t.games), "rows_read": t.info["rows_read"],
                     "rows_rejected": t.info["rows_rejected"], "seasons": seasons,
                     "rejected_reasons": t.rejected["reason"].value_counts().to_dict()}
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))


@sports_app.command("formats")
def sports_formats() -> None:
    """The sports layouts edgeray reads: name, sport and the columns each needs."""
    from edgeray.sports.formats import FORMATS

    table = Table(title="sports formats (declare one with sports.sources[].format, or let the header decide)",
                  header_style="bold")
    for col in ("format", "sport", "columns it reads", "what it is"):
        table.add_column(col, overflow="fold")
    for f in FORMATS.values():
        cols = ", ".join(f"{k}={v}" if k != v else k for k, v in f.fields.items())
        table.add_row(f.name, f.sport or "(declared)", cols, f.description)
    console.print(table)


underdog_app = typer.Typer(help="The underdog model (NCAAM by default; --sport at training): train, predict, backtest, compare.",
                           no_args_is_help=True)
app.add_typer(underdog_app, name="underdog")
UnderdogDir = Annotated[Path, typer.Option("--model-dir", help="Artefacts of the trained run")]
SportsData = Annotated[Path, typer.Option("--data-dir", help="The sport's archive, or a folder holding it (any file name)")]
DEFAULT_UNDERDOG_DIR = Path("runs/underdog")
AllowEarlier = Annotated[bool, typer.Option("--allow-earlier", help="Also evaluate on games before the training window "
                                            "(out of sample, but the model was fitted on later seasons)")]
DEFAULT_SPORTS_DATA = Path("../shared/data/sports")


def _underdog_call(fn, *args, **kwargs):
    """Clear errors, not tracebacks: no trained model, too few games, a bad tier or date."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, FileNotFoundError) as exc:
        _error(str(exc))


def _tiers(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",")] if text else None


@underdog_app.command("train")
def underdog_train(tiers: Annotated[Optional[str], typer.Option(help="e.g. moderate,heavy")] = None,
                   seasons: Annotated[Optional[str], typer.Option(help="e.g. 2018,2019,2020")] = None,
                   model_dir: UnderdogDir = DEFAULT_UNDERDOG_DIR, data_dir: SportsData = DEFAULT_SPORTS_DATA,
                   sport: Annotated[Optional[str], typer.Option(help="Any sport with moneylines (default: the config's, ncaam)")] = None) -> None:
    """Train the base and market-aware models on underdog games (chronological 70/30 validation)."""
    from edgeray.underdog.model import train as train_underdog

    with console.status("training the underdog models (two L2 logistic regressions, 1,500 steps each)"):
        metrics = _underdog_call(train_underdog, data_dir, model_dir, tiers=_tiers(tiers), seasons=_seasons(seasons),
                                 sport=sport)
    table = Table(title="underdog model: validation (latest 30%) vs the market", header_style="bold")
    for col in ("tier", "games", "log loss", "market", "Brier", "market", "ECE"):
        table.add_column(col, justify="right" if col != "tier" else "left")
    for tier, m in (metrics.get("validation_by_tier") or {"all": metrics.get("validation", {})}).items():
        model, market = m.get("model", m), m.get("market", {})
        table.add_row(tier, f"{m.get('n', 0):,}", f"{model.get('log_loss', float('nan')):.4f}", f"{market.get('log_loss', float('nan')):.4f}",
                      f"{model.get('brier', float('nan')):.4f}", f"{market.get('brier', float('nan')):.4f}", f"{model.get('ece', float('nan')):.3f}")
    console.print(table)
    console.print(f"{metrics['sport']} underdog model: artefacts in {metrics['run_dir']} ({model_dir / 'latest'} points there)",
                  soft_wrap=True)


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
    summary = picks.attrs["summary"]
    edge = summary["mean_edge_recommended"]
    console.print(f"summary: {summary['recommended']} of {summary['games']} underdogs recommended; total expected value "
                  f"{summary['total_ev_per_stake']:+.2f} per {summary['ev_stake']:g} staked on each; average edge "
                  + (f"{edge:+.1%}" if edge is not None else "-") + "; by confidence "
                  + (", ".join(f"{k} {v}" for k, v in summary["by_confidence"].items()) or "-"), soft_wrap=True)


def pd_date(value) -> str:
    import pandas as pd

    return pd.Timestamp(value).strftime("%Y-%m-%d")


@underdog_app.command("backtest")
def underdog_backtest(seasons: Annotated[Optional[str], typer.Option(help="e.g. 2020,2021")] = None,
                      tiers: Annotated[Optional[str], typer.Option(help="e.g. moderate,heavy")] = None,
                      min_edge: Annotated[float, typer.Option(help="Minimum model - market probability")] = 0.03,
                      bankroll: Annotated[float, typer.Option(help="Initial bankroll")] = 1000.0,
                      model_dir: UnderdogDir = DEFAULT_UNDERDOG_DIR, data_dir: SportsData = DEFAULT_SPORTS_DATA,
                      allow_earlier: AllowEarlier = False,
                      json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics as JSON")] = None) -> None:
    """Backtest the underdog model's bets (quarter Kelly, capped at 10%) on games outside its training window
    (after it; before it too with --allow-earlier)."""
    from edgeray.backtest.engine import SizingSpec, run_bets
    from edgeray.backtest.metrics import by_odds_range_frame
    from edgeray.backtest.plots import plot_equity, plot_reliability, plot_roi_by_odds
    from edgeray.underdog.model import backtest_opportunities

    opportunities = _underdog_call(backtest_opportunities, model_dir, data_dir, seasons=_seasons(seasons),
                                   tiers=_tiers(tiers), allow_earlier=allow_earlier)
    attrs = dict(opportunities.attrs)
    console.print(f"evaluated on {len(opportunities):,} games {attrs.get('evaluation', '')} (training window "
                  f"{attrs.get('train_from')} to {attrs.get('train_to')}; {attrs.get('n_in_sample_excluded', 0):,} "
                  f"in-sample games left out)", soft_wrap=True)
    if attrs.get("note"):
        console.print(f"note: {attrs['note']}", soft_wrap=True)
    if opportunities.empty:
        _no_bets(attrs["empty_reason"], json_out, attrs)
        return
    spec = SizingSpec(method="kelly", kelly_fraction=0.25, kelly_cap=0.10, min_edge=min_edge)
    result = _underdog_call(run_bets, opportunities, spec, bankroll)
    m = result.metrics
    if not result.bets["placed"].any():
        best = float((opportunities["model_prob"] - opportunities["market_prob"]).max())
        _no_bets(f"none of the {len(opportunities):,} games reached the minimum edge {min_edge:.3f} "
                 f"(the largest edge was {best:+.3f})", json_out, attrs)
        return
    from edgeray.underdog.model import run_dir

    out = run_dir(model_dir) / "backtest"
    pngs = [plot_equity({"underdog quarter Kelly": result.equity}, out / "equity.png"), plot_roi_by_odds(m, out / "roi_by_odds.png")]
    placed = result.bets[result.bets["placed"]]
    if len(placed):
        pngs.append(plot_reliability(placed["model_prob"].to_numpy(), placed["won"].to_numpy(), out / "reliability.png"))
    summary = Table(title=f"underdog backtest: {m['total_bets']:,} bets", header_style="bold")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key, fmt in (("win_rate", "{:.1%}"), ("profit", "{:,.2f}"), ("roi", "{:.2%}"), ("max_drawdown", "{:.1%}"),
                     ("sharpe", "{:.2f}"), ("clv_mean_points", "{:.2f}"), ("clv_price_pct_mean", "{:.2f}"),
                     ("clv_raw_points_mean", "{:.2f}"), ("ece", "{:.3f}"), ("brier", "{:.4f}")):
        value = m.get(key)
        summary.add_row(key, fmt.format(value) if isinstance(value, (int, float)) and value == value else "-")
    lo, hi = m.get("roi_ci95", [float("nan")] * 2)
    summary.add_row("ROI 95% CI (bootstrap by date)", f"[{lo:.2%}, {hi:.2%}]")
    sig = m.get("significance_vs_market") or {}
    if sig.get("p_value") is not None:
        summary.add_row("log loss vs market per game (95% CI, p)",
                        f"{sig['mean_diff']:+.4f} [{sig['ci95'][0]:+.4f}, {sig['ci95'][1]:+.4f}], p={sig['p_value']:.3g}")
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
        json_out.write_text(json.dumps({**result.to_dict(), "evaluation": attrs}, indent=2, default=str))


@sports_app.command("clv")
def sports_clv(sport: Annotated[str, typer.Option(help="mlb (moneylines) or nfl (spreads): the archives with opening lines")],
               data_dir: Annotated[Path, typer.Option(help="Folder of the sports archives")] = Path("../shared/data/sports"),
               train: Annotated[Optional[str], typer.Option(help="Training seasons, e.g. 2010,2011,2012")] = None,
               test: Annotated[Optional[str], typer.Option(help="Test seasons, e.g. 2013")] = None,
               bet_at: Annotated[str, typer.Option(help="open or first_seen (the archive's first price is its open)")] = "open",
               clv_method: Annotated[str, typer.Option(help="Margin removal for CLV: multiplicative, additive, power, "
                                                            "shin, odds_ratio, logarithmic")] = "multiplicative",
               min_edge: Annotated[float, typer.Option(help="Model probability minus the open's margin-free one")] = 0.02,
               json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON here")] = None) -> None:
    """Where an edge is measured: model vs opening vs closing market, and the CLV and ROI of bets placed at the open."""
    from edgeray.clv import sport_clv_report

    try:
        r = sport_clv_report(sport, data_dir, _seasons(train), _seasons(test), bet_at=bet_at, clv_method=clv_method,
                             min_edge=min_edge)
    except (ValueError, FileNotFoundError) as exc:
        _error(str(exc))
    table = Table(title=f"{r['sport']} {r['market']}: bets at the {r['bet_at']}, test {r['test_seasons']}", header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("95% CI (bootstrap by date)", justify="right")
    for name in ("model", "open", "close"):
        table.add_row(f"{name} log loss", f"{r[name + '_log_loss']:.4f}",
                      "[{:.4f}, {:.4f}]".format(*r[name + "_log_loss_ci"]))
        table.add_row(f"{name} Brier", f"{r[name + '_brier']:.4f}", "[{:.4f}, {:.4f}]".format(*r[name + "_brier_ci"]))
    table.add_row("bets", f"{r['bets']:,}", "")
    table.add_row(f"CLV, margin-free points ({r['clv_method']})", f"{r['clv_points_mean']:+.3f}",
                  "[{:+.3f}, {:+.3f}]".format(*r["clv_points_ci"]))
    table.add_row("CLV, % of odds", f"{r['clv_price_pct_mean']:+.3f}", "[{:+.3f}, {:+.3f}]".format(*r["clv_price_pct_ci"]))
    table.add_row("CLV, raw price points (includes the margin)", f"{r['clv_raw_points_mean']:+.3f}", "")
    table.add_row("ROI", f"{r['roi']:+.2%}", "[{:+.2%}, {:+.2%}]".format(*r["roi_ci"]))
    for label, row in r["roi_by_clv_sign"].items():
        table.add_row(f"ROI, {label} ({row['bets']} bets)", f"{row['roi']:+.2%}" if row["bets"] else "-",
                      "[{:+.2%}, {:+.2%}]".format(*row["roi_ci95"]) if row["bets"] else "")
    console.print(table)
    claims = [k for k, v in r["edge_claimed"].items() if v]
    console.print("edge claimed (whole CI above zero): " + (", ".join(claims) if claims else "none"), soft_wrap=True)
    if json_out:
        json_out.write_text(json.dumps(r, indent=2, default=str))


def _no_bets(reason: str, json_out: Path | None, attrs: dict) -> None:
    """An empty backtest is a result, not an error: say so and why."""
    console.print(f"no bets: {reason}", soft_wrap=True)
    if json_out:
        json_out.write_text(json.dumps({"total_bets": 0, "no_bets_reason": reason,
                                        **{k: v for k, v in attrs.items() if k != "empty_reason"}}, indent=2, default=str))


@underdog_app.command("compare")
def underdog_compare(seasons: Annotated[Optional[str], typer.Option(help="e.g. 2020,2021")] = None,
                     model_dir: UnderdogDir = DEFAULT_UNDERDOG_DIR, data_dir: SportsData = DEFAULT_SPORTS_DATA,
                     allow_earlier: AllowEarlier = False) -> None:
    """The underdog model vs the general model on the same underdog games."""
    from edgeray.underdog.model import compare

    result = _underdog_call(compare, model_dir, data_dir, seasons=_seasons(seasons), allow_earlier=allow_earlier)
    console.print_json(data=json.loads(json.dumps(result, default=str)))


@app.command()
def features(symbol: str, config: ConfigOption = None) -> None:
    """Show the latest online feature vector for a symbol (the decision loop's read path)."""
    from actors.feature_streamer import feast_settings
    from edgeray.feature_repo.definitions import MARKET_VIEW
    from edgeray.featurestore import FeatureReader, open_store

    cfg = _load_config(config)
    reader = FeatureReader(open_store(feast_settings(cfg)), MARKET_VIEW, cfg.features.spec().names)
    vector = reader.latest(symbol)
    if vector is None:
        _error(f"symbol {symbol!r}: no features in the online store", code=1)
    table = Table(title=f"{symbol} @ {vector.event_ts}")
    table.add_column("feature")
    table.add_column("value", justify="right")
    for name, value in vector.values.items():
        table.add_row(name, f"{value:.6g}")
    console.print(table)


@app.command("dead-letters")
def dead_letters(config: ConfigOption = None,
                 limit: Annotated[int, typer.Option(help="How many records", min=0)] = 20,
                 offset: Annotated[int, typer.Option(help="Skip this many of the newest first", min=0)] = 0) -> None:
    """Show rejected rows and why they were rejected, newest page first (read from the end of the files)."""
    from edgeray.deadletter import open_deadletter_store

    cfg = _load_config(config)
    store = open_deadletter_store(cfg, "ingestion")
    page = store.read_page(limit, offset)
    first = max(page["total"] - offset - len(page["items"]), 0)
    table = Table(title=f"dead letters {first + 1}-{first + len(page['items'])} of {page['total']} ({store.where})")
    for col in ("kind", "reason", "field", "value", "raw"):
        table.add_column(col, overflow="fold")
    for rec in page["items"]:
        raw = rec["raw"] if isinstance(rec["raw"], str) else json.dumps(rec["raw"])
        table.add_row(rec["kind"], rec["reason"], rec["field"], str(rec["value"]), raw[:120])
    console.print(table)


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
        _error(str(exc))
    console.print(f"key for {name} ({role}), shown once; send it as the X-API-Key header:")
    print(key)


@keys_app.command("list")
def keys_list(file: KeyFileOption = os.environ.get("EDGERAY_API_KEYS_FILE", "~/.config/edgeray/api_keys.yaml")) -> None:
    """Names and roles in the key file (never keys or digests)."""
    from edgeray.auth import KeyConfigError, load_key_file

    try:
        entries = load_key_file(file)
    except KeyConfigError as exc:
        _error(str(exc))
    for entry in entries:
        print(f"{entry.name}\t{entry.role}")


def main() -> None:
    """The console entry point: a mistake in what the user gave (a file, a field, a value) is one or two
    lines and exit 2; anything else is one line naming the error and exit 1; tracebacks only with --debug."""
    import sys

    try:
        app()
    except Exception as exc:  # noqa: BLE001 - the one place every error reaches the user
        if _DEBUG["on"] or "--debug" in sys.argv[1:]:
            raise
        cause = getattr(exc, "cause", None)  # a RayTaskError carries the actor's exception
        exc = cause if isinstance(cause, BaseException) else exc
        first = (str(exc).strip().splitlines() or [""])[0][:500]
        if isinstance(exc, (ValueError, OSError, KeyError)):
            err_console.print(f"{first or type(exc).__name__}", style="red", soft_wrap=True)
            err_console.print("run with --debug for the traceback", soft_wrap=True)
            sys.exit(2)
        err_console.print(f"edgeray: internal error {type(exc).__name__}: {first}", style="red", soft_wrap=True)
        err_console.print("run again with --debug for the traceback, and report it", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
