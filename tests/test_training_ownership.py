"""Training-queue ownership and input bounds (issue 11 B): jobs belong to the authenticated submitter, callers
cannot choose filesystem paths, and every size a submission carries is bounded. The store rules are checked
without Ray; the owner/admin/other-user matrix on the real scheduler actor."""
from __future__ import annotations

import time

import pytest

from edgeray.training.jobs import MAX_PARAMS_BYTES, JobStore
from tests.conftest import SHARED

ANN, BOB, OPS = ("ann", False), ("bob", False), ("ops", True)  # (user, is_admin) as the route passes them
SPORT = {"sport": "nba", "family": "statistical", "name": "logistic_l2", "train_seasons": [2019, 2020],
         "test_seasons": [2021], "model_params": {"Cs": [1.0], "k_features": ["all"], "cv_splits": 2}}


def _demo(epochs: int = 2, **extra) -> dict:
    return {"epochs": epochs, "n_samples": 32, "batch_size": 32, "hidden": 4, **extra}


# --------------------------------------------------------------------- caller paths (no Ray)
@pytest.mark.parametrize("task, params, field", [
    ("sport_model", {**SPORT, "data_dir": "/etc"}, "params.data_dir"),
    ("sport_model", {**SPORT, "registry_dir": "/tmp/elsewhere"}, "params.registry_dir"),
    ("sport_model", {**SPORT, "out_dir": "x"}, "params.out_dir"),
    ("sport_model", {**SPORT, "db_path": "x"}, "params.db_path"),
    ("sport_model", {**SPORT, "model_params": {"cache_dir": "/tmp"}}, "params.model_params.cache_dir"),
    ("torch_mlp_demo", _demo(log_path="/tmp/log"), "params.log_path"),
    ("torch_mlp_demo", _demo(weights_file="w.pt"), "params.weights_file"),
])
def test_caller_params_cannot_name_a_path(tmp_path, task, params, field):
    store = JobStore(tmp_path / "q.sqlite")
    with pytest.raises(ValueError) as err:
        store.submit("ann", task, params, 0, 0.0)
    assert str(err.value).startswith(f"{field}: paths cannot be chosen") and "server's config" in str(err.value)
    assert store.list_jobs() == []


def test_server_params_are_merged_after_the_path_check(tmp_path):
    store = JobStore(tmp_path / "q.sqlite")
    server = {"data_dir": str(tmp_path / "data"), "registry_dir": str(tmp_path / "registry")}
    job = store.submit("ann", "sport_model", SPORT, 0, 0.0, server_params=server)
    assert job["params"]["data_dir"] == server["data_dir"] and job["params"]["registry_dir"] == server["registry_dir"]


# --------------------------------------------------------------------- bounds (no Ray)
@pytest.mark.parametrize("kwargs, message", [
    ({"params": _demo(10**6)}, "params.epochs must be an integer between 1 and 100000"),
    ({"params": _demo(n_samples=10**9)}, "params.n_samples must be between 1 and 1e+06"),
    ({"params": _demo(hidden=10**5)}, "params.hidden must be between"),
    ({"params": _demo(batch_size=10**6)}, "params.batch_size must be between"),
    ({"params": _demo(lr=1e3)}, "params.lr must be between"),
    ({"params": _demo(seed=-1)}, "params.seed must be between"),
    ({"priority": 10**6}, "priority must be an integer between -1000 and 1000"),
    ({"num_gpus": 100}, "num_gpus must be a finite number between 0 and 16"),
    ({"user": "u" * 201}, "user must be at most 200 characters"),
    ({"task": "sport_model", "params": {**SPORT, "name": "n" * 201}}, "params.name must be at most 200 characters"),
    ({"task": "sport_model", "params": {**SPORT, "tags": ["t" * 199] * 100}},
     f"params must be at most {MAX_PARAMS_BYTES} bytes"),
    ({"task": "sport_model", "params": {**SPORT, "tags": [str(i) for i in range(33)]}},
     "params.tags must have at most 32 items"),
    ({"task": "sport_model", "params": {**SPORT, "train_seasons": [3000]}}, "params.train_seasons[0] must be between"),
    ({"task": "sport_model", "params": {**SPORT, "model_params": {"Cs": [1.0] * 21}}},
     "params.model_params.Cs must have at most 20 items"),
    ({"task": "sport_model", "params": {**SPORT, "family": "neural", "name": "mlp",
                                        "model_params": {"epochs": 10**5}}}, "params.model_params.epochs must be between"),
    ({"task": "sport_model", "params": {**SPORT, "family": "neural", "name": "mlp",
                                        "model_params": {"hidden_layers": [64, 10**6]}}},
     "params.model_params.hidden_layers[1] must be between 1 and 4096"),
    ({"task": "sport_model", "params": {**SPORT, "family": "ensemble", "name": "voting_soft",
                                        "model_params": {"n_estimators": 10**6}}},
     "params.model_params.n_estimators must be between"),
    ({"task": "sport_model", "params": {**SPORT, "model_params": {"a": {"b": {"c": {"d": 1}}}}}}, "nested deeper"),
])
def test_out_of_bounds_submission_names_the_field(tmp_path, kwargs, message):
    args = {"user": "ann", "task": "torch_mlp_demo", "params": _demo(), "priority": 0, "num_gpus": 0.5, **kwargs}
    store = JobStore(tmp_path / "q.sqlite")
    with pytest.raises(ValueError) as err:
        store.submit(**args)
    assert message in str(err.value)
    assert store.list_jobs() == []


