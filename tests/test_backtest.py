from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeray.backtest import (LeakageGuard, MonteCarloInputs, SizingSpec, chunk_plan, compare_strategies, monte_carlo,
                              paths_chunk, run_bets, season_folds, walk_forward)
from edgeray.backtest import montecarlo
from edgeray.backtest.bars import backtest_bars, sma_cross_positions
from edgeray.backtest.plots import plot_drawdown, plot_equity, plot_reliability, plot_roi_by_odds
from edgeray.odds import kelly_fraction

D0 = pd.Timestamp("2021-01-01", tz="UTC")


def opps(rows, **extra) -> pd.DataFrame:
    """rows: (day offset, decimal odds, model prob, won)."""
    frame = pd.DataFrame(rows, columns=["day", "decimal_odds", "model_prob", "won"])
    frame.insert(0, "date", D0 + pd.to_timedelta(frame.pop("day"), unit="D"))
    frame.insert(1, "game_id", [f"g{i}" for i in range(len(frame))])
    frame.insert(2, "side", "home")
    for k, v in extra.items():
        frame[k] = v
    return frame


def random_opps(n: int, seed: int, days: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    odds = 1.0 + rng.uniform(0.2, 5.0, n)
    prob = np.clip(1.0 / odds + rng.normal(0.02, 0.08, n), 0.0, 1.0)
    won = (rng.random(n) < prob).astype(float)
    rows = list(zip(np.sort(rng.integers(0, days, n)), odds, prob, won))
    closing = odds * rng.uniform(0.9, 1.1, n)
    # The other side of a 4%-margin book at bet time and at the close (margin-free CLV needs both sides).
    other = lambda d: 1.0 / np.clip(1.04 - 1.0 / d, 0.02, None)  # noqa: E731
    return opps(rows, closing_decimal_odds=closing, other_decimal_odds=other(odds),
                closing_other_decimal_odds=other(closing))


def test_kelly_fraction_hand_worked():
    # p=0.6 at evens: (0.6*2 - 1)/(2 - 1) = 0.2. p=0.5 at 3.0: (1.5 - 1)/2 = 0.25. p=0.4 at evens: negative -> 0.
    np.testing.assert_allclose(kelly_fraction([0.6, 0.5, 0.4], [2.0, 3.0, 2.0]), [0.2, 0.25, 0.0])
    with pytest.raises(ValueError, match="decimal_odds"):
        kelly_fraction(0.5, 1.0)


def test_kelly_run_sizes_same_date_bets_from_start_bankroll():
    # Day 0: A (p .6, 2.0, won) and B (p .5, 3.0, lost), both from 1000: quarter Kelly 0.05 and 0.0625 -> stakes 50
    # and 62.5, pnl +50 - 62.5 -> 987.5. Day 1: C (p .6, 2.0, lost): 0.05 * 987.5 = 49.375 -> 938.125.
    # Day 1 D (p .4 at evens) has edge -0.1 < min_edge 0 and is skipped.
    frame = opps([(0, 2.0, 0.6, 1), (0, 3.0, 0.5, 0), (1, 2.0, 0.6, 0), (1, 2.0, 0.4, 1)])
    res = run_bets(frame, SizingSpec("kelly", kelly_fraction=0.25, kelly_cap=0.1), 1000.0)
    np.testing.assert_allclose(res.bets["stake"], [50.0, 62.5, 49.375, 0.0])
    np.testing.assert_allclose(res.bets["pnl"], [50.0, -62.5, -49.375, 0.0])
    np.testing.assert_allclose(res.equity["bankroll"], [987.5, 938.125])
    np.testing.assert_allclose(res.bets["bankroll_before"], [1000.0, 1000.0, 987.5, 987.5])
    assert list(res.bets["skipped_reason"]) == ["", "", "", "below_min_edge"]
    # Cap: p=0.9 at evens is full Kelly 0.8, quarter 0.2 -> capped to 0.1.
    capped = run_bets(opps([(0, 2.0, 0.9, 1)]), SizingSpec("kelly", kelly_cap=0.1), 1000.0)
    assert capped.bets["stake"].iloc[0] == pytest.approx(100.0)


def test_filters_and_market_prob_edge():
    # Edge vs market_prob when given: 0.55 - 0.52 = 0.03 (< min_edge 0.05 -> skipped); 0.60 - 0.52 = 0.08 -> bet.
    frame = opps([(0, 2.0, 0.55, 1), (0, 2.0, 0.60, 1), (0, 2.0, 0.70, 1)], market_prob=[0.52, 0.52, np.nan],
                 confidence=[0.9, 0.9, 0.1])
    res = run_bets(frame, SizingSpec("percentage", percentage=0.1, min_edge=0.05, min_confidence=0.5))
    assert list(res.bets["skipped_reason"]) == ["below_min_edge", "", "below_min_confidence"]
    np.testing.assert_allclose(res.bets["edge"], [0.03, 0.08, 0.20])
    # Kelly on the offered price: p .55 at 1.8 gives (0.99 - 1)/0.8 < 0 even though the edge vs market .50 is +.05.
    kelly = run_bets(opps([(0, 1.8, 0.55, 1)], market_prob=[0.5]), SizingSpec("kelly"))
    assert kelly.bets["skipped_reason"].iloc[0] == "no_edge" and kelly.bets["stake"].iloc[0] == 0.0


def test_simultaneous_stakes_never_exceed_bankroll():
    # Two 60% stakes on one date would total 120%; they are scaled to 50% each. Both lose -> bankroll exactly 0,
    # and the next date's bet is skipped as bankroll_exhausted.
    frame = opps([(0, 2.0, 0.7, 0), (0, 2.0, 0.7, 0), (1, 2.0, 0.7, 1)])
    res = run_bets(frame, SizingSpec("percentage", percentage=0.6))
    np.testing.assert_allclose(res.bets["stake"], [500.0, 500.0, 0.0])
    assert res.equity["bankroll"].tolist() == [0.0, 0.0]
    assert res.bets["skipped_reason"].iloc[2] == "bankroll_exhausted"


def test_metrics_hand_worked():
    # Fixed 10 on four single-bet days from 1000:
    # d0 2.5 won +15 -> 1015; d1 1.5 lost -10 -> 1005; d2 3.0 lost -10 -> 995; d3 2.0 won +10 -> 1005.
    # Both books margin-free (other side = 1 / (1 - 1/odds)), so margin-free CLV equals the raw-price figure here.
    frame = opps([(0, 2.5, 0.5, 1), (1, 1.5, 0.7, 0), (2, 3.0, 0.4, 0), (3, 2.0, 0.6, 1)],
                  closing_decimal_odds=[2.0, np.nan, 3.0, 2.5], other_decimal_odds=[5 / 3, 3.0, 1.5, 2.0],
                  closing_other_decimal_odds=[2.0, np.nan, 1.5, 5 / 3])
    res = run_bets(frame, SizingSpec("fixed", amount=10.0), 1000.0, n_boot=200)
    m = res.metrics
    assert (m["total_bets"], m["wins"], m["losses"]) == (4, 2, 2)
    assert m["profit"] == pytest.approx(5.0) and m["total_staked"] == pytest.approx(40.0)
    assert m["roi"] == pytest.approx(5 / 40)                      # profit / staked
    assert m["yield"] == pytest.approx((1.5 - 1 - 1 + 1) / 4)      # mean pnl/stake
    assert m["max_drawdown"] == pytest.approx((1015 - 995) / 1015)  # peak 1015 -> trough 995
    assert m["max_drawdown_duration_days"] == pytest.approx(3.0)  # below the d0 peak through d3 (1005 < 1015)
    assert m["max_drawdown_duration_dates"] == 3
    assert m["avg_decimal_odds"] == pytest.approx(9.0 / 4)
    # edges: .5-.4, .7-.6667, .4-.3333, .6-.5
    assert m["avg_edge"] == pytest.approx((0.1 + (0.7 - 1 / 1.5) + (0.4 - 1 / 3) + 0.1) / 4)
    # Brier: .25 + .49 + .16 + .16 = 1.06 / 4. ECE: one bet per bin, |.5-1| + |.7-0| + |.4-0| + |.6-1| = 2.0 / 4.
    assert m["brier"] == pytest.approx(0.265)
    assert m["ece"] == pytest.approx(0.5)
    # CLV points: 100*(1/2.0 - 1/2.5) = 10, unknown, 0, 100*(1/2.5 - 1/2.0) = -10.
    assert m["clv_bets"] == 3 and m["clv_mean_points"] == pytest.approx(0.0)
    assert m["clv_positive_share"] == pytest.approx(1 / 3) and m["clv_method"] == "multiplicative"
    assert m["clv_raw_points_mean"] == pytest.approx(0.0)
    # Price CLV: 100*(2.5/2.0 - 1) = 25, 0, 100*(2.0/2.5 - 1) = -20 -> mean 5/3.
    assert m["clv_price_pct_mean"] == pytest.approx(5 / 3) and m["clv_price_bets"] == 3
    # ROI by CLV sign: CLV > 0 is d0 alone (+15 on 10); CLV <= 0 is d2 (-10) and d3 (+10): 0 on 20.
    split = m["roi_by_clv_sign"]
    assert (split["clv_positive"]["bets"], split["clv_positive"]["roi"]) == (1, pytest.approx(1.5))
    assert (split["clv_non_positive"]["bets"], split["clv_non_positive"]["roi"]) == (2, pytest.approx(0.0))
    np.testing.assert_allclose(res.bets["clv_points"], [10.0, np.nan, 0.0, -10.0], atol=1e-12)
    # Implied win rate: mean(.4, .6667, .3333, .5) = .475; actual .5.
    assert m["win_rate_minus_implied"] == pytest.approx(0.5 - (0.4 + 2 / 3 + 1 / 3 + 0.5) / 4)
    # Per-bet returns on the bankroll before each bet; 4 bets over 3 days -> 4 / (3/365.25) bets a year.
    r = [15 / 1000, -10 / 1015, -10 / 1005, 10 / 995]
    per_year = 4 / (3 / 365.25)
    assert m["sharpe"] == pytest.approx(statistics.mean(r) / statistics.stdev(r) * math.sqrt(per_year))
    downside = math.sqrt(sum(min(x, 0) ** 2 for x in r) / 4)
    assert m["sortino"] == pytest.approx(statistics.mean(r) / downside * math.sqrt(per_year))
    cagr = (1005 / 1000) ** (365.25 / 3) - 1
    assert m["calmar"] == pytest.approx(cagr / ((1015 - 995) / 1015))
    # Odds ranges: 2.5 = +150, 1.5 = -200, 3.0 = +200, 2.0 = +100.
    table = m["by_odds_range"]
    assert table["+150 to +199"]["roi"] == pytest.approx(1.5)
    assert table["-200 and shorter"]["roi"] == pytest.approx(-1.0)
    assert table["+200 to +249"]["roi"] == pytest.approx(-1.0)
    assert table["+100 to +149"]["roi"] == pytest.approx(1.0)
    assert table["+300 and up"]["bets"] == 0
    lo, hi = m["roi_ci95"]
    assert lo <= m["roi"] <= hi and lo < hi


def test_bootstrap_ci_seeded_and_covers_zero_edge():
    frame = random_opps(400, seed=3)
    a = run_bets(frame, SizingSpec("fixed"), n_boot=300, seed=11).metrics
    b = run_bets(frame, SizingSpec("fixed"), n_boot=300, seed=11).metrics
    c = run_bets(frame, SizingSpec("fixed"), n_boot=300, seed=12).metrics
    assert a["roi_ci95"] == b["roi_ci95"] and a["roi_ci95"] != c["roi_ci95"]
    assert a["clv_ci95_points"][0] < a["clv_mean_points"] < a["clv_ci95_points"][1]
    assert a["clv_price_pct_ci95"][0] < a["clv_price_pct_mean"] < a["clv_price_pct_ci95"][1]


@pytest.mark.parametrize("spec", [SizingSpec("kelly"), SizingSpec("percentage", percentage=0.3),
                                  SizingSpec("confidence", percentage=0.5), SizingSpec("fixed", amount=10.0),
                                  SizingSpec("fixed", amount=400.0)])
def test_vectorised_equals_sequential(spec):
    frame = random_opps(600, seed=5)
    vec = run_bets(frame, spec, path="vectorised", metrics=False)
    seq = run_bets(frame, spec, path="sequential", metrics=False)
    assert seq.path == "sequential" and vec.path.startswith("vectorised")
    for col in ("stake", "pnl", "bankroll_before", "bankroll_after"):
        np.testing.assert_allclose(vec.bets[col], seq.bets[col], rtol=1e-10, atol=1e-9)
    assert (vec.bets["skipped_reason"] == seq.bets["skipped_reason"]).all()


def test_fixed_400_hits_the_cap_and_goes_sequential():
    res = run_bets(random_opps(600, seed=5), SizingSpec("fixed", amount=400.0), metrics=False)
    assert res.path == "vectorised+sequential"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(1.01, 20.0), st.floats(0.0, 1.0), st.integers(0, 1)),
                min_size=1, max_size=30),
       st.sampled_from(["fixed", "percentage", "kelly", "confidence"]))
