"""The edgeray HTTP API: a Ray Serve deployment with a FastAPI ingress, one router per domain (serve/routers).

`serve run configs/serve.yaml` (or `serve.run(build({...}))`). The deployment attaches to the pipeline's named
actors, starting them (detached) if they are not running yet.

Security by default: every route and stream that reads or changes state needs an API key with a role
(edgeray.auth; only `/healthz`, the dashboard page `/` and its static assets are open: they hold no data); keys
are read by each replica from its own environment (EDGERAY_API_KEYS_FILE or EDGERAY_API_KEYS, shipped through
`runtime_env` in configs/serve.yaml), and a replica with no keys refuses to start instead of answering 401 to
everyone. Bodies over `api.max_body_bytes` get 413 before they are parsed.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from ray import serve
from ray.exceptions import RayActorError, RayTaskError

from edgeray.auth import KeyRing
from edgeray.config import ApiConfig, PipelineConfig
from serve.deps import Replica, detail_items, responses, validation_items
from serve.routers import backtest, decisions, inference, market, models, policy, training, ui

logger = logging.getLogger(__name__)
ROUTERS = (market.router, decisions.router, policy.router, training.router, models.router, inference.router,
           backtest.router, ui.router)


def _error_response(status: int, items: list[dict], headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": items}, headers=headers)


def _client_status(cause: BaseException) -> int | None:
    """Bad input raised by the core (in process or inside an actor): ValueError 422, KeyError 404, PermissionError
    403, a missing prerequisite file 422. Anything else is a server error."""
    if isinstance(cause, PermissionError):
        return 403
    if isinstance(cause, KeyError):
        return 404
    if isinstance(cause, (ValueError, FileNotFoundError)):
        return 422
    return None


def _message(cause: BaseException) -> str:
    if isinstance(cause, KeyError) and cause.args:
        return str(cause.args[0])
    return str(cause)


class BodyLimit:
    """ASGI middleware: 413 with the JSON error body for a request body over `api.max_body_bytes` of the server
    config, whether it says its length (Content-Length) or streams it (chunked); nothing past the limit is read."""

    class _TooLarge(Exception):
        pass

    def __init__(self, app):
        self.app = app

    @property
    def max_bytes(self) -> int:
        return Replica.api.cfg.api.max_body_bytes if Replica.api is not None else ApiConfig().max_body_bytes

    async def _reply(self, send, status: int, msg: str, value: Any = None) -> None:
        body = json.dumps({"detail": [{"loc": ["body"], "msg": msg, "type": "too_large" if status == 413 else "bad_request",
                                       "value": value}]}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes = self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                return await self._reply(send, 400, "Content-Length is not an integer", declared.decode(errors="replace")[:40])
            if length > max_bytes:
                return await self._reply(send, 413, f"request body over {max_bytes} bytes", length)
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise self._TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except self._TooLarge:
            if not started:
                await self._reply(send, 413, f"request body over {max_bytes} bytes", seen)


def _document_errors(routes) -> None:
    """Every route documents the statuses it can return in the one error shape: its own list, plus 401/403 for
    a role check, 422 for its parameters and 400 for a body that cannot be read (FastAPI's own answer)."""
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        dependencies = [d.call for d in route.dependant.dependencies]
        protected = any(getattr(call, "edgeray_permission", None) for call in dependencies)
        d = route.dependant
        takes_input = bool(d.path_params or d.query_params or d.body_params or d.header_params)
        codes = ((401, 403) if protected else ()) + ((422,) if takes_input else ()) + ((400,) if d.body_params else ())
        route.responses = {**responses(*codes), **route.responses}


def create_app() -> FastAPI:
    """A fresh FastAPI app per deployment build (a reused app object fails to pickle in Serve)."""
    app = FastAPI(title="edgeray", version="0.2.0",
                  description="Market ingestion, feature streaming, the decision loop, sport models and backtests. "
                              "Send an API key in `X-API-Key`; roles: viewer (read), trader (read, trade, feed), "
                              "admin (everything), feed (push market data only).")
    app.add_middleware(BodyLimit)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and Starlette's own 404/405
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, BodyLimit._TooLarge):  # FastAPI reports any body-read failure as a 400
            limit = BodyLimit(None).max_bytes
            return _error_response(413, [{"loc": ["body"], "msg": f"request body over {limit} bytes", "type": "too_large",
                                          "value": None}])
        return _error_response(exc.status_code, detail_items(exc.status_code, exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(422, validation_items(exc.errors()))

    @app.exception_handler(RayActorError)
    async def actor_unavailable(request: Request, exc: RayActorError) -> JSONResponse:
        return _error_response(503, [{"loc": [], "msg": "a backing actor is restarting or unavailable; retry",
                                      "type": "unavailable", "value": None}], {"Retry-After": "1"})

    async def client_error(request: Request, exc: Exception) -> JSONResponse:
        cause = exc.cause if isinstance(exc, RayTaskError) and getattr(exc, "cause", None) is not None else exc
        status = _client_status(cause)
        if status is None:
            raise exc
        return _error_response(status, detail_items(status, _message(cause)))

    for exc_type in (RayTaskError, ValueError, KeyError, PermissionError, FileNotFoundError):
        app.add_exception_handler(exc_type, client_error)

    @app.exception_handler(Exception)  # our bug, not the caller's: the API's error shape, the details in the log only
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error_response(500, [{"loc": [], "msg": "internal error; it is logged on the server", "type": "internal",
                                      "value": None}])

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    for router in ROUTERS:
        _document_errors(router.routes)  # before including: FastAPI copies a router's routes lazily
        app.include_router(router)
    app.mount(ui.STATIC_PATH, ui.static_files(), name="ui-static")
    return app


def _records(frame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def build_deployment(app: FastAPI | None = None):
    app = app or create_app()

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    @serve.ingress(app)
    class EdgerayAPI:
        def __init__(self, config: dict, api_keys: list[dict] | None = None, models=None):
            """`api_keys`: [{name, role, sha256}] for tests and embedding (digests only: bind arguments are stored
            in Serve's config); otherwise this replica's environment (EDGERAY_API_KEYS_FILE / EDGERAY_API_KEYS).
            `models`: the ModelServer deployment's handle (serve/inference.py; `build_application` binds it)."""
            from actors.pipeline import Pipeline

            keyring = KeyRing.from_dicts(api_keys) if api_keys is not None else KeyRing.from_environment()
            Replica.keyring = keyring.require_configured()  # before any actor starts: fail fast and clearly
            self.cfg = PipelineConfig.model_validate(config)
            self.pipeline = Pipeline.start(self.cfg, detached=True)
            self._reader = None
            # Opened now (the streamer has applied the definitions by the time start returns): the first
            # /api/features read would otherwise pay Feast's import (~2.5 s here, 9-11 s before edgeray/feature_repo/feast_import.py) and could time out.
            self.feature_reader()
            self._training_queue = None
            self.pipeline_status: dict = {"state": "idle"}
            self._frames: dict = {}  # feature frames per sport, built on first use
            self.models = models  # None: POST /api/models/{id}/predict answers 409
            Replica.api = self

        records = staticmethod(_records)

        def loop(self, name: str):
            if not self.pipeline.decision:
                raise HTTPException(status_code=409, detail="the decision loop is disabled in this pipeline's config (decisions.enabled)")
            return self.pipeline.decision[name]

        def policy(self):
            if "policy_server" not in (self.pipeline.decision or {}):
                raise HTTPException(status_code=409, detail="decisions.sizer.name is not 'rl_policy': no policy is served")
            return self.pipeline.decision["policy_server"]

        def queue(self):
            if self._training_queue is None:
                from actors.training_queue import TrainingQueueActor
                from edgeray.sports.registry import storage_settings

                sc = self.cfg.sports
                placement = self.cfg.ray.placement
                # Task retries: a call made while the actor restarts waits for it instead of failing. On a cluster
                # the scheduler (num_cpus=0) lives with the loop; its jobs go wherever their CPUs or GPUs are.
                self._training_queue = TrainingQueueActor.options(
                    name="training_queue", namespace=self.cfg.namespace, get_if_exists=True, lifetime="detached",
                    max_restarts=self.cfg.max_restarts, max_task_retries=self.cfg.max_restarts,
                    **placement.options(placement.loop_resource)).remote(
                    # The configured database when there is one: a restarted actor on any node finds the queue.
                    {"db_path": self.cfg.storage.state_url or sc.queue_db, "queue": self.cfg.namespace,
                     "registry_storage": storage_settings(self.cfg),
                     "max_concurrent": sc.max_concurrent_jobs, "retention_s": sc.retention_days * 86400,
                     "gpu_memory_budgets": dict(sc.gpu_memory_budgets), "gpu_autoscaling": sc.gpu_autoscaling})
            return self._training_queue

        def matrix(self):
            from edgeray.sports.performance import PerformanceMatrix
            from edgeray.sports.registry import open_registry

            return PerformanceMatrix(open_registry(self.cfg))

        def sport_frame(self, sport: str):
            from edgeray.sports.features import build_features
            from edgeray.sports.formats import canonical_sport
            from edgeray.sports.games import load_sport

            sport = canonical_sport(sport)
            if sport not in self._frames:
                self._frames[sport] = build_features(load_sport(sport, self.cfg.sports.data()))
            return self._frames[sport]

        def underdog_dir(self) -> str:
            return str(Path(self.cfg.sports.registry_dir) / "underdog")

        def feature_reader(self):
            if self._reader is None:
                from actors.feature_streamer import feast_settings
                from edgeray.feature_repo.definitions import MARKET_VIEW
                from edgeray.featurestore import FeatureReader, open_store

                self._reader = FeatureReader(open_store(feast_settings(self.cfg)), MARKET_VIEW, self.cfg.features.spec().names)
            return self._reader

    return EdgerayAPI


def build(args: dict[str, Any]) -> serve.Application:
    """Serve application builder: args {config: path to pipeline YAML}. API keys are read by each replica from
    its environment (see module docstring), never from the repository or the builder's environment: under
    `serve run` on a running cluster the builder runs in a Ray task that does not see the shell's variables."""
    cfg = PipelineConfig.load(args.get("config", "configs/pipeline.yaml"))
    return build_application(cfg.model_dump())


def build_application(config: dict, api_keys: list[dict] | None = None) -> serve.Application:
    """The ingress bound with the model-inference deployment (serve/inference.py: `api.model_replicas` ModelServer
    replicas, bound in as a DeploymentHandle; none when it is 0). `api_keys` as EdgerayAPI takes them."""
    from serve.inference import model_server

    cfg = PipelineConfig.model_validate(config)
    models = model_server(cfg.api).bind(cfg.model_dump()) if cfg.api.model_replicas else None
    return build_deployment().bind(config, api_keys, models)
