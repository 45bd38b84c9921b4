"""Model inference: `POST /api/models/{model_id}/predict`, answered by a ModelServer replica (serve/inference.py)
that has the model loaded (Serve's model multiplexing routes on the model id)."""
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import Field, model_validator

from serve.deps import Body, error, get_api, json_safe, require, responses

router = APIRouter(tags=["models"])

MAX_ITEMS = 1_000   # games or rows per request
MAX_FEATURES = 500  # feature columns per row
RETRY_AFTER_S = "1"

Team = Annotated[str, Field(min_length=1, max_length=100)]
Day = Annotated[str, Field(min_length=8, max_length=32)]  # YYYY-MM-DD (an ISO date-time is read as its day)
FeatureName = Annotated[str, Field(min_length=1, max_length=100)]
FeatureValue = Annotated[float, Field(allow_inf_nan=False)] | None  # null: missing, imputed as in training


class GameRef(Body):
    """A game in the server's sports data; its features are built there, point-in-time (earlier dates only)."""
    date: Day
    home: Team
    away: Team
    sport: str | None = Field(None, max_length=32)  # must be the model's sport when given


class FeatureRow(Body):
    """Features given by the caller: every feature column the model uses (null for unknown)."""
    date: Day
    features: dict[FeatureName, FeatureValue] = Field(min_length=1, max_length=MAX_FEATURES)
    home: Team | None = None  # the sequence (lstm) models need the teams
    away: Team | None = None


class PredictBody(Body):
    games: list[GameRef] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    rows: list[FeatureRow] | None = Field(None, min_length=1, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _one_input(self):
        if (self.games is None) == (self.rows is None):
            raise ValueError("send exactly one of games (looked up in the server's sports data) or rows (features)")
        return self


ModelKey = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


def unavailable(msg: str) -> HTTPException:
    exc = error(503, [], msg, "unavailable")
    exc.headers = {"Retry-After": RETRY_AFTER_S}
    return exc


async def infer(handle, model_id: int, payload: dict, timeout_s: float = 30.0) -> dict:
    """Send one prediction request to the replica Serve picks for `model_id`; the replica's failures become the
    API's answers: a bad input 422 naming the field, a model gone from the registry 404, and anything else (a
    replica dying mid-request, none available within `timeout_s`, overload, an unexpected error) 503 with
    Retry-After, never a 500."""
    import asyncio

    from ray.exceptions import RayTaskError

    from serve.inference import InputError, UnknownModel

    response = None
    try:
        response = handle.options(multiplexed_model_id=str(model_id)).predict.remote(payload)
        return await asyncio.wait_for(response, timeout_s)
    except Exception as exc:  # noqa: BLE001 - every failure is mapped below
        if isinstance(exc, TimeoutError) and hasattr(response, "cancel"):
            response.cancel()
        cause = exc.cause if isinstance(exc, RayTaskError) and getattr(exc, "cause", None) is not None else exc
        if isinstance(cause, InputError):
            raise error(422, cause.loc, cause.msg, "value_error", cause.value) from None
        if isinstance(cause, UnknownModel):  # removed from the registry since the ingress resolved it
            raise error(404, ["path", "model_id"], str(cause.args[0] if cause.args else cause), "not_found",
                        model_id) from None
        if isinstance(cause, ValueError):
            raise error(422, ["body"], str(cause), "value_error") from None
        raise unavailable(f"the model server could not answer ({type(cause).__name__}); retry") from None


@router.post("/api/models/{model_id}/predict", responses=responses(404, 409, 413, 503))
async def predict(model_id: ModelKey, body: PredictBody, api=Depends(get_api), who=require("read")) -> dict:
    """P(home win) from a registered sport model (`model_id`: its registry id or a tag), for games in the server's
    sports data or for feature rows. `replica` names the ModelServer replica that answered and `loaded_models` the
    model ids it holds loaded, least recently used first."""
    from edgeray.sports.registry import open_registry

    handle = getattr(api, "models", None)
    if handle is None:
        raise error(409, [], "model inference is not deployed in this application (api.model_replicas is 0)",
                    "conflict")
    try:
        if model_id.isdigit() and int(model_id) > 2**31:  # no such id; the index's integer column cannot hold it
            raise KeyError(f"model_id {model_id}: no registered model has this id")
        record = open_registry(api.cfg).resolve(model_id)
    except KeyError as exc:
        raise error(404, ["path", "model_id"], str(exc.args[0]), "not_found", json_safe(model_id)) from None
    payload = body.model_dump(exclude_none=False)
    return await infer(handle, record["model_id"], payload, api.cfg.api.model_request_timeout_s)
