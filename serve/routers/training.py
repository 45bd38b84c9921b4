"""Sport models: the training queue, model creation, the performance matrix and the data pipeline.

A job's owner is the caller's identity (never a request field); non-admins see and cancel only their own
jobs. Data and registry paths come from the server config only: a request naming a path is refused.
"""
import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field

from serve.deps import Body, error, get_api, require, responses

router = APIRouter(tags=["training"])

JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Params = Annotated[dict[str, Any], Field(max_length=64)]


ModelKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class SubmitBody(Body):
    """`{task, params}`, or the specification's flat sport-model form: `{model_id, sport, model_type, epochs,
    batch_size, learning_rate}` (model_id is the caller's name for the model; the registry tags it with it)."""
    task: str = Field("sport_model", max_length=64)
    params: Params = {}
    priority: int = Field(0, ge=-100, le=100)
    num_gpus: float | None = Field(None, ge=0, le=64)
    model_id: ModelKey | None = None
    sport: str | None = Field(None, max_length=32)
    model_type: str | None = Field(None, max_length=32)
    model_name: str | None = Field(None, max_length=200)
    epochs: int | None = Field(None, ge=1, le=100_000)
    batch_size: int | None = Field(None, ge=2, le=1_000_000)
    learning_rate: float | None = Field(None, gt=0, le=10)

    def flat(self) -> bool:
        return any(v is not None for v in (self.sport, self.model_type, self.model_id, self.epochs, self.batch_size,
                                           self.learning_rate, self.model_name))


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


def _sport_model_params(sport: str, model_type: str, name: str | None, model_params: dict, hyper: dict,
                        tags: list[str]) -> tuple[dict, list[str]]:
    """A sport_model job's params from either request form; (params, the generic knobs the model ignores)."""
    from edgeray.sports.models import resolve_model_type, spec_hyperparameters

    try:
        family, model = resolve_model_type(model_type, name)
    except ValueError as exc:
        field = "name" if str(exc).startswith("name") else "model_type"
        raise error(422, ["body", field], str(exc), "value_error", model_type) from None
    extra, ignored = spec_hyperparameters(model, hyper)
    params = {"sport": sport, "family": family, "name": model, "model_params": {**extra, **model_params},
              "tags": [t for t in tags if t]}
    return params, ignored


ModelRef = Annotated[int, Field(ge=0, le=2**31)] | ModelKey  # a registry id, or a tag such as the training model_id


class CompareBody(Body):
    model_ids: list[ModelRef] = Field(min_length=1, max_length=50)


class PipelineRunBody(Body):
    sport: str = Field(max_length=32)


def _server_params(api) -> dict:
    return {"data_dir": api.cfg.sports.data_dir, "registry_dir": api.cfg.sports.registry_dir,
            "sources": api.cfg.sports.file_sources()}


@router.get("/api/training/queue", responses=responses(401, 403, 503))
async def training_queue(api=Depends(get_api), who=require("read")) -> list[dict]:
    """Running then queued jobs; a non-admin sees their own."""
    return await api.queue().queue.remote(who.name, who.is_admin)


@router.post("/api/training/submit", responses=responses(401, 403, 413, 422, 503))
async def training_submit(body: SubmitBody, api=Depends(get_api), who=require("trade")) -> dict:
    params, ignored = body.params, []
    if body.flat():
        if body.task != "sport_model":
            raise error(422, ["body", "sport"], f"the flat form (sport, model_type, ...) is for task sport_model, "
                        f"not {body.task!r}", "value_error", body.task)
        if body.sport is None or body.model_type is None:
            missing = "sport" if body.sport is None else "model_type"
            raise error(422, ["body", missing], f"{missing}: required in the flat sport-model form", "missing", None)
        hyper = {"epochs": body.epochs, "batch_size": body.batch_size, "learning_rate": body.learning_rate}
        params, ignored = _sport_model_params(body.sport, body.model_type, (body.params or {}).get("name"),
                                              (body.params or {}).get("model_params") or {}, hyper,
                                              [body.model_id, body.model_name])
        params = {**{k: v for k, v in body.params.items() if k not in ("name", "model_params")}, **params}
    server = _server_params(api) if body.task == "sport_model" else None
    job = await api.queue().submit.remote(who.name, body.task, params, body.priority, body.num_gpus, server)
    return {**job, "ignored_params": ignored} if ignored else job


@router.get("/api/training/job/{job_id}", responses=responses(401, 403, 404, 422, 503))
async def training_job(job_id: JobId, api=Depends(get_api), who=require("read")) -> dict:
    return await api.queue().job.remote(job_id, who.name, who.is_admin)


