"""Issue 11's findings, each reproduced against the real Serve app and pipeline actors and asserted fixed:
keys and roles on every route and stream, event-time sanity at the door, conflicts and strict types, body
limits, paginated dead letters, training-queue ownership, identities without key material, one error shape."""
from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest
import ray
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from actors.pipeline import Pipeline
from edgeray.auth import MIN_KEY_LENGTH, KeyConfigError, KeyRing, add_key, digest, load_key_file, parse_env_keys
from edgeray.config import PipelineConfig
from serve.app import create_app
from tests.conftest import ADMIN, FEED, TEST_KEYS, TRADER, VIEWER, key_entries, pipeline_config, serve_api

OTHER_TRADER_KEY = "second-trader-key-" + "y" * 20
OTHER_TRADER = {"X-API-Key": OTHER_TRADER_KEY}


def assert_error_shape(response: httpx.Response, status: int) -> list[dict]:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    for item in detail:
        assert {"loc", "msg", "type", "value"} <= item.keys(), item
    return detail


@pytest.fixture(scope="module")
def api(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    cfg = pipeline_config(tmp, "security_test", ingestion={"lateness_seconds": 0},
                          decisions={"enabled": True, "shadows": []},
                          sports={"registry_dir": str(tmp / "registry"), "queue_db": str(tmp / "queue.sqlite"),
                                  "data_dir": str(tmp / "sports")},
                          api={"max_body_bytes": 200_000})
    keys = key_entries() + [{"name": "second-trader", "role": "trader", "sha256": digest(OTHER_TRADER_KEY)}]
    with serve_api(cfg, "edgeray-security", keys, timeout=60) as client:
        yield client, cfg


def bars(minutes, symbol="SYN-A", day="2024-01-02", **override):
    return [{"event_ts": f"{day}T{m // 60:02d}:{m % 60:02d}:00Z", "symbol": symbol, "open": 100.0 + m, "high": 101.0 + m,
             "low": 99.0 + m, "close": 100.5 + m, "volume": 10.0, **override} for m in minutes]


def status(client) -> dict:
    return client.get("/api/pipeline/status", headers=VIEWER).json()


# -- keys ---------------------------------------------------------------------------------------------------
def test_keys_need_a_minimum_length_a_name_and_a_role():
    with pytest.raises(KeyConfigError, match=f"shorter than {MIN_KEY_LENGTH}"):
        parse_env_keys("alice:trader:short")
    with pytest.raises(KeyConfigError, match="'owner' is not a role"):
        parse_env_keys(f"alice:owner:{'k' * 30}")
    with pytest.raises(KeyConfigError, match="name:role:key") as refused:
        parse_env_keys(f"{'k' * 30}:trader")  # the old key:role form
    assert "k" * 30 not in str(refused.value)  # a bad entry is not echoed: it holds a key
    with pytest.raises(KeyConfigError, match="configured twice"):
        KeyRing(parse_env_keys(f"a:viewer:{'k' * 30},a:admin:{'j' * 30}"))


def test_identity_is_the_configured_name_never_key_material():
    ring = KeyRing(parse_env_keys(f"alice:trader:{'k' * 30},bob:viewer:{'j' * 30}"))
    alice = ring.identify("k" * 30)
    assert (alice.name, alice.role, str(alice)) == ("alice", "trader", "alice")
    assert ring.identify("j" * 30).role == "viewer"
    assert ring.identify("k" * 29) is None and ring.identify("") is None and ring.identify(None) is None


def test_no_keys_anywhere_refuses_to_start_with_a_clear_message(tmp_path):
    with pytest.raises(KeyConfigError, match="no API keys are configured.*EDGERAY_API_KEYS_FILE"):
        KeyRing.from_environment({}).require_configured()
    with pytest.raises(KeyConfigError, match="does not exist"):
        KeyRing.from_environment({"EDGERAY_API_KEYS_FILE": str(tmp_path / "missing.yaml")})


def test_key_file_keeps_only_digests_and_is_private(tmp_path):
    path = tmp_path / "keys.yaml"
    key = add_key(path, "desk-1", "feed")
    assert len(key) >= MIN_KEY_LENGTH and key not in path.read_text() and digest(key) in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    ring = KeyRing.from_environment({"EDGERAY_API_KEYS_FILE": str(path), "EDGERAY_API_KEYS": f"ops:admin:{'z' * 30}"})
    assert ring.identify(key).name == "desk-1" and ring.identify("z" * 30).role == "admin"
    with pytest.raises(KeyConfigError, match="configured twice"):
        add_key(path, "desk-1", "viewer")
    assert [e.name for e in load_key_file(path)] == ["desk-1"]


def test_the_app_refuses_to_start_without_keys(api):
    """Keys configured nowhere: the deployment fails with the reason instead of answering 401 to everyone."""
    from ray import serve

    from serve.app import build_deployment

    _, cfg = api
    app = build_deployment().options(max_constructor_retry_count=1).bind(cfg, [])
    with pytest.raises(RuntimeError, match="Deploying application edgeray-no-keys failed"):
        serve.run(app, name="edgeray-no-keys", route_prefix="/no-keys")
    why = serve.status().applications["edgeray-no-keys"].deployments["EdgerayAPI"].message
    serve.delete("edgeray-no-keys")
    assert "no API keys are configured" in why and "EDGERAY_API_KEYS_FILE" in why


def test_every_state_route_is_protected_and_documents_its_errors():
    app = create_app()
    spec = app.openapi()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            if path == "/healthz":
                continue
            assert {"401", "403"} <= op["responses"].keys(), (method, path)
            for code, response in op["responses"].items():
                if code.startswith("4") or code.startswith("5"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)


def test_market_data_and_reads_need_a_key_with_the_right_role(api):
    client, _ = api
    push = {"kind": "bar", "events": bars([0])}
    assert_error_shape(client.post("/api/market/events", json=push), 401)
    assert_error_shape(client.post("/api/market/events", json=push, headers={"X-API-Key": "x" * 30}), 401)
    assert_error_shape(client.post("/api/market/events", json=push, headers=VIEWER), 403)
    pushed = client.post("/api/market/events", json=push, headers=FEED)
    assert pushed.status_code == 200, pushed.text
    for path in ("/api/pipeline/status", "/api/deadletters", "/api/features/SYN-A", "/api/training/queue", "/api/risk/status"):
        assert_error_shape(client.get(path), 401)
        assert_error_shape(client.get(path, headers=FEED), 403)  # a feed pushes, it does not read
    assert_error_shape(client.post("/api/risk/kill-switch", json={"reason": "x"}, headers=FEED), 403)
    assert client.get("/healthz").status_code == 200


def test_websocket_needs_a_feed_key(api):
    client, _ = api
    url = f"ws://127.0.0.1:{client.port}/ws/market"
    for headers in ({}, {"X-API-Key": "x" * 30}, VIEWER):
        with pytest.raises(InvalidStatus) as refused:
            with connect(url, additional_headers=headers) as ws:
                ws.recv()
        assert refused.value.response.status_code == 403
    with connect(url, additional_headers=FEED) as ws:
        ws.send(json.dumps({"kind": "bar", "events": bars([1])}))
        assert json.loads(ws.recv())["status"] == 200


# -- event-time sanity, conflicts, strict types ---------------------------------------------------------------
def test_future_bars_are_refused_and_the_loop_keeps_deciding(api):
    client, cfg = api
    future = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=23)).floor("min")
    attack = [{**b, "event_ts": (future + pd.Timedelta(minutes=i)).isoformat()} for i, b in enumerate(bars([0, 1, 2], "SYN-B"))]
    refused = client.post("/api/market/events", json={"kind": "bar", "events": attack}, headers=TRADER)
    detail = assert_error_shape(refused, 422)
    assert {d["reason"] for d in detail} == {"future"} and refused.json()["accepted"] == 0
    pipeline = Pipeline.attach(PipelineConfig.model_validate(cfg))
    before = ray.get(pipeline.decision["meta_controller"].status.remote())
    genuine = bars(range(0, 80), "SYN-B", day="2024-02-01")
    for start in range(0, 80, 20):  # the 4th genuine POST was a 500 before the fix
        response = client.post("/api/market/events", json={"kind": "bar", "events": genuine[start:start + 20]}, headers=FEED)
        assert response.status_code == 200, response.text
    ray.get(pipeline.ingestion.flush.remote())
    ray.get(pipeline.streamer.flush.remote())
    after = ray.get(pipeline.decision["meta_controller"].status.remote())
    assert after["decisions"] - before["decisions"] == 80


