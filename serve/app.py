"""The edgeray HTTP API: a Ray Serve deployment with a FastAPI ingress.

`serve run configs/serve.yaml` (or `serve.run(build({...}))`). The deployment attaches to the
pipeline's named actors, starting them (detached) if they are not running yet.
"""
# No `from __future__ import annotations` here: Serve rewrites route signatures for class-based
# views, and the WebSocket route then fails with close code 1008 on string annotations.

from typing import Any

import ray
from fastapi import FastAPI, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from ray import serve

from edgeray.config import PipelineConfig
from edgeray.events import EventKind

MAX_EVENTS_PER_BATCH = 10_000


class MarketEventBatch(BaseModel):
    kind: EventKind
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


def _batch_response(result: dict) -> JSONResponse:
    """200 when every row was taken; 422 naming each bad row's field, reason and value otherwise.
    Good rows of a partly bad batch are kept, and resending the whole batch is safe: accepted
    rows come back as duplicates by event id."""
    if result["rejected"]:
        return JSONResponse(status_code=422, content={"detail": result["errors"], **{k: v for k, v in result.items() if k != "errors"}})
    return JSONResponse(status_code=200, content=result)


def create_app() -> FastAPI:
    """A fresh FastAPI app per deployment build (a reused app object fails to pickle in Serve)."""
    return FastAPI(title="edgeray", version="0.1.0",
                   description="Market ingestion, feature streaming and (later) the decision loop.")


def build_deployment(app: FastAPI | None = None):
    from actors.pipeline import Pipeline

    app = app or create_app()

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    @serve.ingress(app)
    class EdgerayAPI:
        def __init__(self, config: dict):
            self.cfg = PipelineConfig.model_validate(config)
            self.pipeline = Pipeline.start(self.cfg, detached=True)
            self._reader = None

        @app.get("/healthz")
        async def healthz(self) -> dict:
            return {"status": "ok"}

        @app.get("/api/pipeline/status")
        async def pipeline_status(self) -> dict:
            ingestion, features = await self.pipeline.ingestion.status.remote(), await self.pipeline.streamer.status.remote()
            return {"ingestion": ingestion, "features": features}

        @app.post("/api/market/events")
        async def push_events(self, batch: MarketEventBatch) -> JSONResponse:
            result = await self.pipeline.ingestion.ingest.remote(batch.kind.value, batch.events, "http")
            return _batch_response(result)

        @app.websocket("/ws/market")
        async def push_stream(self, ws: WebSocket) -> None:
            """A live feed sends {kind, events} messages and gets each batch's outcome back."""
            await ws.accept()
            try:
                while True:
                    message = await ws.receive_text()
                    try:
                        batch = MarketEventBatch.model_validate_json(message)
                    except ValidationError as exc:
                        await ws.send_json({"status": 422, "detail": exc.errors(include_url=False, include_context=False)})
                        continue
                    result = await self.pipeline.ingestion.ingest.remote(batch.kind.value, batch.events, "websocket")
                    await ws.send_json({"status": 422 if result["rejected"] else 200, **result})
            except WebSocketDisconnect:
                return

        @app.get("/api/deadletters")
        async def dead_letters(self, limit: int = Query(100, ge=1, le=10_000)) -> list[dict]:
            return await self.pipeline.ingestion.dead_letters.remote(limit)

        @app.get("/api/features/{symbol}")
        async def latest_features(self, symbol: str) -> JSONResponse:
            vector = self._feature_reader().latest(symbol)
            if vector is None:
                return JSONResponse(status_code=404, content={"detail": f"symbol {symbol!r}: no features yet"})
            return JSONResponse(content={"symbol": symbol, "event_ts": vector.event_ts.isoformat(),
                                         "values": {k: (None if v != v else v) for k, v in vector.values.items()}})

        def _feature_reader(self):
            if self._reader is None:
                from actors.feature_streamer import feast_settings
                from edgeray.feature_repo.definitions import MARKET_VIEW
                from edgeray.featurestore import FeatureReader, open_store

                self._reader = FeatureReader(open_store(feast_settings(self.cfg)), MARKET_VIEW, self.cfg.features.spec().names)
            return self._reader

    return EdgerayAPI


def build(args: dict[str, Any]) -> serve.Application:
    """Serve application builder: args {config: path to pipeline YAML}."""
    cfg = PipelineConfig.load(args.get("config", "configs/pipeline.yaml"))
    return build_deployment().bind(cfg.model_dump())
