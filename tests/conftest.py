from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("EDGERAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def shared_file(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"real data file {path} is absent (../shared/data not checked out beside the project)")
    return path


def postgres_url_or_skip() -> str:
    """The test PostgreSQL's URL; skips the test only when nothing answers there."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL does not answer at {POSTGRES_URL} (set EDGERAY_TEST_POSTGRES_URL): {exc.orig}")
    finally:
        engine.dispose()
    return POSTGRES_URL


def wait_until(predicate, timeout: float, what: str):
    """Poll `predicate` until it returns something true (and return that), failing after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)  # polling interval only; the deadline bounds the wait
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session."""
    import ray

    # address="local": always a fresh cluster for the tests, never one some other process left running here
    ray.init(address="local", num_cpus=2, object_store_memory=256 * 1024**2, namespace="edgeray-tests", include_dashboard=False,
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:  # the test command runs scripts/ensure_services.py first
        raise RuntimeError(f"Redis does not answer at {REDIS_URL}: run `python scripts/ensure_services.py`") from exc
    return REDIS_URL


@pytest.fixture(scope="session")
def s3_bucket():
    """A local S3-compatible server (moto, from the `test` extra) on a free port with one empty bucket.
    `s3_bucket.uri(prefix)` is an s3:// URI that pyarrow.fs opens there; credentials come, as for real S3,
    from the AWS_* environment variables (any value does for moto; set here only when absent)."""
    from types import SimpleNamespace

    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}
    added = {k: v for k, v in env.items() if k not in os.environ}
    os.environ.update(added)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()  # returns once the server accepts connections
    bucket = f"edgeray-{uuid.uuid4().hex[:8]}"
    endpoint = f"127.0.0.1:{port}"
    pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                      allow_bucket_creation=True).create_dir(bucket)
    query = f"endpoint_override={endpoint}&scheme=http&region=us-east-1"
    try:
        yield SimpleNamespace(bucket=bucket, endpoint=endpoint, uri=lambda prefix: f"s3://{bucket}/{prefix}?{query}")
    finally:
        server.stop()
        for key in added:
            os.environ.pop(key, None)


@pytest.fixture
def unique_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def pipeline_config(tmp_path: Path, name: str, online_store: str = "sqlite", **overrides) -> dict:
    """A pipeline config isolated per test: own namespace, Feast project and run directory."""
    cfg = {
        "namespace": name,
        "run_dir": str(tmp_path / "run"),
        "max_restarts": 1,
        "ingestion": {"symbols": ["BTCUSDT-PERP", "GBPUSD", "SYN-A", "SYN-B"], "lateness_seconds": 120,
                      "batch_size": 1000, "max_in_flight": 4},
        "feast": {"directory": str(tmp_path / "feast"), "project": name, "online_store": online_store},
        "sources": [],
        "fallback": {"type": "generator", "symbols": ["SYN-A", "SYN-B"], "n_bars": 2000, "seed": 3},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


# One key per role for every Serve test (>= 24 characters, as edgeray.auth requires); the app is given only
# their SHA-256 digests, as an operator's key file would hold them.
TEST_KEYS = {role: f"test-{role}-key-{'x' * 20}" for role in ("viewer", "trader", "admin", "feed")}
VIEWER, TRADER, ADMIN, FEED = ({"X-API-Key": TEST_KEYS[r]} for r in ("viewer", "trader", "admin", "feed"))


def key_entries() -> list[dict]:
    from edgeray.auth import digest

    return [{"name": f"{role}-user", "role": role, "sha256": digest(key)} for role, key in TEST_KEYS.items()]


def free_port() -> int:
    """A port nobody listens on now (a fixed port collided with another process on a shared machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_api(cfg: dict, name: str, api_keys: list[dict] | None = None, timeout: float = 60, inference: bool = False):
    """The Serve app over real HTTP on a free port, built fresh for this module; on exit Serve and the
    pipeline's actors are shut down. `client.port` is the port (for WebSocket URLs). `inference`: with the
    ModelServer deployment (serve/inference.py, `api.model_replicas` replicas) bound in."""
    import httpx
    from ray import serve

    from actors.pipeline import Pipeline
    from edgeray.config import PipelineConfig
    from serve.app import build_application, build_deployment

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    keys = key_entries() if api_keys is None else api_keys
    app = build_application(cfg, keys) if inference else build_deployment().bind(cfg, keys)
    serve.run(app, name=name, route_prefix="/")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as client:
            client.port = port
            yield client
    finally:
        serve.shutdown()
        Pipeline.attach(PipelineConfig.model_validate(cfg)).shutdown()