@router.post("/api/training/job/{job_id}/cancel", responses=responses(401, 403, 404, 409, 422, 503))
async def training_cancel(job_id: JobId, api=Depends(get_api), who=require("trade")) -> dict:
    try:
        return await api.queue().cancel.remote(job_id, who.name, who.is_admin)
    except ValueError as exc:  # cancelling a finished job conflicts with its state
        raise error(409, ["path", "job_id"], str(exc), "conflict", job_id) from None


@router.get("/api/training/user-jobs", responses=responses(401, 403, 422, 503))
async def training_user_jobs(user: str | None = Query(None, max_length=64), api=Depends(get_api),
                             who=require("read")) -> list[dict]:
    """The caller's jobs; `user` names another user's (admin only)."""
    return await api.queue().user_jobs.remote(who.name, who.is_admin, user)


@router.get("/api/training/gpu-stats", responses=responses(401, 403, 503))
async def training_gpu_stats(api=Depends(get_api), who=require("read")) -> dict:
    return await api.queue().gpu_stats.remote()


@router.post("/api/models/create-sport-model", responses=responses(401, 403, 413, 422, 503))
async def create_sport_model(body: SportModelBody, api=Depends(get_api), who=require("trade")) -> dict:
    params, _ = _sport_model_params(body.sport, body.model_type, body.name, body.params, {},
                                    [body.model_id, body.model_name])
    params.update({"train_seasons": body.train_seasons, "test_seasons": body.test_seasons})
    return await api.queue().submit.remote(who.name, "sport_model", params, body.priority, None, _server_params(api))


class TagsBody(Body):
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=32)


@router.post("/api/models/{model_id}/tags", responses=responses(401, 403, 404, 413, 422))
async def model_tags(model_id: Annotated[int, Path(ge=0, le=2**31)], body: TagsBody, api=Depends(get_api),
                     who=require("trade")) -> dict:
    """Add tags to a registered model (the performance matrix shows them; a tag also names the model in
    backtests, as the training request's model_id does)."""
    from edgeray.sports.registry import ModelRegistry

    registry = ModelRegistry(api.cfg.sports.registry_dir)
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


@router.get("/api/data/pipeline/status", responses=responses(401, 403))
async def data_pipeline_status(api=Depends(get_api), who=require("read")) -> dict:
    return dict(api.pipeline_status)


@router.post("/api/data/pipeline/run", responses=responses(401, 403, 409, 413, 422))
async def data_pipeline_run(body: PipelineRunBody, api=Depends(get_api), who=require("trade")) -> dict:
    from edgeray.sports.formats import canonical_sport
    from edgeray.sports.pipeline import STAGES, run_pipeline

    try:
        sport = canonical_sport(body.sport)
    except ValueError as exc:
        raise error(422, ["body", "sport"], str(exc), "unknown_sport", body.sport) from None
    if api.pipeline_status.get("state") == "running":
        raise error(409, ["body", "sport"], "a data pipeline run is already in progress", "conflict", body.sport)
    api.pipeline_status = status = {"state": "running", "sport": sport, "stage": None, "stages_done": 0,
                                    "stages_total": len(STAGES), "progress": 0.0}

    def progress(stage: str, index: int, total: int) -> None:
        status.update(stage=stage, stages_done=index, progress=index / total)

    def work() -> None:
        try:
            report = run_pipeline(sport, api.cfg.sports.data(), progress=progress)
            status.update(state="finished", progress=1.0, report=report.to_dict())
        except Exception as exc:  # noqa: BLE001 - the status shows why the run failed
            status.update(state="failed", error=f"{type(exc).__name__}: {exc}")

    asyncio.get_running_loop().run_in_executor(None, work)  # the run goes on after this reply
    return dict(status)


@router.get("/api/data/preprocessing/config", responses=responses(401, 403))
async def preprocessing_config(who=require("read")) -> dict:
    from edgeray.sports.features import DEFAULT_CONFIG
    from edgeray.sports.pipeline import Preprocessor

    pre = Preprocessor()
    return {"features": DEFAULT_CONFIG, "imputation": "median of the fit seasons' rows (0.0 for an all-missing column)",
            "clip_quantiles": list(pre.clip_quantiles), "fit_seasons": "every season except the last, unless given"}


@router.get("/api/data/features/explain", responses=responses(401, 403, 404, 422))
async def features_explain(model_id: str = Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$"),
                           rows: int = Query(5, ge=1, le=50), api=Depends(get_api), who=require("read")) -> dict:
    """SHAP explanations of a model's predictions; `model_id` is the registry id or a tag of the model."""
    from edgeray.sports.explain import explain_sport_model
    from edgeray.sports.registry import ModelRegistry

    record = ModelRegistry(api.cfg.sports.registry_dir).resolve(model_id)  # KeyError -> 404
    return explain_sport_model(api.cfg.sports.registry_dir, api.cfg.sports.data(), record["model_id"], rows)
