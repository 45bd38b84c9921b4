"""A newcomer's first hour (issue 13): the installed `edgeray` command, run from a fresh folder.

Every test runs the CLI as a subprocess with cwd=tmp_path (nothing of the repository in reach),
checks the exit code and the message, and that no traceback reaches the user. Files are made
from the shared BTC 1-minute bars. Two tests start a pipeline: one on its own local Ray, one through
`ray job submit` on a head node started for it; the rest stop before Ray starts (`--check`, or an error
found at start) or never need Ray (sports files, the underdog model).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import shared_file

EDGERAY = Path(sys.executable).with_name("edgeray")
BTC = "markets/btc_perp_1m_2022-01.csv"


def edgeray(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    exe = str(EDGERAY) if EDGERAY.exists() else shutil.which("edgeray")
    assert exe, "the edgeray command is not installed (pip install -e .)"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["COLUMNS"] = "200"  # one message, one line
    return subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def user_error(result: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """A user mistake: exit `code`, a short message naming what is wrong, never a traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    text = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in text, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    return text


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return " ".join(result.stdout.split())


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return pd.read_csv(shared_file(BTC), nrows=3000)


def kline(btc: pd.DataFrame) -> pd.DataFrame:
    """The bars as an exchange kline CSV: open_time/close_time in epoch ms, Binance's columns."""
    open_ms = pd.to_datetime(btc["timestamp"]).astype("int64") // 10**6
    return pd.DataFrame({"open_time": open_ms, "open": btc["open"], "high": btc["high"], "low": btc["low"],
                         "close": btc["close"], "volume": btc["volume"], "close_time": open_ms + 59_999,
                         "quote_volume": btc["volume"] * btc["close"], "count": 100, "taker_buy_volume": 1.0,
                         "taker_buy_quote_volume": 1.0, "ignore": 0})


# -- 1. no config needed: the packaged default from a fresh folder runs through `ray job submit` (8. below)

# -- 2, 3, 5, 6. edgeray init; config paths from the config's folder; kline auto-detected; --symbol --

def test_an_init_project_replays_a_garbled_kline_file_from_another_folder(tmp_path, btc):
    project = tmp_path / "proj"
    out = ok(edgeray("init", project, cwd=tmp_path))
    assert "wrote pipeline.yaml, risk.yaml, veto.yaml, serve.yaml" in out
    for name in ("pipeline.yaml", "risk.yaml", "veto.yaml", "serve.yaml"):
        assert (project / name).read_text().startswith("#")  # commented, editable
    user_error(edgeray("init", project, cwd=tmp_path), "already has pipeline.yaml", "nothing written")

    # A kline file with three broken lines: a short row, a row with an extra field, a non-UTF-8 byte.
    (project / "data").mkdir()
    lines = kline(btc).to_csv(index=False).encode().splitlines()
    lines[10] = b"garbage,,,"
    lines[20] += b",extra"
    lines[30] = lines[30][:15] + b"\xff" + lines[30][16:]
    offset = sum(len(line) + 1 for line in lines[:30]) + 15
    (project / "data" / "btc_kline.csv").write_bytes(b"\n".join(lines) + b"\n")
    cfg = yaml.safe_load((project / "pipeline.yaml").read_text())
    cfg["sources"] = [{"type": "bars", "path": "data/btc_kline.csv", "symbol": "BTCUSD"}]  # relative to proj/
    cfg["decisions"]["edge_model_warmup_rows"] = 600
    published = tmp_path / "published" / "run1"
    cfg["run_dir"] = published.as_uri()  # a storage URI: staged locally, published when the run ends
    (project / "pipeline.yaml").write_text(yaml.safe_dump(cfg))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = ok(edgeray("run", "--config", "../proj/pipeline.yaml", "--json", "summary.json", cwd=elsewhere, timeout=300))
    assert "detected exchange kline format: open_time (ms) -> event_ts" in out
    assert "symbol BTCUSD is not in the config's ingestion.symbols; added for this run" in out
    assert "3 unreadable lines skipped" in out and "line 11: 4 fields, the header has 12" in out
    run_dir = published
    assert f"results published to {published.as_uri()}" in out and f"results in {published.as_uri()}" in out
    assert not (elsewhere / "runs").exists() and (project / "runs" / "feast").is_dir()
    ing = json.loads((elsewhere / "summary.json").read_text())["ingestion"]
    assert ing["accepted"] == 2997 and ing["rejected"] == 0
    dead = [json.loads(line) for line in (run_dir / "deadletters.jsonl").read_text().splitlines()]
    bad = {d["field"]: d["value"] for d in dead if d["reason"] == "unreadable_line"}
    assert bad == {"line 11": "4 fields, the header has 12", "line 21": "13 fields, the header has 12",
                   "line 31": f"byte 0xff at byte offset {offset} is not UTF-8"}
    assert (run_dir / "equity_curve.png").exists() and (run_dir / "state" / "meta_controller.json").exists()


