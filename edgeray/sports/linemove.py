"""Line-movement model: predict, at the open, which way a moneyline will move by the close, and bet that side at
the opening price.

The target is the move of the home side's margin-free probability from open to close. The score is the closing
line value (CLV) the bets capture: the close's margin-free probability of the side bet minus the open's, in
probability points (x100). CLV needs no result, so it measures whether the bets beat the sharpest price with far
less noise than ROI; ROI (settled on the result at the opening price) is reported too.

Point in time: a game's features use its own opening prices and, from other games, only rows on dates at least
`lag_days` days earlier (default 1: strictly earlier dates). Nothing reads a game's own close or result, nor any
game on the same or a later date. An opening moneyline is posted hours before first pitch, often the evening
before, so `lag_days=2` is the conservative setting if the previous evening's late games may not have closed yet.

Core module: numpy, pandas and scikit-learn only (no Ray).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from edgeray.backtest.metrics import cluster_bootstrap_ratio
from edgeray.clv import fair_prob
from edgeray.odds import american_to_decimal, is_valid_american
from edgeray.sports.features import build_features, feature_groups

# Groups of edgeray.sports.features that are built from scores only (earlier dates). The "market" group is left
# out: its columns are read off the closing line (market_prob_home, home_dec) and would leak the target.
_TEAM_GROUPS = ("scoring", "rating", "form", "rest", "schedule", "splits", "pitching", "park")


# ------------------------------------------------------------------ prices


def open_close_probs(games: pd.DataFrame, method: str = "multiplicative") -> pd.DataFrame:
    """Per game: opening decimal odds both sides, opening overround, margin-free home probability at the open and at
    the close (by `method`, see edgeray.odds.remove_margin), and `valid` (both opening and closing prices usable).
    Computed from the raw American columns home_ml_open/away_ml_open (open) and home_ml/away_ml (close)."""
    n = len(games)
    raw = {c: games[c].to_numpy(float) if c in games.columns else np.full(n, np.nan)
           for c in ("home_ml_open", "away_ml_open", "home_ml", "away_ml")}
    valid = np.ones(n, dtype=bool)
    for v in raw.values():
        valid &= is_valid_american(v)
    out = pd.DataFrame(index=games.index)
    for c in ("dec_open_home", "dec_open_away", "overround_open", "p_open_home", "p_close_home"):
        out[c] = np.nan
    if valid.any():
        dec = {c: np.asarray(american_to_decimal(raw[c][valid]), dtype=float) for c in raw}
        out.loc[valid, "dec_open_home"] = dec["home_ml_open"]
        out.loc[valid, "dec_open_away"] = dec["away_ml_open"]
        out.loc[valid, "overround_open"] = 1.0 / dec["home_ml_open"] + 1.0 / dec["away_ml_open"] - 1.0
        out.loc[valid, "p_open_home"] = fair_prob(dec["home_ml_open"], dec["away_ml_open"], method)
        out.loc[valid, "p_close_home"] = fair_prob(dec["home_ml"], dec["away_ml"], method)
    out["valid"] = valid
    return out


# ------------------------------------------------------------------ point-in-time helpers


def _prior_mean(key: np.ndarray, day: np.ndarray, values: np.ndarray, k: int, lag_days: int) -> np.ndarray:
    """Per row: mean of `values` over the last k earlier rows of the same key whose day is <= day - lag_days
    (NaN values skipped; NaN when there are none). Rows may come in any order."""
    order = np.lexsort((day, key))
    ks, ds, vs = key[order], day[order], values[order]
    have = np.isfinite(vs)
    cum_v = np.r_[0.0, np.cumsum(np.where(have, vs, 0.0))]
    cum_n = np.r_[0, np.cumsum(have)]
    # Rows that count, as positions in the sorted order: same key, day <= day - lag_days; a team-major composite
    # key lets one searchsorted find every row's cut.
    d0 = ds.min() if len(ds) else 0
    big = int(ds.max() - d0) + lag_days + 2 if len(ds) else 1
    comp = ks.astype(np.int64) * big + (ds - d0)
    end = np.searchsorted(comp, comp - (lag_days - 1), side="left")
    key_start = np.searchsorted(ks, ks, side="left")
    # k counted in rows that have a value: walk back from `end` until k valued rows are in (via the count cumsum).
    start_n = np.maximum(cum_n[end] - k, cum_n[key_start])
    start = np.searchsorted(cum_n, start_n, side="left")
    start = np.maximum(start, key_start)
    s, c = cum_v[end] - cum_v[start], cum_n[end] - cum_n[start]
    out = np.full(len(order), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[order] = np.where(c > 0, s / np.where(c > 0, c, 1), np.nan)
    return out


def _day_number(games: pd.DataFrame) -> np.ndarray:
    dates = games["date"]
    if not isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = pd.to_datetime(dates, utc=True)
    return dates.dt.tz_convert("UTC").array.asi8 // 86_400_000_000_000


def line_move_features(games: pd.DataFrame, *, lag_days: int = 1, method: str = "multiplicative",
                       team_features: bool = True, pitchers: bool = True,
                       windows: Sequence[int] = (10, 40)) -> pd.DataFrame:
    """Features known at a game's open (index = games.index, all float, NaN where unknown):

    - opening market: margin-free home probability, its log-odds, distance from a pick'em, opening overround;
    - past line moves: the mean move towards each team (and each starting pitcher) in its earlier games, i.e.
      whether the market has kept moving towards or away from it after opening;
    - past market errors: each team's (and starter's) mean result minus its closing probability in earlier games;
    - team form from edgeray.sports.features (scores of earlier dates only; its closing-line "market" group is
      left out) when `team_features`.
    `pitchers=False` leaves out everything keyed on the game's starting pitchers. The archive names the pitcher who
    started; an opener posted before a late scratch was priced on another one, so pitcher features can carry a
    little of what happened after the open. False is the conservative setting.
    Other games count only on dates <= the game's date - lag_days.
    """
    if not isinstance(lag_days, (int, np.integer)) or lag_days < 1:
        raise ValueError(f"lag_days: expected an integer >= 1 (0 would read same-day closes), got {lag_days!r}")
    if team_features and lag_days != 1:
        # edgeray.sports.features windows on strictly earlier dates, a lag of exactly one day
        raise ValueError(f"lag_days={lag_days} needs team_features=False (team form windows on strictly earlier dates)")
    n = len(games)
    px = open_close_probs(games, method)
    p_open = px["p_open_home"].to_numpy(float)
    p_close = px["p_close_home"].to_numpy(float)
    feats: dict[str, np.ndarray] = {}
    feats["p_open_home"] = p_open
    with np.errstate(divide="ignore", invalid="ignore"):
        feats["logit_open_home"] = np.log(p_open / (1.0 - p_open))
    feats["open_dist_pickem"] = np.abs(p_open - 0.5)
    feats["overround_open"] = px["overround_open"].to_numpy(float)
    if "total_line_open" in games.columns:
        feats["total_open"] = games["total_line_open"].to_numpy(float)

    # Appearance table (home rows then away rows): values from each side's point of view.
    day_g = _day_number(games)
    day = np.concatenate([day_g, day_g])
    move_home = p_close - p_open
    move = np.concatenate([move_home, -move_home])                      # move towards this side
    won = games["home_win"].to_numpy(float) if "home_win" in games.columns else np.full(n, np.nan)
    result = np.concatenate([won, 1.0 - won])
    err_close = result - np.concatenate([p_close, 1.0 - p_close])      # result minus closing probability
    team = pd.factorize(np.concatenate([games["home"].to_numpy(object), games["away"].to_numpy(object)]))[0]
    for k in windows:
        mv = _prior_mean(team, day, move, k, lag_days)
        er = _prior_mean(team, day, err_close, k, lag_days)
        feats[f"home_team_move_{k}"], feats[f"away_team_move_{k}"] = mv[:n], mv[n:]
        feats[f"diff_team_move_{k}"] = mv[:n] - mv[n:]
        feats[f"diff_team_err_{k}"] = er[:n] - er[n:]
    if pitchers and "home_starter" in games.columns and not games["home_starter"].isna().all():
        names = np.concatenate([games["home_starter"].to_numpy(object), games["away_starter"].to_numpy(object)])
        known = pd.notna(names)
        pitcher = pd.factorize(np.where(known, names, "?"))[0]
        for k in (5,):
            mv = np.where(known, _prior_mean(pitcher, day, move, k, lag_days), np.nan)
            er = np.where(known, _prior_mean(pitcher, day, err_close, k, lag_days), np.nan)
            feats[f"home_sp_move_{k}"], feats[f"away_sp_move_{k}"] = mv[:n], mv[n:]
            feats[f"diff_sp_move_{k}"] = mv[:n] - mv[n:]
            feats[f"diff_sp_err_{k}"] = er[:n] - er[n:]
    out = pd.DataFrame(feats, index=games.index)

    if team_features:
        built = _team_feature_frame(games)
        if not pitchers:
            built = built[[c for c in built.columns if "_sp_" not in c]]
        out = pd.concat([out, built], axis=1)
    return out


def _team_feature_frame(games: pd.DataFrame) -> pd.DataFrame:
    groups = feature_groups(None, games["sport"].iloc[0] if len(games) and games["sport"].nunique() == 1 else None)
    wanted = [c for g in _TEAM_GROUPS for c in groups.get(g, [])]
    # build_features computes its market group from the close; hand it a copy with the closing prices blanked so no
    # closing number even passes through (its team columns use scores only).
    blind = games.copy()
    for c in ("home_dec", "away_dec", "market_prob_home", "home_ml", "away_ml"):
        if c in blind.columns:
            blind[c] = np.nan
    built = build_features(blind, {"weather": False, "line_moves": False})
    return built[[c for c in wanted if c in built.columns]].set_axis(games.index)


# ------------------------------------------------------------------ bets, CLV, bootstrap


def bet_outcomes(px: pd.DataFrame, home_win: np.ndarray, side_home: np.ndarray) -> pd.DataFrame:
    """For bets at the opening price on the home side (side_home True) or the away side: margin-free CLV in
    probability points (close minus open for the side bet, x100), the realised direction (+1 the line moved
    towards the side, -1 away, 0 no move), and 1-unit profit at the opening decimal odds (a game without a
    winner, a tie or a suspension, is void: stake 0, profit 0)."""
    side_home = np.asarray(side_home, dtype=bool)
    p_o, p_c = px["p_open_home"].to_numpy(float), px["p_close_home"].to_numpy(float)
    sign = np.where(side_home, 1.0, -1.0)
    clv = sign * (p_c - p_o) * 100.0
    dec = np.where(side_home, px["dec_open_home"].to_numpy(float), px["dec_open_away"].to_numpy(float))
    hw = np.asarray(home_win, dtype=float)
    won = np.where(side_home, hw, 1.0 - hw)
    void = ~np.isfinite(won)
    stake = np.where(void, 0.0, 1.0)
    profit = np.where(void, 0.0, np.where(won == 1.0, dec - 1.0, -1.0))
    return pd.DataFrame({"side_home": side_home, "clv_points": clv, "direction": np.sign(clv), "stake": stake,
                         "profit": profit}, index=px.index)


def clustered_bootstrap(num: np.ndarray, den: np.ndarray, cluster: np.ndarray, n_boot: int = 2000,
                        seed: int = 0) -> tuple[float, float, float]:
    """sum(num)/sum(den) and its 95% CI resampling whole dates: bets on one date share the day's news (injuries,
    weather, sharp money), so they are not independent draws."""
    estimate, (lo, hi) = cluster_bootstrap_ratio(num, den, cluster, n_boot, seed)
    return estimate, lo, hi


def summarise_bets(bets: pd.DataFrame, dates: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """bets, home share, direction accuracy (share of bets whose line moved towards the side, among lines that
    moved), mean CLV points with a date-clustered 95% CI, ROI with CI, and whether the CLV CI excludes zero."""
    clv = bets["clv_points"].to_numpy(float)
    moved = bets["direction"].to_numpy() != 0
    mean, lo, hi = clustered_bootstrap(clv, np.ones(len(clv)), dates, n_boot, seed)
    roi, rlo, rhi = clustered_bootstrap(bets["profit"].to_numpy(float), bets["stake"].to_numpy(float), dates,
                                        n_boot, seed + 1)
    return {
        "bets": int(len(bets)),
        "home_share": float(bets["side_home"].mean()) if len(bets) else float("nan"),
        "direction_accuracy": float((bets["direction"].to_numpy()[moved] > 0).mean()) if moved.any() else float("nan"),
        "no_move_share": float((~moved).mean()) if len(bets) else float("nan"),
        "clv_points_mean": mean, "clv_points_ci": [lo, hi],
        "roi": roi, "roi_ci": [rlo, rhi], "settled": int(bets["stake"].sum()),
        "clv_ci_excludes_zero": bool(np.isfinite(lo) and (lo > 0 or hi < 0)),
    }


# ------------------------------------------------------------------ model


def make_model(kind: str = "hgb", seed: int = 0):
    """The move regressor. hgb: scikit-learn's histogram gradient boosting (handles the NaN of teams with no
    history yet), kept small and strongly regularised: the signal is weak next to the noise of line moves.
    ridge: median imputation, standardisation and ridge regression, the linear check."""
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.03, max_leaf_nodes=8, min_samples_leaf=100,
                                             l2_regularization=1.0, loss="squared_error", random_state=seed)
    if kind == "ridge":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), Ridge(alpha=10.0))
    raise ValueError(f"model: {kind!r} is not a line-move model; choose 'hgb' or 'ridge'")


def _fit_predict(x_train: pd.DataFrame, y_train: np.ndarray, x_pred: pd.DataFrame, kind: str, seed: int) -> np.ndarray:
    model = make_model(kind, seed)
    model.fit(x_train, y_train)
    return np.asarray(model.predict(x_pred), dtype=float)


def choose_threshold(pred: np.ndarray, move: np.ndarray, grid_quantiles: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.9),
                     min_bets: int = 100) -> tuple[float, list[dict]]:
    """The |predicted move| above which to bet, on validation predictions: each candidate is a quantile of
    |pred|; the pick maximises mean CLV among candidates leaving at least min_bets bets (ties: the lower)."""
    a = np.abs(pred)
    rows = []
    for q in grid_quantiles:
        t = float(np.quantile(a, q)) if q > 0 else 0.0
        take = a > t if q > 0 else a > 0
        clv = np.sign(pred[take]) * move[take] * 100.0
        rows.append({"quantile": q, "threshold": t, "bets": int(take.sum()),
                     "clv_points_mean": float(clv.mean()) if take.any() else float("nan")})
    ok = [r for r in rows if r["bets"] >= min_bets and np.isfinite(r["clv_points_mean"])]
    best = max(ok, key=lambda r: r["clv_points_mean"]) if ok else rows[0]
    return best["threshold"], rows


def line_movement_report(games: pd.DataFrame, train_seasons: Sequence[int], test_seasons: Sequence[int], *,
                         model: str = "hgb", lag_days: int = 1, method: str = "multiplicative",
                         team_features: bool = True, pitchers: bool = True, n_boot: int = 2000, seed: int = 0,
                         min_bets: int = 100,
                         features: pd.DataFrame | None = None) -> dict:
    """Train the move model on train_seasons, bet the test seasons at the open, report CLV and ROI with CIs.

    The threshold on |predicted move| is chosen on the training seasons alone, by walk-forward validation (each
    training season after the first is predicted by a model fitted on the seasons before it); the final model is
    then refitted on all training seasons. Baselines bet the open blindly on the same test games: every home side,
    every opening favourite, every opening underdog, and a seeded random side; `random_side_on_model_games` bets a
    random side on exactly the games the model bet, separating the choice of side from the choice of games.
    `features` may pass precomputed line_move_features(games, ...) (same index) to save time.
    """
    train_seasons, test_seasons = sorted(int(s) for s in train_seasons), sorted(int(s) for s in test_seasons)
    if not train_seasons or not test_seasons:
        raise ValueError("train_seasons and test_seasons: expected at least one season each")
    if max(train_seasons) >= min(test_seasons):
        raise ValueError(f"train_seasons {train_seasons} must all come before test_seasons {test_seasons}")
    px = open_close_probs(games, method)
    x = features if features is not None else line_move_features(games, lag_days=lag_days, method=method,
                                                                  team_features=team_features, pitchers=pitchers)
    season = games["season"].to_numpy(int)
    valid = px["valid"].to_numpy(bool)
    move = (px["p_close_home"] - px["p_open_home"]).to_numpy(float)
    train = valid & np.isin(season, train_seasons)
    test = valid & np.isin(season, test_seasons)
    if not train.any() or not test.any():
        raise ValueError(f"no games with opening and closing prices in train {train_seasons} or test {test_seasons}")

    # Walk-forward on the training seasons only: the threshold never sees the test season.
    val_pred, val_move, folds = [], [], []
    for i, s in enumerate(train_seasons[1:], start=1):
        fit = valid & np.isin(season, train_seasons[:i])
        hold = valid & (season == s)
        if fit.any() and hold.any():
            p = _fit_predict(x[fit], move[fit], x[hold], model, seed)
            val_pred.append(p)
            val_move.append(move[hold])
            folds.append({"fit_seasons": train_seasons[:i], "validate_season": s,
                          "direction_accuracy": float((np.sign(p) == np.sign(move[hold]))[move[hold] != 0].mean()),
                          "clv_points_mean_all": float((np.sign(p) * move[hold]).mean() * 100.0)})
    if val_pred:
        threshold, grid = choose_threshold(np.concatenate(val_pred), np.concatenate(val_move), min_bets=min_bets)
    else:  # one training season: nothing to validate on, bet every nonzero prediction
        threshold, grid = 0.0, []

    fitted = make_model(model, seed)
    fitted.fit(x[train], move[train])
    pred = np.asarray(fitted.predict(x[test]), dtype=float)
    g_test = games[test]
    px_test = px[test]
    dates = _day_number(g_test)
    hw = g_test["home_win"].to_numpy(float)
    take = np.abs(pred) > threshold
    model_bets = bet_outcomes(px_test[take], hw[take], pred[take] > 0)

    rng = np.random.default_rng(seed)
    random_all = rng.random(len(g_test)) < 0.5
    p_open = px_test["p_open_home"].to_numpy(float)
    baselines = {
        "home": bet_outcomes(px_test, hw, np.ones(len(g_test), dtype=bool)),
        "favourite": bet_outcomes(px_test, hw, p_open >= 0.5),
        "underdog": bet_outcomes(px_test, hw, p_open < 0.5),
        "random_side": bet_outcomes(px_test, hw, random_all),
        "random_side_on_model_games": bet_outcomes(px_test[take], hw[take], random_all[take]),
    }
    test_move = move[test]
    nz = test_move != 0
    report = {
        "sport": str(games["sport"].iloc[0]) if "sport" in games.columns and len(games) else None,
        "margin_method": method, "model": model, "lag_days": lag_days,
        "feature_options": ({"team_features": team_features, "pitchers": pitchers} if features is None
                            else "precomputed features passed in"),
        "train_seasons": train_seasons, "test_seasons": test_seasons,
        "train_games": int(train.sum()), "test_games": int(test.sum()),
        "train_last_date": str(pd.to_datetime(games.loc[train, "date"]).max().date()),
        "test_first_date": str(pd.to_datetime(games.loc[test, "date"]).min().date()),
        "trained_on_seasons": sorted(set(season[train].tolist())),
        "features": list(x.columns),
        "threshold": float(threshold), "threshold_grid": grid, "walk_forward": folds,
        "test_direction_accuracy_all": float((np.sign(pred[nz]) == np.sign(test_move[nz])).mean()),
        "test_move_corr": float(np.corrcoef(pred, test_move)[0, 1]),
        "model_bets": summarise_bets(model_bets, dates[take], n_boot, seed),
        # No threshold: the side of every nonzero prediction. Many more bets, so a tighter read on whether the
        # direction itself carries over to the test season.
        "model_bets_all_games": summarise_bets(bet_outcomes(px_test[pred != 0], hw[pred != 0], pred[pred != 0] > 0),
                                               dates[pred != 0], n_boot, seed),
        "baselines": {name: summarise_bets(b, dates if name != "random_side_on_model_games" else dates[take],
                                           n_boot, seed) for name, b in baselines.items()},
        "baseline_note": "home/favourite/underdog/random_side: every test game with opening and closing prices; "
                         "random_side_on_model_games: a seeded random side on the model's own games",
    }
    report["edge_claimed"] = bool(report["model_bets"]["clv_points_ci"][0] > 0)
    return report
