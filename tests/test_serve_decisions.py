"""Decision-loop HTTP routes over real HTTP: roles, kill switch, decisions with their audit trail."""
from __future__ import annotations

import pytest

from edgeray.features.market import MarketFeatureSpec
from tests.conftest import ADMIN, TRADER, VIEWER, pipeline_config, serve_api


@pytest.fixture(scope="module")
def api(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_decisions")
    cfg = pipeline_config(tmp, "serve_decisions", decisions={"enabled": True, "shadows": []})
    with serve_api(cfg, "edgeray-decisions") as client:
        yield client


def feature_row(minute: int, **features):
    values = {name: 0.0 for name in MarketFeatureSpec().names} | {"rv_30": 0.001} | features
    return {"symbol": "SYN-A", "event_ts": f"2024-03-01T10:{minute:02d}:00Z", "close": 100.0, "features": values}


def test_roles_gate_the_mutating_routes(api):
    assert api.post("/api/risk/kill-switch", json={"reason": "x"}).status_code == 401
    assert api.post("/api/risk/kill-switch", json={"reason": "x"}, headers={"X-API-Key": "nope"}).status_code == 401
    forbidden = api.post("/api/risk/kill-switch", json={"reason": "x"}, headers=VIEWER)
    assert forbidden.status_code == 403 and "trade" in forbidden.json()["detail"][0]["msg"]
    assert api.get("/api/risk/status", headers=VIEWER).json()["killed"] is False
    killed = api.post("/api/risk/kill-switch", json={"reason": "desk test"}, headers=TRADER)
    assert killed.status_code == 200, killed.text
    assert api.get("/api/risk/status", headers=VIEWER).json()["killed"] is True
    assert api.post("/api/risk/resume", headers=TRADER).status_code == 403  # lifting it needs an admin
    assert api.post("/api/risk/resume", headers=ADMIN).status_code == 200
    assert api.get("/api/risk/status", headers=VIEWER).json()["killed"] is False
    assert api.post("/api/meta/arms/momentum/disable", headers=TRADER).status_code == 403
    no_policy = api.get("/api/policy", headers=VIEWER)  # this loop sizes with Kelly: no RL policy is served
    assert no_policy.status_code == 409 and "rl_policy" in no_policy.json()["detail"][0]["msg"]
    assert api.get("/api/meta/arms").status_code == 401


def test_decision_round_trip_with_audit_trail(api):
    response = api.post("/api/decisions", json={"rows": [feature_row(0), feature_row(1, ret_15=0.01, mom_30=0.01)]}, headers=TRADER)
    assert response.status_code == 200, response.text
    decisions = response.json()["decisions"]
    assert len(decisions) == 2 and decisions[0]["decision_id"] != decisions[1]["decision_id"]
    assert all(any(r["stage"] == "decision" for r in d["audit"]) for d in decisions)
    one = api.get(f"/api/decisions/{decisions[1]['decision_id']}", headers=VIEWER)
    assert one.status_code == 200
    body = one.json()
    assert body == decisions[1]  # one shape for a decision, whichever route returns it
    assert body["decision"]["symbol"] == "SYN-A" and body["decision"]["action"] in ("buy", "sell", "hold")
    assert set(body["decision"]) >= {"position_size", "confidence", "expected_return", "risk_score", "strategy",
                                     "vetoed", "explanation", "status"}
    assert body["decision"]["explanation"]["method"] is None  # no confidence model is fitted after two rows
    assert api.get("/api/decisions/does-not-exist", headers=VIEWER).status_code == 404
    stages = api.get("/api/pipeline/status", headers=VIEWER).json()["decisions"]["stages_ms"]
    assert stages["decide"]["samples"] >= 1 and stages["decide"]["p99"] >= 0
    arms = api.get("/api/meta/arms", headers=VIEWER).json()
    assert {a["arm"] for a in arms} >= {"momentum", "mean_reversion", "breakout", "market_making"}


def test_bad_decision_input_is_a_4xx_naming_the_field(api):
    row = feature_row(5)
    del row["features"]["rv_30"]
    response = api.post("/api/decisions", json={"rows": [row]}, headers=TRADER)
    assert response.status_code == 422
    assert "rows[0].features.rv_30" in response.json()["detail"][0]["msg"]
    bad_price = api.post("/api/decisions", json={"rows": [feature_row(6) | {"close": -1}]}, headers=TRADER)
    assert bad_price.status_code == 422 and "close" in str(bad_price.json()["detail"])
    assert api.post("/api/veto/unknown-id/approve", headers=TRADER).status_code == 404
    assert api.get("/api/veto/pending", headers=VIEWER).json() == []
    unknown_arm = api.post("/api/meta/arms/nope/disable", headers=ADMIN)
    assert unknown_arm.status_code == 422 and "nope" in unknown_arm.json()["detail"][0]["msg"]
