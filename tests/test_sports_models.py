"""Sports model families: fit a synthetic league better than a coin flip, calibrate, save/load, reject bad input,
keep time order (CV folds, calibration slice, LSTM sequences), and report honestly against the market."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from edgeray.sports.models import (
    FAMILIES, PROB_EPS, LaplaceLogisticRegression, SportModel, evaluate, make_model, skellam_home_win_probability,
    time_ordered_folds, train_and_evaluate,
)
from edgeray.sports.models_torch import SEQUENCE_FEATURES, team_sequences
from tests.conftest import shared_file

torch.set_num_threads(1)  # the CI box has 2 busy cores; intra-op threads fight each other there

TRAIN, TEST = [2018, 2019], [2020]
# Small but real settings so the whole file stays fast; defaults are checked separately.
SMALL = {
    "logistic_l2": {"Cs": [0.1, 1.0], "cv_splits": 3},
    "poisson": {"alphas": [0.01, 1.0], "cv_splits": 3},
    "bayes_logistic": {"prior_vars": [0.1, 10.0], "cv_splits": 3},
    "linear_regression": {"alphas": [1.0, 100.0], "cv_splits": 3},
    "voting_soft": {"n_estimators": 30, "gb_max_iter": 30},
    "voting_hard": {"n_estimators": 30, "gb_max_iter": 30},
    "stacked": {"n_estimators": 30, "gb_max_iter": 30, "cv_splits": 3},
    "mlp": {"epochs": 12, "hidden_layers": [16, 8]},
    "lstm_weather": {"epochs": 4, "units": 16, "seq_len": 5, "head_units": 8},
}
ALL_MODELS = [(family, name) for family, names in FAMILIES.items() for name in names]


def synthetic_frame(seasons=(2018, 2019, 2020), n_teams=20, games_per_day=6, days=70, seed=0, sport="nba",
                    weather=False) -> pd.DataFrame:
    """A league whose latent team strengths drive scores; the market sees the strength with little noise,
    the f_ features with more noise, so a sound model learns something but need not beat the market."""
    rng = np.random.default_rng(seed)
    strength = rng.normal(0, 1, n_teams)
    parts = []
    for season in seasons:
        strength = 0.6 * strength + 0.8 * rng.normal(0, 1, n_teams)
        start = pd.Timestamp(f"{season}-10-20", tz="UTC")
        for day in range(days):
            strength = strength + rng.normal(0, 0.05, n_teams)
            order = rng.permutation(n_teams)[: 2 * games_per_day]
            home, away = order[0::2], order[1::2]
            diff = 0.3 + strength[home] - strength[away]
            parts.append(pd.DataFrame({
                "date": start + pd.Timedelta(days=day), "season": season,
                "home": [f"T{i:02d}" for i in home], "away": [f"T{i:02d}" for i in away],
                "home_score": rng.poisson(100 + 3 * diff).astype(float),
                "away_score": rng.poisson(100 - 3 * diff).astype(float),
                "market_prob_home": expit(0.9 * (diff + rng.normal(0, 0.3, len(home)))),
                "f_strength_diff": diff + rng.normal(0, 0.4, len(home)),
                "f_noise_a": rng.normal(0, 1, len(home)), "f_noise_b": rng.normal(0, 1, len(home))}))
    games = pd.concat(parts, ignore_index=True)
    games["game_id"] = [f"g{i:05d}" for i in range(len(games))]
    games["sport"] = sport
    games["venue_known"] = True
    games["home_win"] = np.where(games.home_score > games.away_score, 1.0,
                                 np.where(games.home_score < games.away_score, 0.0, np.nan))
    games["f_market_prob_home"] = games["market_prob_home"]
    games.loc[rng.random(len(games)) < 0.05, "f_noise_a"] = np.nan  # models must impute
    for col in ("temperature_f", "wind_mph", "humidity_pct", "dome"):
        games[col] = np.nan
    if weather:
        games["temperature_f"] = rng.normal(55, 15, len(games))
        games["wind_mph"] = rng.gamma(2, 4, len(games))
        games["dome"] = (rng.random(len(games)) < 0.3).astype(float)
    return games.sort_values(["date", "game_id"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_frame()


@pytest.fixture(scope="module")
def fitted(frame):
    """Every family/name trained once on 2018-2019 and evaluated on 2020; (model, report, progress calls)."""
    out = {}
    for family, name in ALL_MODELS:
        calls = []
        model, report = train_and_evaluate("nba", family, name, SMALL[name], frame, TRAIN, TEST,
                                           progress=lambda e, t, info, calls=calls: calls.append((e, t, info)))
        out[name] = (model, report, calls)
    return out


def _hand_log_loss(y, p):
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# ---------------------------------------------------------------------------------------------- quality and report

@pytest.mark.parametrize("family,name", ALL_MODELS)
def test_each_model_beats_a_coin_flip_on_a_later_season(fitted, frame, family, name):
    model, report, _ = fitted[name]
    test = frame[frame.season.isin(TEST)]
    decided = test[test.home_win.notna()]
    assert report["n"] == len(decided) and report["n_ties_excluded"] == int(test.home_win.isna().sum())
    assert report["model"]["log_loss"] < math.log(2) - 0.03, report["summary"]
    assert report["model"]["auc"] > 0.65
    # The market's figures agree with an independent hand computation on the same games.
    y, p_market = decided.home_win.to_numpy(), decided.market_prob_home.to_numpy()
    assert report["market"]["log_loss"] == pytest.approx(_hand_log_loss(y, p_market), rel=1e-9)
    assert report["market"]["brier"] == pytest.approx(float(np.mean((p_market - y) ** 2)), rel=1e-9)
    assert report["beats_market_log_loss"] == (report["model"]["log_loss"] < report["market"]["log_loss"])
    assert report["beats_market_brier"] == (report["model"]["brier"] < report["market"]["brier"])
    assert ("BEATS" in report["summary"]) == (report["beats_market_log_loss"] and report["beats_market_brier"])
    assert report["family"] == family and report["train_seasons"] == TRAIN and report["test_seasons"] == TEST


@pytest.mark.parametrize("name", [n for _, n in ALL_MODELS])
def test_calibrated_probabilities_stay_inside_zero_one_even_for_extreme_inputs(fitted, frame, name):
    model, _, _ = fitted[name]
    wild = frame[frame.season == 2020].head(40).copy()
    wild["f_strength_diff"] = np.r_[np.full(20, 1e6), np.full(20, -1e6)]
    wild["f_noise_b"] = np.nan
    p = model.predict_proba(wild)
    assert np.all(np.isfinite(p)) and np.all((p >= PROB_EPS) & (p <= 1 - PROB_EPS)) and np.all((p > 0) & (p < 1))


@pytest.mark.parametrize("name", [n for _, n in ALL_MODELS])
def test_save_load_round_trip_predicts_identically(fitted, frame, tmp_path, name):
    model, _, _ = fitted[name]
    test = frame[frame.season == 2020]
    model.save(tmp_path / name)
    loaded = SportModel.load(tmp_path / name)  # the base class finds the right family from meta.json
    assert type(loaded) is type(model)
    assert (loaded.family, loaded.name, loaded.sport, loaded.params) == (model.family, model.name, model.sport,
                                                                          model.params)
    np.testing.assert_array_equal(loaded.predict_proba(test), model.predict_proba(test))


def test_calibration_uses_the_latest_training_slice_and_medians_from_training_rows(fitted, frame):
    model, _, _ = fitted["logistic_l2"]
    train = frame[frame.season.isin(TRAIN) & frame.home_win.notna()]
    dates = np.sort(train.date.unique())
    n_calib_days = round(len(dates) * 0.2)
    first_calib = pd.Timestamp(dates[len(dates) - n_calib_days])
    assert model.diagnostics["calibration_from"] == str(first_calib.date())
    assert model.diagnostics["n_calibration"] == int((train.date >= first_calib).sum())
    assert model.diagnostics["train_to"] < "2020"  # nothing from the test season
    base = train[train.date < first_calib]
    np.testing.assert_allclose(model._prep.named_steps["simpleimputer"].statistics_,
                               np.nanmedian(base[model.feature_columns].to_numpy(dtype=float), axis=0))


def test_progress_is_reported_per_epoch_for_torch_and_once_for_one_shot_models(fitted):
    _, _, mlp_calls = fitted["mlp"]
    assert [(e, t) for e, t, _ in mlp_calls] == [(e, 12) for e in range(1, 13)]
    assert all(np.isfinite(info["loss"]) and info["loss"] > 0 for _, _, info in mlp_calls)
    assert mlp_calls[-1][2]["loss"] < mlp_calls[0][2]["loss"]  # it learned something
    assert [(e, t) for e, t, _ in fitted["lstm_weather"][2]] == [(e, 4) for e in range(1, 5)]
    assert [(e, t) for e, t, _ in fitted["logistic_l2"][2]] == [(1, 1)]
    assert [(e, t) for e, t, _ in fitted["stacked"][2]] == [(e, 5) for e in range(1, 6)]  # meta + 4 members


def test_ensemble_agreement_is_the_share_of_games_where_all_members_pick_the_same_side(fitted, frame):
    model, report, _ = fitted["voting_soft"]
    decided = frame[frame.season.isin(TEST) & frame.home_win.notna()].sort_values(["date", "game_id"])
    picks = model.member_probabilities(model._prepare(decided)) > 0.5
    assert picks.shape[1] == 4
    expected = np.mean([len(set(row)) == 1 for row in picks.tolist()])
    assert report["diagnostics"]["agreement"] == pytest.approx(expected)
    assert 0 < expected < 1
    assert 0 <= model.diagnostics["agreement"] <= 1


# ---------------------------------------------------------------------------------------------- statistical pieces

def test_time_ordered_folds_never_train_on_dates_at_or_after_validation(frame):
    folds = time_ordered_folds(frame["date"], 4)
    assert len(folds) == 4
    seen_val = set()
    for train_rows, val_rows in folds:
        assert frame.date.iloc[train_rows].max() < frame.date.iloc[val_rows].min()
        # same-day games never straddle a fold boundary
        assert not set(frame.date.iloc[train_rows]) & set(frame.date.iloc[val_rows])
        assert not seen_val & set(val_rows)
        seen_val |= set(val_rows)
    with pytest.raises(ValueError, match="cv_splits"):
        time_ordered_folds(frame["date"].head(12), 4)  # two distinct dates


def test_cv_search_in_statistical_models_used_time_ordered_folds(fitted):
    model, _, _ = fitted["logistic_l2"]
    assert model.diagnostics["cv_folds"] == 3
    assert model.diagnostics["cv_best_params"]["est__C"] in (0.1, 1.0)
    assert "f_strength_diff" in model.diagnostics["selected_features"]


def test_laplace_logistic_matches_map_logistic_and_widens_towards_half():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 3))
    y = (rng.random(400) < expit(X @ np.array([1.0, -0.5, 0.0]) + 0.2)).astype(int)
    bayes = LaplaceLogisticRegression(prior_var=1e6, intercept_var=1e6).fit(X, y)
    reference = LogisticRegression(C=1e6, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(bayes.coef_mean_, np.r_[reference.intercept_, reference.coef_[0]], atol=1e-3)
    X_new = rng.normal(size=(50, 3)) * 3
    p_map = expit(np.column_stack([np.ones(50), X_new]) @ bayes.coef_mean_)
    p_pred = bayes.predict_proba(X_new)[:, 1]
    assert np.all(np.abs(p_pred - 0.5) <= np.abs(p_map - 0.5) + 1e-12)  # posterior uncertainty only shrinks
    tight = LaplaceLogisticRegression(prior_var=1e-4).fit(X, y)
    assert np.all(np.abs(tight.coef_mean_[1:]) < 0.05)  # a tight prior pulls weights to zero


def test_skellam_home_win_probability_matches_brute_force_poisson_sums():
    mu_home, mu_away = np.array([105.0, 20.0, 3.0]), np.array([98.0, 24.0, 3.0])
    k = np.arange(400)
    for mh, ma, got in zip(mu_home, mu_away, skellam_home_win_probability(mu_home, mu_away)):
        joint = np.outer(stats.poisson.pmf(k, mh), stats.poisson.pmf(k, ma))  # [home, away]
        win, tie = np.tril(joint, -1).sum(), np.trace(joint)
        assert got == pytest.approx(win + tie * win / (1 - tie), abs=1e-9)
    assert skellam_home_win_probability(np.array([3.0]), np.array([3.0]))[0] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------- LSTM look-ahead

def test_lstm_sequences_hold_only_strictly_earlier_games(frame):
    cutoff = pd.Timestamp("2019-11-15", tz="UTC")
    home_seq, away_seq = team_sequences(frame, frame, 5, 100.0, 10.0)
    altered = frame.copy()
    later = altered.date >= cutoff  # same-day games included: they must not see each other either
    altered.loc[later, ["home_score", "away_score"]] = [300.0, 0.0]
    altered.loc[later, "market_prob_home"] = 0.99
    home2, away2 = team_sequences(altered, altered, 5, 100.0, 10.0)
    upto = (frame.date <= cutoff).to_numpy()
    np.testing.assert_array_equal(home2[upto], home_seq[upto])
    np.testing.assert_array_equal(away2[upto], away_seq[upto])
    assert not np.array_equal(home2[~upto], home_seq[~upto])  # the alteration is visible to later games

    # Hand check one game: the home team's latest entry is its previous game, seen from its side.
    row = frame[(frame.date == cutoff)].iloc[0]
    team = row.home
    prev = frame[((frame.home == team) | (frame.away == team)) & (frame.date < cutoff)].iloc[-1]
    is_home = prev.home == team
    pf, pa = (prev.home_score, prev.away_score) if is_home else (prev.away_score, prev.home_score)
    last = home_seq[frame.index.get_loc(row.name), -1]
    features = dict(zip(SEQUENCE_FEATURES, last))
    assert features["points_for"] == pytest.approx((pf - 100) / 10, abs=1e-5)
    assert features["points_against"] == pytest.approx((pa - 100) / 10, abs=1e-5)
    assert features["won"] == (1.0 if pf > pa else 0.0 if pf < pa else 0.5)
    assert features["is_home"] == float(is_home) and features["present"] == 1.0
    market = prev.market_prob_home if is_home else 1 - prev.market_prob_home
    assert features["market_prob"] == pytest.approx(market, abs=1e-6)


def test_lstm_padding_marks_teams_without_history(frame):
    home_seq, _ = team_sequences(frame, frame, 5, 100.0, 10.0)
    first_day = (frame.date == frame.date.min()).to_numpy()
    assert np.all(home_seq[first_day] == 0)  # nobody has played yet
    assert home_seq[~first_day][..., -1].max() == 1.0


def test_lstm_predictions_ignore_altered_later_games(fitted, frame):
    model, _, _ = fitted["lstm_weather"]
    test = frame[frame.season == 2020].reset_index(drop=True)
    cutoff = test.date.iloc[len(test) // 2]
    altered = test.copy()
    later = altered.date >= cutoff
    altered.loc[later, ["home_score", "away_score"]] = [0.0, 250.0]
    upto = (test.date <= cutoff).to_numpy()
    np.testing.assert_array_equal(model.predict_proba(altered)[upto], model.predict_proba(test)[upto])
    assert not np.array_equal(model.predict_proba(altered)[~upto], model.predict_proba(test)[~upto])


def test_lstm_with_weather_inputs_and_default_architecture():
    model = make_model("lstm", "nfl")
    assert (model.params["units"], model.params["layers"], model.params["dropout"]) == (64, 2, 0.3)
    nfl = synthetic_frame(seasons=(2018, 2019), days=30, sport="nfl", weather=True)
    small = make_model("lstm", "nfl", params={"epochs": 2, "units": 8, "seq_len": 3, "head_units": 4})
    small.fit(nfl[nfl.season == 2018])
    p = small.predict_proba(nfl[nfl.season == 2019])
    assert np.all(np.isfinite(p)) and np.all((p > 0) & (p < 1))
    hotter = nfl[nfl.season == 2019].assign(temperature_f=200.0)
    assert not np.array_equal(small.predict_proba(hotter), p)  # weather reaches the head


# ---------------------------------------------------------------------------------------------- config and bad input

def test_mlp_layer_sizes_come_from_the_config_per_sport():
    assert make_model("neural", "nba").params["hidden_layers"] == [64, 32]
    assert make_model("neural", "nfl").params["hidden_layers"] == [32, 16]
    assert make_model("neural", "NCAAM").params["hidden_layers"] == [64, 32]
    assert make_model("neural", "nfl", params={"hidden_layers": [8]}).params["hidden_layers"] == [8]


@pytest.mark.parametrize("kwargs,field", [
    ({"family": "deep", "sport": "nba"}, "family"),
    ({"family": "neural", "sport": "nhl"}, "sport"),
    ({"family": "ensemble", "sport": "nba", "name": "xgboost"}, "name"),
    ({"family": "neural", "sport": "nba", "params": {"epochs": 0}}, "epochs"),
    ({"family": "neural", "sport": "nba", "params": {"epochs": -3}}, "epochs"),
    ({"family": "neural", "sport": "nba", "params": {"epoch": 5}}, "epoch"),
    ({"family": "neural", "sport": "nba", "params": {"dropout": 1.5}}, "dropout"),
    ({"family": "lstm", "sport": "nfl", "params": {"units": 0}}, "units"),
    ({"family": "statistical", "sport": "nba", "params": {"Cs": [-1.0]}}, "Cs"),
    ({"family": "statistical", "sport": "nba", "params": {"cv_splits": 1}}, "cv_splits"),
    ({"family": "statistical", "sport": "nba", "params": {"calibration": "beta"}}, "calibration"),
    ({"family": "ensemble", "sport": "nba", "params": {"n_estimators": "many"}}, "n_estimators"),
])
def test_bad_model_requests_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_model(**kwargs)


def test_bad_frames_and_seasons_raise_value_error_naming_the_field(frame):
    train = frame[frame.season == 2018]
    with pytest.raises(ValueError, match="home_win"):
        make_model("statistical", "nba", "logistic_l2").fit(train.assign(home_win=2.0))
    with pytest.raises(ValueError, match="f_noise_b"):
        make_model("statistical", "nba", "logistic_l2").fit(train.assign(f_noise_b=np.inf))
    with pytest.raises(ValueError, match="sport"):
        make_model("statistical", "nfl", "logistic_l2").fit(train)
    with pytest.raises(ValueError, match="home_score"):
        make_model("statistical", "nba", "poisson").fit(train.drop(columns="home_score"))
    with pytest.raises(ValueError, match="test_seasons"):
        train_and_evaluate("nba", "statistical", None, {}, frame, [2019], [2018])
    with pytest.raises(ValueError, match="train_seasons"):
        train_and_evaluate("nba", "statistical", None, {}, frame, [2011], [2020])
    with pytest.raises(ValueError, match="not fitted"):
        make_model("neural", "nba").predict_proba(train)


def test_evaluate_rejects_games_without_a_market_price(fitted, frame):
    model, _, _ = fitted["logistic_l2"]
    test = frame[frame.season == 2020].copy()
    test.loc[test.index[3], "market_prob_home"] = np.nan
    with pytest.raises(ValueError, match="market_prob_home"):
        evaluate(model, test)


def test_cuda_without_a_gpu_is_a_clear_value_error(frame):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the no-GPU path cannot be exercised here")
    train = frame[frame.season == 2018]
    with pytest.raises(ValueError, match="CUDA is not available"):
        make_model("neural", "nba", params={"epochs": 1}).fit(train, device="cuda")
    with pytest.raises(ValueError, match="device"):
        make_model("neural", "nba", params={"epochs": 1}).fit(train, device="gpu")
    # sklearn families compute on the CPU whatever is asked, and say so
    model = make_model("statistical", "nba", "logistic_l2", {"Cs": [1.0], "cv_splits": 2}).fit(train, device="cuda")
    assert model.diagnostics["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_mlp_trains_on_cuda_and_predicts_like_after_load(frame, tmp_path):
    model = make_model("neural", "nba", params={"epochs": 3}).fit(frame[frame.season.isin(TRAIN)], device="cuda")
    assert model.diagnostics["device"] == "cuda"
    model.save(tmp_path)
    test = frame[frame.season == 2020]
    np.testing.assert_array_equal(type(model).load(tmp_path).predict_proba(test), model.predict_proba(test))


# ---------------------------------------------------------------------------------------------- real data

def test_real_nba_two_seasons_train_one_later_season_test():
    data_dir = shared_file("sports/nba_2007_2023.csv").parent
    from edgeray.sports.features import build_features
    from edgeray.sports.games import load_sport

    games = load_sport("nba", data_dir)
    feats = build_features(games[games.season.isin([2015, 2016, 2017])])
    model, report = train_and_evaluate("nba", "statistical", "logistic_l2",
                                       {"Cs": [0.1, 1.0], "k_features": [10], "cv_splits": 3},
                                       feats, [2015, 2016], [2017])
    assert report["n"] > 1000
    assert report["market"]["log_loss"] < 0.65 and report["market"]["auc"] > 0.7  # the closing line is informative
    assert report["model"]["log_loss"] < math.log(2) - 0.05 and report["model"]["auc"] > 0.68
    # An honest model on real data should land near the market, not miles better (which would mean leakage).
    assert report["model"]["log_loss"] > report["market"]["log_loss"] - 0.02
    assert isinstance(report["beats_market_log_loss"], bool) and "market" in report["summary"]
