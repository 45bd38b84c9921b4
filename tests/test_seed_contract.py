"""Sports-model HTTP routes over real HTTP, with one Serve app for the module: the specification's own
examples (training-queue spec, "Getting Started") sent exactly as written, each working or answering a
4xx that says what to change; the training queue training real models on real NBA seasons, the
registry, performance matrix and explainer serving them, and the data pipeline with progress."""
from __future__ import annotations

import time

import pytest

from tests.conftest import SHARED, TRADER, VIEWER, pipeline_config, serve_api, shared_file

DEADLINE_S = 240

SUBMIT = {"model_id": "nba_ensemble_v1", "sport": "NBA", "model_type": "ensemble", "epochs": 50, "batch_size": 32,
          "learning_rate": 0.001}
CREATE = {"sport": "NFL", "model_type": "lstm_weather", "model_name": "NFL Weather LSTM v1"}
BACKTEST = {"model_id": "nba_ensemble_v1", "sport": "NBA", "start_date": "2024-01-01", "end_date": "2024-02-01",
            "initial_bankroll": 1000, "betting_strategy": "kelly_criterion", "min_confidence": 0.65}


@pytest.fixture(scope="module")
def api(ray_session, tmp_path_factory):
    shared_file("sports/nba_2007_2023.csv")
    tmp = tmp_path_factory.mktemp("seed_contract")
    cfg = pipeline_config(tmp, "seed_contract", sports={"data_dir": str(SHARED / "sports"), "registry_dir": str(tmp / "registry"),
                                                        "queue_db": str(tmp / "queue.sqlite")})
    with serve_api(cfg, "edgeray-seed-contract", timeout=120) as client:
        yield client


