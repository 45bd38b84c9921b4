"""NCAAM underdog model: point-in-time features, eligibility, weights, GD logistic, blend, pricing, artefacts."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from edgeray.sports.games import load_games
from edgeray.underdog import (GDLogisticRegression, UnderdogEnsemble, backtest_opportunities,
                              build_underdog_features, compare, expected_calibration_error, feature_sets,
                              load_config, predict, price_bets, train, underdog_games)
from edgeray.underdog.model import _sample_weights
from tests.conftest import shared_file

SEASONS = [2012, 2013]


@pytest.fixture(scope="module")
def data_dir():
    return shared_file("sports/ncaab_sbr_closing_2012_2022.csv").parent


@pytest.fixture(scope="module")
def games(data_dir):
    g = load_games(data_dir / "ncaab_sbr_closing_2012_2022.csv")
    return g.loc[g["season"].isin(SEASONS)].reset_index(drop=True)


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def feats(games, cfg):
    return build_underdog_features(games, cfg)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("underdog_run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default config must not warn "overconfident" on real seasons
        metrics = train(data_dir, out, seasons=SEASONS)
    return out, metrics


def test_config_file_matches_issue_and_rejects_unknown_keys(cfg, tmp_path):
    assert {k: t.win_weight for k, t in cfg.tiers.items()} == {"moderate": 2.0, "heavy": 3.0, "extreme": 5.0}
    assert (cfg.half_life_days, cfg.learning_rate, cfg.iterations, cfg.l2_lambda) == (120, 0.01, 1500, 0.3)
    assert (cfg.blend_base_weight, cfg.validation_fraction, cfg.kelly_fraction, cfg.kelly_cap) == (0.5, 0.3, 0.25, 0.1)
    bad = tmp_path / "u.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        load_config(bad)
    bad.write_text("tiers: {x: {min_odds: 300, max_odds: 200, win_weight: 1}}\n")
    with pytest.raises(ValueError, match="max_odds"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_underdog_rows_sides_and_tiers(games, cfg):
    dogs = underdog_games(games, cfg)
    # every game is an underdog row or a pick'em with equal prices, none lost
    assert len(dogs) + dogs.attrs["n_no_underdog"] == len(games)
    picks = games.loc[~games["game_id"].isin(dogs["game_id"])]
    assert ((picks["home_dec"] == picks["away_dec"]) | (picks[["home_ml", "away_ml"]] < 100).all(axis=1)).all()
    assert (dogs["american_odds"] >= 100).all() and (dogs["decimal_odds"] > dogs["fav_decimal_odds"]).all()
    a = dogs["american_odds"].to_numpy()
    expected = np.where(a < 200, "moderate", np.where(a < 300, "heavy", "extreme"))
    assert (dogs["tier"].to_numpy() == expected).all()
    # NCAAM "home" is the favourite: the underdog is the file's bottom team, won = its score beat the top team's
    assert (dogs["side"] == "away").all()
    g = games.set_index("game_id").loc[dogs["game_id"]]
    assert np.array_equal(dogs["won"].to_numpy(), (g["away_score"] > g["home_score"]).to_numpy(float))
    assert np.allclose(dogs["market_prob"], 1 - g["market_prob_home"].to_numpy())


def test_features_are_point_in_time(games, cfg, feats):
    cut = games["date"].iloc[len(games) // 2]
    later = games["date"] > cut
    altered = games.copy()
    altered.loc[later, ["home_score", "away_score"]] = altered.loc[later, ["away_score", "home_score"]].to_numpy()
    altered.loc[later, "away_score"] += 17
    altered.loc[later, "home_win"] = (altered.loc[later, "home_score"] > altered.loc[later, "away_score"]) * 1.0
    out = build_underdog_features(altered, cfg)
    fcols = [c for c in feats.columns if c.startswith("f_")] + ["eligible", "n_prior_games", "n_prior_dog_games"]
    early_a = feats.loc[feats["date"] <= cut].set_index("game_id")[fcols]
    early_b = out.loc[out["date"] <= cut].set_index("game_id")[fcols]
    pd.testing.assert_frame_equal(early_a, early_b)
    late_a = feats.loc[feats["date"] > cut].set_index("game_id")["f_dog_upset_rate_5"]
    late_b = out.loc[out["date"] > cut].set_index("game_id")["f_dog_upset_rate_5"]
    assert not np.allclose(late_a.fillna(-1), late_b.fillna(-1))  # the alteration is visible after the cut


def test_eligibility_counts_and_upset_rate_against_reference(games, cfg, feats):
    rng = np.random.default_rng(0)
    dogs = underdog_games(games, cfg)
    for i in rng.choice(len(feats), 150, replace=False):
        row = feats.iloc[i]
        earlier = games["date"] < row["date"]
        n_team = int((earlier & ((games["home"] == row["team"]) | (games["away"] == row["team"]))).sum())
        n_opp = int((earlier & ((games["home"] == row["opponent"]) | (games["away"] == row["opponent"]))).sum())
        past = dogs.loc[(dogs["date"] < row["date"]) & (dogs["team"] == row["team"])].sort_values("date")
        assert (row["n_prior_games"], row["fav_prior_games"], row["n_prior_dog_games"]) == (n_team, n_opp, len(past))
        assert row["eligible"] == (n_team >= 5 and n_opp >= 5 and len(past) >= 3)
        last5 = past["won"].to_numpy()[::-1][:5]  # most recent first
        if len(last5):
            w = 0.8 ** np.arange(len(last5))
            assert row["f_dog_upset_rate_5"] == pytest.approx((w * last5).sum() / w.sum())
        else:
            assert np.isnan(row["f_dog_upset_rate_5"])
    assert feats["eligible"].any() and (~feats["eligible"]).any()
    assert feats["f_dog_home"].isna().all()  # NCAAM venue unknown: never read off the favourite/underdog order


def test_base_model_sees_no_market_price(feats):
    base, allf = feature_sets(feats)
    assert "f_market_prob_dog" in allf and "f_market_overreaction" in allf
    assert not {"f_market_prob_dog", "f_market_overreaction", "f_dog_spread", "f_total_line"} & set(base)
    for name in ("f_dog_upset_rate_5", "f_dog_upset_rate_10", "f_dog_trend", "f_pace_diff", "f_strength_gap",
                 "f_dog_home"):
        assert name in base


def test_tier_win_weights_and_recency_decay(cfg):
    ref = pd.Timestamp("2020-05-01", tz="UTC")
    rows = pd.DataFrame({"date": [ref, ref - pd.Timedelta(days=120), ref, ref, ref],
                         "tier": ["moderate", "moderate", "heavy", "extreme", "extreme"],
                         "won": [1.0, 1.0, 1.0, 1.0, 0.0]})
    assert np.allclose(_sample_weights(rows, cfg, ref), [2.0, 1.0, 3.0, 5.0, 1.0])


def test_gd_logistic_matches_sklearn_and_weights_equal_duplicates():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 3))
    y = (rng.random(400) < 1 / (1 + np.exp(-(X @ [1.0, -0.5, 0.0] + 0.3)))).astype(float)
    frame = pd.DataFrame(X, columns=["f_a", "f_b", "f_c"])
    lam = 0.05
    gd = GDLogisticRegression(list(frame.columns), 0.5, 4000, lam).fit(frame, y, np.ones(400))
    Xs = (X - X.mean(0)) / X.std(0)
    ref = LogisticRegression(C=1 / (lam * 400), tol=1e-10, max_iter=10000).fit(Xs, y)  # same objective, rescaled
    assert np.allclose(gd.coef, ref.coef_[0], atol=1e-4) and gd.intercept == pytest.approx(ref.intercept_[0], abs=1e-4)
    # sample weights: sklearn's weighted objective C * sum w_i loss_i + |b|^2 / 2 is ours times 1 / (lam sum w)
    w = np.where(np.arange(400) < 100, 5.0, 1.0)
    gw = GDLogisticRegression(list(frame.columns), 0.5, 4000, lam).fit(frame, y, w)
    refw = LogisticRegression(C=1 / (lam * w.sum()), tol=1e-10, max_iter=10000).fit(Xs, y, sample_weight=w)
    assert np.allclose(gw.coef, refw.coef_[0], atol=1e-4)
    assert not np.allclose(gw.coef, gd.coef, atol=1e-2)  # the weights changed the fit


def test_price_bets_hand_worked(cfg):
    p = [0.45, 0.60, 0.35, 0.25, 0.22, 0.45]
    m = [0.33, 0.30, 0.29, 0.21, 0.20, 0.36]
    d = [2.5, 3.2, 3.3, 4.5, 5.0, 2.6]
    out = price_bets(p, m, d, cfg)
    assert np.allclose(out["edge"], [0.12, 0.30, 0.06, 0.04, 0.02, 0.09])
    assert np.allclose(out["ev_per_10"], [1.25, 9.2, 1.55, 1.25, 1.0, 1.7])
    # Kelly f* = (b p - q) / b; x 0.25; cap 0.10; zero below the 3% minimum edge
    assert np.allclose(out["kelly"], [0.25 * 0.125 / 1.5, 0.10, 0.25 * 0.155 / 2.3, 0.25 * (3.5 * .25 - .75) / 3.5,
                                      0.0, 0.25 * (1.6 * .45 - .55) / 1.6])
    assert out["confidence"].tolist() == ["high", "high", "medium", "low", "none", "medium"]
    assert out["recommended"].tolist() == [True, True, True, True, False, True]
    with pytest.raises(ValueError, match="decimal_odds"):
        price_bets([0.5], [0.4], [1.0], cfg)


def test_train_metrics_artefacts_and_blend(trained, data_dir, feats):
    out, metrics = trained
    assert {p.name for p in out.iterdir()} == {"runs", "latest"}  # one folder per run, and a pointer to the newest
    run = out / "latest"
    assert run.resolve() == Path(metrics["run_dir"]).resolve() and run.resolve().parent == (out / "runs").resolve()
    assert {p.name for p in run.iterdir()} == {"base_model.json", "market_model.json", "ensemble.json", "metrics.json"}
    assert json.loads((run / "metrics.json").read_text())["n_validation"] == metrics["n_validation"]
    assert metrics["sport"] == "ncaam"
    assert metrics["train_to"] < metrics["validation_from"]
    assert metrics["n_train"] / (metrics["n_train"] + metrics["n_validation"]) == pytest.approx(0.7, abs=0.02)
    assert sum(metrics["n_games_per_tier"]["validation"].values()) == metrics["n_validation"]
    for key in ("log_loss", "brier", "ece"):
        assert metrics["validation"]["model"][key] > 0 and metrics["validation"]["market"][key] > 0
    assert set(metrics["validation_by_tier"]) == {"moderate", "heavy", "extreme"}

    ens = UnderdogEnsemble.load(out)
    rows = feats.loc[feats["eligible"]].head(300)
    comp = ens.predict_components(rows)
    assert np.allclose(comp["blend"], 0.5 * comp["base"] + 0.5 * comp["market"])
    assert not np.allclose(comp["base"], comp["market"])
    again = UnderdogEnsemble.from_state(json.loads(json.dumps(ens.state_dict())))
    assert np.array_equal(again.predict_proba(rows), comp["blend"])


def test_predict_and_backtest_opportunities(trained, data_dir):
    out, metrics = trained
    pred = predict(out, data_dir, date="20140301", min_odds=110, max_odds=299)
    assert len(pred) > 0 and (pred["date"].dt.strftime("%Y%m%d") == "20140301").all()
    assert pred["american_odds"].between(110, 299).all()
    assert np.allclose(pred["edge"], pred["model_prob"] - pred["market_prob"])
    assert np.allclose(pred["ev_per_10"], 10 * (pred["model_prob"] * pred["decimal_odds"] - 1))
    assert ((pred["kelly"] > 0) <= pred["recommended"]).all() and (pred["kelly"] <= 0.10).all()
    with pytest.raises(ValueError, match="date"):
        predict(out, data_dir, date="03/01/2014")

    opp = backtest_opportunities(out, data_dir, seasons=[2013], tiers=["moderate", "heavy"])
    assert list(opp.columns) == ["date", "game_id", "side", "team", "decimal_odds", "model_prob", "won", "confidence",
                                 "closing_decimal_odds", "market_prob", "tier", "american_odds", "base_prob", "market_model_prob"]
    assert np.allclose(opp["model_prob"], 0.5 * opp["base_prob"] + 0.5 * opp["market_model_prob"])  # the 50/50 blend
    assert len(opp) > 0 and (opp["date"] > pd.Timestamp(metrics["train_to"], tz="UTC")).all()
    assert opp["tier"].isin(["moderate", "heavy"]).all() and opp.attrs["n_in_sample_excluded"] > 0
    assert np.array_equal(opp["closing_decimal_odds"], opp["decimal_odds"])


def test_compare_with_general_model(trained, data_dir):
    out, _ = trained
    rep = compare(out, data_dir, seasons=[2013])
    assert rep["n"] > 100
    for name in ("underdog", "general", "market"):
        assert 0 < rep[name]["log_loss"] < 1 and 0 < rep[name]["brier"] < 0.3
    assert rep["underdog"]["log_loss"] != rep["general"]["log_loss"]


def test_errors_no_model_and_too_few_games(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
        predict(tmp_path / "empty", data_dir)
    with pytest.raises(FileNotFoundError, match="base_model.json"):
        backtest_opportunities(tmp_path, data_dir)
    with pytest.raises(ValueError, match="at least min_underdog_games=100"):
        train(data_dir, tmp_path / "few", config={"min_prior_dog_games": 40}, seasons=[2012])
    with pytest.raises(ValueError, match="tiers"):
        train(data_dir, tmp_path / "x", seasons=[2012], tiers=["enormous"])


def test_ece_warning_when_overconfident(data_dir, tmp_path):
    # Win weights of 50 without the log-odds correction push probabilities far above the upset rate.
    tiers = {n: {"min_odds": lo, "max_odds": hi, "win_weight": 50.0}
             for n, lo, hi in (("moderate", 100, 200), ("heavy", 200, 300), ("extreme", 300, None))}
    with pytest.warns(UserWarning, match="overconfident"):
        metrics = train(data_dir, tmp_path, config={"tiers": tiers, "correct_win_weights": False, "iterations": 200,
                                                    "learning_rate": 0.5}, seasons=[2012])
    assert metrics["validation"]["model"]["ece"] > 0.15
    assert any("overconfident" in w for w in metrics["warnings"])
    y, p = np.array([1, 0, 0, 0]), np.array([0.9, 0.9, 0.1, 0.1])
    assert expected_calibration_error(y, p, 10) == pytest.approx((0.5 * 0.4 + 0.5 * 0.1))


def test_underdog_on_another_sport_with_a_summary_and_features_cached_until_the_data_changes(tmp_path):
    import os
    import shutil

    from edgeray.underdog import model as underdog_model

    data = tmp_path / "baseball"
    data.mkdir()
    shutil.copy(shared_file("sports/mlb_sbro_2010_2013.csv"), data / "games.csv")
    out = tmp_path / "mlb_dog"
    metrics = train(data, out, seasons=[2011, 2012], sport="MLB")
    assert metrics["sport"] == "mlb" and (out / "latest" / "ensemble.json").exists()
    again = train(data, out, seasons=[2012], sport="mlb")  # a second run: its own folder, latest moves to it
    assert again["run_dir"] != metrics["run_dir"] and (out / "latest").resolve() == Path(again["run_dir"]).resolve()
    assert (Path(metrics["run_dir"]) / "ensemble.json").exists()  # the first run is kept

    picks = predict(out, data, date="20130915")
    assert (picks["game_id"].str.startswith("mlb:")).all() and len(picks) > 3
    summary = picks.attrs["summary"]
    rec = picks[picks["recommended"]]
    assert summary["games"] == len(picks) and summary["recommended"] == len(rec)
    assert summary["total_ev_per_stake"] == pytest.approx(rec["ev_per_10"].sum())
    if len(rec):
        assert summary["mean_edge_recommended"] == pytest.approx(rec["edge"].mean())
        assert sum(summary["by_confidence"].values()) == len(rec)

    cached = dict(underdog_model._FRAMES)
    predict(out, data, date="20130916")
    assert underdog_model._FRAMES.keys() == cached.keys()  # the same data: no rebuild
    stat = (data / "games.csv").stat()
    os.utime(data / "games.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    predict(out, data, date="20130916")
    assert set(underdog_model._FRAMES) - set(cached)  # the file changed: features rebuilt under a new key
