"""Screenshots of the dashboard's pages for the README: docs/dashboard-<page>.png.

Starts a local Ray and the Serve app (throwaway keys, a veto rule that holds every order, the sports archives in
../shared/data/sports), gives each page something to show (a trained model, a training job, a backtest, held and
filled decisions), signs in as an admin in the system Chromium and saves one PNG per page.

    .venv/bin/python scripts/dashboard_screenshots.py [--out docs]
"""
from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPORTS = ROOT.parent / "shared" / "data" / "sports"
CHROMIUM = "/usr/bin/chromium"
KEY = "screenshot-admin-key-" + "x" * 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def feature_rows(start: int, n: int) -> list[dict]:
    from edgeray.features.market import MarketFeatureSpec

    features = {name: 0.0 for name in MarketFeatureSpec().names} | {
        "rv_30": 0.001, "ret_15": 0.01, "mom_30": 0.01, "ret_5": 0.005, "ret_1": 0.002, "ret_60": 0.02, "vwap_dist_30": 0.01}
    return [{"symbol": "SYN-A", "event_ts": f"2024-03-01T10:{m:02d}:00Z", "close": 100.0 + m, "features": features}
            for m in range(start, start + n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs"))
    out = Path(parser.parse_args().out)
    sys.path.insert(0, str(ROOT))

    import httpx
    import ray
    from playwright.sync_api import expect, sync_playwright
    from ray import serve

    from actors.pipeline import Pipeline
    from edgeray.auth import digest
    from edgeray.config import PipelineConfig
    from edgeray.sports.train import train_sport_model
    from serve.app import build_deployment

    tmp = Path(tempfile.mkdtemp(prefix="edgeray-shots-"))
    veto = tmp / "veto.yaml"
    veto.write_text(yaml.safe_dump({"default_action": "approve", "hold_timeout_s": 300, "timeout_action": "reject",
                                    "rules": [{"name": "hold_all", "action": "hold", "when": {"notional_above": 0}}]}))
    registry = tmp / "registry"
    model = train_sport_model({"sport": "nfl", "family": "statistical", "name": "logistic_l2", "train_seasons": [2017, 2018],
                               "test_seasons": [2019], "data_dir": str(SPORTS), "registry_dir": str(registry)})
    cfg = {"namespace": "screenshots", "run_dir": str(tmp / "run"),
           "ingestion": {"symbols": ["SYN-A"]}, "sources": [],
           "feast": {"directory": str(tmp / "feast"), "project": "screenshots", "online_store": "sqlite"},
           "decisions": {"enabled": True, "shadows": [{"name": "mom", "strategy": "momentum"}], "veto_config": str(veto)},
           "sports": {"data_dir": str(SPORTS), "registry_dir": str(registry), "queue_db": str(tmp / "queue.sqlite")}}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_deployment().bind(cfg, [{"name": "screenshots", "role": "admin", "sha256": digest(KEY)}]),
              name="edgeray", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120) as api:
            decided = api.post("/api/decisions", json={"rows": feature_rows(0, 10)}).json()["decisions"]
            held = [d["decision_id"] for d in decided if d["decision"]["status"] == "held"]
            api.post(f"/api/veto/{held[0]}/approve")
            api.post("/api/decisions", json={"rows": feature_rows(10, 3)})  # fills the approved order
            api.post("/api/training/submit", json={"sport": "nfl", "model_type": "neural", "model_id": "nfl_mlp_demo",
                                                   "epochs": 5, "batch_size": 256, "learning_rate": 0.001})
            api.post("/api/training/submit", json={"task": "torch_mlp_demo", "params": {"epochs": 100_000}})
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base)
            page.screenshot(path=str(out / "dashboard-signin.png"))
            page.fill("#api-key", KEY)
            page.click("#signin-form button")
            expect(page.locator("#who")).to_contain_text("admin")
            expect(page.locator('#jobs tr[data-state="completed"]')).to_have_count(1, timeout=120_000)
            page.screenshot(path=str(out / "dashboard-training.png"), full_page=True)
            page.click("nav button[data-tab=models]")
            expect(page.locator("#matrix table")).to_be_visible()
            page.screenshot(path=str(out / "dashboard-models.png"), full_page=True)
            page.click("nav button[data-tab=backtests]")
            page.fill("#backtest-form input[name=model_id]", str(model["model_id"]))
            page.select_option("#backtest-form select[name=sport]", "nfl")
            page.click("#backtest-form button[value=run]")
            expect(page.locator("#equity-chart svg polyline")).to_have_count(1, timeout=60_000)
            page.click("#backtest-form button[value=compare]")
            expect(page.locator("#strategies table")).to_be_visible(timeout=60_000)
            page.click("#backtest-form button[value=montecarlo]")
            expect(page.locator("#fan-chart svg")).to_have_count(1, timeout=60_000)
            page.screenshot(path=str(out / "dashboard-backtests.png"), full_page=True)
            page.click("nav button[data-tab=live]")
            expect(page.locator("#decisions table")).to_be_visible()
            page.locator("#decisions tr", has_text="filled").first.click()
            expect(page.locator("#trail table")).to_be_visible()
            page.screenshot(path=str(out / "dashboard-live.png"), full_page=True)
            browser.close()
    finally:
        serve.shutdown()
        Pipeline.attach(PipelineConfig.model_validate(cfg)).shutdown()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)  # the run's models, audit and Feast files (~4.5 MB a run)
    from PIL import Image  # matplotlib's dependency: a 128-colour palette keeps each PNG a fraction of the size

    for name in ("signin", "training", "models", "backtests", "live"):
        path = out / f"dashboard-{name}.png"
        Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)
        print(path, f"{path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