def wait_for(fetch, done, what: str):
    """Poll a status route until `done(body)` or the deadline (waiting on a condition, not a clock)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        body = fetch()
        if done(body):
            return body
        time.sleep(0.25)
    raise AssertionError(f"{what} did not finish in {DEADLINE_S} s: {body}")


@pytest.fixture(scope="module")
def trained(api):
    """The documented submission, trained to the end."""
    job = api.post("/api/training/submit", json=SUBMIT, headers=TRADER)
    assert job.status_code == 200, job.text
    body = job.json()
    # An ensemble has no epochs, batch size or learning rate of its own: said, not silently dropped.
    assert body["ignored_params"] == ["epochs", "batch_size", "learning_rate"]
    assert body["params"]["sport"] == "nba" and body["params"]["family"] == "ensemble"
    assert body["params"]["tags"] == ["nba_ensemble_v1"]
    done = wait_for(lambda: api.get(f"/api/training/job/{body['job_id']}", headers=TRADER).json(),
                    lambda j: j["state"] in ("completed", "failed", "cancelled"), "the documented training job")
    assert done["state"] == "completed", done.get("error")
    return done


def test_documented_training_submission_trains_a_model_found_by_its_string_id(api, trained):
    model_id = trained["result"]["model_id"]
    record = api.get("/api/performance/leaderboard/NBA", headers=VIEWER)
    assert record.status_code == 200
    mine = next(r for r in record.json() if r["model_id"] == model_id)
    assert "nba_ensemble_v1" in mine["tags"]


def test_documented_sport_model_creation_takes_the_model_type_and_name(api):
    job = api.post("/api/models/create-sport-model", json=CREATE, headers=TRADER)
    assert job.status_code == 200, job.text
    params = job.json()["params"]
    assert (params["sport"], params["family"], params["name"]) == ("nfl", "lstm", "lstm_weather")
    assert params["tags"] == ["NFL Weather LSTM v1"]
    cancelled = api.post(f"/api/training/job/{job.json()['job_id']}/cancel", headers=TRADER)  # not needed further
    assert cancelled.status_code in (200, 409)
    wrong = api.post("/api/models/create-sport-model", json={**CREATE, "model_type": "lstm_sunshine"}, headers=TRADER)
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "model_type"]
    assert "lstm_weather" in wrong.json()["detail"][0]["msg"]  # the known types are listed


def test_documented_backtest_names_the_data_span_and_runs_inside_it(api, trained):
    outside = api.post("/api/backtest/run", json=BACKTEST, headers=VIEWER)
    assert outside.status_code == 422, outside.text
    item = outside.json()["detail"][0]
    assert item["loc"][-1] == "start_date"
    assert "'2024-01-01' is outside the nba data, which spans 2007-10-30 to 2023-01-16" in item["msg"]

    inside = api.post("/api/backtest/run", json={**BACKTEST, "start_date": "2022-11-01", "end_date": "2023-01-17"},
                      headers=VIEWER)
    assert inside.status_code == 200, inside.text
    result = inside.json()
    assert result["sizing"]["method"] == "kelly" and result["initial_bankroll"] == 1000
    metrics = result["metrics"]
    assert metrics["opportunities"] > 100 and 0 <= metrics["total_bets"] <= metrics["opportunities"]
    assert "significance_vs_market" in metrics and metrics["significance_vs_market"]["n"] == metrics["opportunities"]
    bets = result["bets"]  # the bet history, paged
    assert bets["total"] == metrics["total_bets"] and bets["offset"] == 0 and len(bets["items"]) == min(100, bets["total"])
    if bets["total"] > 3:
        page = api.post("/api/backtest/run", json={**BACKTEST, "start_date": "2022-11-01", "end_date": "2023-01-17",
                                                   "bets_offset": 2, "bets_limit": 2}, headers=VIEWER).json()["bets"]
        assert page["items"] == bets["items"][2:4]
        assert set(page["items"][0]) >= {"date", "game_id", "side", "decimal_odds", "stake", "won", "pnl"}
    unknown = api.post("/api/backtest/run", json={**BACKTEST, "model_id": "nba_ensemble_v9"}, headers=VIEWER)
    assert unknown.status_code == 404 and "nba_ensemble_v9" in unknown.json()["detail"][0]["msg"]


def test_documented_performance_matrix_is_matrix_and_summary(api, trained):
    got = api.get("/api/performance/matrix?sport=NBA&days_back=30", headers=VIEWER)
    assert got.status_code == 200, got.text
    body = got.json()
    assert set(body) == {"matrix", "summary"}
    row = next(r for r in body["matrix"] if r["model_id"] == trained["result"]["model_id"])
    perf = trained["result"]["performance"]
    assert row["n_predictions"] == perf["n_predictions"] > 100 and row["confidence"] == pytest.approx(perf["confidence"])
    assert 0.5 <= row["confidence"] <= 1.0
    assert row["meets_min_accuracy"] == (row["accuracy"] >= 0.55)
    assert row["meets_target_roi"] is None if row["roi"] is None else row["meets_target_roi"] == (row["roi"] >= 0.15)
    summary = body["summary"]
    assert summary["models"] == len(body["matrix"]) and summary["by_sport"] == {"nba": len(body["matrix"])}
    assert summary["thresholds"] == {"min_accuracy": 0.55, "target_accuracy": 0.70, "min_roi": 0.05, "target_roi": 0.15}
    best = min(body["matrix"], key=lambda r: (r["log_loss"], r["model_id"]))
    assert summary["best_log_loss"]["model_id"] == best["model_id"]
    assert summary["meets_min_accuracy"] == sum(1 for r in body["matrix"] if r["meets_min_accuracy"])
    for sport in ("NBA", "ncaab", "MLB", "ncaaf"):
        assert api.get("/api/performance/matrix", params={"sport": sport}, headers=VIEWER).status_code == 200
        assert api.get(f"/api/performance/leaderboard/{sport}", headers=VIEWER).status_code == 200


def test_tags_over_http_name_a_model_for_backtests(api, trained):
    model_id = trained["result"]["model_id"]
    tagged = api.post(f"/api/models/{model_id}/tags", json={"tags": ["favourite", "nba-prod"]}, headers=TRADER)
    assert tagged.status_code == 200 and {"favourite", "nba-prod", "nba_ensemble_v1"} <= set(tagged.json()["tags"])
    assert api.post(f"/api/models/{model_id}/tags", json={"tags": ["x"]}, headers=VIEWER).status_code == 403
    assert api.post("/api/models/999999/tags", json={"tags": ["x"]}, headers=TRADER).status_code == 404
    assert api.post(f"/api/models/{model_id}/tags", json={"tags": []}, headers=TRADER).status_code == 422
    run = api.post("/api/backtest/run", json={**BACKTEST, "model_id": "nba-prod", "start_date": "2022-11-01",
                                              "end_date": "2023-01-17"}, headers=VIEWER)
    assert run.status_code == 200 and run.json()["metrics"]["opportunities"] > 100


def test_sport_features_list_every_named_feature_with_its_availability(api):
    got = api.get("/api/models/sport-features/NFL/lstm_weather", headers=VIEWER)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["sport"] == "nfl" and body["model_type"] == "lstm" and list(body["models"]) == ["lstm_weather"]
    named = {f["feature"]: f for f in body["specification_features"]}
    assert named["weather"]["available"] and "f_temperature_f" in named["weather"]["columns"]
    assert named["strength of schedule"]["available"]
    assert not named["sacks"]["available"] and "box_scores" not in body["feature_groups"]
    assert "home_sacks/away_sacks" in named["sacks"]["reason"]
    mlb = {f["feature"]: f for f in api.get("/api/models/sport-features/mlb/statistical", headers=VIEWER).json()[
        "specification_features"]}
    assert set(mlb) >= {"ERA", "WHIP", "OPS", "batting average", "runs per game"} and not mlb["ERA"]["available"]
    assert api.get("/api/models/sport-features/nhl/statistical", headers=VIEWER).status_code == 422


# -- the sports routes beyond the specification's examples ------------------------------------------

def test_bad_training_requests_name_the_field(api):
    bad_sport = api.post("/api/models/create-sport-model", json={"sport": "nhl", "model_type": "statistical"}, headers=TRADER)
    assert bad_sport.status_code == 422 and "sport" in bad_sport.json()["detail"][0]["msg"] and "nhl" in bad_sport.json()["detail"][0]["msg"]
    bad_family = api.post("/api/models/create-sport-model", json={"sport": "nba", "model_type": "magic"}, headers=TRADER)
    assert bad_family.status_code == 422 and "magic" in bad_family.json()["detail"][0]["msg"]
    bad_epochs = api.post("/api/models/create-sport-model", json={"sport": "nba", "model_type": "neural", "params": {"epochs": -1}},
                          headers=TRADER)
    assert bad_epochs.status_code == 422 and "epochs" in bad_epochs.json()["detail"][0]["msg"]
    assert api.post("/api/models/create-sport-model", json={"sport": "nba", "model_type": "statistical"}, headers=VIEWER).status_code == 403
    assert api.get("/api/training/job/no-such-job", headers=VIEWER).status_code == 404
    assert api.get("/api/performance/leaderboard/curling", headers=VIEWER).status_code == 422


def test_queue_trains_a_real_model_that_the_matrix_and_explainer_serve(api):
    job = api.post("/api/models/create-sport-model", headers=TRADER, json={
        "sport": "nba", "model_type": "statistical", "name": "logistic_l2", "train_seasons": [2019, 2020], "test_seasons": [2021]})
    assert job.status_code == 200, job.text
    job_id = job.json()["job_id"]
    assert job_id in {j["job_id"] for j in api.get("/api/training/queue", headers=TRADER).json()} | \
        {j["job_id"] for j in api.get("/api/training/user-jobs", headers=TRADER).json()}
    done = wait_for(lambda: api.get(f"/api/training/job/{job_id}", headers=TRADER).json(),
                    lambda j: j["state"] in ("completed", "failed", "cancelled"), "training job")
    assert done["state"] == "completed", done.get("error")
    model_id = done["result"]["model_id"]
    report = done["result"]["report"]
    assert report["n"] > 1000 and report["test_seasons"] == [2021]
    assert report["beats_market_log_loss"] == (report["model"]["log_loss"] < report["market"]["log_loss"])
    assert api.post(f"/api/training/job/{job_id}/cancel", headers=TRADER).status_code == 409  # already finished

    matrix = api.get("/api/performance/matrix", params={"sport": "nba"}, headers=VIEWER).json()["matrix"]
    row = next(r for r in matrix if r["model_id"] == model_id)  # the module's other tests register models too
    assert abs(row["log_loss"] - report["model"]["log_loss"]) < 1e-9
    board = api.get("/api/performance/leaderboard/nba", params={"metric": "brier"}, headers=VIEWER).json()
    assert model_id in [r["model_id"] for r in board]
    assert [r["brier"] for r in board] == sorted(r["brier"] for r in board)  # best first
    assert api.post("/api/performance/compare", json={"model_ids": [model_id]}, headers=VIEWER).status_code == 200
    assert "statistical" in {r["family"] for r in api.get("/api/performance/model-types", headers=VIEWER).json()}
    assert api.get("/api/performance/parameters", params={"family": "statistical"}, headers=VIEWER).status_code == 200
    assert api.get("/api/performance/trending", headers=VIEWER).status_code == 200

    explained = api.get("/api/data/features/explain", params={"model_id": model_id, "rows": 2}, headers=VIEWER)
    assert explained.status_code == 200, explained.text
    games = explained.json()["games"]
    assert len(games) == 2 and all(g["top_features"][0]["feature"].startswith("f_") for g in games)


def test_gpu_stats_say_there_is_no_gpu_instead_of_failing(api):
    stats = api.get("/api/training/gpu-stats", headers=VIEWER).json()
    assert stats["available"] is False and stats["reason"]


def test_data_pipeline_runs_with_progress_and_stage_reports(api):
    assert api.post("/api/data/pipeline/run", json={"sport": "cricket"}, headers=TRADER).status_code == 422
    started = api.post("/api/data/pipeline/run", json={"sport": "nfl"}, headers=TRADER)
    assert started.status_code == 200 and started.json()["state"] == "running"
    status = wait_for(lambda: api.get("/api/data/pipeline/status", headers=VIEWER).json(),
                      lambda s: s["state"] in ("finished", "failed"), "data pipeline")
    assert status["state"] == "finished", status.get("error")
    assert status["progress"] == 1.0
    stages = [s["name"] for s in status["report"]["stages"]]
    assert stages == ["ingestion", "feature_engineering", "validation", "preprocessing"]
    features = api.get("/api/models/sport-features/nfl/lstm", headers=VIEWER).json()
    assert any("wind" in f for names in features["feature_groups"].values() for f in names)
    assert "lstm_weather" in features["models"]
    assert api.get("/api/data/preprocessing/config", headers=VIEWER).json()["clip_quantiles"]
