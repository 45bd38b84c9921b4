"""Closing line value, measured without the bookmaker's margin, and where an edge is measured (issue 15).

Definitions, per bet on one side of a two-way market (all arrays are per bet, decimal odds):
- Margin-free CLV (probability points) = 100 * (q_close - q_bet), where q_bet is the bet side's margin-free
  probability in the book the bet was struck in (both sides' prices at bet time) and q_close the same in the
  closing book; the margin is removed with `edgeray.odds.remove_margin(probs, method)`, method named in every
  report (default multiplicative). Positive: the market moved towards the side bet after the bet.
- Price CLV (percent of odds) = 100 * (decimal_odds / closing_decimal_odds - 1): how much better the price taken
  was than the closing price of the same side. It needs only this side's prices, and it still carries the margin.
- Raw-price CLV (points) = 100 * (1/closing - 1/decimal_odds): the old figure. It includes the margin (a book
  whose margin shrinks towards the close reads as negative CLV though nothing moved), so it is kept only as a
  labelled extra (`clv_raw_points_mean`).

A bet priced at the close has CLV 0 by construction under every definition.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from edgeray.odds import MARGIN_METHODS, remove_margin

DEFAULT_METHOD = "multiplicative"
_EPS = 1e-15


def check_method(method: str) -> str:
    if method not in MARGIN_METHODS:
        raise ValueError(f"clv_method: {method!r} is not a margin-removal method; choose one of "
                         f"{sorted(MARGIN_METHODS)}")
    return method


def fair_prob(decimal_odds, other_decimal_odds, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Margin-free probability of the first side of each two-way book (NaN where either price is unknown)."""
    check_method(method)
    d = np.atleast_1d(np.asarray(decimal_odds, dtype=float))
    o = np.atleast_1d(np.asarray(other_decimal_odds, dtype=float))
    out = np.full(len(d), np.nan)
    ok = np.isfinite(d) & np.isfinite(o) & (d > 1.0) & (o > 1.0)
    if ok.any():
        out[ok] = remove_margin(np.column_stack([1.0 / d[ok], 1.0 / o[ok]]), method)[:, 0]
    return out


def clv_points(decimal_odds, other_decimal_odds, closing_decimal_odds, closing_other_decimal_odds,
               method: str = DEFAULT_METHOD) -> np.ndarray:
    """Margin-free CLV in probability points: 100 * (close's fair prob - bet price's fair prob) of the side bet."""
    return 100.0 * (fair_prob(closing_decimal_odds, closing_other_decimal_odds, method)
                    - fair_prob(decimal_odds, other_decimal_odds, method))