# -- 4. malformed files: one message, exit 2, before Ray starts ---------------------------------------

@pytest.mark.parametrize("name, content, needles", [
    ("wrong.csv", b"a,b,c\n1,2,3\n", ["wrong.csv: no column event_ts (or timestamp/open_time", "found: a, b, c", "--map"]),
    ("binary.csv", bytes(range(128, 256)) * 20, ["binary.csv: not a text CSV: byte 0x80 at byte offset 0 (line 1) is not UTF-8"]),
    ("empty.csv", b"", ["empty.csv: the file is empty"]),
    ("no_close.csv", b"timestamp,open,high,low\n2022-01-01T00:00:00Z,1,1,1\n",
     ["no_close.csv: no column close; expected event_ts", "found: timestamp, open, high, low"]),
])
def test_a_malformed_source_is_one_message_and_exit_2(tmp_path, name, content, needles):
    (tmp_path / name).write_bytes(content)
    user_error(edgeray("run", "--source", name, cwd=tmp_path), *needles)
    assert not (tmp_path / "runs").exists()  # stopped before anything started


def test_missing_files_are_named(tmp_path):
    user_error(edgeray("run", "--source", "nope.csv", cwd=tmp_path), "nope.csv: no such file")
    user_error(edgeray("run", "--config", "nope.yaml", cwd=tmp_path), "--config nope.yaml: no such file", "edgeray init")
    (tmp_path / "bad.yaml").write_text("ingestion: [unclosed\n")
    user_error(edgeray("run", "--config", "bad.yaml", cwd=tmp_path), "bad.yaml:", "not valid YAML")
    ok(edgeray("init", "proj", cwd=tmp_path))
    (tmp_path / "proj" / "risk.yaml").unlink()
    user_error(edgeray("run", "--config", "proj/pipeline.yaml", cwd=tmp_path),
               f"decisions.risk_config: no such file {tmp_path / 'proj' / 'risk.yaml'}")


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "wrong.csv").write_text("a,b\n1,2\n")
    result = edgeray("--debug", "run", "--source", "wrong.csv", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "SourceError" in result.stderr


# -- 5. formats and column mapping ---------------------------------------------------------------------

def test_formats_are_detected_and_named(tmp_path, btc):
    kline(btc).to_csv(tmp_path / "kline.csv", index=False)
    kline(btc).to_csv(tmp_path / "kline_noheader.csv", index=False, header=False)
    iso = btc.assign(timestamp=pd.to_datetime(btc["timestamp"]).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    iso.to_csv(tmp_path / "ohlcv_iso.csv", index=False)
    secs = btc.assign(timestamp=pd.to_datetime(btc["timestamp"]).astype("int64") // 10**9).rename(columns={"timestamp": "time"})
    secs.to_csv(tmp_path / "ohlcv_s.csv", index=False)
    cases = {"kline.csv": "detected exchange kline format: open_time (ms) -> event_ts",
             "kline_noheader.csv": "detected exchange kline format (no header): open_time (ms) -> event_ts",
             "ohlcv_iso.csv": "detected OHLCV format: timestamp (ISO) -> event_ts",
             "ohlcv_s.csv": "detected OHLCV format: time (s) -> event_ts"}
    for name, message in cases.items():
        out = ok(edgeray("run", "--source", name, "--symbol", "BTCUSD", "--check", cwd=tmp_path))
        assert message in out and "check passed" in out, name
    assert not (tmp_path / "runs").exists()


def test_the_map_option_and_the_columns_mapping(tmp_path, btc):
    odd = btc.rename(columns={"timestamp": "Zeit", "close": "Last"})
    odd.to_csv(tmp_path / "odd.csv", index=False)
    user_error(edgeray("run", "--source", "odd.csv", "--check", cwd=tmp_path),
               "odd.csv: no column event_ts", "found: Zeit, open, high, low, Last, volume")
    out = ok(edgeray("run", "--source", "odd.csv", "--map", "Zeit=event_ts", "--map", "Last=close", "--check", cwd=tmp_path))
    assert "detected mapped columns: Zeit (ISO) -> event_ts; Last -> close" in out
    user_error(edgeray("run", "--source", "odd.csv", "--map", "Datum=event_ts", "--check", cwd=tmp_path),
               "odd.csv: no column 'Datum' to map to 'event_ts'; found: Zeit")
    user_error(edgeray("run", "--source", "odd.csv", "--map", "Zeit", "--check", cwd=tmp_path),
               "--map 'Zeit': expected FILE_COLUMN=FIELD")
    project = tmp_path / "proj"
    ok(edgeray("init", project, cwd=tmp_path))
    cfg = yaml.safe_load((project / "pipeline.yaml").read_text())
    cfg["sources"] = [{"type": "bars", "path": "../odd.csv", "symbol": "BTCUSD", "columns": {"Zeit": "event_ts", "Last": "close"}}]
    (project / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    out = ok(edgeray("run", "--config", project / "pipeline.yaml", "--check", cwd=project / ".."))
    assert f"source: bars {tmp_path / 'odd.csv'} BTCUSD" in out and "Zeit (ISO) -> event_ts" in out


# -- 7. messages print as they are (no rich markup) ---------------------------------------------------

def test_messages_with_brackets_print_literally(tmp_path):
    result = edgeray("underdog", "predict", "--model-dir", "m[red]x[/]", "--data-dir", tmp_path, cwd=tmp_path)
    user_error(result, "m[red]x[/]")
    data = shared_file("sports/ncaab_sbr_closing_2012_2022.csv").parent
    result = edgeray("underdog", "train", "--seasons", "1999", "--model-dir", "m", "--data-dir", data, cwd=tmp_path)
    user_error(result, "seasons: [1999] have no underdog games (have [", "2012")


def test_the_packaged_risk_and_veto_configs_are_the_repositorys():
    """`edgeray run` with no config must trade under the same limits and rules as configs/."""
    from edgeray.config import DEFAULTS_DIR

    root = Path(__file__).resolve().parents[1]
    for name in ("risk.yaml", "veto.yaml"):
        assert (DEFAULTS_DIR / name).read_text() == (root / "configs" / name).read_text(), name


# -- 8. ray job submit: results outside Ray's temporary copy, or published to a storage URI -------------

def job_submit_scenario(project: str, home: str, port: int, *edgeray_args: str) -> dict:
    """A head node with the dashboard (a real Ray cluster, in this subprocess), then the README's
    `ray job submit --working-dir PROJECT -- edgeray ARGS` against it; returns the job's output."""
    from ray.cluster_utils import Cluster

    bin_dir = Path(sys.executable).parent
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"  # the cluster's PATH reaches the job, as `ray start` from a venv
    from tests.conftest import free_port

    # Every port this head takes is a free one: the test session's own Ray already holds the defaults (the
    # dashboard agent's 52365 above all, without which the head has no agent to run jobs).
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
        "dashboard_agent_listen_port": free_port(), "metrics_agent_port": free_port(),
        "metrics_export_port": free_port(), "runtime_env_agent_port": free_port(),
        "object_store_memory": 200 * 1024**2})
    try:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        command = [str(bin_dir / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{port}", "--working-dir",
                   project, "--runtime-env-json", json.dumps({"env_vars": {"EDGERAY_HOME": home, "COLUMNS": "250"}}),
                   "--", "edgeray", *edgeray_args]
        deadline = time.monotonic() + 120
        while True:
            proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=400)
            # The head's job agent registers a few seconds after the node is up (longer on a busy machine);
            # until then the dashboard refuses submissions with this message and nothing has started.
            if "No available agent to submit job" not in proc.stderr or time.monotonic() > deadline:
                return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}
            time.sleep(1.0)  # polling interval only; the deadline bounds the wait
    finally:
        cluster.shutdown()


def test_ray_job_submit_runs_the_packaged_default_and_keeps_its_outputs(tmp_path, btc):
    """`ray job submit --working-dir` of a folder holding only a data file: the packaged default config,
    outputs kept under EDGERAY_HOME instead of Ray's temporary copy, and a source whose every row is
    invalid counted and dead-lettered rather than crashing the run."""
    from tests.conftest import free_port

    project = tmp_path / "bets"
    project.mkdir()
    bad = btc.head(300).copy()
    bad["high"] = bad["low"] - 1.0  # every bar impossible
    bad.to_csv(project / "bars.csv", index=False)

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import json, sys; from tests.test_newcomer import job_submit_scenario; "
            "print('RESULT' + json.dumps(job_submit_scenario(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:])))")
    proc = subprocess.run([sys.executable, "-c", code, str(project), str(home), str(free_port()),
                           "run", "--source", "bars.csv", "--symbol", "BTCUSDT-PERP"], env=env,
                          capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    job = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[len("RESULT"):])
    logs = job["out"] + job["err"]
    assert job["rc"] == 0 and "succeeded" in logs and "Traceback" not in logs, logs[-4000:]
    text = " ".join(logs.split())
    submission = next(w.strip("'") for w in text.split() if w.strip("'").startswith("raysubmit_"))
    job_home = home / "jobs" / submission
    run_dir = job_home / "runs" / "latest"
    assert f"outputs kept outside Ray's temporary working-dir copy, in {job_home}" in text
    assert f"results in {run_dir} on host" in text
    assert (job_home / "runs" / "feast").is_dir()  # the Feast store outlives the job's copy too
    ing = json.loads((run_dir / "summary.json").read_text())["ingestion"]
    assert ing["received"] == ing["rejected"] == 300 and ing["accepted"] == 0
    assert ing["rejected_by_reason"] == {"high_below_open_close_or_low": 300}
    dead = (run_dir / "deadletters.jsonl").read_text().splitlines()
    assert len(dead) == 300 and all(json.loads(d)["reason"] == "high_below_open_close_or_low" for d in dead)
    assert (run_dir / "audit.db").exists() and (run_dir / "state" / "ingestion.json").exists()