def test_bankroll_never_negative(rows, method):
    spec = SizingSpec(method, amount=300.0, percentage=0.9, kelly_fraction=1.0, kelly_cap=1.0)
    res = run_bets(opps(rows), spec, 1000.0, metrics=False)
    bets = res.bets
    assert (bets["bankroll_after"] >= 0).all() and (res.equity["bankroll"] >= 0).all()
    assert (bets["stake"] >= 0).all() and not bets["stake"].isna().any()
    per_date = bets.groupby("date").agg(staked=("stake", "sum"), before=("bankroll_before", "first"))
    assert (per_date["staked"] <= per_date["before"] * (1 + 1e-12)).all()


@pytest.mark.parametrize("col,value,needle", [("model_prob", 1.2, "model_prob"), ("decimal_odds", 1.0, "decimal_odds"),
                                               ("won", 2, "won"), ("date", "not a date", "date")])
def test_bad_input_names_column(col, value, needle):
    frame = opps([(0, 2.0, 0.6, 1), (1, 2.0, 0.6, 0)])
    frame[col] = frame[col].astype(object)
    frame.loc[0, col] = value
    with pytest.raises(ValueError, match=needle):
        run_bets(frame, SizingSpec("kelly"))
    with pytest.raises(ValueError, match="missing required columns"):
        run_bets(frame.drop(columns="won"), SizingSpec("kelly"))
    with pytest.raises(ValueError, match="kelly_cap"):
        SizingSpec("kelly", kelly_cap=1.5)


