"""The decision loop end to end on real Ray actors: ingestion -> features -> meta-controller ->
risk -> veto -> paper execution -> audit, with outcomes flowing back as rewards."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml

from actors.pipeline import META_CONTROLLER, Pipeline
from edgeray.audit import AuditLog
from edgeray.config import PipelineConfig, SourceConfig
from edgeray.storage.state import open_state_store
from tests.conftest import pipeline_config, postgres_url_or_skip

N_BARS = 1500  # per generated symbol; enough for warm-up, the edge model and rewards to flow


def loop_config(tmp_path, name, veto_rules=None, **decision_overrides):
    veto = {"default_action": "approve", "hold_timeout_s": 300, "timeout_action": "reject", "rules": veto_rules or []}
    veto_path = tmp_path / "veto.yaml"
    veto_path.write_text(yaml.safe_dump(veto))
    decisions = {"enabled": True, "edge_model_warmup_rows": 600, "edge_model_activation_lag_rows": 300, "veto_config": str(veto_path),
                 "risk_config": "configs/risk.yaml", "shadows": [{"name": "mom", "strategy": "momentum"}],
                 "ledger": {"reward_horizon_bars": 5}, **decision_overrides}
    cfg = pipeline_config(tmp_path, name, decisions=decisions,
                          fallback={"type": "generator", "symbols": ["SYN-A", "SYN-B"], "n_bars": N_BARS, "seed": 11})
    return PipelineConfig.model_validate(cfg)


def generator(cfg: PipelineConfig) -> list[SourceConfig]:
    return [cfg.fallback]


def records(cfg: PipelineConfig, stage: str | None = None) -> pd.DataFrame:
    log = AuditLog(f"sqlite:///{cfg.run_dir}/audit.db")
    rows = log.range(pd.Timestamp("1900-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"), stage=stage, limit=10_000_000)
    return pd.DataFrame(rows)


def poll_until(ref: ray.ObjectRef, progress, threshold: int) -> None:
    """Poll while the replay `ref` runs until `progress()` passes `threshold` (or the replay ends first)."""
    while not ray.wait([ref], timeout=0.05)[0]:
        if progress() > threshold:
            return


def test_loop_decides_every_feature_row_once_and_fills_only_later_bars(ray_session, tmp_path, unique_name):
    cfg = loop_config(tmp_path, unique_name)
    pipeline = Pipeline.start(cfg, fresh=True)
    try:
        ray.get(pipeline.replay_async(generator(cfg), rate=0))
        status = pipeline.finish()
        decisions = records(cfg, "decision")
        # Every market feature row got exactly one decision record.
        assert status["features"]["events_processed"] == 2 * N_BARS
        assert len(decisions) == 2 * N_BARS == decisions["decision_id"].nunique()
        assert status["decisions"]["decisions"] == 2 * N_BARS
        # Orders went through risk and veto; approved ones filled on a strictly later bar.
        risk, veto, fills = records(cfg, "risk"), records(cfg, "veto"), records(cfg, "fill")
        assert len(risk) == status["decisions"]["orders"] > 0
        assert set(veto["decision_id"]) <= set(risk["decision_id"])
        assert len(fills) > 0
        decided_at = decisions.set_index("decision_id")["event_ts"]
        assert (pd.to_datetime(fills["event_ts"], utc=True).to_numpy()
                > pd.to_datetime(decided_at.loc[fills["decision_id"]], utc=True).to_numpy()).all()
        # Outcomes came back as rewards to LinUCB.
        outcomes = records(cfg, "outcome")
        assert len(outcomes) > 0 and status["decisions"]["rewards_applied"] > 0
        arms = ray.get(pipeline.decision[META_CONTROLLER].arms.remote())
        assert sum(a["pulls"] for a in arms) == status["decisions"]["rewards_applied"]
        # Explanations are attached to the decisions that traded once the edge model exists.
        explained = [p for p in decisions["payload"] if p["sizing"]["quantity"] != 0 and p["explanation"]]
        assert explained and all(len(p["explanation"]) == 5 for p in explained)
        # Shadow strategy: logged, never executed, its delta PnL reported.
        assert len(records(cfg, "shadow:mom")) > 0
        assert not set(records(cfg, "shadow:mom")["decision_id"]) - set(decisions["decision_id"])
        assert status["decisions"]["shadows"][0]["name"] == "mom"
    finally:
        pipeline.shutdown()


def test_kill_switch_stops_decisions_in_flight(ray_session, tmp_path, unique_name):
    cfg = loop_config(tmp_path, unique_name)
    pipeline = Pipeline.start(cfg, fresh=True)
    try:
        # Paced replay (250 bar-minutes per second: ~6 s in all) so the kill lands mid-stream.
        ref = pipeline.replay_async(generator(cfg), rate=60 * 250)
        meta = pipeline.decision[META_CONTROLLER]
        poll_until(ref, lambda: ray.get(meta.status.remote())["decisions"], 1000)  # kill about a third of the way in
        assert not ray.wait([ref], timeout=0)[0], "the replay finished before the kill"
        event = ray.get(pipeline.decision[META_CONTROLLER].kill.remote("test: stop everything", "pytest"))
        ray.get(ref)
        pipeline.finish()
        kill_rows = records(cfg, "kill_switch")
        assert len(kill_rows) == 1 and kill_rows["payload"][0]["actor"] == "pytest"
        killed_at = pd.Timestamp(kill_rows["recorded_at"][0])
        if killed_at.tzinfo is None:
            killed_at = killed_at.tz_localize("UTC")
        risk = records(cfg, "risk")
        recorded = pd.to_datetime(risk["recorded_at"], utc=True)
        # The kill takes the batch lock: every batch decided after it records after the kill's own record.
        after = risk[recorded > killed_at]
        assert len(after) > 0, "the replay should still be deciding after the kill"
        assert (after["payload"].map(lambda p: p["verdict"]) == "reject").all()
        assert after["payload"].map(lambda p: "kill_switch" in p["reasons"]).all()
        fills = records(cfg, "fill")
        assert (pd.to_datetime(fills["recorded_at"], utc=True) <= killed_at + pd.Timedelta(seconds=1)).all()
        assert ray.get(pipeline.decision[META_CONTROLLER].risk_status.remote())["killed"] is True
        assert isinstance(event["cancelled_orders"], list)
    finally:
        pipeline.shutdown()


def test_held_decisions_time_out_to_the_default_and_never_execute(ray_session, tmp_path, unique_name):
    cfg = loop_config(tmp_path, unique_name, veto_rules=[{"name": "hold_all", "action": "hold", "when": {"notional_above": 0}}])
    pipeline = Pipeline.start(cfg, fresh=True)
    try:
        ray.get(pipeline.replay_async(generator(cfg), rate=0))
        pipeline.finish()
        veto = pipeline.decision[META_CONTROLLER]
        pending = ray.get(veto.pending.remote())
        assert len(pending) > 0
        assert len(records(cfg, "fill")) == 0  # nothing held was executed
        # One approval by a human executes exactly that order on the next bar that arrives.
        approved_id = pending[0]["decision_id"]
        ray.get(veto.approve.remote(approved_id, "pytest-trader"))
        expired = ray.get(veto.expire.remote(pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)))
        assert len(expired) == len(pending) - 1
        assert all(r["verdict"] == "reject" for r in expired)
        reviews = records(cfg, "veto_review")
        assert set(reviews["decision_id"]) == {p["decision_id"] for p in pending}
        with pytest.raises(ray.exceptions.RayTaskError):
            ray.get(veto.approve.remote(expired[0]["decision_id"], "too-late"))
        assert ray.get(pipeline.decision[META_CONTROLLER].snapshot.remote())["positions"] == {}
    finally:
        pipeline.shutdown()


@pytest.mark.parametrize("checkpoint_interval_ms", [0, 60_000], ids=["checkpoint_every_batch", "resend_since_last_checkpoint"])
def test_meta_controller_killed_mid_stream_restarts_with_nothing_lost_or_duplicated(ray_session, tmp_path, unique_name,
                                                                                     checkpoint_interval_ms):
    # 60 s: no checkpoint comes between the first batch and the kill, so the restarted meta-controller starts from
    # nothing and the streamer must resend every batch it decided before the kill.
    cfg = loop_config(tmp_path, unique_name, checkpoint_interval_ms=checkpoint_interval_ms)
    kill_meta_controller_mid_stream_and_check_exactly_once(cfg, checkpoint_interval_ms)


def test_checkpoints_in_postgresql_restart_the_meta_controller_with_nothing_on_the_node_disk(ray_session, tmp_path,
                                                                                            unique_name):
    # Every batch checkpointed: the restarted meta-controller resumes from PostgreSQL, as it would on another node.
    cfg = loop_config(tmp_path, unique_name, checkpoint_interval_ms=0)
    cfg = PipelineConfig.model_validate({**cfg.model_dump(), "storage": {"state_url": postgres_url_or_skip()}})
    store = open_state_store(cfg)  # rows of this test's namespace (unique_name) only
    try:
        kill_meta_controller_mid_stream_and_check_exactly_once(cfg, 0)
        assert store.load("meta_controller")["stream"]["seq"] > 0 and store.load("ingestion") is not None
        assert not (Path(cfg.run_dir) / "state").exists()
    finally:
        store.clear()
        store.close()


def kill_meta_controller_mid_stream_and_check_exactly_once(cfg: PipelineConfig, checkpoint_interval_ms: float) -> None:
    pipeline = Pipeline.start(cfg, fresh=True)
    try:
        ref = pipeline.replay_async(generator(cfg), rate=60 * 3000)
        meta = pipeline.decision[META_CONTROLLER]
        poll_until(ref, lambda: ray.get(meta.status.remote())["decisions"], 600)
        ray.kill(pipeline.decision[META_CONTROLLER], no_restart=False)
        ray.get(ref)
        status = pipeline.finish()
        decisions = records(cfg, "decision")
        assert len(decisions) == 2 * N_BARS == decisions["decision_id"].nunique()
        assert status["decisions"]["decisions"] >= 2 * N_BARS - 2 * 1000  # counters restored from the checkpoint
        resent = status["features"]["decision_batches_resent"]
        assert resent > 0 if checkpoint_interval_ms else resent == 0
        log = AuditLog(f"sqlite:///{cfg.run_dir}/audit.db")
        for stage in ("risk", "fill", "outcome"):
            frame = records(cfg, stage)
            assert frame["decision_id"].nunique() == len(frame) == log.count(stage)
    finally:
        pipeline.shutdown()


def test_a_row_that_goes_back_in_time_is_rejected_and_the_loop_keeps_deciding(ray_session, tmp_path, unique_name):
    base = loop_config(tmp_path, unique_name).model_dump()
    n = 300
    cfg = PipelineConfig.model_validate({**base, "ingestion": {**base["ingestion"], "lateness_seconds": 0},
                                         "fallback": {**base["fallback"], "n_bars": n}})
    pipeline = Pipeline.start(cfg, fresh=True)
    try:
        ray.get(pipeline.replay_async(generator(cfg), rate=0))
        last = pd.Timestamp("2024-01-02", tz="UTC") + pd.Timedelta(minutes=n - 1)

        def push(symbol: str, minutes: int) -> dict:
            ts = (last + pd.Timedelta(minutes=minutes)).isoformat()
            return ray.get(pipeline.ingestion.ingest.remote(
                "bar", [{"event_ts": ts, "symbol": symbol, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5,
                         "volume": 10.0}], "push", True))

        # SYN-B at +5 is new for SYN-B, but behind SYN-A's +10 for the pairs strategy that reads both legs:
        # it used to raise "event_ts went back in time" inside decide_batch.
        assert [push(*p)["accepted"] for p in [("SYN-A", 10), ("SYN-B", 5), ("SYN-A", 11), ("SYN-B", 11)]] == [1] * 4
        status = pipeline.finish()
        assert status["decisions"]["rejected_rows"] == {"went_back_in_time_across_symbols": 1}
        assert status["features"]["decision_errors"] == 0
        assert status["decisions"]["decisions"] == 2 * n + 3  # everything else was decided
        rejected = records(cfg, "rejected")
        assert len(rejected) == 1 and rejected["payload"][0]["symbol"] == "SYN-B"
        decided = records(cfg, "decision")
        assert pd.to_datetime(decided["event_ts"], utc=True).max() == last + pd.Timedelta(minutes=11)
    finally:
        pipeline.shutdown()


def test_status_breaks_the_decision_latency_down_per_stage(ray_session, tmp_path, unique_name):
    base = loop_config(tmp_path, unique_name).model_dump()
    cfg = PipelineConfig.model_validate({**base, "fallback": {**base["fallback"], "n_bars": 800}})
    pipeline = Pipeline.start(cfg, fresh=True)
    try:
        ray.get(pipeline.replay_async(generator(cfg), rate=0))
        pipeline.finish()
        stages = ray.get(pipeline.decision[META_CONTROLLER].status.remote())["stages_ms"]
        from actors.meta_controller import STAGES
        assert set(stages) == set(STAGES)
        for stage, p in stages.items():
            assert p["samples"] > 0, stage
            assert 0 <= p["p50"] <= p["p99"], (stage, p)
    finally:
        pipeline.shutdown()
