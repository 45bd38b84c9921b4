"""Schemathesis fuzzes every operation of the app's own OpenAPI schema against the real Serve app, with each
role's key and with none: no request may produce a server error, and every status must be documented.

Schemathesis' coverage phase makes hundreds of deterministic boundary cases for a large body (about 2,500 over
the app), so each case goes to admin, whose key passes every role check and so reaches every handler, and to one
of the other roles (or none), taken in turn per operation: every role still meets every operation, at two fifths of
the ~12,000 requests all roles on every case took (over 5 minutes here).
A short, derandomised profile (a few generated examples per operation) keeps it in the suite's budget;
`bench/fuzz.py` runs a longer one and prints {"requests": N, "server_errors": M}.
"""
from __future__ import annotations

import json
import os

import pytest
import ray
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from serve.app import create_app
from tests.conftest import ADMIN, FEED, TRADER, VIEWER, pipeline_config, serve_api

ROLES = {"none": {}, "viewer": VIEWER, "trader": TRADER, "admin": ADMIN, "feed": FEED}
schema = schemathesis.openapi.from_dict(create_app().openapi())
calls: dict[str, int] = {"requests": 0, "server_errors": 0}
cases_seen: dict[str, int] = {}  # per operation: which of OTHER_ROLES the next case goes to
OTHER_ROLES = [role for role in ROLES if role != "admin"]
EXAMPLES = int(os.environ.get("EDGERAY_FUZZ_EXAMPLES", "2"))  # per operation; bench/fuzz.py raises it
ALL_ROLES_EVERY_CASE = os.environ.get("EDGERAY_FUZZ_ALL_ROLES") == "1"  # bench/fuzz.py: every case to every role


@pytest.fixture(scope="module")
def server(ray_session, tmp_path_factory):
    from actors.training_queue import TrainingQueueActor

    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "sports").mkdir()  # no archives: sport routes answer their 4xx quickly instead of training for minutes
    cfg = pipeline_config(tmp, "fuzz_test", decisions={"enabled": True, "shadows": []},
                          sports={"data_dir": str(tmp / "sports"), "registry_dir": str(tmp / "registry"),
                                  "queue_db": str(tmp / "queue.sqlite")})
    # The API attaches to this queue by name; paused, so fuzzed submissions are stored and validated but never train.
    queue = TrainingQueueActor.options(name="training_queue", namespace=cfg["namespace"], lifetime="detached").remote(
        {"db_path": str(tmp / "queue.sqlite"), "start_paused": True})
    with serve_api(cfg, "edgeray-fuzz", timeout=60) as client:
        yield f"http://127.0.0.1:{client.port}"
    ray.kill(queue)
    if os.environ.get("EDGERAY_FUZZ_REPORT"):
        with open(os.environ["EDGERAY_FUZZ_REPORT"], "w", encoding="utf-8") as fh:
            json.dump({**calls, "examples_per_operation": EXAMPLES, "all_roles_every_case": ALL_ROLES_EVERY_CASE}, fh)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_request_is_a_server_error(case, server):
    operation = f"{case.operation.method} {case.operation.path}"
    turn = cases_seen.get(operation, 0)
    cases_seen[operation] = turn + 1
    other = OTHER_ROLES[turn % len(OTHER_ROLES)]
    roles = ROLES.items() if ALL_ROLES_EVERY_CASE else (("admin", ADMIN), (other, ROLES[other]))
    for role, headers in roles:
        response = case.call(base_url=server, headers=headers)
        calls["requests"] += 1
        if response.status_code >= 500:
            calls["server_errors"] += 1
        assert response.status_code < 500, f"{role}: {case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        if case.method.upper() != case.operation.method.upper():
            assert response.status_code == 405, response.text  # schemathesis also tries methods the route lacks
            continue
        documented = case.operation.definition.raw.get("responses", {})
        assert str(response.status_code) in documented, (
            f"{role}: {case.method} {case.formatted_path} answered {response.status_code}, documented {sorted(documented)}")
