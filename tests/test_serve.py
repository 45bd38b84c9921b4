"""The Serve app over real HTTP and WebSocket against the real pipeline actors."""
from __future__ import annotations

import json

import pytest
import ray
from websockets.sync.client import connect

from actors.feature_streamer import feast_settings
from actors.pipeline import Pipeline
from edgeray.config import PipelineConfig
from edgeray.featurestore import open_store
from tests.conftest import FEED, TRADER, pipeline_config, serve_api


@pytest.fixture(scope="module")
def api(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    cfg = pipeline_config(tmp, "serve_test", ingestion={"lateness_seconds": 0})
    with serve_api(cfg, "edgeray-test", timeout=30) as client:
        client.headers.update(TRADER)  # a trader may read, push and trade; the roles are tested in test_security.py
        yield client, cfg
    open_store(feast_settings(PipelineConfig.model_validate(cfg))).teardown()


def bars(minutes, symbol="SYN-A", **override):
    return [{"event_ts": f"2024-01-02T00:{m:02d}:00Z", "symbol": symbol, "open": 100 + m, "high": 101 + m,
             "low": 99 + m, "close": 100.5 + m, "volume": 10.0, **override} for m in minutes]


def test_health_and_status(api):
    client, _ = api
    assert client.get("/healthz").json() == {"status": "ok"}
    status = client.get("/api/pipeline/status").json()
    assert {"received", "accepted", "rejected", "duplicates"} <= status["ingestion"].keys()


def test_push_good_batch_then_features_are_readable(api):
    client, _ = api
    before = client.get("/api/pipeline/status").json()["ingestion"]
    response = client.post("/api/market/events", json={"kind": "bar", "events": bars(range(0, 10))})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 10
    after = client.get("/api/pipeline/status").json()["ingestion"]
    assert after["received"] - before["received"] == 10
    assert after["received"] == after["accepted"] + after["rejected"] + after["duplicates"]
    # Resending is safe: the same events come back as duplicates.
    again = client.post("/api/market/events", json={"kind": "bar", "events": bars(range(0, 10))}).json()
    assert again["duplicates"] == 10 and again["accepted"] == 0


def test_bad_rows_get_422_with_field_level_errors_and_good_rows_are_kept(api):
    client, _ = api
    events = bars([20, 21, 22])
    events[1]["close"] = -1
    events[2]["symbol"] = "NOPE"
    response = client.post("/api/market/events", json={"kind": "bar", "events": events})
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 1
    assert [(e["row"], e["field"], e["reason"]) for e in body["detail"]] == [
        (1, "close", "nonpositive_price"), (2, "symbol", "unknown_symbol")]
    assert body["detail"][1]["value"] == "NOPE"
    letters = client.get("/api/deadletters", params={"limit": 2}).json()["items"]
    assert [r["reason"] for r in letters] == ["nonpositive_price", "unknown_symbol"]


@pytest.mark.parametrize("payload, field", [
    ({"kind": "bar", "events": []}, "events"),
    ({"kind": "tweet", "events": [{}]}, "kind"),
    ({"events": [{}]}, "kind"),
    ({"kind": "bar", "events": ["not-an-object"]}, "events"),
])
def test_malformed_bodies_are_422_json_naming_the_field(api, payload, field):
    client, _ = api
    response = client.post("/api/market/events", json=payload)
    assert response.status_code == 422
    assert field in response.json()["detail"][0]["loc"]


def test_non_json_body_is_a_client_error(api):
    client, _ = api
    response = client.post("/api/market/events", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "detail" in response.json()


def test_weird_values_are_rejected_not_a_server_error(api):
    client, _ = api
    events = bars([30, 31])
    events[1]["close"] = {"nested": [1, 2]}
    events[1]["event_ts"] = 12.5
    response = client.post("/api/market/events", json={"kind": "bar", "events": events})
    assert response.status_code == 422 and response.json()["accepted"] == 1


def test_websocket_feed(api):
    client, _ = api
    with connect(f"ws://127.0.0.1:{client.port}/ws/market", additional_headers=FEED) as ws:
        ws.send(json.dumps({"kind": "bar", "events": bars(range(40, 45), symbol="SYN-B")}))
        ok = json.loads(ws.recv())
        assert ok["status"] == 200 and ok["accepted"] == 5
        ws.send(json.dumps({"kind": "bar", "events": bars([46], symbol="SYN-B", high=1.0)}))
        bad = json.loads(ws.recv())
        assert bad["status"] == 422 and bad["detail"][0]["field"] == "high"
        ws.send("{garbage")
        assert json.loads(ws.recv())["status"] == 422


def test_latest_features_endpoint(api):
    client, cfg = api
    client.post("/api/market/events", json={"kind": "bar", "events": bars(range(50, 56), symbol="SYN-A")})
    ray.get(Pipeline.attach(PipelineConfig.model_validate(cfg)).ingestion.flush.remote())
    body = client.get("/api/features/SYN-A").json()
    assert body["event_ts"] == "2024-01-02T00:55:00+00:00"
    assert body["values"]["ret_1"] == pytest.approx(float(__import__("numpy").log(155.5 / 154.5)))
    assert client.get("/api/features/UNSEEN").status_code == 404