def test_unsorted_dates_are_sorted_and_all_rows_kept():
    frame = opps([(2, 2.0, 0.6, 1), (0, 2.0, 0.6, 0), (1, 2.0, 0.6, 1)])
    res = run_bets(frame, SizingSpec("fixed"))
    assert len(res.bets) == 3 and res.bets["date"].is_monotonic_increasing
    assert list(res.bets["game_id"]) == ["g1", "g2", "g0"]


def test_compare_strategies_and_to_dict():
    frame = random_opps(200, seed=9)
    table = compare_strategies(frame, {"flat": SizingSpec("fixed"), "kelly": SizingSpec("kelly")}, n_boot=50)
    assert list(table.index) == ["flat", "kelly"]
    assert table.loc["flat", "total_bets"] == run_bets(frame, SizingSpec("fixed"), metrics=False).bets["placed"].sum()
    payload = json.loads(json.dumps(run_bets(frame, SizingSpec("kelly"), n_boot=50).to_dict()))
    assert payload["metrics"]["total_bets"] == table.loc["kelly", "total_bets"]


def test_walk_forward_folds_never_see_their_future():
    frame = random_opps(300, seed=1, days=400)
    frame["season"] = frame["date"].dt.year * 10 + (frame["date"].dt.month > 6)
    for folds in (season_folds(frame), season_folds(frame, mode="rolling", train_seasons=1)):
        assert len(folds) >= 2
        for fold in folds:
            train, test = fold.masks(frame["date"])
            assert frame.loc[train, "date"].max() < frame.loc[test, "date"].min()
            assert not (train & test).any()
    rolling = season_folds(frame, mode="rolling", train_seasons=1)
    assert rolling[-1].train_start > season_folds(frame)[-1].train_start
    seen = []

    def fit_predict(train, test):
        assert "won" not in test.columns  # the answer is withheld from the test rows
        assert train["date"].max() < test["date"].min()
        seen.append(len(train))
        return np.full(len(test), train["won"].mean())

    out = walk_forward(frame, fit_predict, season_folds(frame), result_cols=["won"])
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # expanding: every refit sees more rows
    assert out.predictions["fold"].nunique() == len(out.folds)
    assert out.predictions.index.is_unique


