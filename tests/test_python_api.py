"""The Python API: the specification's Quick Start on a local Ray, a loop started by `edgeray run --keep`
reached by address and namespace with an API key's role, and bad config values named by field."""
from __future__ import annotations

import asyncio

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from edgeray import (
    Config,
    ConfigError,
    DecisionConfig,
    FeatureStoreConfig,
    MarketDataError,
    Orchestrator,
    StreamingConfig,
    SyncOrchestrator,
)
from edgeray.cli import app
from edgeray.generator import generate_bars
from tests.conftest import TEST_KEYS, pipeline_config, shared_file

DECISION_FIELDS = {"symbol", "action", "position_size", "confidence", "expected_return", "risk_score", "strategy",
                   "vetoed", "explanation", "decision_id"}


def quick_start_config(tmp_path, name: str) -> Config:
    # A veto rule that holds every order, so the test has holds to approve and reject.
    veto = tmp_path / "veto.yaml"
    veto.write_text(yaml.safe_dump({"default_action": "approve", "hold_timeout_s": 300, "timeout_action": "reject",
                                    "rules": [{"name": "hold_all", "action": "hold", "when": {"notional_above": 0}}]}))
    return Config(
        namespace=name, run_dir=str(tmp_path / "run"),
        ingestion=StreamingConfig(symbols=["BTCUSDT-PERP"], batch_size=100),
        feast=FeatureStoreConfig(directory=str(tmp_path / "feast"), project=name, online_store="sqlite"),
        decisions=DecisionConfig(enabled=True, edge_model_warmup_rows=200, edge_model_activation_lag_rows=0, shadows=[],
                                  veto_config=str(veto)),
    )


def test_quick_start_decides_audits_refuses_bad_rows_and_takes_the_human_in_the_loop(ray_session, tmp_path, unique_name):
    # The seeded generator, not the BTC file: its regimes flip signals often enough for every step below to have
    # orders (on 1,500 real BTC bars the strategies traded 5 times). The docs example replays the real file.
    bars = generate_bars(("BTCUSDT-PERP",), n_bars=1_061, seed=3).drop(columns=["source"])

    async def main():
        async with Orchestrator(quick_start_config(tmp_path, unique_name)) as system:
            first = await system.process_market_data(bars.iloc[:300])  # the confidence model is fitted on these
            second = await system.process_market_data(bars.iloc[300:600])
            decisions = first + second
            assert len(decisions) == 600 and len({d.decision_id for d in decisions}) == 600
            assert [d.event_ts for d in decisions] == bars["event_ts"].iloc[:600].tolist()
            for d in decisions:
                assert DECISION_FIELDS <= set(d.model_dump())
                assert d.action == ("hold" if d.quantity == 0 else "buy" if d.quantity > 0 else "sell")
                assert d.vetoed == (d.status in ("rejected_by_risk", "vetoed"))
            orders = [d for d in decisions if d.action != "hold"]
            assert orders, "600 real bars produced no order"
            # The confidence model is fitted after 200 rows: later orders carry their top-5 SHAP values, none before.
            explained = [d for d in second if d.action != "hold"]
            assert explained and all(d.explanation.method == "shap" and len(d.explanation.top_features) == 5
                                     for d in explained)
            assert all(d.explanation.method is None and d.confidence == 0.5 for d in decisions[:200])
            # Every field is what the audit log says.
            one = explained[-1]
            trail = await system.audit_trail(one.decision_id)
            decided = next(r["payload"] for r in trail if r["stage"] == "decision")
            assert (decided["strategy"], decided["confidence"]) == (one.strategy, one.confidence)
            assert await system.decision(one.decision_id) == one

            status = system.get_system_status()
            assert status["status"] == "running" and status["decisions_generated"] == 600
            assert any(m.startswith("edge_model:") for m in status["active_models"])
            assert isinstance(status["daily_pnl"], float)

            # The human at the veto gate: every order risk passed is held by the rule above.
            held = [d for d in orders if d.status == "held"]
            assert len(held) >= 2 and not any(d.vetoed for d in held)
            assert {p["decision_id"] for p in await system.pending()} >= {d.decision_id for d in held}
            await system.approve(held[-1].decision_id)
            await system.reject(held[-2].decision_id)
            with pytest.raises(KeyError):
                await system.approve(held[-2].decision_id)  # already decided
            single = await system.process_market_data(bars.iloc[600].to_dict())  # one row in, one Decision out
            assert single is not None and single.event_ts == bars["event_ts"].iloc[600]
            assert (await system.decision(held[-1].decision_id)).status == "filled"  # filled on the next bar
            rejected = await system.decision(held[-2].decision_id)
            assert rejected.status == "vetoed" and rejected.vetoed

            # The kill switch: later orders are rejected by risk, and the status says halted.
            await system.kill_switch("python api test")
            assert system.get_system_status()["status"] == "halted"
            after = await system.process_market_data(bars.iloc[601:1_001])
            stopped = [d for d in after if d.action != "hold"]
            assert stopped and all(d.status == "rejected_by_risk" and d.vetoed and d.risk_score == 1.0 for d in stopped)
            await system.resume()
            assert system.get_system_status()["status"] == "running"

            # A refused row is named, and the rows around it are still decided.
            bad = bars.iloc[1_001:1_061].reset_index(drop=True)
            bad.loc[40, "close"] = -1.0
            with pytest.raises(MarketDataError, match="row 40, field 'close'") as caught:
                await system.process_market_data(bad)
            assert len(caught.value.decisions) == 59
            assert system.get_system_status()["decisions_generated"] == 1_060
            with pytest.raises(ValueError, match="kind"):
                await system.process_market_data(bars.iloc[0].to_dict(), kind="odds")
        assert system._sync.pipeline is None  # the actors it started are gone

    asyncio.run(main())