def test_future_feature_rows_are_refused_at_the_decision_route(api):
    client, _ = api
    from tests.test_serve_decisions import feature_row

    row = feature_row(0) | {"event_ts": (pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=23)).isoformat()}
    detail = assert_error_shape(client.post("/api/decisions", json={"rows": [feature_row(1), row]}, headers=TRADER), 422)
    assert detail[0]["loc"] == ["body", "rows", 1, "event_ts"] and detail[0]["type"] == "future"


def test_a_conflicting_version_of_a_bar_is_a_dead_letter_with_both_values(api):
    client, _ = api
    genuine = bars([300], "SYN-A", day="2024-01-03")
    fake = [{**genuine[0], "close": 1.0, "low": 1.0}]
    assert client.post("/api/market/events", json={"kind": "bar", "events": fake}, headers=FEED).status_code == 200
    clash = client.post("/api/market/events", json={"kind": "bar", "events": genuine}, headers=FEED)
    detail = assert_error_shape(clash, 422)
    assert detail[0]["reason"] == "conflict" and "1.0" in str(detail[0]["value"]) and "400.5" in str(detail[0]["value"])
    again = client.post("/api/market/events", json={"kind": "bar", "events": fake}, headers=FEED)
    assert again.status_code == 200 and again.json()["duplicates"] == 1  # an exact resend stays a harmless duplicate