def _team_features(frame: pd.DataFrame) -> pd.DataFrame:
    """A clean point-in-time feature (prior days' win rate) and a planted peek (a window including the row itself)."""
    out = frame.copy()
    daily = out.groupby("date")["won"].mean()
    out["f_past_rate"] = out["date"].map(daily.shift(1).rolling(5, min_periods=1).mean())
    out["f_peek_rate"] = out["won"].rolling(3, min_periods=1).mean()
    return out


def test_leakage_guard_catches_planted_lookahead():
    rng = np.random.default_rng(0)
    frame = _team_features(random_opps(300, seed=2, days=60))
    frame["f_direct_peek"] = frame["won"] + rng.normal(0, 0.05, len(frame))
    frame["f_market"] = 1.0 / frame["decimal_odds"]
    guard = LeakageGuard()
    corr_only = guard.check_no_lookahead(frame, ["f_past_rate", "f_market", "f_direct_peek"], "date", ["won"])
    assert corr_only.leaky_features() == {"f_direct_peek"}
    report = guard.check_no_lookahead(frame, ["f_past_rate", "f_peek_rate", "f_market"], "date", ["won"],
                                      recompute=_team_features)
    assert report.leaky_features() == {"f_peek_rate"}
    with pytest.raises(ValueError, match="f_peek_rate"):
        report.raise_if_leaky()


