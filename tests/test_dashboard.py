"""The web dashboard in a real browser (Debian's Chromium, driven by Playwright) against one real Serve app, and
the training progress stream it listens to.

One Serve app and one browser for the module. The veto config holds every order, so the live page always has a
held decision for a human. Waits are Playwright's auto-waiting `expect` and server-side state, never sleeps.
"""
from __future__ import annotations

import json
import re

import pytest
import yaml
from playwright.sync_api import expect, sync_playwright
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from edgeray.features.market import MarketFeatureSpec
from edgeray.sports.train import train_sport_model
from tests.conftest import ADMIN, SHARED, TEST_KEYS, TRADER, VIEWER, pipeline_config, serve_api, shared_file

CHROMIUM = "/usr/bin/chromium"  # installed by scripts/ensure_services.py (Playwright cannot download browsers here)
TRAINING_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def app(ray_session, tmp_path_factory):
    shared_file("sports/nfl_sbr_2011_2021.csv")
    tmp = tmp_path_factory.mktemp("dashboard")
    veto = tmp / "veto.yaml"
    veto.write_text(yaml.safe_dump({"default_action": "approve", "hold_timeout_s": 300, "timeout_action": "reject",
                                    "rules": [{"name": "hold_all", "action": "hold", "when": {"notional_above": 0}}]}))
    registry = tmp / "registry"
    model = train_sport_model({"sport": "nfl", "family": "statistical", "name": "logistic_l2", "train_seasons": [2017, 2018],
                               "test_seasons": [2019], "data_dir": str(SHARED / "sports"), "registry_dir": str(registry)})
    cfg = pipeline_config(tmp, "dashboard", decisions={"enabled": True, "shadows": [], "veto_config": str(veto)},
                          sports={"data_dir": str(SHARED / "sports"), "registry_dir": str(registry),
                                  "queue_db": str(tmp / "queue.sqlite")})
    with serve_api(cfg, "edgeray-dashboard", timeout=120) as client:
        client.model_id = model["model_id"]
        yield client


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox cannot start as root in a container
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def open_dashboard(app, browser, tmp_path):
    """Sign in with a role's key and open a tab; every page is screenshotted into the test's tmp dir at the end."""
    pages = []

    def open_as(role: str, tab: str):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        pages.append(page)
        page.goto(f"http://127.0.0.1:{app.port}/")
        page.fill("#api-key", TEST_KEYS[role])
        page.click("#signin-form button")
        expect(page.locator("#who")).to_have_text(f"{role}-user · {role}")
        page.click(f"nav button[data-tab={tab}]")
        return page

    yield open_as
    for i, page in enumerate(pages):
        page.screenshot(path=str(tmp_path / f"dashboard-{i}.png"), full_page=True)
        assert (tmp_path / f"dashboard-{i}.png").stat().st_size > 0
        page.close()


_minute = iter(range(10_000))


def decide(app, n: int, symbol: str = "SYN-A") -> list[dict]:
    """n bars of a strong up-move, each a minute after the last: momentum trades them, and the veto holds each order."""
    rows = []
    for _ in range(n):
        m = next(_minute)
        features = {name: 0.0 for name in MarketFeatureSpec().names} | {
            "rv_30": 0.001, "ret_15": 0.01, "mom_30": 0.01, "ret_5": 0.005, "ret_1": 0.002, "ret_60": 0.02, "vwap_dist_30": 0.01}
        rows.append({"symbol": symbol, "event_ts": f"2024-03-0{1 + m // 1440}T{m // 60 % 24:02d}:{m % 60:02d}:00Z",
                     "close": 100.0 + m, "features": features})
    response = app.post("/api/decisions", json={"rows": rows}, headers=TRADER)
    assert response.status_code == 200, response.text
    return [d["decision"] for d in response.json()["decisions"]]


@pytest.fixture(scope="module")
def held(app) -> list[str]:
    decisions = decide(app, 8)
    held = [d["decision_id"] for d in decisions if d["status"] == "held"]
    assert held, [d["status"] for d in decisions]
    return held


def test_the_page_and_its_assets_are_public_but_no_data_is(app):
    page = app.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert app.get("/ui/static/app.js").status_code == 200
    assert app.get("/api/whoami").status_code == 401
    assert app.get("/api/whoami", headers={"X-API-Key": TEST_KEYS["feed"]}).status_code == 403
    assert app.get("/api/whoami", headers=VIEWER).json() == {"name": "viewer-user", "role": "viewer", "permissions": ["read"]}
    assert app.get("/api/decisions").status_code == 401 and app.get("/api/equity").status_code == 401


