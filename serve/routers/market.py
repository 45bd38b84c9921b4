"""Market data in (feed role), pipeline status, dead letters and the online feature read (viewer)."""
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from edgeray.events import EventKind
from serve.deps import KEY_HEADER, Body, Replica, error, get_api, json_safe, require, responses, validation_items

router = APIRouter(tags=["market"])

EpochUnit = Literal["s", "ms", "us", "ns"]


class MarketEventBatch(Body):
    kind: EventKind = Field(strict=False)  # a JSON string naming the kind (strict mode wants an enum instance)
    # The per-batch row limit is checked against the server config (api.max_events_per_batch) in the route.
    events: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)
    epoch_unit: EpochUnit | None = Field(None, description="unit of numeric event_ts values; without it only ISO-8601 "
                                                           "strings are accepted")


def _row_errors(errors: list[dict]) -> list[dict]:
    """Per-row ingestion errors in the API's error shape (row, field and reason kept for feed clients)."""
    return [{"loc": ["events", e["row"], e["field"]], "msg": e["reason"], "type": e["reason"],
             "value": json_safe(e.get("value")), **e} for e in errors]


async def _ingest(api, batch: MarketEventBatch, source: str) -> dict:
    limit = api.cfg.api.max_events_per_batch
    if len(batch.events) > limit:
        raise error(422, ["body", "events"], f"at most {limit} events per batch, got {len(batch.events)}",
                    "too_many_events", len(batch.events))
    return await api.pipeline.ingestion.ingest.remote(batch.kind.value, batch.events, source, strict=True,
                                                      epoch_unit=batch.epoch_unit)


@router.post("/api/market/events", responses=responses(401, 403, 413, 422, 503))
async def push_events(batch: MarketEventBatch, api=Depends(get_api), who=require("feed")) -> JSONResponse:
    """200 when every row is taken; 422 naming each bad row's field, reason and value otherwise. Good rows of a
    partly bad batch are kept; resending the whole batch is safe (accepted rows come back as duplicates)."""
    result = await _ingest(api, batch, f"http:{who.name}")
    if result["rejected"]:
        return JSONResponse(status_code=422, content={"detail": _row_errors(result["errors"]),
                                                      **{k: v for k, v in result.items() if k != "errors"}})
    return JSONResponse(status_code=200, content=result)


@router.websocket("/ws/market")
async def push_stream(ws: WebSocket) -> None:
    """A live feed (feed role, key in the X-API-Key handshake header) sends {kind, events} messages and gets
    each batch's outcome back. A handshake without a valid key is refused (HTTP 403, close code 1008)."""
    api, keyring = Replica.api, Replica.keyring
    who = keyring.identify(ws.headers.get(KEY_HEADER)) if keyring is not None else None
    if who is None or not who.may("feed"):
        await ws.close(code=1008, reason="missing or unknown X-API-Key" if who is None else f"role {who.role!r} may not feed")
        return
    await ws.accept()
    max_bytes = api.cfg.api.max_body_bytes
    try:
        while True:
            message = await ws.receive_text()
            if len(message) > max_bytes:
                await ws.send_json({"status": 413, "detail": [{"loc": ["message"], "msg": f"message over {max_bytes} bytes",
                                                               "type": "too_large", "value": len(message)}]})
                continue
            try:
                batch = MarketEventBatch.model_validate_json(message)
                result = await _ingest(api, batch, f"websocket:{who.name}")
            except ValidationError as exc:
                await ws.send_json({"status": 422, "detail": validation_items(exc.errors(include_url=False, include_context=False))})
                continue
            except Exception as exc:  # noqa: BLE001 - the outcome goes back on this message, the stream stays open
                status = getattr(exc, "status_code", 503)
                detail = getattr(exc, "detail", [{"loc": [], "msg": f"{type(exc).__name__}", "type": "unavailable", "value": None}])
                await ws.send_json({"status": status, "detail": detail})
                continue
            errors = result.pop("errors")
            await ws.send_json({"status": 422 if result["rejected"] else 200, **result,
                                **({"detail": _row_errors(errors)} if errors else {})})
    except WebSocketDisconnect:
        return


@router.get("/api/pipeline/status", responses=responses(401, 403, 503))
async def pipeline_status(api=Depends(get_api), who=require("read")) -> dict:
    ingestion, features = await api.pipeline.ingestion.status.remote(), await api.pipeline.streamer.status.remote()
    status = {"ingestion": ingestion, "features": features}
    if api.pipeline.decision:  # decision counts and per-stage latency (stages_ms); answered between two batches
        status["decisions"] = await api.pipeline.decision["meta_controller"].status.remote()
    return status


@router.get("/api/deadletters", responses=responses(401, 403, 422, 503))
async def dead_letters(request: Request, limit: int = Query(100, ge=1), offset: int = Query(0, ge=0, le=10**9),
                       api=Depends(get_api), who=require("read")) -> dict:
    """A page of rejected rows: `offset` counts back from the newest; items are oldest first within the page."""
    cap = api.cfg.api.max_deadletters_page
    if limit > cap:
        raise error(422, ["query", "limit"], f"limit may be at most {cap}", "less_than_equal", limit)
    return await api.pipeline.ingestion.dead_letters.remote(limit, offset)


@router.get("/api/features/{symbol}", responses=responses(401, 403, 404, 422))
async def latest_features(symbol: Annotated[str, Path(min_length=1, max_length=64)], api=Depends(get_api),
                          who=require("read")) -> JSONResponse:
    vector = api.feature_reader().latest(symbol)
    if vector is None:
        raise error(404, ["path", "symbol"], f"symbol {symbol!r}: no features yet", "not_found", symbol)
    return JSONResponse(content={"symbol": symbol, "event_ts": vector.event_ts.isoformat(),
                                 "values": {k: (None if v != v else v) for k, v in vector.values.items()}})