def test_in_bounds_sport_model_families_still_validate(tmp_path):
    """The bounds are upper limits over what PARAM_SCHEMAS accepts; ordinary requests pass unchanged."""
    store = JobStore(tmp_path / "q.sqlite")
    mlp = {**SPORT, "family": "neural", "name": "mlp", "model_params": {"epochs": 30, "hidden_layers": [64, 32]}}
    assert store.submit("ann", "sport_model", mlp, 1000, 16)["params"]["model_params"]["hidden_layers"] == [64, 32]


# --------------------------------------------------------------------- the actor on Ray
@pytest.fixture
def paused_queue(ray_session, tmp_path):
    """A scheduler that queues but never starts jobs: every job stays 'queued', so the checks need no waits."""
    from actors.training_queue import TrainingQueueActor

    actor = TrainingQueueActor.remote({"db_path": str(tmp_path / "queue.sqlite"), "start_paused": True})
    yield actor
    ray_session.kill(actor)


def test_owner_admin_other_user_matrix(ray_session, paused_queue):
    get, q = ray_session.get, paused_queue
    a = get(q.submit.remote("ann", "torch_mlp_demo", _demo(), 0, 0.0))["job_id"]
    b = get(q.submit.remote("bob", "torch_mlp_demo", _demo(), 0, 0.0))["job_id"]

    # job(): owner and admin see it; another user gets exactly the unknown-id answer
    assert get(q.job.remote(a, *ANN))["job_id"] == a and get(q.job.remote(a, *OPS))["job_id"] == a
    with pytest.raises(KeyError) as other:
        get(q.job.remote(a, *BOB))
    with pytest.raises(KeyError) as unknown:
        get(q.job.remote("0" * 12, *BOB))
    assert str(other.value.args[0]).replace(a, "ID") == str(unknown.value.args[0]).replace("0" * 12, "ID")

    # user_jobs(): own by default; another user's only for an admin
    assert [j["job_id"] for j in get(q.user_jobs.remote(*ANN))] == [a]
    assert [j["job_id"] for j in get(q.user_jobs.remote(*ANN, of_user="ann"))] == [a]
    with pytest.raises(PermissionError, match="only an admin"):
        get(q.user_jobs.remote(*ANN, of_user="bob"))
    assert [j["job_id"] for j in get(q.user_jobs.remote(*OPS, of_user="bob"))] == [b]
    assert get(q.user_jobs.remote(*OPS)) == []  # the admin's own: none

    # queue() and jobs(): a non-admin sees only their own, with the position counted over everyone's
    assert [(j["job_id"], j["queue_position"]) for j in get(q.queue.remote(*BOB))] == [(b, 2)]
    assert [(j["job_id"], j["queue_position"]) for j in get(q.queue.remote(*OPS))] == [(a, 1), (b, 2)]
    assert [j["job_id"] for j in get(q.jobs.remote(*ANN))] == [a]
    assert {j["job_id"] for j in get(q.jobs.remote(*OPS))} == {a, b}

    # cancel(): not by another user (whose name is not revealed), by the owner, by an admin
    with pytest.raises(PermissionError) as denied:
        get(q.cancel.remote(a, *BOB))
    assert "belongs to another user" in str(denied.value) and "'ann'" not in str(denied.value)
    assert get(q.job.remote(a, *OPS))["state"] == "queued"
    assert get(q.cancel.remote(a, *ANN))["state"] == "cancelled"
    assert get(q.cancel.remote(b, *OPS))["state"] == "cancelled"
    with pytest.raises(KeyError, match="unknown job_id"):
        get(q.cancel.remote("0" * 12, *ANN))
    assert get(q.jobs.remote(*BOB, states=["cancelled"]))[0]["job_id"] == b

    # the identity itself is checked
    with pytest.raises(ValueError, match="is_admin must be a bool"):
        get(q.jobs.remote("ann", "yes"))
    with pytest.raises(ValueError, match="user must be a non-empty string"):
        get(q.submit.remote(" ", "torch_mlp_demo", _demo(), 0, 0.0))


def test_job_writes_only_where_the_server_says(ray_session, tmp_path):
    from actors.training_queue import TrainingQueueActor

    data = SHARED / "sports"
    if not (data / "nba_2007_2023.csv").exists():
        pytest.skip(f"real data file {data / 'nba_2007_2023.csv'} is absent")
    registry, elsewhere = tmp_path / "registry", tmp_path / "elsewhere"
    q = TrainingQueueActor.remote({"db_path": str(tmp_path / "queue.sqlite"), "poll_s": 0.05})
    try:
        with pytest.raises(ValueError, match="params.registry_dir: paths cannot be chosen"):
            ray_session.get(q.submit.remote("ann", "sport_model", {**SPORT, "registry_dir": str(elsewhere)}, 0, 0.0,
                                            {"data_dir": str(data), "registry_dir": str(registry)}))
        assert ray_session.get(q.jobs.remote(*OPS)) == []
        job_id = ray_session.get(q.submit.remote("ann", "sport_model", SPORT, 0, 0.0,
                                                 {"data_dir": str(data), "registry_dir": str(registry)}))["job_id"]
        deadline = time.monotonic() + 120
        while (job := ray_session.get(q.job.remote(job_id, *ANN)))["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"job still {job['state']} after 120 s"
            time.sleep(0.05)  # polling interval only; the deadline bounds the wait
        assert job["state"] == "completed", job["error"]
    finally:
        ray_session.kill(q)
    assert any(registry.rglob("*")) and not elsewhere.exists()
