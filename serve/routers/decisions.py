"""The decision loop: decide on feature rows, read a decision's audit trail, the veto queue, risk and bandit arms."""
from datetime import datetime
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field

from edgeray.decision import Decision
from serve.deps import Body, error, get_api, require, responses

router = APIRouter(tags=["decisions"])

DecisionId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


class FeatureRow(Body):
    symbol: str = Field(min_length=1, max_length=64)
    event_ts: datetime = Field(strict=False)  # ISO-8601 in JSON (strict mode wants a datetime object)
    close: float = Field(gt=0, allow_inf_nan=False)
    open: float | None = Field(None, gt=0, allow_inf_nan=False)
    bid: float | None = Field(None, gt=0, allow_inf_nan=False)
    ask: float | None = Field(None, gt=0, allow_inf_nan=False)
    features: dict[str, float | None] = Field(max_length=256)


class DecisionRequest(Body):
    rows: list[FeatureRow] = Field(min_length=1, max_length=1_000)


class ReviewBody(Body):
    note: str = Field("", max_length=1_000)


class KillBody(Body):
    reason: str = Field(min_length=1, max_length=1_000)


@router.post("/api/decisions", responses=responses(401, 403, 409, 413, 422, 503))
async def decide(body: DecisionRequest, api=Depends(get_api), who=require("trade")) -> dict:
    """Feature rows in (one per symbol and time), decisions out with their audit trail."""
    from policies.engine import decision_ids

    missing = [f"rows[{i}].features.{n}" for i, r in enumerate(body.rows) for n in api.cfg.features.spec().names
               if n not in r.features]
    if missing:
        raise error(422, ["body", "rows", "features"], f"missing features: {', '.join(missing[:20])}", "missing_field",
                    missing[:20])
    frame = pd.DataFrame([{"symbol": r.symbol, "event_ts": r.event_ts,
                           "open": r.open or r.close, "close": r.close, "bid": r.bid, "ask": r.ask,
                           **{k: (float("nan") if v is None else v) for k, v in r.features.items()}} for r in body.rows])
    frame["event_ts"] = pd.to_datetime(frame["event_ts"], utc=True)  # naive times are read as UTC
    # The same door as market data: a row stamped in the future would put every later genuine row behind its symbol's clock.
    horizon = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=api.cfg.ingestion.max_future_skew_seconds)
    future = np.flatnonzero(frame["event_ts"] > horizon)
    if len(future):
        i = int(future[0])
        raise error(422, ["body", "rows", i, "event_ts"], f"rows[{i}].event_ts is more than "
                    f"{api.cfg.ingestion.max_future_skew_seconds:g} s in the future", "future", str(body.rows[i].event_ts))
    frame = frame.astype({"bid": float, "ask": float}).sort_values("event_ts", kind="stable").reset_index(drop=True)
    await api.loop("meta_controller").decide_batch.remote(frame)
    ids = decision_ids(api.cfg.namespace, frame["symbol"].to_numpy(), frame["event_ts"])
    trails = await api.loop("audit").trails.remote(ids)
    return {"decisions": [decision_view(i, trails[i]) for i in ids]}


def decision_view(decision_id: str, trail: list[dict]) -> dict:
    """The one response shape for a decision: the Python API's Decision (None when the trail has no decision
    record: a row rejected before deciding, a control event) and the audit records behind it."""
    decided = Decision.from_trail(trail)
    return {"decision_id": decision_id, "decision": decided.model_dump(mode="json") if decided else None, "audit": trail}


@router.get("/api/decisions", responses=responses(401, 403, 409, 422, 503))
async def recent_decisions(limit: int = Query(50, ge=1, le=200), api=Depends(get_api), who=require("read")) -> dict:
    """The newest decisions, newest first, each with its audit trail (the dashboard's live view)."""
    audit = api.loop("audit")
    ids = await audit.latest_ids.remote("decision", limit)
    trails = await audit.trails.remote(ids)
    return {"decisions": [decision_view(i, trails[i]) for i in ids]}


@router.get("/api/equity", responses=responses(401, 403, 409, 422, 503))
async def equity_curve(max_points: int = Query(500, ge=2, le=10_000), api=Depends(get_api), who=require("read")) -> dict:
    """The paper ledger's equity curve, thinned to at most `max_points` evenly spaced points (the last kept)."""
    curve = await api.loop("meta_controller").equity_curve.remote()
    if len(curve) > max_points:
        curve = curve.iloc[np.unique(np.linspace(0, len(curve) - 1, max_points).astype(int))]
    return {"ts": [t.isoformat() for t in curve["ts"]], "equity": [float(v) for v in curve["equity"]]}


@router.get("/api/decisions/{decision_id}", responses=responses(401, 403, 404, 409, 422, 503))
async def decision(decision_id: DecisionId, api=Depends(get_api), who=require("read")) -> dict:
    trail = await api.loop("audit").get.remote(decision_id)
    if not trail:
        raise error(404, ["path", "decision_id"], f"decision_id {decision_id!r}: no such decision", "not_found", decision_id)
    return decision_view(decision_id, trail)


@router.get("/api/veto/pending", responses=responses(401, 403, 409, 503))
async def veto_pending(api=Depends(get_api), who=require("read")) -> list[dict]:
    return await api.loop("meta_controller").pending.remote()


@router.post("/api/veto/{decision_id}/{action}", responses=responses(401, 403, 404, 409, 413, 422, 503))
async def veto_review(decision_id: DecisionId, action: Literal["approve", "reject"], body: ReviewBody | None = None,
                      api=Depends(get_api), who=require("trade")) -> dict:
    # Unknown, already decided or expired: the gate's KeyError becomes a 404.
    record = await getattr(api.loop("meta_controller"), action).remote(decision_id, who.name)
    return {k: v for k, v in record.items() if k != "order"}


@router.get("/api/risk/status", responses=responses(401, 403, 409, 503))
async def risk_status(api=Depends(get_api), who=require("read")) -> dict:
    return await api.loop("meta_controller").risk_status.remote()


@router.post("/api/risk/kill-switch", responses=responses(401, 403, 409, 413, 422, 503))
async def kill_switch(body: KillBody, api=Depends(get_api), who=require("trade")) -> dict:
    return await api.loop("meta_controller").kill.remote(body.reason, who.name)


@router.post("/api/risk/resume", responses=responses(401, 403, 409, 503))
async def resume(api=Depends(get_api), who=require("admin")) -> dict:
    return await api.loop("meta_controller").resume.remote(who.name)


@router.get("/api/meta/arms", responses=responses(401, 403, 409, 503))
async def arms(api=Depends(get_api), who=require("read")) -> list[dict]:
    return await api.loop("meta_controller").arms.remote()


@router.post("/api/meta/arms/{arm}/{action}", responses=responses(401, 403, 404, 409, 422, 503))
async def set_arm(arm: Annotated[str, Path(max_length=64)], action: Literal["enable", "disable"], api=Depends(get_api),
                  who=require("admin")) -> list[dict]:
    return await api.loop("meta_controller").set_arm.remote(arm, action == "enable")
