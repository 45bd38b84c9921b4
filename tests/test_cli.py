from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from actors.feature_streamer import feast_settings
from edgeray.cli import app
from edgeray.config import PipelineConfig
from edgeray.featurestore import open_store
from tests.conftest import pipeline_config


def test_edgeray_run_on_the_generator_prints_a_summary_and_features_are_readable(ray_session, tmp_path, unique_name):
    cfg = pipeline_config(tmp_path, unique_name)  # no sources: the seeded generator
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    try:
        result = runner.invoke(app, ["run", "--config", str(config_path), "--json", str(tmp_path / "summary.json")])
        assert result.exit_code == 0, result.output
        assert "received = accepted + rejected + duplicates" in result.output
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["ingestion"]["received"] == summary["ingestion"]["accepted"] == 4000
        assert summary["features"]["offline_rows_written"] == 4000

        shown = runner.invoke(app, ["features", "SYN-B", "--config", str(config_path)])
        assert shown.exit_code == 0 and "ret_1" in shown.output and "vwap_dist_30" in shown.output
        missing = runner.invoke(app, ["features", "NOPE", "--config", str(config_path)])
        assert missing.exit_code == 1 and "no features" in missing.output
    finally:
        open_store(feast_settings(PipelineConfig.model_validate(cfg))).teardown()


def test_a_config_typo_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"ingestion": {"symbols": ["X"], "batch_sise": 10}, "sources": []}))
    result = CliRunner().invoke(app, ["run", "--config", str(bad)])
    assert result.exit_code == 2
    assert "ingestion.batch_sise: Extra inputs are not permitted" in " ".join(result.output.split())


def test_edgeray_run_with_the_decision_loop_reports_and_plots(ray_session, tmp_path, unique_name):
    cfg = pipeline_config(tmp_path, unique_name, decisions={"enabled": True, "edge_model_warmup_rows": 600,
                                                           "shadows": [{"name": "mom", "strategy": "momentum"}]})
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    try:
        result = CliRunner().invoke(app, ["run", "--config", str(config_path), "--json", str(tmp_path / "summary.json")])
        assert result.exit_code == 0, result.output
        assert "decision loop" in result.output and "strategies (LinUCB arms)" in result.output
        report = json.loads((tmp_path / "summary.json").read_text())["decision_report"]
        assert report["points"] > 0 and report["max_drawdown"] >= 0
        png = tmp_path / "run" / "equity_curve.png"
        assert report["equity_png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert {a["arm"] for a in report["arms"]} == {"momentum", "mean_reversion", "breakout", "market_making", "pairs"}
    finally:
        open_store(feast_settings(PipelineConfig.model_validate(cfg))).teardown()


def test_underdog_cli_trains_backtests_and_names_a_missing_model(tmp_path):
    from tests.conftest import shared_file

    data_dir = shared_file("sports/ncaab_sbr_closing_2012_2022.csv").parent
    runner = CliRunner()
    model_dir = tmp_path / "underdog"
    missing = runner.invoke(app, ["underdog", "predict", "--model-dir", str(model_dir), "--data-dir", str(data_dir)])
    assert missing.exit_code == 2 and "underdog" in missing.output  # the missing artefact path is named
    trained = runner.invoke(app, ["underdog", "train", "--seasons", "2012,2013", "--model-dir", str(model_dir), "--data-dir", str(data_dir)])
    assert trained.exit_code == 0, trained.output
    assert "moderate" in trained.output and (model_dir / "latest" / "metrics.json").exists()
    backtest = runner.invoke(app, ["underdog", "backtest", "--model-dir", str(model_dir), "--data-dir", str(data_dir),
                                   "--min-edge", "0.0", "--json", str(tmp_path / "bt.json")])
    assert backtest.exit_code == 0, backtest.output
    result = json.loads((tmp_path / "bt.json").read_text())
    assert result["metrics"]["total_bets"] > 0 and "by odds range" in backtest.output
    assert (model_dir / "latest" / "backtest" / "roi_by_odds.png").read_bytes()[:4] == b"\x89PNG"  # in the run folder
    bad = runner.invoke(app, ["underdog", "train", "--tiers", "gigantic", "--model-dir", str(model_dir), "--data-dir", str(data_dir)])
    assert bad.exit_code == 2 and "gigantic" in bad.output


def test_an_odds_stream_source_is_detected_and_needs_its_sport(tmp_path):
    from tests.conftest import shared_file

    lines = shared_file("streams/mlb_h2h_2026-07.csv").read_text().splitlines()[:200]
    stream = tmp_path / "odds.csv"
    stream.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    missing = runner.invoke(app, ["run", "--source", str(stream), "--check"])
    assert missing.exit_code == 2 and "--sport" in missing.output and "Traceback" not in missing.output
    unknown = runner.invoke(app, ["run", "--source", str(stream), "--sport", "cricket", "--check"])
    assert unknown.exit_code == 2 and "unknown sport 'cricket'" in " ".join(unknown.output.split())
    ok = runner.invoke(app, ["run", "--source", str(stream), "--sport", "MLB", "--check"])
    assert ok.exit_code == 0, ok.output
    assert "source: odds_stream" in ok.output and "odds stream format" in " ".join(ok.output.split())
