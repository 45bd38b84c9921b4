"""Backtests of registered sport models and the underdog model (viewer reads, trader trains)."""
import asyncio
from typing import Annotated, Any, Literal

import ray
from fastapi import APIRouter, Depends, Query
from pydantic import Field

from edgeray.backtest.opportunities import BET_AT
from edgeray.odds import MARGIN_METHODS
from serve.deps import Body, error, get_api, require, responses

router = APIRouter(tags=["backtest"])

Method = Literal["fixed", "percentage", "kelly", "confidence", "kelly_criterion", "fixed_amount", "confidence_based"]
# The specification's strategy names for the engine's four methods.
STRATEGY_ALIASES = {"kelly_criterion": "kelly", "fixed_amount": "fixed", "confidence_based": "confidence"}
ModelRef = Annotated[int, Field(ge=0, le=2**31)] | Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Seasons = list[int] | None
# Where backtest bets are priced and how CLV removes the margin: the core's own lists (Literal of a tuple is the
# Literal of its members).
BetAt = Literal[BET_AT]
ClvMethod = Literal[tuple(MARGIN_METHODS)]
Date = str | None


class SizingBody(Body):
    initial_bankroll: float = Field(1000.0, gt=0, le=1e12)
    min_confidence: float = Field(0.0, ge=0, le=1)
    min_edge: float = Field(0.0, ge=0, le=1)
    kelly_fraction: float = Field(0.25, gt=0, le=1)
    kelly_cap: float = Field(0.10, gt=0, le=1)
    amount: float = Field(10.0, gt=0, le=1e12)
    percentage: float = Field(0.02, gt=0, le=1)

    def spec(self, method: str) -> dict:
        return {"method": STRATEGY_ALIASES.get(method, method), "amount": self.amount, "percentage": self.percentage, "kelly_fraction": self.kelly_fraction,
                "kelly_cap": self.kelly_cap, "min_edge": self.min_edge, "min_confidence": self.min_confidence}


class BacktestBody(SizingBody):
    model_id: ModelRef  # the registry's id, or the caller's key (the model_id given when it was trained)
    bets_offset: int = Field(0, ge=0, le=10_000_000)  # the page of placed bets returned as `bets`
    bets_limit: int = Field(100, ge=0, le=1_000)
    sport: str = Field(max_length=32)
    start_date: Date = Field(None, max_length=32)
    end_date: Date = Field(None, max_length=32)
    betting_strategy: Method = "kelly"
    bet_at: BetAt = "close"  # close: CLV is 0 by construction; open/first_seen: the opening line
    clv_method: ClvMethod = "multiplicative"


class CompareStrategiesBody(BacktestBody):
    strategies: list[Method] = Field(["fixed", "percentage", "kelly", "confidence"], min_length=1, max_length=4)


class MonteCarloBody(BacktestBody):
    n_paths: int = Field(1000, ge=1, le=100_000)
    method: Literal["bootstrap", "model"] = "bootstrap"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    ruin_fraction: float = Field(0.5, gt=0, lt=1)


class WalkForwardBody(SizingBody):
    sport: str = Field(max_length=32)
    model_type: str = Field(max_length=32)
    name: str | None = Field(None, max_length=200)
    params: dict[str, Any] = Field({}, max_length=64)
    mode: Literal["expanding", "rolling"] = "expanding"
    min_train_seasons: int = Field(2, ge=1, le=100)
    seasons: Seasons = Field(None, max_length=100)  # restrict to these seasons (all when None)
    betting_strategy: Method = "kelly"
    bet_at: BetAt = "close"
    clv_method: ClvMethod = "multiplicative"


class UnderdogTrainBody(Body):
    sport: str | None = Field(None, max_length=32)  # default: the underdog config's (ncaam)
    tiers: list[str] | None = Field(None, max_length=10)
    seasons: Seasons = Field(None, max_length=100)


class UnderdogBacktestBody(SizingBody):
    seasons: Seasons = Field(None, max_length=100)
    tiers: list[str] | None = Field(None, max_length=10)
    min_edge: float = Field(0.03, ge=0, le=1)
    allow_earlier: bool = False  # also games before the training window (not a forward test)


def _opportunities(api, body: BacktestBody):
    from edgeray.backtest.opportunities import model_opportunities
    from edgeray.sports.registry import open_registry

    from edgeray.sports.formats import canonical_sport

    registry = open_registry(api.cfg)
    record = registry.resolve(body.model_id)  # KeyError -> 404
    if record["sport"] != canonical_sport(body.sport):
        raise error(422, ["body", "sport"], f"sport: model {body.model_id} is a {record['sport']} model, not {body.sport!r}",
                    "wrong_sport", body.sport)
    return model_opportunities(registry, record["model_id"], api.sport_frame(body.sport), body.start_date, body.end_date,
                               bet_at=body.bet_at, clv_method=body.clv_method)


@router.post("/api/backtest/run", responses=responses(401, 403, 404, 413, 422, 503))
async def backtest_run(body: BacktestBody, api=Depends(get_api), who=require("read")) -> dict:
    from actors.backtest_tasks import backtest_task

    return await backtest_task.remote(_opportunities(api, body), body.spec(body.betting_strategy), body.initial_bankroll,
                                      body.bets_offset, body.bets_limit, body.clv_method)


