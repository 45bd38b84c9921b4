"""Model inference over real HTTP: the ingress bound with the ModelServer deployment (serve/inference.py) at two
replicas, each multiplexing up to two sport models, against a real registry holding small real NFL models trained
here. One Serve app for the module.

What Serve's routing decides (which replica a new model lands on) is not fixed, so the multiplexing checks
follow each replica's own report (`replica`, `loaded_models` in every answer) and replay its LRU cache: every
answer must be exactly what a least-recently-used cache of `models_per_replica` models would hold."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict

import httpx
import pytest

from tests.conftest import FEED, SHARED, VIEWER, pipeline_config, serve_api, shared_file

APP = "edgeray-models"
PER_REPLICA = 2
# Serve learns which replica holds which model from the replicas' own reports (pushed every 0.1 s, then the
# controller's loop and the routers' long poll); until then a request may go to either replica. Checks of where a
# model is served poll for that (bounded) instead of sleeping.
ROUTING_DEADLINE_S = 20.0
FAST = {"Cs": [1.0], "k_features": ["all"], "cv_splits": 2}


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    shared_file("sports/nfl_sbr_2011_2021.csv")
    from edgeray.sports.features import build_features
    from edgeray.sports.games import load_sport
    from edgeray.sports.registry import ModelRegistry
    from edgeray.sports.train import train_sport_model

    tmp = tmp_path_factory.mktemp("serve_models")
    registry_dir = tmp / "registry"
    base = {"sport": "nfl", "family": "statistical", "name": "logistic_l2", "train_seasons": [2017, 2018],
            "test_seasons": [2019], "data_dir": str(SHARED / "sports"), "registry_dir": str(registry_dir)}
    a = train_sport_model({**base, "model_params": FAST, "tags": ["nfl-main"]})["model_id"]
    b = train_sport_model({**base, "model_params": {**FAST, "Cs": [0.01], "k_features": [5]}})["model_id"]
    registry = ModelRegistry(registry_dir)
    # Three more registered models (copies of the first, each its own id and artefact) for the LRU checks.
    copies = [registry.register(registry.load(a), {})["model_id"] for _ in range(3)]
    cfg = pipeline_config(tmp, "servemodels", sports={"data_dir": str(SHARED / "sports"), "registry_dir": str(registry_dir),
                                                      "queue_db": str(tmp / "queue.sqlite")},
                          api={"model_replicas": 2, "models_per_replica": PER_REPLICA})
    frame = build_features(load_sport("nfl", str(SHARED / "sports")))
    with serve_api(cfg, APP, timeout=60, inference=True) as client:
        client.headers.update(VIEWER)
        client.ids = {"a": a, "b": b, "copies": copies}
        client.registry = registry
        client.games = frame[frame["season"] == 2019].head(4).reset_index(drop=True)
        yield client


def predict(client, model, body, **kwargs) -> httpx.Response:
    return client.post(f"/api/models/{model}/predict", json=body, **kwargs)


def games_body(games) -> dict:
    return {"games": [{"date": str(g["date"].date()), "home": g["home"], "away": g["away"]} for _, g in games.iterrows()]}


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_two_models_on_two_replicas_and_each_model_keeps_its_replica(served):
    from ray import serve

    status = serve.status().applications[APP].deployments["ModelServer"]
    assert status.replica_states.get("RUNNING") == 2
    a, b = served.ids["a"], served.ids["b"]
    one = games_body(served.games.head(1))

    def settled_homes() -> dict | None:
        """Each model's replica once the routers know where both are loaded: two answers in a row from the same
        replica per model, on two different replicas (the second model goes to the replica holding fewer)."""
        homes = {}
        for model_id in (a, b):
            first, second = (ok(predict(served, model_id, one))["replica"] for _ in range(2))
            if first != second:
                return None
            homes[model_id] = first
        return homes if len(set(homes.values())) == 2 else None

    deadline = time.monotonic() + ROUTING_DEADLINE_S
    while (home := settled_homes()) is None:
        assert time.monotonic() < deadline, "the two models never settled on two replicas"
    # Model multiplexing: from then on each model is served where it is loaded.
    for _ in range(4):
        for model_id in (a, b):
            out = ok(predict(served, model_id, one))
            assert out["replica"] == home[model_id], (model_id, out["replica"], home)
            assert str(model_id) in out["loaded_models"]


def test_predictions_equal_the_models_own_in_process(served):
    a, b = served.ids["a"], served.ids["b"]
    games = served.games
    for model_id in (a, b):
        expected = served.registry.load(model_id).predict_proba(games)
        out = ok(predict(served, model_id, games_body(games)))
        assert out["model_id"] == model_id and out["sport"] == "nfl" and out["replica"]
        assert [p["game_id"] for p in out["predictions"]] == list(games["game_id"])
        assert [p["p_home_win"] for p in out["predictions"]] == pytest.approx(list(expected), abs=1e-12)
    # A tag names the model too; the answer is the registry id's.
    assert ok(predict(served, "nfl-main", games_body(games.head(1))))["model_id"] == a
    # Feature rows given by the caller: the same rows, the same probabilities.
    model = served.registry.load(a)
    rows = [{"date": str(g["date"].date()), "features": {c: (None if g[c] != g[c] else float(g[c])) for c in model.feature_columns}}
            for _, g in games.iterrows()]
    out = ok(predict(served, a, {"rows": rows}))
    assert [p["p_home_win"] for p in out["predictions"]] == pytest.approx(list(model.predict_proba(games)), abs=1e-12)


def test_more_models_than_a_replica_holds_unload_the_least_recently_used(served):
    order = [*served.ids["copies"], served.ids["a"], served.ids["b"], served.ids["copies"][0], served.ids["a"]]
    caches: dict[str, OrderedDict] = {}
    evictions = 0
    for model_id in order:
        out = ok(predict(served, model_id, games_body(served.games.head(1))))
        loaded = out["loaded_models"]
        assert len(loaded) <= PER_REPLICA and loaded[-1] == str(model_id), out
        cache = caches.get(out["replica"])
        if cache is None:  # first answer from this replica in this test: its report is the starting state
            caches[out["replica"]] = OrderedDict.fromkeys(loaded)
        else:
            cache[str(model_id)] = None
            cache.move_to_end(str(model_id))
            while len(cache) > PER_REPLICA:
                cache.popitem(last=False)
                evictions += 1
            assert loaded == list(cache), (out["replica"], loaded, list(cache))
    # Five models on two replicas of two: some replica held three, and unloaded one.
    assert evictions >= 1, caches


def test_auth_unknown_models_and_bad_bodies(served):
    a = served.ids["a"]
    one = games_body(served.games.head(1))
    bare = httpx.Client(base_url=served.base_url, timeout=30)
    assert predict(bare, a, one).status_code == 401
    assert predict(bare, a, one, headers=FEED).status_code == 403
    bare.close()

    def fails(model, body, status, loc=None):
        r = predict(served, model, body)
        assert r.status_code == status, r.text
        item = r.json()["detail"][0]
        if loc is not None:
            assert item["loc"][:len(loc)] == loc, item
        return item

    fails(999_999, one, 404, ["path", "model_id"])
    fails("no-such-tag", one, 404, ["path", "model_id"])
    fails("9" * 40, one, 404, ["path", "model_id"])
    fails(a, {}, 422, ["body"])
    fails(a, {**one, "rows": [{"date": "2019-09-05", "features": {"x": 1.0}}]}, 422, ["body"])
    fails(a, {"games": []}, 422, ["body", "games"])
    fails(a, {"games": one["games"] * 1_001}, 422, ["body", "games"])
    fails(a, {"games": [{**one["games"][0], "extra": 1}]}, 422, ["body", "games", 0, "extra"])
    fails(a, {"games": [{**one["games"][0], "home": "NOPE"}]}, 422, ["body", "games", 0])
    fails(a, {"games": [{**one["games"][0], "date": "not-a-date"}]}, 422, ["body", "games", 0, "date"])
    fails(a, {"games": [{**one["games"][0], "sport": "nba"}]}, 422, ["body", "games", 0, "sport"])
    item = fails(a, {"rows": [{"date": "2019-09-05", "features": {"f_not_a_feature": 1.0}}]}, 422,
                 ["body", "rows", 0, "features"])
    assert "f_not_a_feature" in item["loc"]
    fails(a, {"rows": [{"date": "2019-09-05", "features": {"f_home_pf_5": "1"}}]}, 422, ["body", "rows", 0, "features"])


def test_replica_errors_become_503_with_retry_after_never_500():
    import asyncio

    from fastapi import HTTPException
    from ray.exceptions import ActorDiedError

    from serve.inference import InputError, UnknownModel
    from serve.routers.inference import infer

    class Failing:
        def __init__(self, exc):
            self.exc = exc

        def options(self, **kwargs):
            assert kwargs == {"multiplexed_model_id": "7"}
            return self

        @property
        def predict(self):
            return self

        async def remote(self, payload):
            raise self.exc

    class Silent(Failing):  # no replica answers: the request is bounded by the timeout
        async def remote(self, payload):
            await asyncio.sleep(60)

    for handle in (Failing(ActorDiedError()), Failing(RuntimeError("boom")), Silent(None)):
        with pytest.raises(HTTPException) as caught:
            asyncio.run(infer(handle, 7, {"games": []}, timeout_s=0.05))
        assert caught.value.status_code == 503 and caught.value.headers == {"Retry-After": "1"}
    with pytest.raises(HTTPException) as caught:  # the replica's own input errors keep their status and field
        asyncio.run(infer(Failing(InputError(["body", "rows", 0, "date"], "bad date", "x")), 7, {}))
    assert caught.value.status_code == 422 and caught.value.detail[0]["loc"] == ["body", "rows", 0, "date"]
    with pytest.raises(HTTPException) as caught:  # a model removed between the ingress's lookup and the load
        asyncio.run(infer(Failing(UnknownModel("model_id 7 is not in the registry")), 7, {}))
    assert caught.value.status_code == 404


def test_model_server_options_follow_the_config():
    from edgeray.config import ApiConfig
    from serve.inference import model_server

    deployment = model_server(ApiConfig(model_replicas=3, models_per_replica=4, model_max_replicas_per_node=1))
    assert deployment.num_replicas == 3
    assert deployment._replica_config.max_replicas_per_node == 1
    with pytest.raises(ValueError):
        ApiConfig(models_per_replica=0)


def test_serve_keeps_answering_when_the_replica_holding_a_model_dies(served):
    import ray

    a = served.ids["a"]
    one = games_body(served.games.head(1))
    victim = ok(predict(served, a, one))["replica"]
    answers: list[tuple[float, int, str | None, str | None]] = []
    stop = threading.Event()

    def poll():
        with httpx.Client(base_url=served.base_url, headers=VIEWER, timeout=60) as client:
            while not stop.is_set():
                r = predict(client, a, one)
                answers.append((time.monotonic(), r.status_code, r.headers.get("retry-after"),
                                r.json().get("replica") if r.status_code == 200 else None))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    while not answers:
        time.sleep(0.05)
    killed_at = time.monotonic()
    ray.kill(ray.get_actor(f"SERVE_REPLICA::{APP}#ModelServer#{victim}", namespace="serve"), no_restart=True)
    deadline = killed_at + 20
    while time.monotonic() < deadline and not any(t > killed_at and s == 200 and rep != victim for t, s, _, rep in answers):
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=60)
    after = [x for x in answers if x[0] > killed_at]
    assert any(s == 200 and rep != victim for _, s, _, rep in after), after[-5:]
    # Failover is bounded: a handful of 503s at most (the requests in flight on the killed replica).
    assert sum(1 for x in after if x[1] != 200) <= 5, after[:10]
    bad = [x for x in answers if x[1] != 200 and (x[1] != 503 or not x[2])]
    assert not bad, bad[:5]
