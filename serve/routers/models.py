"""Sport models: creation, the features per sport and model type, tags, and the performance matrix."""
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field

from serve.deps import Body, error, get_api, require, responses
from serve.routers.training import ModelKey, Params, server_params, sport_model_params

router = APIRouter(tags=["models"])


class SportModelBody(Body):
    sport: str = Field(max_length=32)
    model_type: str = Field(max_length=32)  # a family (statistical, ensemble, neural, lstm) or one model (lstm_weather)
    name: str | None = Field(None, max_length=200)
    model_name: str | None = Field(None, max_length=200)  # a display name; kept as a tag of the registered model
    model_id: ModelKey | None = None                         # the caller's id for the model; a tag too
    params: Params = {}
    train_seasons: list[int] | None = Field(None, max_length=50)
    test_seasons: list[int] | None = Field(None, max_length=50)
    priority: int = Field(0, ge=-100, le=100)


ModelRef = Annotated[int, Field(ge=0, le=2**31)] | ModelKey  # a registry id, or a tag such as the training model_id


class CompareBody(Body):
    model_ids: list[ModelRef] = Field(min_length=1, max_length=50)


@router.post("/api/models/create-sport-model", responses=responses(401, 403, 413, 422, 503))
async def create_sport_model(body: SportModelBody, api=Depends(get_api), who=require("trade")) -> dict:
    params, _ = sport_model_params(body.sport, body.model_type, body.name, body.params, {},
                                    [body.model_id, body.model_name])
    params.update({"train_seasons": body.train_seasons, "test_seasons": body.test_seasons})
    return await api.queue().submit.remote(who.name, "sport_model", params, body.priority, None, server_params(api))


class TagsBody(Body):
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=32)


@router.post("/api/models/{model_id}/tags", responses=responses(401, 403, 404, 413, 422))
async def model_tags(model_id: Annotated[int, Path(ge=0, le=2**31)], body: TagsBody, api=Depends(get_api),
                     who=require("trade")) -> dict:
    """Add tags to a registered model (the performance matrix shows them; a tag also names the model in
    backtests, as the training request's model_id does)."""
    from edgeray.sports.registry import open_registry

    registry = open_registry(api.cfg)
    record = registry.get(model_id)  # KeyError -> 404
    for tag in body.tags:
        record = registry.tag(model_id, tag)
    return {"model_id": model_id, "tags": record["tags"]}


@router.get("/api/models/sport-features/{sport}/{model_type}", responses=responses(401, 403, 422))
async def sport_features(sport: Annotated[str, Path(max_length=32)], model_type: Annotated[str, Path(max_length=32)],
                         api=Depends(get_api), who=require("read")) -> dict:
    """The feature groups a model of this type trains on, its parameters, and every feature the
    specification names for the sport with `available` and the columns or the reason."""
    from edgeray.sports.catalogue import sport_feature_catalogue
    from edgeray.sports.features import DEFAULT_CONFIG, feature_groups
    from edgeray.sports.games import declared_box_score_stats
    from edgeray.sports.models import FAMILIES, PARAM_SCHEMAS, resolve_model_type
    from edgeray.sports.registry import check_sport

    sport = check_sport(sport)
    try:
        family, name = resolve_model_type(model_type)
    except ValueError as exc:
        raise error(422, ["path", "model_type"], str(exc), "value_error", model_type) from None
    groups = feature_groups(sport=sport)
    stats = declared_box_score_stats(api.cfg.sports.file_sources(), sport)
    if stats:
        groups["box_scores"] = [f"f_{side}_{stat}_{k}" for stat in stats for k in DEFAULT_CONFIG["windows"]
                                for side in ("home", "away", "diff")]
    names = [c for cols in groups.values() for c in cols]
    models = FAMILIES[family] if model_type.strip().lower() == family else [name]
    return {"sport": sport, "model_type": family, "feature_groups": groups,
            "specification_features": sport_feature_catalogue(sport, names, stats),
            "models": {n: PARAM_SCHEMAS[n].model_json_schema() for n in models if n in PARAM_SCHEMAS}}


Metric = Annotated[str, Query(max_length=32)]


@router.get("/api/performance/matrix", responses=responses(401, 403, 404, 422))
async def performance_matrix(sport: str | None = Query(None, max_length=32), days_back: int | None = Query(None, ge=1, le=36_500),
                             sort_by: str | None = Query(None, max_length=32), api=Depends(get_api),
                             who=require("read")) -> dict:
    """`{matrix: [one row per model], summary: {...}}`; each row flags the performance thresholds it meets."""
    matrix = api.matrix()
    table = matrix.matrix(sport=sport, days_back=days_back, sort_by=sort_by)
    return {"matrix": api.records(table), "summary": matrix.summary(table)}


@router.post("/api/performance/compare", responses=responses(401, 403, 404, 413, 422))
async def performance_compare(body: CompareBody, api=Depends(get_api), who=require("read")) -> list[dict]:
    matrix = api.matrix()
    return api.records(matrix.compare([matrix.registry.resolve(m)["model_id"] for m in body.model_ids]))


@router.get("/api/performance/leaderboard/{sport}", responses=responses(401, 403, 404, 422))
async def performance_leaderboard(sport: Annotated[str, Path(max_length=32)], metric: Metric = "log_loss",
                                  api=Depends(get_api), who=require("read")) -> list[dict]:
    return api.records(api.matrix().leaderboard(sport, metric=metric))


@router.get("/api/performance/model-types", responses=responses(401, 403, 404, 422))
async def performance_model_types(sport: str | None = Query(None, max_length=32), api=Depends(get_api),
                                  who=require("read")) -> list[dict]:
    return api.records(api.matrix().by_model_type(sport=sport))


@router.get("/api/performance/parameters", responses=responses(401, 403, 404, 422))
async def performance_parameters(family: Annotated[str, Query(max_length=32)], metric: Metric = "log_loss",
                                 api=Depends(get_api), who=require("read")) -> list[dict]:
    return api.records(api.matrix().parameter_effectiveness(family, metric=metric))


@router.get("/api/performance/trending", responses=responses(401, 403, 404, 422))
async def performance_trending(metric: Metric = "log_loss", window: int = Query(3, ge=1, le=1_000), api=Depends(get_api),
                               who=require("read")) -> list[dict]:
    return api.records(api.matrix().trending(metric=metric, window=window))


