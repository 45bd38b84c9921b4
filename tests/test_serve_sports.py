"""Sports-model HTTP routes over real HTTP: the training queue trains a real model on real NBA
seasons, the registry and performance matrix serve it, the data pipeline runs with progress."""
from __future__ import annotations

import time

import pytest

from tests.conftest import SHARED, TRADER, VIEWER, pipeline_config, serve_api, shared_file

DEADLINE_S = 240


@pytest.fixture(scope="module")
def api(ray_session, tmp_path_factory):
    shared_file("sports/nba_2007_2023.csv")
    tmp = tmp_path_factory.mktemp("serve_sports")
    cfg = pipeline_config(tmp, "serve_sports", sports={"data_dir": str(SHARED / "sports"), "registry_dir": str(tmp / "registry"),
                                                       "queue_db": str(tmp / "queue.sqlite")})
    with serve_api(cfg, "edgeray-sports", timeout=120) as client:
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
    assert [row["model_id"] for row in matrix] == [model_id]
    assert abs(matrix[0]["log_loss"] - report["model"]["log_loss"]) < 1e-9
    board = api.get("/api/performance/leaderboard/nba", params={"metric": "brier"}, headers=VIEWER).json()
    assert board[0]["model_id"] == model_id
    assert api.post("/api/performance/compare", json={"model_ids": [model_id]}, headers=VIEWER).status_code == 200
    assert api.get("/api/performance/model-types", headers=VIEWER).json()[0]["family"] == "statistical"
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
