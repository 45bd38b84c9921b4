"""Value bets through the decision kernel: the same risk engine rules, veto gate, kill switch, audit records
and checkpoint as market orders, with their own bet book (no Ray: the kernel is plain calls)."""
import numpy as np
import pandas as pd
import pytest
import yaml

from actors.meta_controller import policy_window
from edgeray.config import PipelineConfig
from edgeray.features.books import MultiBookOddsState
from edgeray.value import ValueConfig, ValueStrategy
from policies.kernel import BET_STRATEGY, DecisionKernel
from tests.conftest import pipeline_config
from tests.test_odds_stream import synthetic_stream

MIN_EDGE = 0.01


def make_kernel(tmp_path, veto: dict | None = None, state: dict | None = None) -> DecisionKernel:
    overrides = {"enabled": True, "shadows": [], "value": {"min_edge": MIN_EDGE}}
    if veto is not None:
        path = tmp_path / "veto.yaml"
        path.write_text(yaml.safe_dump(veto))
        overrides["veto_config"] = str(path)
    cfg = PipelineConfig.model_validate(pipeline_config(tmp_path, "valuebets", decisions=overrides))
    return DecisionKernel(cfg, policy_window(None), state)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    return MultiBookOddsState().update(synthetic_stream(seed=11))


def by_stage(records: list[dict], stage: str) -> list[dict]:
    return [r for r in records if r["stage"] == stage]


def test_every_value_bet_is_risk_checked_vetoed_booked_and_audited(tmp_path, features):
    kernel = make_kernel(tmp_path)
    records = []
    for start in range(0, len(features), 400):  # batches as the streamer sends them
        records += kernel.step_bets(features.iloc[start:start + 400].reset_index(drop=True)).records
    expected = ValueStrategy(ValueConfig(min_edge=MIN_EDGE)).decide(features)  # the core on the whole stream
    proposals = by_stage(records, "bet_decision")
    assert len(expected) > 5 and len(proposals) == len(expected)
    assert [(p["payload"]["game"], p["payload"]["side"], p["payload"]["bookmaker"]) for p in proposals] == \
        list(zip(expected["symbol"], expected["side"], expected["bookmaker"]))
    ids = {p["decision_id"] for p in proposals}
    assert {r["decision_id"] for r in by_stage(records, "risk")} == ids  # risk saw every bet
    vetoed = by_stage(records, "veto")
    passed = {r["decision_id"] for r in by_stage(records, "risk") if r["payload"]["verdict"] in ("approve", "resize")}
    assert {r["decision_id"] for r in vetoed} == passed  # the veto gate saw every bet risk passed
    booked = by_stage(records, "bet")
    assert {r["decision_id"] for r in booked} == {r["decision_id"] for r in vetoed if r["payload"]["verdict"] == "approve"}
    # Stakes are fractional Kelly of the book's equity, capped; the bet book holds exactly what was booked.
    stakes = {r["decision_id"]: r["payload"]["stake"] for r in booked}
    assert all(0 < s <= 0.02 * kernel.bets.initial_bankroll + 1e-9 for s in stakes.values())
    assert sum(stakes.values()) < kernel.bets.equity  # sized from what is not staked yet
    assert sum(kernel.bets.open_stakes().values()) == pytest.approx(sum(stakes.values()))
    assert kernel.bet_risk.positions == pytest.approx(kernel.bets.open_stakes())


def test_a_retried_batch_is_not_bet_twice_and_a_restart_keeps_the_book(tmp_path, features):
    kernel = make_kernel(tmp_path)
    first = kernel.step_bets(features)
    assert first.orders > 0
    again = kernel.step_bets(features)
    assert again.skipped_as_already_decided and again.records == []
    restored = make_kernel(tmp_path, state=kernel.state_dict())
    assert restored.bets.snapshot() == kernel.bets.snapshot()
    assert restored.step_bets(features).skipped_as_already_decided
    # The strategy's one-bet-per-(game, side) memory survives too: new quotes on bet sides are not bet again.
    more = MultiBookOddsState()
    later = synthetic_stream(seed=11).assign(event_ts=lambda f: f["event_ts"] + pd.Timedelta(days=1))
    more.update(synthetic_stream(seed=11))
    repeat = restored.step_bets(more.update(later))
    bet_sides = {(p["game"], p["side"]) for p in (r["payload"] for r in first.records if r["stage"] == "bet_decision")}
    assert not {(r["payload"]["game"], r["payload"]["side"]) for r in by_stage(repeat.records, "bet_decision")} & bet_sides


def test_kill_switch_rejects_bets_and_results_settle_the_book(tmp_path, features):
    kernel = make_kernel(tmp_path)
    early = features["symbol"].isin([f"g{i}" for i in range(6)]).to_numpy()  # half the games before the kill
    kernel.step_bets(features[early].reset_index(drop=True))
    kernel.kill("test halt", "tester")
    after = kernel.step_bets(features[~early].reset_index(drop=True))
    risk = by_stage(after.records, "risk")
    assert risk and all(r["payload"]["verdict"] == "reject" and "kill_switch" in r["payload"]["reasons"] for r in risk)
    assert not by_stage(after.records, "bet")
    open_games = sorted({b["symbol"] for b in kernel.bets.open.values()})
    results = pd.DataFrame({"symbol": open_games, "event_ts": pd.Timestamp("2026-07-06T04:00:00Z"),
                            "score_a": np.arange(len(open_games)) % 3, "score_b": 1})
    settled = kernel.settle(results)
    assert len(settled) == kernel.bets.settled > 0 and not kernel.bets.open
    assert kernel.bets.equity == pytest.approx(kernel.bets.initial_bankroll + sum(r["payload"]["pnl"] for r in settled))


def test_a_held_bet_is_booked_only_when_a_human_approves(tmp_path, features):
    veto = {"default_action": "approve", "rules": [{"name": "bets_need_a_human", "action": "hold",
                                                     "when": {"strategies": [BET_STRATEGY]}}]}
    kernel = make_kernel(tmp_path, veto=veto)
    out = kernel.step_bets(features)
    held = [r["decision_id"] for r in by_stage(out.records, "veto") if r["payload"]["verdict"] == "hold"]
    assert held and not by_stage(out.records, "bet") and not kernel.bets.open
    _, records = kernel.review("approve", held[0], "alice", pd.Timestamp.now(tz="UTC"))
    assert [r["decision_id"] for r in by_stage(records, "bet")] == [held[0]]
    assert len(kernel.bets.open) == 1 and kernel.bet_risk.positions == pytest.approx(kernel.bets.open_stakes())
    _, records = kernel.review("reject", held[1], "alice", pd.Timestamp.now(tz="UTC"))
    assert not by_stage(records, "bet") and len(kernel.bets.open) == 1