def test_a_callers_event_id_never_dedups_across_symbols(api):
    client, _ = api
    rows = [{**bars([400], "SYN-A", day="2024-03-01")[0], "event_id": "42"},
            {**bars([400], "SYN-B", day="2024-03-01")[0], "event_id": "42"}]
    response = client.post("/api/market/events", json={"kind": "bar", "events": rows}, headers=FEED)
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.text


@pytest.mark.parametrize("override, field", [({"close": "100.0"}, "close"), ({"close": True}, "close"),
                                             ({"volume": "10"}, "volume"), ({"event_ts": 1_704_153_600}, "event_ts")])
def test_strict_types_for_pushed_rows(api, override, field):
    client, _ = api
    response = client.post("/api/market/events", json={"kind": "bar", "events": bars([500], "SYN-A", **override)}, headers=FEED)
    detail = assert_error_shape(response, 422)
    assert (detail[0]["field"], detail[0]["reason"]) == (field, "wrong_type")


def test_epoch_timestamps_need_their_unit(api):
    client, _ = api
    ts = pd.Timestamp("2024-04-01T00:00:00Z")
    row = {**bars([0], "SYN-A")[0], "event_ts": int(ts.timestamp() * 1000)}
    taken = client.post("/api/market/events", json={"kind": "bar", "epoch_unit": "ms", "events": [row]}, headers=FEED)
    assert taken.status_code == 200 and taken.json()["accepted"] == 1, taken.text
    resend = {**row, "event_ts": ts.isoformat()}  # the same bar in ISO form is the same event
    assert client.post("/api/market/events", json={"kind": "bar", "events": [resend]}, headers=FEED).json()["duplicates"] == 1
    bad_unit = client.post("/api/market/events", json={"kind": "bar", "epoch_unit": "days", "events": [row]}, headers=FEED)
    assert assert_error_shape(bad_unit, 422)[0]["loc"] == ["body", "epoch_unit"]


@pytest.mark.parametrize("kind", ["bar", "quote", "odds", "result"])
def test_an_empty_row_is_rejected_and_counted_never_a_500(api, kind):
    client, _ = api
    before = status(client)["ingestion"]
    response = client.post("/api/market/events", json={"kind": kind, "events": [{}]}, headers=FEED)
    assert assert_error_shape(response, 422)[0].get("reason") == "missing_field", response.text
    after = status(client)["ingestion"]
    assert after["received"] - before["received"] == 1 and after["rejected"] - before["rejected"] == 1
    assert after["received"] == after["accepted"] + after["rejected"] + after["duplicates"]


# -- sizes ----------------------------------------------------------------------------------------------------
def test_bodies_over_the_limit_get_413_json_declared_or_streamed(api):
    client, _ = api
    big = json.dumps({"kind": "bar", "events": bars(range(0, 3000))}).encode()
    assert len(big) > 200_000
    assert_error_shape(client.post("/api/market/events", content=big, headers={**FEED, "content-type": "application/json"}), 413)

    def chunks():
        for start in range(0, len(big), 16_384):
            yield big[start:start + 16_384]

    assert_error_shape(client.post("/api/market/events", content=chunks(), headers={**FEED, "content-type": "application/json"}), 413)


def test_dead_letters_need_a_viewer_and_come_in_pages(api):
    client, _ = api
    bad = bars(range(600, 610), "SYN-A", day="2024-01-05", close=-1.0)
    client.post("/api/market/events", json={"kind": "bar", "events": bad}, headers=FEED)
    page = client.get("/api/deadletters", params={"limit": 3}, headers=VIEWER).json()
    assert len(page["items"]) == 3 and page["total"] >= 10 and page["offset"] == 0
    older = client.get("/api/deadletters", params={"limit": 3, "offset": 3}, headers=VIEWER).json()
    stamps = [json.dumps(r["raw"]) for r in older["items"] + page["items"]]
    assert len(set(stamps)) == 6  # consecutive pages do not overlap
    assert_error_shape(client.get("/api/deadletters", params={"limit": 10**6}, headers=VIEWER), 422)
    assert_error_shape(client.get("/api/deadletters", params={"offset": -1}, headers=VIEWER), 422)


