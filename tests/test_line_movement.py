"""Line-movement model (edgeray.sports.linemove): point in time, CLV arithmetic, the report on real MLB lines."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgeray.sports.games import load_sport
from edgeray.sports.linemove import (_prior_mean, bet_outcomes, clustered_bootstrap, line_move_features,
                                     line_movement_report, open_close_probs)
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def mlb() -> pd.DataFrame:
    return load_sport("mlb", shared_file("sports/mlb_sbro_2010_2013.csv").parent)


def _season(games: pd.DataFrame, season: int) -> pd.DataFrame:
    return games[games["season"] == season].reset_index(drop=True)


def _scramble_after_open(games: pd.DataFrame, rows: np.ndarray, seed: int, opens_too: bool = False) -> pd.DataFrame:
    """A copy where `rows` get other closing lines and scores (and opening lines if opens_too): permuted
    among themselves, then shifted, so every value really changes."""
    rng = np.random.default_rng(seed)
    out = games.copy()
    idx = np.flatnonzero(rows)
    perm = rng.permutation(idx)
    cols = ["home_ml", "away_ml", "home_score", "away_score", "home_win"]
    if opens_too:
        cols += ["home_ml_open", "away_ml_open", "total_line_open"]
    for c in cols:
        out.loc[idx, c] = games.loc[perm, c].to_numpy()
    close = out.loc[idx, "home_ml"]
    out.loc[idx, "home_ml"] = np.where(close < 0, close - 37, close + 37)
    out.loc[idx, "home_score"] = out.loc[idx, "home_score"] + 3
    out.loc[idx, "home_win"] = 1.0
    return out


# ------------------------------------------------------------------ (a) no look-ahead


def test_closes_and_results_from_the_game_day_on_never_reach_its_features(mlb):
    games = _season(mlb, 2013)
    days = np.sort(games["date"].unique())
    cut = days[60]                                     # a mid-season date
    later_or_same = (games["date"] >= cut).to_numpy()
    same_day = (games["date"] == cut).to_numpy()
    base = line_move_features(games)
    altered = line_move_features(_scramble_after_open(games, later_or_same, seed=1))
    # Every game up to and including the cut date: the same features, though its own close and result changed.
    pd.testing.assert_frame_equal(base[~(games["date"] > cut).to_numpy()], altered[~(games["date"] > cut).to_numpy()])
    # ...while its target did change (the scramble did reach the cut date's games)...
    move = lambda g: (lambda p: p["p_close_home"] - p["p_open_home"])(open_close_probs(g))  # noqa: E731
    assert (move(games)[same_day] != move(_scramble_after_open(games, later_or_same, seed=1))[same_day]).all()
    # ...and later games' features did change: they may read the cut date's closes and results.
    after = (games["date"] > cut).to_numpy()
    changed = ~np.isclose(base[after].to_numpy(float), altered[after].to_numpy(float), equal_nan=True)
    assert changed.any(axis=1).mean() > 0.5


def test_later_games_altered_wholesale_leave_earlier_features_alone(mlb):
    games = _season(mlb, 2012)
    days = np.sort(games["date"].unique())
    cut = days[100]
    later = (games["date"] > cut).to_numpy()
    base = line_move_features(games)
    altered = line_move_features(_scramble_after_open(games, later, seed=2, opens_too=True))
    pd.testing.assert_frame_equal(base[~later], altered[~later])
    # Dropping the later games altogether gives the same features too (nothing is normalised over the table).
    pd.testing.assert_frame_equal(base[~later], line_move_features(games[~later]))


def test_prior_mean_matches_a_plain_loop_and_honours_the_lag():
    rng = np.random.default_rng(5)
    n = 400
    key = rng.integers(0, 6, n)
    day = rng.integers(0, 40, n)
    val = np.where(rng.random(n) < 0.15, np.nan, rng.normal(size=n))
    for k, lag in ((3, 1), (5, 2), (1, 3)):
        got = _prior_mean(key, day, val, k, lag)
        for i in range(n):
            prior = [j for j in range(n) if key[j] == key[i] and day[j] <= day[i] - lag and np.isfinite(val[j])]
            prior.sort(key=lambda j: (day[j], j))            # within a day: table order, as the helper keeps it
            want = np.mean(val[prior[-k:]]) if prior else np.nan
            assert got[i] == pytest.approx(want, nan_ok=True), (i, k, lag)


# ------------------------------------------------------------------ (b) CLV sign and scale


def test_clv_and_profit_on_hand_worked_bets():
    games = pd.DataFrame({
        # game 0: open -110/-110 -> 0.5/0.5; close -130/+110 -> implied 130/230 = 0.565217 and 100/210 = 0.476190,
        #         margin-free home 0.565217 / 1.041408 = 0.542744: the line moved 4.2744 points to the home side.
        # game 1: open -150/+130 and an unchanged close: CLV 0 either side.
        # game 2: open +120/-140 -> 0.454545/0.583333, home 0.437956; close +110/-130 -> home 0.476190 / 1.041408
        #         = 0.457256: 1.9300 points to home.
        "home_ml_open": [-110.0, -150.0, 120.0], "away_ml_open": [-110.0, 130.0, -140.0],
        "home_ml": [-130.0, -150.0, 110.0], "away_ml": [110.0, 130.0, -130.0]})
    px = open_close_probs(games)
    assert px["overround_open"].to_numpy() == pytest.approx(
        [2 * 110 / 210 - 1, 0.6 + 100 / 230 - 1, 100 / 220 + 140 / 240 - 1])
    home_win = np.array([1.0, 0.0, np.nan])               # game 2 was suspended: void
    home = bet_outcomes(px, home_win, np.array([True, True, True]))
    away = bet_outcomes(px, home_win, np.array([False, False, False]))
    assert home["clv_points"].to_numpy() == pytest.approx([4.2744, 0.0, 1.9300], abs=1e-4)
    assert away["clv_points"].to_numpy() == pytest.approx([-4.2744, 0.0, -1.9300], abs=1e-4)
    assert home["direction"].tolist() == [1.0, 0.0, 1.0] and away["direction"].tolist() == [-1.0, 0.0, -1.0]
    # 1 unit at the OPENING price: home -110 pays 100/110 = 0.909091; home -150 lost; the void game stakes nothing.
    assert home["profit"].to_numpy() == pytest.approx([100 / 110, -1.0, 0.0])
    assert away["profit"].to_numpy() == pytest.approx([-1.0, 1.3, 0.0])
    assert home["stake"].tolist() == [1.0, 1.0, 0.0]


def test_clustered_bootstrap_point_and_interval():
    # Constant per-bet value: every resample gives it back, so the CI collapses onto it.
    m, lo, hi = clustered_bootstrap(np.full(30, 1.5), np.ones(30), np.repeat(np.arange(10), 3))
    assert (m, lo, hi) == pytest.approx((1.5, 1.5, 1.5))
    # A ratio: profit 3 over stake 4 -> 0.75; the CI spans the per-date ratios 0 .. 1.5 and brackets 0.75.
    m, lo, hi = clustered_bootstrap(np.array([1.0, 2.0, 0.0, 0.0]), np.ones(4), np.array([0, 0, 1, 1]))
    assert m == pytest.approx(0.75) and 0.0 <= lo < 0.75 < hi <= 1.5
    # Clustering matters: one date holding all the spread makes a wider interval than the same values spread over dates.
    vals = np.r_[np.full(50, 3.0), np.full(50, -1.0)]
    wide = clustered_bootstrap(vals, np.ones(100), np.r_[np.zeros(50), np.arange(1, 51)], seed=3)
    narrow = clustered_bootstrap(vals, np.ones(100), np.arange(100), seed=3)
    assert wide[2] - wide[1] > 2 * (narrow[2] - narrow[1])


# ------------------------------------------------------------------ (c), (d) the report on real MLB lines


@pytest.fixture(scope="module")
def report(mlb) -> dict:
    return line_movement_report(mlb, [2010, 2011, 2012], [2013], model="ridge", n_boot=400, seed=0)


def test_report_trains_only_on_earlier_seasons(mlb, report):
    assert report["trained_on_seasons"] == [2010, 2011, 2012]
    assert max(report["trained_on_seasons"]) < min(report["test_seasons"])
    assert report["train_last_date"] < report["test_first_date"]
    assert all(max(f["fit_seasons"]) < f["validate_season"] <= 2012 for f in report["walk_forward"])
    with pytest.raises(ValueError, match="must all come before"):
        line_movement_report(mlb, [2011, 2013], [2012])


def test_report_cis_contain_their_means_and_baselines_use_the_same_games(mlb, report):
    games_2013 = mlb[mlb["season"] == 2013]
    px = open_close_probs(games_2013)
    ok = px["valid"].to_numpy()
    assert report["test_games"] == int(ok.sum()) > 2000
    for name, block in [("model", report["model_bets"]), ("model_all", report["model_bets_all_games"]),
                        *report["baselines"].items()]:
        lo, hi = block["clv_points_ci"]
        assert lo <= block["clv_points_mean"] <= hi, name
        rlo, rhi = block["roi_ci"]
        assert rlo <= block["roi"] <= rhi, name
        assert block["clv_ci_excludes_zero"] == (lo > 0 or hi < 0), name
    base = report["baselines"]
    for name in ("home", "favourite", "underdog", "random_side"):
        assert base[name]["bets"] == report["test_games"], name
    # Every home side captures exactly the mean home move of the test games, computed here independently.
    home_move = ((px["p_close_home"] - px["p_open_home"])[ok] * 100).mean()
    assert base["home"]["clv_points_mean"] == pytest.approx(home_move, abs=1e-9)
    # Favourite and underdog are the two sides of the same games: their CLVs are mirror images.
    assert base["favourite"]["clv_points_mean"] == pytest.approx(-base["underdog"]["clv_points_mean"], abs=1e-9)
    assert base["random_side_on_model_games"]["bets"] == report["model_bets"]["bets"] > 0
    # No edge claimed unless the model's CLV interval is above zero.
    assert report["edge_claimed"] == (report["model_bets"]["clv_points_ci"][0] > 0)
    # The threshold came from the training seasons' walk-forward grid, not from 2013.
    assert report["threshold"] in [row["threshold"] for row in report["threshold_grid"]]
