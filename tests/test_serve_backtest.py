"""Backtest and underdog HTTP routes over real HTTP, on a model trained on real NBA seasons."""
from __future__ import annotations

import pytest

from edgeray.sports.train import train_sport_model
from tests.conftest import SHARED, TRADER, VIEWER, pipeline_config, serve_api, shared_file



@pytest.fixture(scope="module")
def api(ray_session, tmp_path_factory):
    shared_file("sports/nba_2007_2023.csv")
    tmp = tmp_path_factory.mktemp("serve_backtest")
    registry = tmp / "registry"
    trained = train_sport_model({"sport": "nba", "family": "statistical", "name": "logistic_l2", "train_seasons": [2019, 2020],
                                 "test_seasons": [2021], "data_dir": str(SHARED / "sports"), "registry_dir": str(registry)})
    cfg = pipeline_config(tmp, "serve_backtest", sports={"data_dir": str(SHARED / "sports"), "registry_dir": str(registry),
                                                         "queue_db": str(tmp / "queue.sqlite")})
    with serve_api(cfg, "edgeray-backtest", timeout=300) as client:
        yield client, trained["model_id"]


def test_backtest_run_compare_and_monte_carlo(api):
    client, model_id = api
    body = {"model_id": model_id, "sport": "nba", "betting_strategy": "kelly", "min_edge": 0.02, "initial_bankroll": 1000}
    run = client.post("/api/backtest/run", json=body, headers=VIEWER)
    assert run.status_code == 200, run.text
    metrics = run.json()["metrics"]
    assert metrics["total_bets"] > 0 and metrics["wins"] + metrics["losses"] == metrics["total_bets"]
    assert min(run.json()["equity"]["bankroll"]) >= 0 and len(run.json()["equity"]["date"]) > 0
    compare = client.post("/api/backtest/compare-strategies", json=body, headers=VIEWER).json()
    assert set(compare) == {"fixed", "percentage", "kelly", "confidence"}
    assert compare["kelly"]["total_bets"] == metrics["total_bets"]
    mc = {**body, "n_paths": 600, "seed": 7}
    first = client.post("/api/backtest/monte-carlo", json=mc, headers=VIEWER).json()
    again = client.post("/api/backtest/monte-carlo", json=mc, headers=VIEWER).json()
    assert first["paths"] == 600 and 0 <= first["prob_ruin"] <= 1 and first == again  # chunked across tasks, seeded
    assert first["fan"]["paths"] == 600 and len(first["fan"]["p50"]) == len(first["fan"]["step"]) > 2


def test_backtest_refuses_look_ahead_and_bad_requests(api):
    client, model_id = api
    inside = client.post("/api/backtest/run", json={"model_id": model_id, "sport": "nba", "start_date": "2020-11-01"}, headers=VIEWER)
    assert inside.status_code == 422 and "start_date" in inside.json()["detail"][0]["msg"]
    assert client.post("/api/backtest/run", json={"model_id": model_id, "sport": "nfl"}, headers=VIEWER).status_code == 422
    assert client.post("/api/backtest/run", json={"model_id": 999, "sport": "nba"}, headers=VIEWER).status_code == 404
    bad = client.post("/api/backtest/run", json={"model_id": model_id, "sport": "nba", "betting_strategy": "martingale"}, headers=VIEWER)
    assert bad.status_code == 422 and "betting_strategy" in str(bad.json()["detail"])
    negative = client.post("/api/backtest/run", json={"model_id": model_id, "sport": "nba", "initial_bankroll": -5}, headers=VIEWER)
    assert negative.status_code == 422 and "initial_bankroll" in str(negative.json()["detail"])


def test_walk_forward_refits_per_fold_and_never_trains_on_its_future(api):
    client, _ = api
    wf = client.post("/api/backtest/walk-forward", headers=VIEWER, json={
        "sport": "nba", "model_type": "statistical", "name": "logistic_l2", "seasons": [2018, 2019, 2020, 2021],
        "min_train_seasons": 2, "min_edge": 0.02})
    assert wf.status_code == 200, wf.text
    folds = wf.json()["folds"]
    assert len(folds) == 2
    assert all(f["train_end"] <= f["test_start"] for f in folds)
    assert wf.json()["metrics"]["total_bets"] > 0


def test_underdog_routes(api):
    client, _ = api
    missing = client.get("/api/underdog/predict", headers=VIEWER)
    assert missing.status_code == 422 and "underdog" in missing.json()["detail"][0]["msg"]
    trained = client.post("/api/underdog/train", json={"seasons": [2012, 2013]}, headers=TRADER)
    assert trained.status_code == 200, trained.text
    assert client.post("/api/underdog/train", json={"tiers": ["gigantic"]}, headers=TRADER).status_code == 422
    backtest = client.post("/api/underdog/backtest", json={"min_edge": 0.0}, headers=VIEWER)
    assert backtest.status_code == 200, backtest.text
    assert backtest.json()["metrics"]["total_bets"] > 0