# -- training queue ownership ---------------------------------------------------------------------------------
def test_training_jobs_belong_to_the_caller(api):
    client, _ = api
    body = {"task": "torch_mlp_demo", "params": {"epochs": 1}}
    mine = client.post("/api/training/submit", json=body, headers=TRADER)
    assert mine.status_code == 200, mine.text
    job = mine.json()
    assert job["user"] == "trader-user" and TEST_KEYS["trader"][:4] not in job["user"]
    assert_error_shape(client.post("/api/training/submit", json={**body, "user": "someone-else"}, headers=TRADER), 422)
    for key in ("registry_dir", "data_dir"):
        refused = client.post("/api/training/submit", json={"params": {"sport": "nba", "family": "statistical", key: "/tmp"}},
                              headers=TRADER)
        assert key in assert_error_shape(refused, 422)[0]["msg"]
    job_id = job["job_id"]
    assert client.get(f"/api/training/job/{job_id}", headers=TRADER).status_code == 200
    assert client.get(f"/api/training/job/{job_id}", headers=ADMIN).status_code == 200
    assert_error_shape(client.get(f"/api/training/job/{job_id}", headers=OTHER_TRADER), 404)  # no probing others' ids
    assert_error_shape(client.get("/api/training/user-jobs", params={"user": "trader-user"}, headers=VIEWER), 403)
    assert job_id not in {j["job_id"] for j in client.get("/api/training/user-jobs", headers=OTHER_TRADER).json()}
    assert job_id in {j["job_id"] for j in client.get("/api/training/user-jobs", params={"user": "trader-user"}, headers=ADMIN).json()}
    cancel = client.post(f"/api/training/job/{job_id}/cancel", headers=OTHER_TRADER)
    assert cancel.status_code in (403, 404)
    assert_error_shape(cancel, cancel.status_code)
    assert client.post(f"/api/training/job/{job_id}/cancel", headers=ADMIN).status_code in (200, 409)


def test_a_restarting_training_queue_is_waited_for_not_a_500(api):
    client, cfg = api
    assert client.get("/api/training/queue", headers=ADMIN).status_code == 200  # the queue actor exists now
    queue = ray.get_actor("training_queue", namespace=cfg["namespace"])
    ray.kill(queue, no_restart=False)
    assert client.get("/api/training/queue", headers=ADMIN).status_code == 200


def test_audit_names_the_caller_not_their_key(api):
    client, cfg = api
    killed = client.post("/api/risk/kill-switch", json={"reason": "drill"}, headers=TRADER)
    assert killed.status_code == 200 and killed.json()["actor"] == "trader-user"
    resumed = client.post("/api/risk/resume", headers=ADMIN).json()
    assert resumed["actor"] == "admin-user"
    pipeline = Pipeline.attach(PipelineConfig.model_validate(cfg))
    trail = ray.get(pipeline.decision["audit"].get.remote(f"kill_switch-{pd.Timestamp(killed.json()['ts']).value}"))
    text = json.dumps(trail, default=str)
    assert "trader-user" in text and not any(key[:8] in text for key in TEST_KEYS.values())


def test_client_errors_have_one_shape(api):
    client, _ = api
    assert_error_shape(client.post("/api/market/events", content=b"{not json", headers={**FEED, "content-type": "application/json"}), 422)
    assert_error_shape(client.post("/api/decisions", json={"rows": []}, headers=TRADER), 422)
    assert_error_shape(client.get("/api/decisions/nope", headers=VIEWER), 404)
    assert_error_shape(client.get("/api/policy", headers=VIEWER), 409)
    assert_error_shape(client.get("/api/no-such-route", headers=VIEWER), 404)
    assert_error_shape(client.post("/api/meta/arms/nope/disable", headers=ADMIN), 422)


def test_an_unexpected_server_error_is_json_in_the_error_shape_without_its_details():
    """A bug of ours is still a 500, but in the API's error shape, and the exception's text stays in the log."""
    from fastapi.testclient import TestClient

    from serve.app import create_app

    app = create_app()

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret internal state /etc/edgeray/keys")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert body["detail"][0]["type"] == "internal" and "secret" not in response.text