# -- 6. sports files under any name, by declared or detected format -----------------------------------

def test_sports_files_are_found_by_their_header_not_their_name(tmp_path):
    data = tmp_path / "my data"
    data.mkdir()
    ncaab = pd.read_csv(shared_file("sports/ncaab_sbr_closing_2012_2022.csv"), dtype=str)
    years = ncaab["game_datetime"].str[:4].astype(int)
    ncaab[years <= 2016].to_csv(data / "college hoops older.csv", index=False)   # one archive split in two,
    ncaab[years > 2016].to_csv(data / "hoops_recent.csv", index=False)         # neither under its own name
    shutil.copy(shared_file("sports/mlb_sbro_2010_2013.csv"), data / "baseball.csv")
    out = ok(edgeray("sports", "check", data, "--json", "report.json", cwd=tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report) == {"ncaam", "mlb"} and "sbro_ncaab" in out and "sbro_mlb" in out
    assert sorted(report["ncaam"]["files"]) == ["college hoops older.csv", "hoops_recent.csv"]
    assert report["ncaam"]["games"] + report["ncaam"]["rows_rejected"] == report["ncaam"]["rows_read"] == len(ncaab)
    assert report["mlb"]["seasons"] == [2010, 2011, 2012, 2013]  # a baseball season is one calendar year

    # The baseball file: closing moneylines under NFL-like names, no NFL scores. Never taken for NFL.
    mine = tmp_path / "mlb_mine.csv"
    mine.write_text("date,home_team,away_team,home_close_ml,away_close_ml,home_score,away_score\n"
                    "2012-05-01,NYY,BOS,-120,110,3,2\n2012-05-01,NYY,BOS,-125,115,4,6\n")
    user_error(edgeray("sports", "check", mine, cwd=tmp_path), "mlb_mine.csv: fits no sports format (closest:",
               "found columns ['away_close_ml'", "--format generic")
    out = ok(edgeray("sports", "check", mine, "--sport", "MLB", "--format", "generic", "--map", "home_team=home",
                     "--map", "away_team=away", "--map", "home_close_ml=home_ml", "--map", "away_close_ml=away_ml",
                     "--json", "mine.json", cwd=tmp_path))
    mine_report = json.loads((tmp_path / "mine.json").read_text())["mlb"]
    assert mine_report["games"] == 1 and mine_report["rejected_reasons"] == {
        "duplicate game (same date and teams as an earlier row)": 1}
    user_error(edgeray("sports", "check", data / "baseball.csv", "--sport", "nfl", cwd=tmp_path),
               "baseball.csv: is a mlb file (format sbro_mlb), not nfl")


# -- 7. the underdog model on seasons outside its training window; an empty result is a report ---------

def test_underdog_evaluates_earlier_seasons_when_asked_and_reports_no_bets(tmp_path):
    data = tmp_path / "hoops"
    data.mkdir()
    shutil.copy(shared_file("sports/ncaab_sbr_closing_2012_2022.csv"), data / "archive.csv")
    args = ("--model-dir", "model", "--data-dir", data)
    ok(edgeray("underdog", "train", "--seasons", "2016,2017", *args, cwd=tmp_path))
    text = user_error(edgeray("underdog", "backtest", "--seasons", "2013", *args, cwd=tmp_path),
                      "seasons:", "of season(s) [2013] come before the model's training window", "--allow-earlier")
    assert "by_odds_range" not in text
    out = ok(edgeray("underdog", "backtest", "--seasons", "2013", "--allow-earlier", "--json", "early.json", *args,
                     cwd=tmp_path))
    assert "games before training" in out and "not a forward test" in out
    early = json.loads((tmp_path / "early.json").read_text())
    assert early["metrics"]["total_bets"] > 0 and early["evaluation"]["evaluation"] == "before training"
    assert early["evaluation"]["n_before_training"] > 0 and early["evaluation"]["n_after_training"] == 0
    days = early["equity"]["date"]
    assert days and max(days) < early["evaluation"]["train_from"] and min(days) >= "2013-11-01"  # season 2013 only
    out = ok(edgeray("underdog", "backtest", "--seasons", "2016", "--json", "inside.json", *args, cwd=tmp_path))
    assert "no bets: all" in out and "fall inside the training window" in out
    inside = json.loads((tmp_path / "inside.json").read_text())
    assert inside["total_bets"] == 0 and inside["n_in_sample_excluded"] > 0
    out = ok(edgeray("underdog", "backtest", "--min-edge", "0.99", *args, cwd=tmp_path))
    assert "no bets: none of the" in out and "reached the minimum edge 0.990" in out
