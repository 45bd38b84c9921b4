"""Closing line value without the margin, opening lines end to end, and bet_at (issue 15). Ray-free."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgeray.backtest import SizingSpec, run_bets
from edgeray.backtest.opportunities import game_opportunities
from edgeray.clv import clv_points, fair_prob, price_clv_pct, raw_clv_points, sport_clv_report
from edgeray.sports.features import build_features
from edgeray.sports.games import load_sport
from tests.conftest import shared_file


def test_clv_sign_and_scale_hand_worked():
    # Bet home at 1.9/1.9 (margin-free 0.5 each). Close 1.6/2.4: implied 0.625 + 0.41667 = 1.041667, so the home
    # side's margin-free probability is 0.625 / 1.041667 = 0.6: CLV +10 points for home, -10 for away.
    np.testing.assert_allclose(clv_points([1.9, 1.9], [1.9, 1.9], [1.6, 2.4], [2.4, 1.6]), [10.0, -10.0])
    # Price CLV: 100 * (1.9 / 1.6 - 1) = 18.75 %; 100 * (1.9 / 2.4 - 1) = -20.8333 %.
    np.testing.assert_allclose(price_clv_pct([1.9, 1.9], [1.6, 2.4]), [18.75, -125 / 6])
    # A margin that shrinks towards the close (1.91/1.91 -> 1.95/1.95) moves nothing: margin-free CLV 0, while the
    # raw-price figure reads 100 * (1/1.95 - 1/1.91) = -1.0739 points.
    assert clv_points(1.91, 1.91, 1.95, 1.95)[0] == pytest.approx(0.0, abs=1e-12)
    assert raw_clv_points(1.91, 1.95) == pytest.approx(100 * (1 / 1.95 - 1 / 1.91))
    assert raw_clv_points(1.91, 1.95) < -1.0
    # An unknown other side gives an unknown margin-free CLV, never a raw number in its place.
    assert np.isnan(clv_points(1.9, np.nan, 1.6, 2.4)[0])


def test_clv_method_is_named_and_changes_the_figure():
    # Shin on a 2-way book, hand-computed: implied (0.625, 0.41667), S = 1.041667, D = 0.208333;
    # z = (S-1)(D^2-S) / (S(D^2-1)); fair = (sqrt(z^2 + 4(1-z) pi^2 / S) - z) / (2(1-z)); multiplicative gives 0.6.
    mult = fair_prob(1.6, 2.4, "multiplicative")[0]
    shin = fair_prob(1.6, 2.4, "shin")[0]
    s, d = 1 / 1.6 + 1 / 2.4, 1 / 1.6 - 1 / 2.4
    z = (s - 1) * (d ** 2 - s) / (s * (d ** 2 - 1))
    hand = (np.sqrt(z ** 2 + 4 * (1 - z) * (1 / 1.6) ** 2 / s) - z) / (2 * (1 - z))
    assert mult == pytest.approx(0.6) and shin == pytest.approx(hand) and shin != pytest.approx(mult)
    with pytest.raises(ValueError, match="clv_method: 'vig'"):
        clv_points(1.9, 1.9, 1.6, 2.4, method="vig")
    with pytest.raises(ValueError, match="clv_method"):
        run_bets(pd.DataFrame({"date": [pd.Timestamp("2021-01-01", tz="UTC")], "game_id": ["g"], "side": ["home"],
                               "decimal_odds": [2.0], "model_prob": [0.6], "won": [1]}), SizingSpec("fixed"),
                 clv_method="vig")


def test_metrics_roi_by_clv_sign_and_margin_free_mean():
    # Two games, fixed stakes of 10. Game a: home bet at 1.9/1.9, closes 1.6/2.4 (CLV +10), wins (+9).
    # Game b: home bet at 1.9/1.9, closes 2.4/1.6 (CLV -10), loses (-10).
    day = pd.Timestamp("2021-01-01", tz="UTC")
    frame = pd.DataFrame({"date": [day, day + pd.Timedelta(days=1)], "game_id": ["a", "b"], "side": "home",
                          "decimal_odds": [1.9, 1.9], "other_decimal_odds": [1.9, 1.9], "model_prob": [0.6, 0.6],
                          "won": [1, 0], "closing_decimal_odds": [1.6, 2.4], "closing_other_decimal_odds": [2.4, 1.6]})
    m = run_bets(frame, SizingSpec("fixed", amount=10.0), n_boot=100).metrics
    assert m["clv_mean_points"] == pytest.approx(0.0) and m["clv_quantiles_points"]["p05"] == pytest.approx(-9.0)
    split = m["roi_by_clv_sign"]
    assert split["clv_positive"]["bets"] == 1 and split["clv_positive"]["roi"] == pytest.approx(0.9)
    assert split["clv_non_positive"]["bets"] == 1 and split["clv_non_positive"]["roi"] == pytest.approx(-1.0)
    # Without the other side's prices only price CLV is given, and the reason is said.
    m2 = run_bets(frame.drop(columns=["other_decimal_odds", "closing_other_decimal_odds"]),
                  SizingSpec("fixed", amount=10.0), n_boot=100).metrics
    assert np.isnan(m2["clv_mean_points"]) and "other_decimal_odds" in m2["clv_note"]
    assert m2["clv_price_pct_mean"] == pytest.approx((18.75 - 125 / 6) / 2)


@pytest.fixture(scope="module")
def mlb_games() -> pd.DataFrame:
    return load_sport("mlb", shared_file("sports/mlb_sbro_2010_2013.csv").parent)


def test_mlb_loader_fills_opening_prices(mlb_games):
    g = mlb_games
    assert g["home_dec_open"].notna().mean() > 0.99
    # Opening decimal odds and margin-free probability from the opening moneylines, as for the close.
    row = g[g["home_ml_open"] < 0].iloc[0]
    assert row["home_dec_open"] == pytest.approx(1 + 100 / abs(row["home_ml_open"]))
    imp_h, imp_a = 1 / row["home_dec_open"], 1 / row["away_dec_open"]
    assert row["market_prob_home_open"] == pytest.approx(imp_h / (imp_h + imp_a))
    # The open is a different price from the close on most games (otherwise nothing here would measure anything).
    assert (g["home_ml_open"] != g["home_ml"]).mean() > 0.5


def test_features_at_the_open_never_read_the_close(mlb_games):
    games = mlb_games[mlb_games["season"] == 2010].reset_index(drop=True)
    rng = np.random.default_rng(0)
    scrambled = games.copy()
    for col in ("home_ml", "away_ml"):
        scrambled[col] = rng.choice([-250.0, -120.0, 110.0, 240.0], len(games))
    scrambled["home_dec"] = np.where(scrambled["home_ml"] > 0, 1 + scrambled["home_ml"] / 100, 1 + 100 / -scrambled["home_ml"])
    scrambled["away_dec"] = np.where(scrambled["away_ml"] > 0, 1 + scrambled["away_ml"] / 100, 1 + 100 / -scrambled["away_ml"])
    scrambled["market_prob_home"] = rng.uniform(0.2, 0.8, len(games))
    scrambled["total_line"] = rng.uniform(6, 11, len(games))
    scrambled["home_spread"] = rng.uniform(-2, 2, len(games))
    at_open = {"market_at": "open", "ml_moves": True}
    a, b = build_features(games, at_open), build_features(scrambled, at_open)
    fcols = [c for c in a.columns if c.startswith("f_")]
    assert "f_market_prob_home" in fcols and "f_line_move_prob" not in fcols
    pd.testing.assert_frame_equal(a[fcols], b[fcols])
    np.testing.assert_allclose(a["f_market_prob_home"], games["market_prob_home_open"])
    # The default (a bet at the close) does read the closing line: the same scramble changes its features.
    c, d = build_features(games), build_features(scrambled)
    assert not np.allclose(c["f_market_prob_home"], d["f_market_prob_home"])
    with pytest.raises(ValueError, match="config.market_at: .*'later'"):
        build_features(games, {"market_at": "later"})


def test_bet_at_prices_and_clv(mlb_games):
    games = mlb_games[mlb_games["season"] == 2013].reset_index(drop=True)
    p = games["market_prob_home_open"].to_numpy()
    close = game_opportunities(games, p, bet_at="close")
    assert close.attrs["bet_at"]["note"].startswith("bets priced at the closing line: CLV is 0")
    res = run_bets(close, SizingSpec("fixed", min_edge=-1.0), n_boot=50)
    np.testing.assert_allclose(res.bets["clv_points"], 0.0, atol=1e-12)
    assert res.metrics["bet_at"]["bet_at"] == "close"
    opened = game_opportunities(games, p, bet_at="open")
    first = game_opportunities(games, p, bet_at="first_seen")
    pd.testing.assert_frame_equal(opened, first)  # one line per game: the first price is the open
    row = opened.iloc[0]
    game = games.set_index("game_id").loc[row["game_id"]]
    own, other = ("home", "away") if row["side"] == "home" else ("away", "home")
    assert row["decimal_odds"] == game[f"{own}_dec_open"] and row["closing_decimal_odds"] == game[f"{own}_dec"]
    q = lambda a, b: (1 / a) / (1 / a + 1 / b)  # noqa: E731  multiplicative, by hand
    hand = 100 * (q(game[f"{own}_dec"], game[f"{other}_dec"]) - q(game[f"{own}_dec_open"], game[f"{other}_dec_open"]))
    res = run_bets(opened, SizingSpec("fixed", min_edge=-1.0), n_boot=50)
    assert res.bets.loc[res.bets["game_id"].eq(row["game_id"]) & res.bets["side"].eq(row["side"]), "clv_points"].iloc[0] \
        == pytest.approx(hand)
    fc = res.metrics["forecast_comparison"]
    assert fc["n"] == len(opened) and fc["model"]["log_loss"] == pytest.approx(fc["open_market"]["log_loss"])
    # Games without an opening line are dropped and counted.
    holes = games.copy()
    holes.loc[:9, ["home_dec_open", "away_dec_open", "market_prob_home_open"]] = np.nan
    some = game_opportunities(holes, p, bet_at="open")
    decided_holes = int(holes.loc[:9, "home_win"].notna().sum())
    assert some.attrs["bet_at"]["games_dropped_no_price"] == decided_holes
    assert len(some) == len(opened) - 2 * decided_holes and str(decided_holes) in some.attrs["bet_at"]["note"]


def test_bet_at_refusals_name_field_and_value(mlb_games):
    games = mlb_games.head(50)
    with pytest.raises(ValueError, match=r"bet_at: expected one of .*'noon'"):
        game_opportunities(games, np.full(len(games), 0.5), bet_at="noon")
    with pytest.raises(ValueError, match="bet_at: 'best_book' needs a multi-book odds stream; this archive has one book"):
        game_opportunities(games, np.full(len(games), 0.5), bet_at="best_book")
    no_open = games.drop(columns=["home_dec_open", "away_dec_open"])
    with pytest.raises(ValueError, match="bet_at: 'open' needs opening prices"):
        game_opportunities(no_open, np.full(len(games), 0.5), bet_at="open")


def test_nfl_swapped_spread_and_total_are_repaired():
    games = load_sport("nfl", shared_file("sports/nfl_sbr_2011_2021.csv").parent)
    assert games["total_line"].min() >= 25 and games["home_spread"].abs().max() < 30
    # 2011-09-11 ATL at CHI: the file's close reads spread +40.5, total 1.0; it was spread +1.0, total 40.5.
    row = games[(games["home"] == "CHI") & (games["away"] == "ATL") & (games["season"] == 2011)].iloc[0]
    assert (row["home_spread"], row["total_line"]) == (1.0, 40.5)
    move = (games["home_spread"] - games["home_spread_open"]).abs()
    assert move.median() <= 1.0 and (move > 7).sum() < 20


def test_sport_clv_report_mlb_keys_and_honesty():
    r = sport_clv_report("mlb", shared_file("sports/mlb_sbro_2010_2013.csv").parent, [2010, 2011, 2012], [2013],
                         n_boot=200)
    for key in ("open_log_loss", "close_log_loss", "model_log_loss", "clv_points_mean", "clv_points_ci", "roi",
                "roi_ci", "bets"):
        assert key in r
    assert r["bets"] > 0 and r["clv_method"] == "multiplicative" and r["bet_at"] == "open"
    assert r["roi_ci"][0] <= r["roi"] <= r["roi_ci"][1]
    assert r["clv_points_ci"][0] <= r["clv_points_mean"] <= r["clv_points_ci"][1]
    assert r["edge_claimed"]["roi"] == (r["roi_ci"][0] > 0) and r["edge_claimed"]["clv"] == (r["clv_points_ci"][0] > 0)
    # The close is the sharper line: its log loss is no worse than the open's on the same games (by a hair).
    assert r["close_log_loss"] <= r["open_log_loss"] + 1e-3
    split = r["roi_by_clv_sign"]
    assert split["clv_positive"]["bets"] + split["clv_non_positive"]["bets"] == r["bets"]
