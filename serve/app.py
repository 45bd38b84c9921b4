"""The edgeray HTTP API: a Ray Serve deployment with a FastAPI ingress.

`serve run configs/serve.yaml` (or `serve.run(build({...}))`). The deployment attaches to the
pipeline's named actors, starting them (detached) if they are not running yet.
"""
# No `from __future__ import annotations` here: Serve rewrites route signatures for class-based
# views, and the WebSocket route then fails with close code 1008 on string annotations.

import os
from pathlib import Path
from datetime import datetime
from typing import Any, Literal

import pandas as pd
import ray
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from ray import serve

from edgeray.config import PipelineConfig
from edgeray.events import EventKind

MAX_EVENTS_PER_BATCH = 10_000
ROLES = {"viewer": 0, "trader": 1, "admin": 2}


def parse_api_keys(spec: str | None) -> dict[str, str]:
    """`key:role,key:role` (as in EDGERAY_API_KEYS) -> {key: role}; a bad role is a start-up error."""
    keys: dict[str, str] = {}
    for item in filter(None, (spec or "").split(",")):
        key, _, role = item.strip().partition(":")
        if role not in ROLES or not key:
            raise ValueError(f"EDGERAY_API_KEYS: entry {item!r} must be key:role with role in {sorted(ROLES)}")
        keys[key] = role
    return keys


class FeatureRow(BaseModel):
    symbol: str
    event_ts: datetime
    close: float = Field(gt=0)
    open: float | None = Field(None, gt=0)
    bid: float | None = Field(None, gt=0)
    ask: float | None = Field(None, gt=0)
    features: dict[str, float | None]


class DecisionRequest(BaseModel):
    rows: list[FeatureRow] = Field(min_length=1, max_length=1_000)


class ReviewBody(BaseModel):
    note: str = ""


class PolicyCheckpointBody(BaseModel):
    checkpoint: str | None = Field(None, description="a `python -m tune.rl` checkpoint dir; null clears the shadow")


class KillBody(BaseModel):
    reason: str = Field(min_length=1)


class SubmitBody(BaseModel):
    task: str = "sport_model"
    params: dict[str, Any] = {}
    priority: int = 0
    num_gpus: float | None = Field(None, ge=0)
    user: str | None = None  # defaults to the API key's identity


class SportModelBody(BaseModel):
    sport: str
    model_type: str  # the model family: statistical, ensemble, neural, lstm
    name: str | None = None
    params: dict[str, Any] = {}
    train_seasons: list[int] | None = None
    test_seasons: list[int] | None = None
    priority: int = 0


class CompareBody(BaseModel):
    model_ids: list[int] = Field(min_length=1)


class PipelineRunBody(BaseModel):
    sport: str


class SizingBody(BaseModel):
    initial_bankroll: float = Field(1000.0, gt=0)
    min_confidence: float = Field(0.0, ge=0, le=1)
    min_edge: float = Field(0.0, ge=0, le=1)
    kelly_fraction: float = Field(0.25, gt=0, le=1)
    kelly_cap: float = Field(0.10, gt=0, le=1)
    amount: float = Field(10.0, gt=0)
    percentage: float = Field(0.02, gt=0, le=1)

    def spec(self, method: str) -> dict:
        return {"method": method, "amount": self.amount, "percentage": self.percentage, "kelly_fraction": self.kelly_fraction,
                "kelly_cap": self.kelly_cap, "min_edge": self.min_edge, "min_confidence": self.min_confidence}


class BacktestBody(SizingBody):
    model_id: int
    sport: str
    start_date: str | None = None
    end_date: str | None = None
    betting_strategy: Literal["fixed", "percentage", "kelly", "confidence"] = "kelly"


class CompareStrategiesBody(BacktestBody):
    strategies: list[Literal["fixed", "percentage", "kelly", "confidence"]] = ["fixed", "percentage", "kelly", "confidence"]


class MonteCarloBody(BacktestBody):
    n_paths: int = Field(1000, ge=1, le=100_000)
    method: Literal["bootstrap", "model"] = "bootstrap"
    seed: int = 0
    ruin_fraction: float = Field(0.5, gt=0, lt=1)


class WalkForwardBody(SizingBody):
    sport: str
    model_type: str
    name: str | None = None
    params: dict[str, Any] = {}
    mode: Literal["expanding", "rolling"] = "expanding"
    min_train_seasons: int = Field(2, ge=1)
    seasons: list[int] | None = None  # restrict to these seasons (all when None)
    betting_strategy: Literal["fixed", "percentage", "kelly", "confidence"] = "kelly"