def test_viewer_sees_the_veto_queue_without_approve_buttons(open_dashboard, held):
    page = open_dashboard("viewer", "live")
    expect(page.locator("#veto")).to_contain_text(held[0])
    expect(page.locator("#decisions")).to_contain_text("held")
    expect(page.locator("#veto button.approve")).to_have_count(0)
    expect(page.locator("#kill-form")).to_be_hidden()
    expect(page.locator("#resume")).to_be_hidden()
    page.click("nav button[data-tab=training]")
    expect(page.locator("#train-form")).to_be_hidden()  # a viewer may not submit


def test_trader_submits_a_training_job_and_watches_it_reach_100_percent_live(open_dashboard):
    page = open_dashboard("trader", "training")
    streamed = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: streamed.append(json.loads(frame)))
            if ws.url.endswith("/ws/training") else None)
    page.evaluate("window.notReloaded = true")
    page.select_option("#train-form select[name=sport]", "nfl")
    page.select_option("#train-form select[name=model_type]", "neural")
    page.fill("#train-form input[name=epochs]", "3")
    page.fill("#train-form input[name=batch_size]", "256")
    page.fill("#train-form input[name=learning_rate]", "0.001")
    page.click("#train-form button")
    expect(page.locator("#train-msg")).to_contain_text(re.compile("submitting|queued"))  # acknowledged at once
    # The first submission starts the training queue's actor (a new worker importing torch): seconds on 2 cores.
    expect(page.locator("#train-msg")).to_contain_text("queued", timeout=60_000)
    row = page.locator("#jobs tr[data-job]").first
    expect(row.locator(".pct")).to_have_text(" 100%", timeout=TRAINING_TIMEOUT_MS)
    expect(row.locator(".state-cell")).to_have_text("completed")
    assert page.evaluate("window.notReloaded") is True
    assert [m["epoch"] for m in streamed if m["type"] == "epoch"] == [1, 2, 3]  # pushed, not polled


def test_trader_approves_a_held_decision_and_sees_it_fill(app, open_dashboard, held):
    page = open_dashboard("trader", "live")
    target = page.locator("#veto tr", has_text=held[0])
    target.locator("button.approve").click()
    expect(page.locator("#veto-msg")).to_contain_text(f"approved {held[0]}")
    expect(page.locator("#veto")).not_to_contain_text(held[0])
    decide(app, 1)  # an approved order fills on the next bar
    expect(page.locator("#decisions tr", has_text=held[0])).to_contain_text("filled")
    page.locator("#decisions tr", has_text=held[0]).click()
    expect(page.locator("#trail")).to_contain_text("fill")


def test_trader_trips_the_kill_switch_and_new_orders_are_rejected(app, open_dashboard):
    page = open_dashboard("trader", "live")
    expect(page.locator("#resume")).to_be_hidden()  # lifting the kill switch needs an admin
    page.click("#kill-form button")
    expect(page.locator("#risk-state")).to_contain_text("HALTED")
    try:
        after = [d for d in decide(app, 3) if d["action"] != "hold"]
        assert after and all(d["status"] == "rejected_by_risk" for d in after)
        expect(page.locator("#decisions tr", has_text=after[-1]["decision_id"])).to_contain_text("rejected_by_risk")
    finally:
        assert app.post("/api/risk/resume", headers=ADMIN).status_code == 200


def test_backtest_draws_the_equity_curve_and_the_monte_carlo_fan(app, open_dashboard):
    page = open_dashboard("viewer", "backtests")
    page.fill("#backtest-form input[name=model_id]", str(app.model_id))
    page.select_option("#backtest-form select[name=sport]", "nfl")
    page.fill("#backtest-form input[name=min_edge]", "0")
    page.click("#backtest-form button[value=run]")
    expect(page.locator("#backtest-msg")).to_contain_text("bets", timeout=60_000)
    line = page.locator("#equity-chart svg polyline")
    expect(line).to_have_count(1)
    assert int(line.get_attribute("data-points")) > 2
    assert len(line.get_attribute("points").split()) == int(line.get_attribute("data-points"))
    expect(page.locator("#drawdown-chart svg polygon")).to_have_count(1)
    expect(page.locator("#bets table tbody tr")).to_have_count(20)
    with page.expect_response("**/api/backtest/monte-carlo", timeout=60_000) as response:
        page.click("#backtest-form button[value=montecarlo]")  # 500 paths, drawn per step
    fan = response.value.json()["fan"]
    expect(page.locator("#backtest-msg")).to_contain_text("500 paths")
    assert fan["paths"] == 500 and len(fan["step"]) > 2  # a band per step, not a straight line to the end
    bands = page.locator("#fan-chart svg polygon.fan")
    expect(bands).to_have_count(2)
    for band in ("p05-p95", "p25-p75"):  # each band's upper edge out, its lower edge back
        polygon = page.locator(f"#fan-chart svg polygon[data-band='{band}']")
        assert int(polygon.get_attribute("data-points")) == len(fan["step"])
        assert len(polygon.get_attribute("points").split()) == 2 * len(fan["step"])
    median = page.locator("#fan-chart svg polyline[data-band=p50]")
    assert len(median.get_attribute("points").split()) == int(median.get_attribute("data-points")) == len(fan["step"])