def price_clv_pct(decimal_odds, closing_decimal_odds) -> np.ndarray:
    """Price CLV in percent of odds: 100 * (odds taken / closing odds - 1)."""
    d = np.asarray(decimal_odds, dtype=float)
    c = np.asarray(closing_decimal_odds, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * (d / c - 1.0)


def raw_clv_points(decimal_odds, closing_decimal_odds) -> np.ndarray:
    """The raw-price figure 100 * (1/closing - 1/odds): it includes the bookmaker's margin."""
    d = np.asarray(decimal_odds, dtype=float)
    c = np.asarray(closing_decimal_odds, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * (1.0 / c - 1.0 / d)


def date_clusters(dates) -> np.ndarray:
    """0-based code per row of its date (rows in any order), for the bootstrap over dates."""
    days = pd.to_datetime(pd.Series(np.asarray(dates)), utc=True).dt.floor("D").to_numpy()
    return pd.factorize(days, sort=True)[0].astype(np.int64)


def forecast_comparison(won, forecasts: dict[str, np.ndarray], dates, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Log loss and Brier of each forecast of the same outcomes, each with a 95% bootstrap CI that resamples whole
    dates, plus each forecast's log loss minus the first one's with its CI (negative: that forecast did better).
    Rows where any forecast is unknown are left out of all (`n`)."""
    from edgeray.backtest.metrics import _bootstrap_counts, _ci

    y = np.asarray(won, dtype=float)
    probs = {k: np.asarray(v, dtype=float) for k, v in forecasts.items()}
    ok = np.isfinite(y)
    for p in probs.values():
        ok &= np.isfinite(p)
    y = y[ok]
    cluster = date_clusters(np.asarray(dates)[ok]) if ok.any() else np.zeros(0, dtype=np.int64)
    counts = _bootstrap_counts(cluster, n_boot, seed)
    n_cl = int(cluster.max()) + 1 if len(cluster) else 0
    per_date_n = np.bincount(cluster, minlength=n_cl).astype(float)
    boot_n = counts @ per_date_n if len(cluster) else np.zeros(0)
    out: dict = {"n": int(ok.sum()), "dates": n_cl, "bootstrap": {"n_boot": int(n_boot), "seed": int(seed),
                                                                   "resampled_unit": "date",
                                                                   "interval": "95% percentile"}}
    losses = {}
    for name, p in probs.items():
        pc = np.clip(p[ok], _EPS, 1 - _EPS)
        ll = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
        br = (pc - y) ** 2
        losses[name] = ll
        row = {}
        for key, v in (("log_loss", ll), ("brier", br)):
            row[key] = float(v.mean()) if len(v) else float("nan")
            with np.errstate(invalid="ignore", divide="ignore"):
                row[f"{key}_ci95"] = list(_ci(counts @ np.bincount(cluster, v, n_cl) / boot_n)) if len(v) else \
                    [float("nan")] * 2
        out[name] = row
    names = list(probs)
    for name in names[1:]:
        d = losses[name] - losses[names[0]]
        with np.errstate(invalid="ignore", divide="ignore"):
            ci = list(_ci(counts @ np.bincount(cluster, d, n_cl) / boot_n)) if len(d) else [float("nan")] * 2
        out[f"{name}_minus_{names[0]}_log_loss"] = {"mean": float(d.mean()) if len(d) else float("nan"), "ci95": ci}
    return out


CLV_COLUMNS = ("clv_points", "clv_price_pct", "clv_raw_points")


def bet_clv_columns(bets: pd.DataFrame, method: str = DEFAULT_METHOD) -> dict[str, np.ndarray]:
    """Per-bet CLV columns of an opportunities/bets frame: clv_points (margin-free, NaN without both sides' bet-time
    and closing prices), clv_price_pct and clv_raw_points (NaN without a closing price)."""
    n = len(bets)

    def col(name: str) -> np.ndarray:
        return bets[name].to_numpy(dtype=float) if name in bets.columns else np.full(n, np.nan)

    odds, closing = col("decimal_odds"), col("closing_decimal_odds")
    return {"clv_points": clv_points(odds, col("other_decimal_odds"), closing, col("closing_other_decimal_odds"),
                                     method),
            "clv_price_pct": price_clv_pct(odds, closing), "clv_raw_points": raw_clv_points(odds, closing)}


# ---------------------------------------------------------------------------------------------------- reports
STANDARD_SPREAD_AMERICAN = -110.0  # both sides of a spread priced at the standard -110 (the archive has no prices)
DEFAULT_SEASONS = {"mlb": ([2010, 2011, 2012], [2013]), "nfl": (list(range(2011, 2018)), [2018, 2019, 2020, 2021])}


def _ci_list(ci) -> list[float]:
    return [float(ci[0]), float(ci[1])] if ci is not None else [float("nan"), float("nan")]


def _report_from_result(result, comparison: dict, extra: dict) -> dict:
    m = result.metrics
    out = {"bets": m["total_bets"], "opportunities": m["opportunities"], "roi": m["roi"], "roi_ci": m["roi_ci95"],
           "clv_method": m["clv_method"], "clv_points_mean": m["clv_mean_points"], "clv_points_ci": m["clv_ci95_points"],
           "clv_positive_share": m["clv_positive_share"], "clv_points_quantiles": m["clv_quantiles_points"],
           "clv_price_pct_mean": m["clv_price_pct_mean"], "clv_price_pct_ci": m["clv_price_pct_ci95"],
           "clv_raw_points_mean": m["clv_raw_points_mean"], "clv_raw_points_note": m["clv_raw_points_note"],
           "roi_by_clv_sign": m["roi_by_clv_sign"], "profit": m["profit"], "total_staked": m["total_staked"],
           "final_bankroll": m["final_bankroll"], "max_drawdown": m["max_drawdown"]}
    for name, key in (("model", "model"), ("open", "open_market"), ("close", "close_market")):
        row = comparison[key]
        out.update({f"{name}_log_loss": row["log_loss"], f"{name}_log_loss_ci": row["log_loss_ci95"],
                    f"{name}_brier": row["brier"], f"{name}_brier_ci": row["brier_ci95"]})
    out["forecast_games"] = comparison["n"]
    out["model_minus_open_log_loss"] = {"mean": -comparison["open_market_minus_model_log_loss"]["mean"],
                                        "ci95": sorted(-x for x in comparison["open_market_minus_model_log_loss"]["ci95"])}
    out["model_minus_close_log_loss"] = {"mean": -comparison["close_market_minus_model_log_loss"]["mean"],
                                         "ci95": sorted(-x for x in comparison["close_market_minus_model_log_loss"]["ci95"])}
    # Honest claims only: an edge is claimed where the whole 95% CI is above zero.
    out["edge_claimed"] = {"roi": bool(np.isfinite(out["roi_ci"][0]) and out["roi_ci"][0] > 0),
                           "clv": bool(np.isfinite(out["clv_points_ci"][0]) and out["clv_points_ci"][0] > 0),
                           "model_beats_open": bool(out["model_minus_open_log_loss"]["ci95"][1] < 0)}
    out.update(extra)
    return out


def _fit_model(frame: pd.DataFrame, sport: str, family: str, name: str | None, params: dict | None,
               train_seasons, test_seasons):
    from edgeray.sports.models import train_and_evaluate

    model, _ = train_and_evaluate(sport, family, name, params or {}, frame, list(train_seasons), list(test_seasons))
    return model


def sport_clv_report(sport: str, data_dir: str | Path, train_seasons: Sequence[int] | None = None,
                     test_seasons: Sequence[int] | None = None, *, family: str = "statistical",
                     model_name: str | None = "logistic_l2", model_params: dict | None = None, min_edge: float = 0.02,
                     kelly_fraction: float = 0.25, kelly_cap: float = 0.05, initial_bankroll: float = 1000.0,
                     clv_method: str = DEFAULT_METHOD, bet_at: str = "open", n_boot: int = 1000,
                     seed: int = 0) -> dict:
    """Where an edge is measured, for one sport with opening lines: a model fitted on `train_seasons` with features
    known at the open (features market_at "open": no closing price reaches any input), bets on `test_seasons`.

    MLB (moneylines): bet the side whose model probability beats the opening line's margin-free probability by
    `min_edge`, at the opening price, sized by fractional Kelly (`kelly_fraction` of full Kelly, capped at
    `kelly_cap` of bankroll) through edgeray.backtest.engine.run_bets. CLV is margin-free (by `clv_method`) against
    the closing moneylines.

    NFL (spreads; the archive has opening and closing spreads but no spread prices): the home margin is modelled as
    Normal(-spread, sigma) for each line, sigma = the standard deviation of (home margin + spread) on the training
    seasons (one for the opening line, one for the close). The model's P(home win) p becomes a mean margin
    mu = sigma_open * Phi^-1(p), so its probability that the home side covers the opening spread s_o is
    Phi((mu + s_o) / sigma_open). Both sides are priced at a standard -110 (margin-free 0.5 each); a side is bet
    where the model's cover probability beats 0.5 by `min_edge` (Kelly at -110 needs > 0.524). Margin-free CLV of a
    home bet = 100 * (Phi((s_o - s_c) / sigma_close) - 0.5), the closing line's probability that the opening spread
    covers, minus the bet price's 0.5 (away: the mirror). The closing price shown for the opening line is that
    probability at -110's margin (price CLV is read through the same model). Games landing exactly on the opening
    spread (a push: stake back) are left out of the bets and counted. open/close/model log loss and Brier score
    P(home win): Phi(-s / sigma) for each line, the model's p for the model.

    Returns {"sport", "bets", "roi", "roi_ci", "clv_points_mean", "clv_points_ci", "open_log_loss",
    "close_log_loss", "model_log_loss" (each with _ci), the Brier scores, price and raw CLV, ROI by CLV sign,
    "edge_claimed" (True only where a whole 95% CI is above zero), and the settings used}."""
    from edgeray.backtest.engine import SizingSpec, run_bets
    from edgeray.backtest.opportunities import check_bet_at, game_opportunities
    from edgeray.sports.features import build_features
    from edgeray.sports.formats import canonical_sport
    from edgeray.sports.games import load_sport

    sport = canonical_sport(sport)
    check_method(clv_method)
    check_bet_at(bet_at)
    if sport not in DEFAULT_SEASONS:
        raise ValueError(f"sport: {sport!r} has no opening line in the archives here; known: {sorted(DEFAULT_SEASONS)}")
    if bet_at not in ("open", "first_seen"):
        raise ValueError(f"bet_at: the report measures bets placed before the close; expected 'open' or "
                         f"'first_seen', got {bet_at!r}")
    train_seasons = list(train_seasons or DEFAULT_SEASONS[sport][0])
    test_seasons = list(test_seasons or DEFAULT_SEASONS[sport][1])
    games = load_sport(sport, data_dir)
    frame = build_features(games, {"market_at": "open"})
    model = _fit_model(frame, sport, family, model_name, model_params, train_seasons, test_seasons)
    test = frame[frame["season"].isin(test_seasons)].reset_index(drop=True)
    p_home = model.predict_proba(test)
    sizing = SizingSpec("kelly", kelly_fraction=kelly_fraction, kelly_cap=kelly_cap, min_edge=min_edge)
    settings = {"sport": sport, "bet_at": bet_at, "train_seasons": train_seasons, "test_seasons": test_seasons,
                "model": f"{family}/{model.name}", "features": "market_at open (no closing price in any input)",
                "min_edge": min_edge, "sizing": sizing.to_dict(), "initial_bankroll": initial_bankroll,
                "n_boot": n_boot, "seed": seed, "ci": "95% percentile bootstrap over dates"}
    if sport == "mlb":
        opps = game_opportunities(test, p_home, bet_at=bet_at, clv_method=clv_method)
        result = run_bets(opps, sizing, initial_bankroll, n_boot=n_boot, seed=seed, clv_method=clv_method)
        comparison = result.metrics["forecast_comparison"]
        return _report_from_result(result, comparison, {**settings, "market": "moneyline",
                                                        "bet_at_info": opps.attrs["bet_at"]})
    return _nfl_spread_report(frame, test, p_home, sizing, settings, train_seasons, initial_bankroll, clv_method,
                              n_boot, seed)


def _nfl_spread_report(frame, test, p_home, sizing, settings, train_seasons, initial_bankroll, clv_method, n_boot,
                       seed) -> dict:
    from scipy.stats import norm

    from edgeray.backtest.engine import run_bets
    from edgeray.odds import american_to_decimal

    train = frame[frame["season"].isin(train_seasons) & frame["home_win"].notna()]
    train_margin = (train["home_score"] - train["away_score"]).to_numpy(float)
    sig = {}
    for line, colname in (("open", "home_spread_open"), ("close", "home_spread")):
        resid = train_margin + train[colname].to_numpy(float)
        sig[line] = float(np.nanstd(resid[np.isfinite(resid)], ddof=1))
    s_o, s_c = test["home_spread_open"].to_numpy(float), test["home_spread"].to_numpy(float)
    margin = (test["home_score"] - test["away_score"]).to_numpy(float)
    decided = test["home_win"].notna().to_numpy()
    lines = np.isfinite(s_o) & np.isfinite(s_c) & decided
    push = lines & (margin + s_o == 0)
    usable = lines & ~push
    p = np.clip(np.asarray(p_home, float), 1e-6, 1 - 1e-6)
    mu = sig["open"] * norm.ppf(p)
    cover_model = norm.cdf((mu + s_o) / sig["open"])        # model: P(home covers the opening spread)
    cover_close = norm.cdf((s_o - s_c) / sig["close"])      # closing line: P(home covers the opening spread)
    d = float(american_to_decimal(STANDARD_SPREAD_AMERICAN))
    overround = 2.0 / d                                     # -110 both sides: implied 0.5238 each

    def close_price(q: np.ndarray) -> np.ndarray:  # the opening line's price at the close, at -110's margin
        implied = q * overround
        return np.where(implied < 1.0, 1.0 / np.where(implied < 1.0, implied, 0.5), np.nan)

    g = test.loc[usable].reset_index(drop=True)
    home_cover = (margin + s_o > 0)[usable].astype(int)
    sides = []
    for side, prob, won, qc in (("home", cover_model[usable], home_cover, cover_close[usable]),
                                ("away", 1 - cover_model[usable], 1 - home_cover, 1 - cover_close[usable])):
        sides.append(pd.DataFrame({
            "date": g["date"], "game_id": g["game_id"], "side": side, "decimal_odds": d, "other_decimal_odds": d,
            "model_prob": prob, "won": won, "confidence": prob, "market_prob": 0.5,
            "closing_decimal_odds": close_price(qc), "closing_other_decimal_odds": close_price(1 - qc),
            "season": g["season"].to_numpy()}))
    opps = pd.concat(sides, ignore_index=True).sort_values(["date", "game_id", "side"]).reset_index(drop=True)
    result = run_bets(opps, sizing, initial_bankroll, n_boot=n_boot, seed=seed, clv_method=clv_method)
    # Model vs opening vs closing line on P(home win), every decided test game with both lines.
    ok = lines
    comparison = forecast_comparison(
        test["home_win"].to_numpy(float)[ok],
        {"model": p[ok], "open_market": norm.cdf(-s_o[ok] / sig["open"]),
         "close_market": norm.cdf(-s_c[ok] / sig["close"])}, test["date"].to_numpy()[ok], n_boot=n_boot, seed=seed)
    return _report_from_result(result, comparison, {
        **settings, "market": "spread", "spread_price_american": STANDARD_SPREAD_AMERICAN,
        "sigma_open": sig["open"], "sigma_close": sig["close"], "games_with_both_spreads": int(lines.sum()),
        "games_dropped_push_on_open_spread": int(push.sum()),
        "games_dropped_no_spread": int((decided & ~lines).sum()),
        "spread_model": "home margin ~ Normal(-spread, sigma), sigma fitted per line on the training seasons"})
