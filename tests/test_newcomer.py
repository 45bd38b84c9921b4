"""A newcomer's first hour (issue 13): the installed `edgeray` command, run from a fresh folder.

Every test runs the CLI as a subprocess with cwd=tmp_path (nothing of the repository in reach),
checks the exit code and the message, and that no traceback reaches the user. Files are made
from the shared BTC 1-minute bars. Two tests start a pipeline (each its own local Ray, a few
thousand bars); the rest stop before Ray starts (`--check`, or an error found at start).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


# -- 1. no config needed: the packaged default, outputs under ./runs ---------------------------------

def test_run_from_an_empty_folder_uses_the_packaged_default_and_says_where_results_went(tmp_path):
    result = edgeray("run", "--n-bars", "500", "--json", "summary.json", cwd=tmp_path)
    out = ok(result)
    assert "source: generator" in out
    run_dir = tmp_path / "runs" / "latest"
    assert f"results in {run_dir}" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ingestion"]["received"] == summary["ingestion"]["accepted"] == 1000  # 2 symbols x 500 bars
    assert (tmp_path / "runs" / "feast").is_dir() and (run_dir / "state").is_dir()


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
    (project / "pipeline.yaml").write_text(yaml.safe_dump(cfg))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = ok(edgeray("run", "--config", "../proj/pipeline.yaml", "--json", "summary.json", cwd=elsewhere, timeout=300))
    assert "detected exchange kline format: open_time (ms) -> event_ts" in out
    assert "symbol BTCUSD is not in the config's ingestion.symbols; added for this run" in out
    assert "3 unreadable lines skipped" in out and "line 11: 4 fields, the header has 12" in out
    run_dir = project / "runs" / "latest"
    assert f"results in {run_dir}" in out and not (elsewhere / "runs").exists()
    ing = json.loads((elsewhere / "summary.json").read_text())["ingestion"]
    assert ing["accepted"] == 2997 and ing["rejected"] == 0
    dead = [json.loads(line) for line in (run_dir / "deadletters.jsonl").read_text().splitlines()]
    bad = {d["field"]: d["value"] for d in dead if d["reason"] == "unreadable_line"}
    assert bad == {"line 11": "4 fields, the header has 12", "line 21": "13 fields, the header has 12",
                   "line 31": f"byte 0xff at byte offset {offset} is not UTF-8"}
    assert (run_dir / "equity_curve.png").exists() and (run_dir / "state" / "executor.json").exists()


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