# -- the progress stream -----------------------------------------------------------------------------------------
def stream(app, first: dict) -> tuple[list[dict], int]:
    """Every message of one /ws/training stream and the close code the server ended it with."""
    messages = []
    with connect(f"ws://127.0.0.1:{app.port}/ws/training", open_timeout=30) as ws:
        ws.send(json.dumps(first))
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=120)))
        except ConnectionClosed as closed:
            return messages, closed.rcvd.code


def test_progress_stream_sends_each_epoch_in_order_then_closes(app):
    job = app.post("/api/training/submit", json={"task": "torch_mlp_demo", "params": {"epochs": 4}}, headers=TRADER).json()
    messages, code = stream(app, {"api_key": TEST_KEYS["trader"], "job_id": job["job_id"]})
    assert [m["type"] for m in messages] == ["job", "epoch", "epoch", "epoch", "epoch", "end"]
    epochs = messages[1:-1]
    assert [m["epoch"] for m in epochs] == [1, 2, 3, 4] and [m["progress"] for m in epochs] == [0.25, 0.5, 0.75, 1.0]
    assert epochs[-1]["eta_s"] == 0 and all(m["metrics"]["loss"] > 0 for m in epochs)
    assert messages[-1]["state"] == "completed" and code == 1000


def test_progress_stream_ends_when_the_job_is_cancelled(app):
    job = app.post("/api/training/submit", json={"task": "torch_mlp_demo", "params": {"epochs": 5_000, "n_samples": 64}},
                   headers=TRADER).json()
    with connect(f"ws://127.0.0.1:{app.port}/ws/training", open_timeout=30) as ws:
        ws.send(json.dumps({"api_key": TEST_KEYS["trader"], "job_id": job["job_id"]}))
        messages = [json.loads(ws.recv(timeout=120))]
        while messages[-1]["type"] != "epoch":  # the job is running: cancel it
            messages.append(json.loads(ws.recv(timeout=120)))
        assert app.post(f"/api/training/job/{job['job_id']}/cancel", headers=TRADER).status_code == 200
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                messages.append(json.loads(ws.recv(timeout=120)))
    assert closed.value.rcvd.code == 1000
    epochs = [m["epoch"] for m in messages if m["type"] == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) < 5_000
    assert messages[-1] == {"type": "end", "job_id": job["job_id"], "state": "cancelled",
                            "error": messages[-1]["error"], "epochs": epochs[-1]}


@pytest.mark.parametrize("first, status", [
    ({"api_key": "x" * 30, "job_id": "abc"}, 401),
    ({"job_id": "abc"}, 401),
    ({"api_key": TEST_KEYS["feed"], "job_id": "abc"}, 403),  # a feed key reads nothing
    ({"api_key": TEST_KEYS["viewer"], "job_id": None}, 422),
    ({"api_key": TEST_KEYS["viewer"], "job_id": "no-such-job"}, 404),
])
def test_progress_stream_needs_a_reader_key_and_a_visible_job(app, first, status):
    messages, code = stream(app, first)
    assert [m["status"] for m in messages] == [status] and code == 1008
    assert TEST_KEYS["feed"] not in json.dumps(messages)


def test_progress_stream_hides_another_users_job(app):
    job = app.post("/api/training/submit", json={"task": "torch_mlp_demo", "params": {"epochs": 1}}, headers=TRADER).json()
    messages, code = stream(app, {"api_key": TEST_KEYS["viewer"], "job_id": job["job_id"]})
    assert messages[0]["status"] == 404 and code == 1008  # the same answer as an unknown id: ids cannot be probed