def test_connect_to_a_loop_started_by_edgeray_run_keep(ray_session, tmp_path, unique_name, monkeypatch):
    cfg = pipeline_config(tmp_path, unique_name, decisions={"enabled": True, "shadows": []})
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("EDGERAY_API_KEYS", ",".join(f"{r}-user:{r}:{k}" for r, k in TEST_KEYS.items()))
    result = CliRunner().invoke(app, ["run", "--config", str(config_path), "--keep"])
    assert result.exit_code == 0, result.output
    trader = SyncOrchestrator.connect(config_path, api_key=TEST_KEYS["trader"], namespace=unique_name)
    try:
        with trader as system:
            status = system.get_system_status()
            assert status["decisions_generated"] == 4000 and status["identity"] == {"name": "trader-user", "role": "trader"}
            row = {"symbol": "SYN-A", "event_ts": "2024-06-03T00:00:00Z", "open": 100.0, "high": 101.0, "low": 99.5,
                   "close": 100.5, "volume": 10.0}
            decision = system.process_market_data(row)
            assert decision.symbol == "SYN-A" and decision.event_ts == pd.Timestamp(row["event_ts"])
            with pytest.raises(PermissionError, match="admin"):
                system.resume()  # a trader may trip the kill switch but not lift it, as over HTTP
        with SyncOrchestrator.connect(config_path, api_key=TEST_KEYS["viewer"], namespace=unique_name) as viewer:
            assert viewer.get_system_status()["decisions_generated"] == 4001
            with pytest.raises(PermissionError, match="trade"):
                viewer.kill_switch("a viewer may not")
            with pytest.raises(PermissionError, match="feed"):
                viewer.process_market_data(row)
        # Leaving a connected system leaves the loop running.
        with SyncOrchestrator.connect(config_path, api_key=TEST_KEYS["admin"], namespace=unique_name) as admin:
            assert admin.get_system_status()["status"] == "running"
        with pytest.raises(PermissionError, match="api_key"):
            SyncOrchestrator.connect(config_path, api_key="not-a-key-" + "x" * 20, namespace=unique_name)
        with pytest.raises(LookupError, match="no running decision loop"):
            SyncOrchestrator.connect(config_path, api_key=TEST_KEYS["admin"], namespace="nobody-here").start()
    finally:
        from actors.pipeline import Pipeline

        Pipeline.attach(Config.from_yaml(config_path)).shutdown()


def test_bad_config_values_raise_one_error_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"^ingestion\.batch_size: Input should be greater than 0 \(got 0\)$"):
        Config(ingestion={"symbols": ["X"], "batch_size": 0})
    with pytest.raises(ConfigError, match=r"decisions\.epsilon: .*less than or equal to 1 \(got 2\)"):
        Config(ingestion={"symbols": ["X"]}, decisions={"epsilon": 2})
    with pytest.raises(ConfigError, match=r"ingestion\.batch_sise: Extra inputs are not permitted"):
        Config(ingestion={"symbols": ["X"], "batch_sise": 10})
    with pytest.raises(ValueError, match="decisions.enabled"):
        Orchestrator(Config(ingestion={"symbols": ["X"]}, decisions={"enabled": False}))
    # YAML round trip: what to_yaml writes, from_yaml reads back equal (paths absolute, from any folder).
    cfg = Config(run_dir="runs/here", ingestion=StreamingConfig(symbols=["BTCUSDT-PERP"]),
                 decisions=DecisionConfig(enabled=True, alpha=0.5))
    assert cfg.run_dir.startswith("/") and cfg.decisions.risk_config.endswith("risk.yaml")
    assert Config.from_yaml(tmp_path / "round.yaml") == cfg if cfg.to_yaml(tmp_path / "round.yaml") else False
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"ingestion": {"symbols": ["X"], "max_in_flight": -1}, "sources": []}))
    with pytest.raises(ConfigError, match=r"ingestion\.max_in_flight: .*greater than 0 \(got -1\)"):
        Config.from_yaml(bad)


