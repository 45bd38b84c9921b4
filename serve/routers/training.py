"""The training queue (with its live progress stream, /ws/training) and the sports data pipeline.

A job's owner is the caller's identity (never a request field); non-admins see and cancel only their own
jobs. Data and registry paths come from the server config only: a request naming a path is refused.
"""
import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, WebSocket, WebSocketDisconnect
from pydantic import Field
from ray.exceptions import RayTaskError

from edgeray.training.jobs import FINISHED_STATES
from serve.deps import Body, Replica, error, get_api, require, responses

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


def sport_model_params(sport: str, model_type: str, name: str | None, model_params: dict, hyper: dict,
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


class PipelineRunBody(Body):
    sport: str = Field(max_length=32)


def server_params(api) -> dict:
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
        params, ignored = sport_model_params(body.sport, body.model_type, (body.params or {}).get("name"),
                                              (body.params or {}).get("model_params") or {}, hyper,
                                              [body.model_id, body.model_name])
        params = {**{k: v for k, v in body.params.items() if k not in ("name", "model_params")}, **params}
    server = server_params(api) if body.task == "sport_model" else None
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


STREAM_AUTH_TIMEOUT_S = 10.0
STREAM_POLL_S = 0.25  # how often the stream reads the job store for new epochs


async def _stream_error(ws: WebSocket, status: int, loc: list, msg: str) -> None:
    await ws.send_json({"type": "error", "status": status, "detail": [{"loc": loc, "msg": msg, "type": f"http_{status}",
                                                                       "value": None}]})
    await ws.close(code=1008, reason=msg[:120])


@router.websocket("/ws/training")
async def training_progress(ws: WebSocket) -> None:
    """Live progress of one job (read role; a non-admin sees only their own jobs, as over HTTP).

    The key comes in the first message, `{"api_key": ..., "job_id": ...}`, sent within 10 s: a browser cannot set
    headers on a WebSocket (so /ws/market's X-API-Key handshake header is not open to the dashboard), a key in the
    URL would be written to access logs and history, and a Sec-WebSocket-Protocol value must be a header token,
    which not every configured key is. Then, in order: one `job` message (the job as GET /api/training/job
    answers), one `epoch` message per finished epoch {epoch, total_epochs, progress, eta_s, metrics}, and one
    `end` message with the final state; the server then closes (1000). Errors: an `error` message in the API's
    error shape, then close 1008."""
    await ws.accept()
    try:
        first = json.loads(await asyncio.wait_for(ws.receive_text(), STREAM_AUTH_TIMEOUT_S))
    except Exception:  # noqa: BLE001 - timeout, disconnect, binary or non-JSON first message: refuse alike
        return await ws.close(code=1008, reason="send {api_key, job_id} as the first message")
    if not isinstance(first, dict):
        return await _stream_error(ws, 422, ["message"], "the first message must be an object {api_key, job_id}")
    who = Replica.keyring.identify(first.get("api_key")) if Replica.keyring is not None else None
    if who is None:
        return await _stream_error(ws, 401, ["message", "api_key"], "missing or unknown api_key")
    if not who.may("read"):
        return await _stream_error(ws, 403, ["message", "api_key"], f"role {who.role!r} may not do this; it needs 'read'")
    job_id = first.get("job_id")
    if not isinstance(job_id, str) or not 1 <= len(job_id) <= 64:
        return await _stream_error(ws, 422, ["message", "job_id"], "job_id: a job id string is required")
    queue = Replica.api.queue()
    closed_by_client = asyncio.ensure_future(ws.receive())  # anything the client sends after this ends the stream
    try:
        sent_epoch, attempt, first_reply = 0, None, True
        while not closed_by_client.done():
            try:
                job = await queue.job.remote(job_id, who.name, who.is_admin)
            except RayTaskError as exc:  # unknown, purged or another user's job: one answer for all
                return await _stream_error(ws, 404, ["message", "job_id"], str(getattr(exc, "cause", exc)).strip("'\""))
            if first_reply:
                await ws.send_json({"type": "job", "job": job})
                first_reply = False
            if job["attempts"] != attempt:  # a retried job starts its epochs again
                sent_epoch, attempt = 0, job["attempts"]
            progress = job["progress"] or {}
            for record in progress.get("history") or []:
                if record["epoch"] > sent_epoch:
                    total, mean_s = progress["total_epochs"], progress.get("mean_epoch_s")
                    await ws.send_json({"type": "epoch", "job_id": job_id, "epoch": record["epoch"], "total_epochs": total,
                                        "progress": record["epoch"] / total,
                                        "eta_s": None if mean_s is None else mean_s * (total - record["epoch"]),
                                        "metrics": {k: v for k, v in record.items() if k != "epoch"}})
                    sent_epoch = record["epoch"]
            if job["state"] in FINISHED_STATES:
                await ws.send_json({"type": "end", "job_id": job_id, "state": job["state"], "error": job["error"],
                                    "epochs": sent_epoch})
                return await ws.close(code=1000)
            await asyncio.wait({closed_by_client}, timeout=STREAM_POLL_S)
    except (WebSocketDisconnect, OSError):  # the client left mid-send
        return
    finally:
        closed_by_client.cancel()
        if closed_by_client.done() and not closed_by_client.cancelled():
            closed_by_client.exception()  # read, so a disconnect is not logged as an unretrieved task error


@router.get("/api/training/gpu-stats", responses=responses(401, 403, 503))
async def training_gpu_stats(api=Depends(get_api), who=require("read")) -> dict:
    return await api.queue().gpu_stats.remote()


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
    from edgeray.sports.registry import open_registry

    registry = open_registry(api.cfg)
    record = registry.resolve(model_id)  # KeyError -> 404
    return explain_sport_model(registry, api.cfg.sports.data(), record["model_id"], rows)