def test_monte_carlo_deterministic_and_hand_checked():
    res = run_bets(random_opps(300, seed=4), SizingSpec("kelly"), metrics=False)
    a = monte_carlo(res.bets, n_paths=300, seed=5, chunk_size=100)
    b = monte_carlo(res.bets, n_paths=300, seed=5, chunk_size=100)
    c = monte_carlo(res.bets, n_paths=300, seed=6, chunk_size=100)
    assert a == b and a != c
    assert 0.0 <= a["prob_ruin"] <= 1.0 and a["paths"] == 300
    # Certain wins: 3 bets of 10% at evens -> every path ends at 1.1^3; no drawdown, no ruin.
    sure = MonteCarloInputs(np.full(3, 0.1), np.full(3, 2.0), np.ones(3), np.ones(3))
    chunk = paths_chunk(sure, 50, seed=1, method="model")
    np.testing.assert_allclose(chunk["final_multiple"], 1.1 ** 3)
    assert chunk["max_drawdown"].max() == 0.0 and not chunk["ruined"].any()
    # Certain losses of 30% each: 0.7^2 = 0.49 < 0.5 -> ruined, drawdown 1 - 0.7^3.
    doom = MonteCarloInputs(np.full(3, 0.3), np.full(3, 2.0), np.zeros(3), np.zeros(3))
    chunk = paths_chunk(doom, 10, seed=1, method="bootstrap")
    assert chunk["ruined"].all()
    np.testing.assert_allclose(chunk["max_drawdown"], 1 - 0.7 ** 3)
    assert MonteCarloInputs.from_dict(json.loads(json.dumps(sure.to_dict()))) .fraction.tolist() == [0.1] * 3


BANDS = ("p05", "p25", "p50", "p75", "p95")


def test_monte_carlo_fan_is_per_step_bankroll_quantiles():
    inputs = MonteCarloInputs.from_bets(run_bets(random_opps(400, seed=4), SizingSpec("kelly"), metrics=False).bets)
    n = len(inputs.fraction)
    assert n > montecarlo.FAN_STEPS  # so the fan is thinned
    mc = monte_carlo(inputs, n_paths=400, seed=3, chunk_size=150, initial_bankroll=500.0)
    fan = mc["fan"]
    assert fan["paths"] == 400 and len(fan["step"]) == montecarlo.FAN_STEPS + 1
    assert fan["step"][0] == 0 and fan["step"][-1] == n and all(np.diff(fan["step"]) > 0)
    bands = np.array([fan[k] for k in BANDS])
    assert bands.shape == (5, len(fan["step"]))
    assert (bands[:, 0] == 500.0).all()  # step 0 is the start, on every path
    assert (np.diff(bands, axis=0) >= 0).all() and (bands[4, 1:] > bands[0, 1:]).any()
    # Every path is in the fan, so its last step is the final bankroll (to float32's precision).
    np.testing.assert_allclose(bands[:, -1], [mc["final_bankroll_quantiles"][k] for k in BANDS], rtol=1e-6)
    # Certain wins of 10% at evens: every bet is a step and every quantile is 1.1^k of the start.
    sure = MonteCarloInputs(np.full(3, 0.1), np.full(3, 2.0), np.ones(3), np.ones(3))
    fan = monte_carlo(sure, n_paths=20, method="model")["fan"]
    assert fan["step"] == [0, 1, 2, 3]
    for k in BANDS:
        np.testing.assert_allclose(fan[k], 1000.0 * 1.1 ** np.arange(4), rtol=1e-6)