def test_the_docs_example_replays_btc_and_draws_both_charts(ray_session, tmp_path, unique_name, capsys):
    import importlib.util

    from tests.conftest import ROOT

    shared_file("markets/btc_perp_1m_2022-01.csv")
    spec = importlib.util.spec_from_file_location("python_api_example", ROOT / "docs" / "examples" / "python_api.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = asyncio.run(example.main(1_500, tmp_path, namespace=unique_name))
    assert result["decisions"] == 1_500 and result["status"]["decisions_generated"] == 1_500
    assert set(result["charts"]) == {"equity", "explanation"}
    for png in result["charts"].values():
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "Trading Decision:" in printed and "Top Features: [(" in printed and "decided 1,500 / 1,500 bars" in printed


def _trail(*stages: tuple[str, dict]) -> list[dict]:
    decided = {"symbol": "A", "regime": "trending_up", "strategy": "momentum", "confidence": 0.62, "price": 100.0,
               "signal": {"direction": 1, "strength": 0.5, "expected_return": 0.004},
               "sizing": {"method": "kelly", "fraction": 0.1, "target": 10.0, "quantity": 10.0},
               "explanation": [{"feature": "ret_15", "shap": 0.3}, {"feature": "rv_30", "shap": -0.1}]}
    ts = pd.Timestamp("2024-03-01 10:00", tz="UTC")
    return [{"decision_id": "d1", "stage": "decision", "event_ts": ts, "payload": decided},
            *({"decision_id": "d1", "stage": s, "event_ts": ts, "payload": p} for s, p in stages)]


@pytest.mark.parametrize("stages, status, vetoed, quantity", [
    ((("risk", {"verdict": "reject", "quantity": 0.0, "reasons": "kill_switch", "risk_score": 1.0}),),
     "rejected_by_risk", True, 10.0),
    ((("risk", {"verdict": "resize", "quantity": 4.0, "reasons": "position_limit", "risk_score": 1.0}),
      ("veto", {"verdict": "approve", "rule": None})), "approved", False, 4.0),
    ((("risk", {"verdict": "approve", "quantity": 10.0, "reasons": "", "risk_score": 0.4}),
      ("veto", {"verdict": "approve", "rule": None}), ("fill", {"quantity": 10.0})), "filled", False, 10.0),
    ((("risk", {"verdict": "approve", "quantity": 10.0, "reasons": "", "risk_score": 0.4}),
      ("veto", {"verdict": "reject", "rule": "low_confidence"})), "vetoed", True, 10.0),
    ((("risk", {"verdict": "approve", "quantity": 10.0, "reasons": "", "risk_score": 0.4}),
      ("veto", {"verdict": "hold", "rule": "large_notional"})), "held", False, 10.0),
    ((("risk", {"verdict": "approve", "quantity": 10.0, "reasons": "", "risk_score": 0.4}),
      ("veto", {"verdict": "hold", "rule": "large_notional"}), ("veto_review", {"verdict": "approve", "rule": "large_notional"})),
     "approved", False, 10.0),
    ((("risk", {"verdict": "approve", "quantity": 10.0, "reasons": "", "risk_score": 0.4}),
      ("veto", {"verdict": "hold", "rule": "large_notional"}), ("veto_review", {"verdict": "reject", "rule": "large_notional"})),
     "vetoed", True, 10.0),
])
def test_a_decision_reads_its_status_from_the_audit_trail(stages, status, vetoed, quantity):
    from edgeray import Decision

    d = Decision.from_trail(_trail(*stages))
    assert d.decision_id == "d1"  # its own id, from the trail
    assert (d.status, d.vetoed, d.quantity, d.action) == (status, vetoed, quantity, "buy")
    assert d.explanation.method == "shap" and [f.feature for f in d.explanation.top_features] == ["ret_15", "rv_30"]
    assert (d.position_size, d.expected_return, d.confidence) == (0.1, 0.004, 0.62)


def test_a_trail_without_a_decision_record_is_no_decision():
    from edgeray import Decision

    assert Decision.from_trail([]) is None
    assert Decision.from_trail([{"decision_id": "x", "stage": "rejected", "event_ts": pd.Timestamp.now(tz="UTC"),
                                 "payload": {"symbol": "A", "reason": "went_back_in_time_for_symbol"}}]) is None
    trail = _trail()
    trail[0]["payload"]["sizing"]["quantity"] = 0.0  # below min_order_notional: no order, so no risk record
    hold = Decision.from_trail(trail)
    assert (hold.status, hold.action, hold.risk_score, hold.vetoed) == ("no_order", "hold", 0.0, False)