@router.post("/api/backtest/compare-strategies", responses=responses(401, 403, 404, 413, 422, 503))
async def backtest_compare(body: CompareStrategiesBody, api=Depends(get_api), who=require("read")) -> dict:
    from actors.backtest_tasks import backtest_task

    opportunities = ray.put(_opportunities(api, body))
    refs = {name: backtest_task.remote(opportunities, body.spec(name), body.initial_bankroll, clv_method=body.clv_method)
            for name in body.strategies}
    return {name: (await ref)["metrics"] for name, ref in refs.items()}


@router.post("/api/backtest/monte-carlo", responses=responses(401, 403, 404, 413, 422, 503))
async def backtest_monte_carlo(body: MonteCarloBody, api=Depends(get_api), who=require("read")) -> dict:
    from actors.backtest_tasks import monte_carlo_parallel
    from edgeray.backtest.engine import SizingSpec, run_bets

    result = run_bets(_opportunities(api, body), SizingSpec(**body.spec(body.betting_strategy)), body.initial_bankroll,
                      clv_method=body.clv_method)
    if not result.bets["placed"].any():
        raise error(422, ["body"], "no bets were placed with these filters: nothing to resample", "no_bets")
    return await asyncio.get_running_loop().run_in_executor(None, lambda: monte_carlo_parallel(
        result.bets, body.n_paths, body.method, body.seed, body.initial_bankroll, body.ruin_fraction))


@router.post("/api/backtest/walk-forward", responses=responses(401, 403, 413, 422))
async def backtest_walk_forward(body: WalkForwardBody, api=Depends(get_api), who=require("read")) -> dict:
    from edgeray.backtest.engine import SizingSpec, run_bets
    from edgeray.backtest.opportunities import game_opportunities
    from edgeray.backtest.walkforward import season_folds, walk_forward
    from edgeray.sports.models import make_model

    from edgeray.backtest.opportunities import check_archive_bet_at, open_features

    check_archive_bet_at(body.bet_at)
    frame = api.sport_frame(body.sport)
    if body.bet_at in ("open", "first_seen"):  # a bet at the open is decided on what the open knew: no close
        frame = open_features(frame)
    if body.seasons:
        frame = frame[frame["season"].isin(body.seasons)].reset_index(drop=True)
    frame = frame[frame["home_win"].notna()].reset_index(drop=True)

    def fit_predict(train, test):
        return make_model(body.model_type, body.sport.lower(), body.name, body.params).fit(train).predict_proba(test)

    folds = season_folds(frame, mode=body.mode, min_train_seasons=body.min_train_seasons)
    wf = walk_forward(frame, fit_predict, folds, result_cols=["home_win", "home_score", "away_score"], prediction_col="p_home")
    predicted = wf.predictions.reset_index(drop=True)  # every fold's test rows, predicted by that fold's model
    opportunities = game_opportunities(predicted, predicted["p_home"].to_numpy(), bet_at=body.bet_at,
                                       clv_method=body.clv_method)
    result = run_bets(opportunities, SizingSpec(**body.spec(body.betting_strategy)), body.initial_bankroll,
                      clv_method=body.clv_method)
    return {"folds": [f.to_dict() for f in wf.folds], "fold_summary": api.records(wf.fold_summary), **result.to_dict()}


@router.post("/api/underdog/train", responses=responses(401, 403, 413, 422))
async def underdog_train(body: UnderdogTrainBody, api=Depends(get_api), who=require("trade")) -> dict:
    from edgeray.underdog.model import train

    return await asyncio.get_running_loop().run_in_executor(None, lambda: train(
        api.cfg.sports.data(), api.underdog_dir(), tiers=body.tiers, seasons=body.seasons, sport=body.sport))


@router.get("/api/underdog/predict", responses=responses(401, 403, 422))
async def underdog_predict(date: str | None = Query(None, max_length=32), min_odds: int = Query(100, ge=100, le=100_000),
                           max_odds: int | None = Query(None, ge=100, le=100_000), api=Depends(get_api),
                           who=require("read")) -> dict:
    """`{picks: [...], summary: {games, recommended, total_ev_per_stake, mean_edge_recommended, by_confidence, ...},
    date, sport}` for one date (default: the latest in the data)."""
    from edgeray.underdog.model import predict

    picks = predict(api.underdog_dir(), api.cfg.sports.data(), date=date, min_odds=min_odds, max_odds=max_odds)
    return {"picks": api.records(picks), "summary": picks.attrs["summary"], "date": picks.attrs["date"],
            "sport": picks.attrs["sport"]}


@router.post("/api/underdog/backtest", responses=responses(401, 403, 413, 422, 503))
async def underdog_backtest(body: UnderdogBacktestBody, api=Depends(get_api), who=require("read")) -> dict:
    from actors.backtest_tasks import backtest_task
    from edgeray.underdog.model import backtest_opportunities

    opportunities = backtest_opportunities(api.underdog_dir(), api.cfg.sports.data(), seasons=body.seasons,
                                           tiers=body.tiers, allow_earlier=body.allow_earlier)
    if opportunities.empty:  # nothing to bet on is a result, with its reason
        return {"metrics": {"total_bets": 0}, "no_bets_reason": opportunities.attrs["empty_reason"],
                "evaluation": opportunities.attrs}
    return await backtest_task.remote(opportunities, body.spec("kelly"), body.initial_bankroll)