def test_monte_carlo_fan_keeps_the_first_paths_past_its_memory_bound(monkeypatch):
    inputs = MonteCarloInputs.from_bets(run_bets(random_opps(300, seed=4), SizingSpec("kelly"), metrics=False).bets)
    steps = len(montecarlo.fan_steps(len(inputs.fraction)))
    monkeypatch.setattr(montecarlo, "FAN_MAX_VALUES", 150 * steps)
    plan = chunk_plan(400, 100, seed=8, n_bets=len(inputs.fraction))
    assert [fan for _, _, fan in plan] == [100, 50, 0, 0]
    mc = monte_carlo(inputs, n_paths=400, seed=8, chunk_size=100)
    assert mc["paths"] == 400 and mc["fan"]["paths"] == 150
    first = np.concatenate([paths_chunk(inputs, n, s)["final_multiple"] for n, s, _ in plan[:2]])[:150]
    np.testing.assert_allclose([mc["fan"][k][-1] for k in BANDS], np.percentile(first * 1000.0, (5, 25, 50, 75, 95)),
                               rtol=1e-6)


def test_monte_carlo_chunked_across_ray_tasks_equals_the_in_process_run(ray_session):
    from actors.backtest_tasks import monte_carlo_parallel

    bets = run_bets(random_opps(200, seed=2), SizingSpec("kelly"), metrics=False).bets
    parallel = monte_carlo_parallel(bets, 500, "model", seed=9, initial_bankroll=800.0, chunk_size=150)
    assert parallel == monte_carlo(bets, n_paths=500, method="model", seed=9, initial_bankroll=800.0, chunk_size=150)
    assert parallel["fan"]["paths"] == 500

def test_plots_write_png(tmp_path):
    res = run_bets(random_opps(200, seed=6), SizingSpec("kelly"), n_boot=50)
    flat = run_bets(random_opps(200, seed=6), SizingSpec("fixed"), metrics=False)
    paths = [plot_equity({"kelly": res.equity, "flat": flat.equity}, tmp_path / "eq.png"),
             plot_drawdown(res.equity, tmp_path / "dd.png", 1000.0),
             plot_roi_by_odds(res.metrics, tmp_path / "roi.png"),
             plot_reliability(res.bets["model_prob"], res.bets["won"], tmp_path / "rel.png")]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bar_backtest_hand_worked_and_no_lookahead():
    idx = pd.date_range("2022-01-01", periods=6, freq="min", tz="UTC")
    bars = pd.DataFrame({"open": [10.0, 11, 12, 13, 14, 15], "close": [10.5, 11.5, 12.5, 13.5, 14.5, 15.5]}, index=idx)
    # Long after bar 0's close -> filled at bar 1 open 11; reverse after bar 2 -> exit/enter short at 13;
    # still short at the end -> closed at the last bar's open 15. Commission 0.001 per side.
    res = backtest_bars(bars, np.array([1, 1, -1, -1, -1, -1]), commission=0.001)
    t = res.trades
    assert t["direction"].tolist() == [1, -1]
    assert t["entry_price"].tolist() == [11.0, 13.0] and t["exit_price"].tolist() == [13.0, 15.0]
    np.testing.assert_allclose(t["return_pct"], [13 / 11 - 1 - 0.001 * (1 + 13 / 11), -(15 / 13 - 1) - 0.001 * (1 + 15 / 13)])
    # Signals at bar t depend only on closes up to t: changing the future leaves the past positions alone.
    close = np.random.default_rng(0).normal(0, 1, 500).cumsum() + 100
    full = sma_cross_positions(close, 5, 20)
    changed = close.copy()
    changed[300:] += 50
    np.testing.assert_array_equal(sma_cross_positions(changed, 5, 20)[:300], full[:300])
    assert (np.abs(np.diff(full)) > 0).sum() > 3