class UnderdogTrainBody(BaseModel):
    tiers: list[str] | None = None
    seasons: list[int] | None = None


class UnderdogBacktestBody(SizingBody):
    seasons: list[int] | None = None
    tiers: list[str] | None = None
    min_edge: float = Field(0.03, ge=0, le=1)


def _unwrap(exc: Exception) -> Exception:
    """The error raised inside an actor or task (RayTaskError wraps it)."""
    return getattr(exc, "cause", None) or exc


def _client_error(exc: Exception) -> HTTPException | None:
    """Bad input raised by the core becomes 422 (ValueError) or 404 (KeyError), never a 500."""
    cause = _unwrap(exc)
    if isinstance(cause, KeyError):
        return HTTPException(status_code=404, detail=str(cause.args[0]) if cause.args else str(cause))
    if isinstance(cause, ValueError):
        return HTTPException(status_code=422, detail=str(cause))
    return None


def _records(frame) -> list[dict]:
    import json as _json

    return _json.loads(frame.to_json(orient="records", date_format="iso"))


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

    def require(role: str):
        """Dependency: the X-API-Key header must name a key whose role is at least `role`."""
        async def check(request: Request, x_api_key: str | None = Header(None)) -> str:
            keys = request.app.state.api_keys
            if not x_api_key or x_api_key not in keys:
                raise HTTPException(status_code=401, detail="missing or unknown X-API-Key")
            if ROLES[keys[x_api_key]] < ROLES[role]:
                raise HTTPException(status_code=403, detail=f"role {keys[x_api_key]!r} may not do this; needs {role!r}")
            return f"{keys[x_api_key]}:{x_api_key[:4]}"  # who did it, for the audit log, without the whole key
        return Depends(check)

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    @serve.ingress(app)
    class EdgerayAPI:
        def __init__(self, config: dict, api_keys: dict[str, str] | None = None):
            self.cfg = PipelineConfig.model_validate(config)
            self.pipeline = Pipeline.start(self.cfg, detached=True)
            self._reader = None
            self._training_queue = None
            self._pipeline_status: dict = {"state": "idle"}
            self._frames: dict = {}  # feature frames per sport, built on first use
            app.state.api_keys = api_keys if api_keys is not None else parse_api_keys(os.environ.get("EDGERAY_API_KEYS"))

        def _loop(self, name: str):
            if not self.pipeline.decision:
                raise HTTPException(status_code=409, detail="the decision loop is disabled in this pipeline's config (decisions.enabled)")
            return self.pipeline.decision[name]

        # -- decision loop --------------------------------------------------------------------
        @app.post("/api/decisions")
        async def decide(self, body: DecisionRequest, who: str = require("trader")) -> dict:
            """Feature rows in (one per symbol and time), decisions out with their audit trail."""
            from policies.engine import decision_ids

            missing = [f"rows[{i}].features.{n}" for i, r in enumerate(body.rows) for n in self.cfg.features.spec().names
                       if n not in r.features]
            if missing:
                raise HTTPException(status_code=422, detail=[{"field": m, "reason": "missing_field"} for m in missing[:50]])
            frame = pd.DataFrame([{"symbol": r.symbol, "event_ts": r.event_ts,
                                   "open": r.open or r.close, "close": r.close, "bid": r.bid, "ask": r.ask,
                                   **{k: (float("nan") if v is None else v) for k, v in r.features.items()}} for r in body.rows])
            frame["event_ts"] = pd.to_datetime(frame["event_ts"], utc=True)  # naive times are read as UTC
            frame = frame.astype({"bid": float, "ask": float}).sort_values("event_ts", kind="stable").reset_index(drop=True)
            await self._loop("meta_controller").decide_batch.remote(frame)
            ids = decision_ids(self.cfg.namespace, frame["symbol"].to_numpy(), frame["event_ts"])
            audit = self._loop("audit")
            trails = [await audit.get.remote(i) for i in ids]
            return {"decisions": [{"decision_id": i, "audit": t} for i, t in zip(ids, trails)]}

        @app.get("/api/decisions/{decision_id}")
        async def decision(self, decision_id: str, who: str = require("viewer")) -> dict:
            trail = await self._loop("audit").get.remote(decision_id)
            if not trail:
                raise HTTPException(status_code=404, detail=f"decision_id {decision_id!r}: no such decision")
            first = next((r for r in trail if r["stage"] == "decision"), trail[0])
            return {"decision_id": decision_id, "decision": first["payload"],
                    "explanation": first["payload"].get("explanation", []), "audit": trail}

        @app.get("/api/veto/pending")
        async def veto_pending(self, who: str = require("viewer")) -> list[dict]:
            return await self._loop("veto_gate").pending.remote()

        @app.post("/api/veto/{decision_id}/approve")
        async def veto_approve(self, decision_id: str, body: ReviewBody | None = None, who: str = require("trader")) -> dict:
            return await self._review("approve", decision_id, who)

        @app.post("/api/veto/{decision_id}/reject")
        async def veto_reject(self, decision_id: str, body: ReviewBody | None = None, who: str = require("trader")) -> dict:
            return await self._review("reject", decision_id, who)

        async def _review(self, action: str, decision_id: str, who: str) -> dict:
            # Unknown, already decided or expired: the gate's KeyError becomes a 404.
            record = await self._call(getattr(self._loop("veto_gate"), action).remote(decision_id, who))
            return {k: v for k, v in record.items() if k != "order"}

        # -- RL sizing policy: status, hot swap, shadow candidate ------------------------------
        def _policy(self):
            if "policy_server" not in (self.pipeline.decision or {}):
                raise HTTPException(status_code=409, detail="decisions.sizer.name is not 'rl_policy': no policy is served")
            return self.pipeline.decision["policy_server"]

        @app.get("/api/policy")
        async def policy_status(self, who: str = require("viewer")) -> dict:
            return await self._policy().status.remote()

        @app.post("/api/policy/swap")
        async def policy_swap(self, body: PolicyCheckpointBody, who: str = require("admin")) -> dict:
            if not body.checkpoint:
                raise HTTPException(status_code=422, detail="checkpoint: required for a swap, got null")
            return await self._call(self._policy().swap.remote(body.checkpoint))

        @app.post("/api/policy/shadow")
        async def policy_shadow(self, body: PolicyCheckpointBody, who: str = require("admin")) -> dict:
            return await self._call(self._policy().set_shadow.remote(body.checkpoint))

        @app.post("/api/policy/promote")
        async def policy_promote(self, who: str = require("admin")) -> dict:
            return await self._call(self._policy().promote_shadow.remote())

        # -- sports models, training queue, performance, data pipeline ----------------------
        def _queue(self):
            if self._training_queue is None:
                from actors.training_queue import TrainingQueueActor

                sc = self.cfg.sports
                self._training_queue = TrainingQueueActor.options(
                    name="training_queue", namespace=self.cfg.namespace, get_if_exists=True, lifetime="detached",
                    max_restarts=self.cfg.max_restarts).remote(
                    {"db_path": sc.queue_db, "max_concurrent": sc.max_concurrent_jobs, "retention_s": sc.retention_days * 86400})
            return self._training_queue

        async def _call(self, ref):
            try:
                return await ref
            except Exception as exc:  # noqa: BLE001 - client errors are mapped, the rest re-raised
                mapped = _client_error(exc)
                if mapped is None:
                    raise
                raise mapped from None

        def _sport_params(self, params: dict) -> dict:
            return {"data_dir": self.cfg.sports.data_dir, "registry_dir": self.cfg.sports.registry_dir, **params}

        @app.get("/api/training/queue")
        async def training_queue(self, who: str = require("viewer")) -> list[dict]:
            return await self._call(self._queue().queue.remote())

        @app.post("/api/training/submit")
        async def training_submit(self, body: SubmitBody, who: str = require("trader")) -> dict:
            params = self._sport_params(body.params) if body.task == "sport_model" else body.params
            return await self._call(self._queue().submit.remote(body.user or who, body.task, params, body.priority, body.num_gpus))

        @app.get("/api/training/job/{job_id}")
        async def training_job(self, job_id: str, who: str = require("viewer")) -> dict:
            return await self._call(self._queue().job.remote(job_id))

        @app.post("/api/training/job/{job_id}/cancel")
        async def training_cancel(self, job_id: str, who: str = require("trader")) -> dict:
            try:
                return await self._call(self._queue().cancel.remote(job_id))
            except HTTPException as exc:
                if exc.status_code == 422:  # cancelling a finished job conflicts with its state
                    raise HTTPException(status_code=409, detail=exc.detail) from None
                raise

        @app.get("/api/training/user-jobs")
        async def training_user_jobs(self, user: str | None = None, who: str = require("viewer")) -> list[dict]:
            return await self._call(self._queue().user_jobs.remote(user or who))

        @app.get("/api/training/gpu-stats")
        async def training_gpu_stats(self, who: str = require("viewer")) -> dict:
            return await self._call(self._queue().gpu_stats.remote())

        @app.post("/api/models/create-sport-model")
        async def create_sport_model(self, body: SportModelBody, who: str = require("trader")) -> dict:
            params = self._sport_params({"sport": body.sport, "family": body.model_type, "name": body.name,
                                         "model_params": body.params, "train_seasons": body.train_seasons,
                                         "test_seasons": body.test_seasons})
            return await self._call(self._queue().submit.remote(who, "sport_model", params, body.priority, None))

        @app.get("/api/models/sport-features/{sport}/{model_type}")
        async def sport_features(self, sport: str, model_type: str, who: str = require("viewer")) -> dict:
            from edgeray.sports.features import feature_groups
            from edgeray.sports.models import FAMILIES, PARAM_SCHEMAS
            from edgeray.sports.registry import check_family, check_sport

            try:
                sport, family = check_sport(sport.lower()), check_family(model_type)
            except ValueError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None
            return {"sport": sport, "model_type": family, "feature_groups": feature_groups(sport=sport),
                    "models": {n: PARAM_SCHEMAS[n].model_json_schema() for n in FAMILIES[family] if n in PARAM_SCHEMAS}}

        def _matrix(self):
            from edgeray.sports.performance import PerformanceMatrix
            from edgeray.sports.registry import ModelRegistry

            return PerformanceMatrix(ModelRegistry(self.cfg.sports.registry_dir))

        def _frame_call(self, fn, *args, **kwargs) -> list[dict]:
            try:
                return _records(fn(*args, **kwargs))
            except (ValueError, KeyError) as exc:
                raise _client_error(exc) from None

        @app.get("/api/performance/matrix")
        async def performance_matrix(self, sport: str | None = None, days_back: int | None = Query(None, ge=1),
                                     sort_by: str | None = None, who: str = require("viewer")) -> list[dict]:
            return self._frame_call(self._matrix().matrix, sport=sport, days_back=days_back, sort_by=sort_by)

        @app.post("/api/performance/compare")
        async def performance_compare(self, body: CompareBody, who: str = require("viewer")) -> list[dict]:
            return self._frame_call(self._matrix().compare, body.model_ids)

        @app.get("/api/performance/leaderboard/{sport}")
        async def performance_leaderboard(self, sport: str, metric: str = "log_loss", who: str = require("viewer")) -> list[dict]:
            return self._frame_call(self._matrix().leaderboard, sport, metric=metric)

        @app.get("/api/performance/model-types")
        async def performance_model_types(self, sport: str | None = None, who: str = require("viewer")) -> list[dict]:
            return self._frame_call(self._matrix().by_model_type, sport=sport)

        @app.get("/api/performance/parameters")
        async def performance_parameters(self, family: str, metric: str = "log_loss", who: str = require("viewer")) -> list[dict]:
            return self._frame_call(self._matrix().parameter_effectiveness, family, metric=metric)

        @app.get("/api/performance/trending")
        async def performance_trending(self, metric: str = "log_loss", window: int = Query(3, ge=1),
                                       who: str = require("viewer")) -> list[dict]:
            return self._frame_call(self._matrix().trending, metric=metric, window=window)

        @app.get("/api/data/pipeline/status")
        async def data_pipeline_status(self, who: str = require("viewer")) -> dict:
            return dict(self._pipeline_status)

        @app.post("/api/data/pipeline/run")
        async def data_pipeline_run(self, body: PipelineRunBody, who: str = require("trader")) -> dict:
            import asyncio

            from edgeray.sports.games import SPORTS
            from edgeray.sports.pipeline import STAGES, run_pipeline

            sport = body.sport.lower()
            if sport not in SPORTS:
                raise HTTPException(status_code=422, detail=f"sport: unknown sport {body.sport!r}; known: {list(SPORTS)}")
            if self._pipeline_status.get("state") == "running":
                raise HTTPException(status_code=409, detail="a data pipeline run is already in progress")
            self._pipeline_status = {"state": "running", "sport": sport, "stage": None, "stages_done": 0,
                                     "stages_total": len(STAGES), "progress": 0.0}

            def progress(stage: str, index: int, total: int) -> None:
                self._pipeline_status.update(stage=stage, stages_done=index, progress=index / total)

            def work() -> None:
                try:
                    report = run_pipeline(sport, self.cfg.sports.data_dir, progress=progress)
                    self._pipeline_status.update(state="finished", progress=1.0, report=report.to_dict())
                except Exception as exc:  # noqa: BLE001 - the status shows why the run failed
                    self._pipeline_status.update(state="failed", error=f"{type(exc).__name__}: {exc}")

            asyncio.get_running_loop().run_in_executor(None, work)  # the run goes on after this reply
            return dict(self._pipeline_status)

        @app.get("/api/data/preprocessing/config")
        async def preprocessing_config(self, who: str = require("viewer")) -> dict:
            from edgeray.sports.features import DEFAULT_CONFIG
            from edgeray.sports.pipeline import Preprocessor

            pre = Preprocessor()
            return {"features": DEFAULT_CONFIG, "imputation": "median of the fit seasons' rows (0.0 for an all-missing column)",
                    "clip_quantiles": list(pre.clip_quantiles), "fit_seasons": "every season except the last, unless given"}

        @app.get("/api/data/features/explain")
        async def features_explain(self, model_id: int, rows: int = Query(5, ge=1, le=50), who: str = require("viewer")) -> dict:
            from edgeray.sports.explain import explain_sport_model

            try:
                return explain_sport_model(self.cfg.sports.registry_dir, self.cfg.sports.data_dir, model_id, rows)
            except (ValueError, KeyError) as exc:
                raise _client_error(exc) from None

        # -- backtests and the underdog model ------------------------------------------------
        def _sport_frame(self, sport: str):
            from edgeray.sports.features import build_features
            from edgeray.sports.games import SPORTS, load_sport

            sport = sport.lower()
            if sport not in SPORTS:
                raise HTTPException(status_code=422, detail=f"sport: unknown sport {sport!r}; known: {list(SPORTS)}")
            if sport not in self._frames:
                self._frames[sport] = build_features(load_sport(sport, self.cfg.sports.data_dir))
            return self._frames[sport]

        def _opportunities(self, body: BacktestBody):
            from edgeray.backtest.opportunities import model_opportunities
            from edgeray.sports.registry import ModelRegistry

            registry = ModelRegistry(self.cfg.sports.registry_dir)
            try:
                record = registry.get(body.model_id)
            except KeyError as exc:
                raise HTTPException(status_code=404, detail=str(exc.args[0]) if exc.args else str(exc)) from None
            if record["sport"] != body.sport.lower():
                raise HTTPException(status_code=422, detail=f"sport: model {body.model_id} is a {record['sport']} model, not {body.sport!r}")
            try:
                return model_opportunities(registry, body.model_id, self._sport_frame(body.sport), body.start_date, body.end_date)
            except ValueError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None

        @app.post("/api/backtest/run")
        async def backtest_run(self, body: BacktestBody, who: str = require("viewer")) -> dict:
            from actors.backtest_tasks import backtest_task

            opportunities = self._opportunities(body)
            return await self._call(backtest_task.remote(opportunities, body.spec(body.betting_strategy), body.initial_bankroll))

        @app.post("/api/backtest/compare-strategies")
        async def backtest_compare(self, body: CompareStrategiesBody, who: str = require("viewer")) -> dict:
            from actors.backtest_tasks import backtest_task

            opportunities = ray.put(self._opportunities(body))
            refs = {name: backtest_task.remote(opportunities, body.spec(name), body.initial_bankroll) for name in body.strategies}
            return {name: (await self._call(ref))["metrics"] for name, ref in refs.items()}

        @app.post("/api/backtest/monte-carlo")
        async def backtest_monte_carlo(self, body: MonteCarloBody, who: str = require("viewer")) -> dict:
            from actors.backtest_tasks import monte_carlo_parallel
            from edgeray.backtest.engine import SizingSpec, run_bets

            result = run_bets(self._opportunities(body), SizingSpec(**body.spec(body.betting_strategy)), body.initial_bankroll)
            if not result.bets["placed"].any():
                raise HTTPException(status_code=422, detail="no bets were placed with these filters: nothing to resample")
            import asyncio

            summary = await asyncio.get_running_loop().run_in_executor(None, lambda: monte_carlo_parallel(
                result.bets, body.n_paths, body.method, body.seed, body.initial_bankroll, body.ruin_fraction))
            return {"method": body.method, "seed": body.seed, **summary}

        @app.post("/api/backtest/walk-forward")
        async def backtest_walk_forward(self, body: WalkForwardBody, who: str = require("viewer")) -> dict:
            from edgeray.backtest.engine import SizingSpec, run_bets
            from edgeray.backtest.opportunities import game_opportunities
            from edgeray.backtest.walkforward import season_folds, walk_forward
            from edgeray.sports.models import make_model

            frame = self._sport_frame(body.sport)
            if body.seasons:
                frame = frame[frame["season"].isin(body.seasons)].reset_index(drop=True)
            frame = frame[frame["home_win"].notna()].reset_index(drop=True)

            def fit_predict(train, test):
                return make_model(body.model_type, body.sport.lower(), body.name, body.params).fit(train).predict_proba(test)

            try:
                folds = season_folds(frame, mode=body.mode, min_train_seasons=body.min_train_seasons)
                wf = walk_forward(frame, fit_predict, folds, result_cols=["home_win", "home_score", "away_score"],
                                  prediction_col="p_home")
                predicted = wf.predictions.reset_index(drop=True)  # every fold's test rows, predicted by that fold's model
                opportunities = game_opportunities(predicted, predicted["p_home"].to_numpy())
                result = run_bets(opportunities, SizingSpec(**body.spec(body.betting_strategy)), body.initial_bankroll)
            except ValueError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None
            return {"folds": [f.to_dict() for f in wf.folds], "fold_summary": _records(wf.fold_summary), **result.to_dict()}

        def _underdog_dir(self) -> str:
            return str(Path(self.cfg.sports.registry_dir) / "underdog")

        @app.post("/api/underdog/train")
        async def underdog_train(self, body: UnderdogTrainBody, who: str = require("trader")) -> dict:
            import asyncio

            from edgeray.underdog.model import train

            try:
                return await asyncio.get_running_loop().run_in_executor(None, lambda: train(
                    self.cfg.sports.data_dir, self._underdog_dir(), tiers=body.tiers, seasons=body.seasons))
            except (ValueError, FileNotFoundError) as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None

        @app.get("/api/underdog/predict")
        async def underdog_predict(self, date: str | None = None, min_odds: int = Query(100, ge=100),
                                   max_odds: int | None = Query(None, ge=100), who: str = require("viewer")) -> list[dict]:
            from edgeray.underdog.model import predict

            try:
                return _records(predict(self._underdog_dir(), self.cfg.sports.data_dir, date=date, min_odds=min_odds, max_odds=max_odds))
            except (ValueError, FileNotFoundError) as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None

        @app.post("/api/underdog/backtest")
        async def underdog_backtest(self, body: UnderdogBacktestBody, who: str = require("viewer")) -> dict:
            from actors.backtest_tasks import backtest_task
            from edgeray.underdog.model import backtest_opportunities

            try:
                opportunities = backtest_opportunities(self._underdog_dir(), self.cfg.sports.data_dir, seasons=body.seasons, tiers=body.tiers)
            except (ValueError, FileNotFoundError) as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None
            return await self._call(backtest_task.remote(opportunities, body.spec("kelly"), body.initial_bankroll))

        @app.get("/api/risk/status")
        async def risk_status(self, who: str = require("viewer")) -> dict:
            return await self._loop("risk_monitor").status.remote()

        @app.post("/api/risk/kill-switch")
        async def kill_switch(self, body: KillBody, who: str = require("trader")) -> dict:
            return await self._loop("risk_monitor").kill.remote(body.reason, who)

        @app.post("/api/risk/resume")
        async def resume(self, who: str = require("admin")) -> dict:
            return await self._loop("risk_monitor").resume.remote(who)

        @app.get("/api/meta/arms")
        async def arms(self, who: str = require("viewer")) -> list[dict]:
            return await self._loop("meta_controller").arms.remote()

        @app.post("/api/meta/arms/{arm}/{action}")
        async def set_arm(self, arm: str, action: str, who: str = require("admin")) -> list[dict]:
            if action not in ("enable", "disable"):
                raise HTTPException(status_code=404, detail=f"action {action!r}: use enable or disable")
            return await self._call(self._loop("meta_controller").set_arm.remote(arm, action == "enable"))

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
    """Serve application builder: args {config: path to pipeline YAML}. API keys come from the
    EDGERAY_API_KEYS environment variable (`key:role,...`), never from the repository."""
    cfg = PipelineConfig.load(args.get("config", "configs/pipeline.yaml"))
    return build_deployment().bind(cfg.model_dump(), parse_api_keys(os.environ.get("EDGERAY_API_KEYS")))
