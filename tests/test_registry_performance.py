"""Model registry (versions, tags, durable save/load across processes) and the performance matrix.

The model is a small stand-in following the contract's SportModel interface (sklearn logistic regression on
the f_ columns), so these tests run without the real model families; the registry and matrix really save,
load and compute.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss as sk_log_loss

from edgeray.sports.performance import (PerformanceMatrix, betting_metrics, frame_performance,
                                        prediction_metrics)
from edgeray.sports.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[1]


class StandInLogistic:
    """Contract-shaped SportModel: median imputation from train rows, sklearn logistic regression."""

    family = "statistical"

    def __init__(self, sport: str = "nba", name: str = "logistic_stub", params: dict | None = None):
        self.sport, self.name, self.params = sport, name, {"C": 1.0, **(params or {})}
        self.columns: list[str] = []
        self.medians: dict = {}
        self.estimator: LogisticRegression | None = None

    def _x(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.columns].fillna(self.medians).to_numpy(dtype=float)

    def fit(self, frame, progress=None, device="cpu"):
        train = frame[frame["home_win"].notna()]
        self.columns = sorted(c for c in frame.columns if c.startswith("f_"))
        self.medians = train[self.columns].median().to_dict()
        self.estimator = LogisticRegression(C=self.params["C"]).fit(self._x(train), train["home_win"].astype(int))
        if progress:
            progress(1, 1, {"loss": float(sk_log_loss(train["home_win"], self.predict_proba(train)))})
        return self

    def predict_proba(self, frame) -> np.ndarray:
        return self.estimator.predict_proba(self._x(frame))[:, 1]

    def save(self, directory) -> None:
        state = {"sport": self.sport, "name": self.name, "params": self.params, "columns": self.columns,
                 "medians": self.medians, "coef": self.estimator.coef_.tolist(),
                 "intercept": self.estimator.intercept_.tolist()}
        (Path(directory) / "model.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, directory) -> "StandInLogistic":
        state = json.loads((Path(directory) / "model.json").read_text())
        model = cls(state["sport"], state["name"], state["params"])
        model.columns, model.medians = state["columns"], state["medians"]
        model.estimator = LogisticRegression()
        model.estimator.coef_ = np.array(state["coef"])
        model.estimator.intercept_ = np.array(state["intercept"])
        model.estimator.classes_ = np.array([0, 1])
        return model


def synthetic_games(seed: int = 0, seasons=(2018, 2019, 2020), games_per_season: int = 300) -> pd.DataFrame:
    """Contract-shaped game/feature frame: latent team strength drives results; the market sees it with noise."""
    rng = np.random.default_rng(seed)
    teams = [f"T{i}" for i in range(12)]
    strength = dict(zip(teams, rng.normal(0, 0.8, len(teams))))
    rows = []
    for season in seasons:
        start = pd.Timestamp(f"{season}-11-01", tz="UTC")
        for g in range(games_per_season):
            home, away = rng.choice(teams, 2, replace=False)
            logit = strength[home] - strength[away] + 0.25
            p_true = 1 / (1 + math.exp(-logit))
            market = 1 / (1 + math.exp(-(logit + rng.normal(0, 0.3))))
            home_win = float(rng.random() < p_true)
            rows.append({"game_id": f"{season}-{g}", "sport": "nba", "date": start + pd.Timedelta(days=g // 5),
                         "season": season, "home": home, "away": away, "home_win": home_win,
                         "market_prob_home": market, "home_dec": 1 / (market * 1.025),
                         "away_dec": 1 / ((1 - market) * 1.025),
                         "f_strength_diff": strength[home] - strength[away] + rng.normal(0, 0.5),
                         "f_market_prob_home": market, "f_noise": rng.normal()})
    frame = pd.DataFrame(rows)
    frame.loc[frame.index % 17 == 0, "f_strength_diff"] = np.nan  # warm-up style gaps the model must impute
    return frame


@pytest.fixture(scope="module")
def games() -> pd.DataFrame:
    return synthetic_games()


class Clock:
    def __init__(self):
        self.now = datetime(2024, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_register_versions_tags_and_load_round_trip(tmp_path, games):
    train, test = games[games.season < 2020], games[games.season == 2020]
    registry = ModelRegistry(tmp_path / "reg")
    m1 = StandInLogistic(params={"C": 0.1}).fit(train)
    m2 = StandInLogistic(params={"C": 10.0}).fit(train)
    other_line = StandInLogistic(name="other_stub").fit(train)

    r1 = registry.register(m1, {"log_loss": 0.6}, tags=["baseline"], data={"train_seasons": [2018, 2019]})
    r2 = registry.register(m2, {"log_loss": 0.7})
    r3 = registry.register(other_line, {"log_loss": 0.65}, tags=["baseline", "prod"])
    assert (r1["version"], r2["version"], r3["version"]) == (1, 2, 1)  # per (sport, family, name) line
    assert r1["params"] == {"C": 0.1} and r1["data"] == {"train_seasons": [2018, 2019]}
    assert Path(r1["artefact_path"]).is_dir() and r1["artefact_path"] != r2["artefact_path"]

    latest = registry.load(("nba", "statistical", "logistic_stub", "latest"))
    np.testing.assert_array_equal(latest.predict_proba(test), m2.predict_proba(test))
    first = registry.load(("nba", "statistical", "logistic_stub", 1))
    np.testing.assert_array_equal(first.predict_proba(test), m1.predict_proba(test))
    np.testing.assert_array_equal(registry.load(r3["model_id"]).predict_proba(test), other_line.predict_proba(test))

    assert [r["model_id"] for r in registry.list(tag="baseline")] == [r1["model_id"], r3["model_id"]]
    registry.tag(r2["model_id"], "prod")
    registry.tag(r2["model_id"], "prod")  # idempotent
    assert [r["model_id"] for r in registry.list(tag="prod")] == [r2["model_id"], r3["model_id"]]
    assert registry.get(r2["model_id"])["tags"] == ["prod"]
    assert registry.list(sport="nfl") == [] and len(registry.list(sport="nba", family="statistical")) == 3

    with pytest.raises(KeyError, match="99"):
        registry.load(99)
    with pytest.raises(KeyError):
        registry.load(("nba", "statistical", "logistic_stub", 3))
    with pytest.raises(ValueError, match="sport.*'cricket'"):
        registry.list(sport="cricket")
    with pytest.raises(ValueError, match="version"):
        registry.load(("nba", "statistical", "logistic_stub", 0))
    with pytest.raises(ValueError, match="tag"):
        registry.tag(r1["model_id"], "  ")
    bad_sport = StandInLogistic(sport="curling").fit(train)
    with pytest.raises(ValueError, match="sport.*'curling'"):
        registry.register(bad_sport, {})
    assert len(registry.list()) == 3  # the refused registration left no row


def test_local_class_is_refused_because_no_other_process_could_load_it(tmp_path, games):
    class Local(StandInLogistic):
        pass

    with pytest.raises(ValueError, match="re-imported"):
        ModelRegistry(tmp_path / "reg").register(Local().fit(games), {})
    assert not any((tmp_path / "reg" / "artefacts").rglob("*.json"))


def test_registry_is_durable_across_processes(tmp_path, games):
    train, test = games[games.season < 2020], games[games.season == 2020]
    registry = ModelRegistry(tmp_path / "reg")
    model = StandInLogistic(params={"C": 0.5}).fit(train)
    record = registry.register(model, {"log_loss": 0.6})
    test_path = tmp_path / "test.pkl"
    test.to_pickle(test_path)
    script = f"""
import json, sys, pandas as pd
from edgeray.sports.registry import ModelRegistry
from tests.test_registry_performance import StandInLogistic
reg = ModelRegistry({str(tmp_path / 'reg')!r})
m = reg.load({record['model_id']})
frame = pd.read_pickle({str(test_path)!r})
rec = reg.register(StandInLogistic(params={{"C": 2.0}}).fit(frame), {{"log_loss": 0.5}}, tags=["from-child"])
print(json.dumps({{"p": m.predict_proba(frame).tolist(), "version": rec["version"]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(np.array(child["p"]), model.predict_proba(test))
    assert child["version"] == 2
    reopened = ModelRegistry(tmp_path / "reg")
    assert [r["version"] for r in reopened.list(tag="from-child")] == [2]


def test_prediction_metrics_match_hand_worked_values():
    y = [1, 0, 1, 0]
    p = [0.8, 0.4, 0.3, 0.1]
    m = prediction_metrics(y, p)
    # picks at 0.5: [1, 0, 0, 0] -> TP 1, FP 0, FN 1, TN 2
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    # AUC: positive/negative pairs ranked right: (0.8>0.4) (0.8>0.1) (0.3>0.1) of 4
    assert m["auc"] == pytest.approx(0.75)
    assert m["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6) + math.log(0.3) + math.log(0.9)) / 4)
    assert m["brier"] == pytest.approx((0.04 + 0.16 + 0.49 + 0.01) / 4)
    with pytest.raises(ValueError, match="p_home"):
        prediction_metrics(y, [0.8, np.nan, 0.3, 0.1])
    with pytest.raises(ValueError, match="home_win"):
        prediction_metrics([1, 0, 2, 0], p)


def test_betting_figures_match_hand_worked_values():
    p = [0.60, 0.30, 0.51, 0.70, 0.20]
    market = [0.50, 0.40, 0.50, np.nan, 0.30]
    home_dec = [1.95, 2.40, 1.95, 1.50, 3.20]
    away_dec = [1.95, 1.60, 1.95, 2.60, 1.35]
    home_win = [1, 1, 0, 1, 0]
    # game 1: edge +0.10 -> home at 1.95, wins +0.95; game 2: edge -0.10 -> away at 1.60, home won -> -1;
    # game 3: edge 0.01 < 0.02 -> no bet; game 4: no market; game 5: edge -0.10 -> away at 1.35, wins +0.35.
    b = betting_metrics(p, market, home_dec, away_dec, home_win, min_edge=0.02, stake=2.0)
    assert (b["n_bets"], b["n_home_bets"], b["n_away_bets"], b["n_no_market"]) == (3, 1, 2, 1)
    assert b["profit_loss"] == pytest.approx(2.0 * (0.95 - 1.0 + 0.35))
    assert b["roi"] == pytest.approx(0.30 / 3)
    assert b["hit_rate"] == pytest.approx(2 / 3)
    mean = 0.30 / 3
    sd = math.sqrt(((0.95 - mean) ** 2 + (-1 - mean) ** 2 + (0.35 - mean) ** 2) / 2)
    assert b["sharpe"] == pytest.approx(mean / sd)
    # A higher threshold leaves no bets: figures say so instead of dividing by zero.
    none = betting_metrics(p, market, home_dec, away_dec, home_win, min_edge=0.5)
    assert none["n_bets"] == 0 and none["roi"] is None and none["sharpe"] is None and none["profit_loss"] == 0.0
    with pytest.raises(ValueError, match="min_edge"):
        betting_metrics(p, market, home_dec, away_dec, home_win, min_edge=-0.1)
    with pytest.raises(ValueError, match="home_dec/away_dec"):
        betting_metrics(p, market, [0.9, 2.4, 1.95, 1.5, 3.2], away_dec, home_win)


def test_frame_performance_counts_ties_instead_of_hiding_them(games):
    frame = games[games.season == 2020].copy()
    frame.iloc[:5, frame.columns.get_loc("home_win")] = np.nan
    p = np.full(len(frame), 0.55)
    out = frame_performance(p, frame)
    assert out["n"] == len(frame) - 5 and out["n_ties"] == 5
    decided = frame[frame.home_win.notna()]
    assert out["market_log_loss"] == pytest.approx(sk_log_loss(decided.home_win, decided.market_prob_home))
    assert out["beats_market_log_loss"] == (sk_log_loss(decided.home_win, p[5:]) < out["market_log_loss"])
    with pytest.raises(ValueError, match="away_dec"):
        frame_performance(p, frame.drop(columns=["away_dec"]))


def test_performance_matrix_views(tmp_path, games):
    train, test = games[games.season < 2020], games[games.season == 2020]
    clock = Clock()
    registry = ModelRegistry(tmp_path / "reg", clock=clock)
    pm = PerformanceMatrix(registry)
    settings = [("logistic_stub", 0.001), ("logistic_stub", 1.0), ("logistic_stub", 100.0), ("ridge_stub", 1.0)]
    expected_ll = {}
    for i, (name, c) in enumerate(settings):
        clock.now = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(days=10 * i)
        model = StandInLogistic(name=name, params={"C": c}).fit(train)
        record = registry.register(model, {})
        scored = pm.score(record["model_id"], test, data={"seasons": [2020]})
        expected_ll[record["model_id"]] = sk_log_loss(test.home_win, model.predict_proba(test))
        assert scored["log_loss"] == pytest.approx(expected_ll[record["model_id"]])
    clock.now = datetime(2024, 2, 5, tzinfo=timezone.utc)

    table = pm.matrix(sort_by="log_loss")
    assert list(table.model_id) == sorted(expected_ll, key=expected_ll.get)
    np.testing.assert_allclose(table.log_loss, sorted(expected_ll.values()))
    assert table["roi"].notna().all() and table["sharpe"].notna().all()
    by_auc = pm.matrix(sort_by="auc")
    assert by_auc.auc.is_monotonic_decreasing  # higher is better -> descending by default
    assert set(pm.matrix(days_back=15).model_id) == {3, 4}  # created 2024-01-21 and 01-31; now 02-05

    board = pm.leaderboard("nba", "log_loss")
    assert list(board["rank"]) == [1, 2, 3, 4] and board.model_id.iloc[0] == min(expected_ll, key=expected_ll.get)
    assert set(pm.leaderboard("nba", latest_only=True).model_id) == {3, 4}
    assert pm.leaderboard("nfl").empty

    types = pm.by_model_type()
    assert list(types.family) == ["statistical"] and types.n_models.iloc[0] == 4
    assert types.log_loss.iloc[0] == pytest.approx(np.mean(list(expected_ll.values())))

    eff = pm.parameter_effectiveness("statistical", "log_loss")
    c_rows = eff[eff.param == "C"].set_index("value")
    assert c_rows.loc[1.0, "n_models"] == 2
    assert c_rows.loc[1.0, "mean_log_loss"] == pytest.approx((expected_ll[2] + expected_ll[4]) / 2)
    assert c_rows.loc[0.001, "best_log_loss"] == pytest.approx(expected_ll[1])

    trend = pm.trending("log_loss", window=2)
    line = trend[trend.name == "logistic_stub"]
    assert list(line.version) == [1, 2, 3]
    assert line.change.iloc[1] == pytest.approx(expected_ll[2] - expected_ll[1])
    assert line.rolling_mean.iloc[2] == pytest.approx((expected_ll[2] + expected_ll[3]) / 2)
    assert bool(line.improving.iloc[1]) == (expected_ll[2] < expected_ll[1])
    assert pd.isna(line.improving.iloc[0])

    side = pm.compare([3, 1])
    assert list(side.model_id) == [3, 1] and list(side.param_C) == [100.0, 0.001]
    assert side.log_loss.tolist() == pytest.approx([expected_ll[3], expected_ll[1]])
    assert registry.get(1)["metrics"]["performance"]["scored_seasons"] == [2020]

    with pytest.raises(ValueError, match="sport.*'hockey'"):
        pm.leaderboard("hockey")
    with pytest.raises(ValueError, match="metric.*'sharpness'"):
        pm.matrix(sort_by="sharpness")
    with pytest.raises(ValueError, match="metric.*'speed'"):
        pm.trending("speed")
    with pytest.raises(ValueError, match="model_ids.*42"):
        pm.compare([1, 42])
    with pytest.raises(ValueError, match="days_back"):
        pm.matrix(days_back=-1)
    with pytest.raises(ValueError, match="family.*'quantum'"):
        pm.parameter_effectiveness("quantum", "log_loss")


def test_matrix_reads_the_contract_evaluate_output(tmp_path, games):
    """Models registered with `evaluate`'s nested dict (model/market) show up with those figures."""
    registry = ModelRegistry(tmp_path / "reg")
    model = StandInLogistic().fit(games)
    registry.register(model, {"n": 10, "model": {"log_loss": 0.61, "brier": 0.21, "accuracy": 0.66, "auc": 0.7},
                              "market": {"log_loss": 0.6, "brier": 0.2, "accuracy": 0.67, "auc": 0.71},
                              "beats_market_log_loss": False, "beats_market_brier": False})
    row = PerformanceMatrix(registry).matrix().iloc[0]
    assert (row.log_loss, row.market_log_loss, row.auc) == (0.61, 0.6, 0.7)
    assert not row.beats_market_log_loss and math.isnan(row.roi)


def test_significance_vs_market_on_constructed_predictions():
    from scipy import stats

    from edgeray.sports.performance import significance_vs_market

    rng = np.random.default_rng(3)
    n = 4000
    truth = rng.uniform(0.2, 0.8, n)
    y = (rng.uniform(size=n) < truth).astype(float)
    dates = np.repeat(np.arange(n // 8), 8)
    noisy = np.clip(truth + rng.normal(0, 0.15, n), 0.02, 0.98)  # a market that knows less than the truth
    better = significance_vs_market(y, truth, noisy, dates)
    assert better["mean_diff"] < 0 and better["ci95"][1] < 0 and better["model_better"] and better["p_value"] < 1e-6
    same = significance_vs_market(y, noisy, noisy, dates)
    assert same["mean_diff"] == 0 and same["p_value"] == 1.0 and not same["model_better"]
    worse = significance_vs_market(y, noisy, truth, dates)
    assert worse["ci95"][0] > 0 and not worse["model_better"]
    # The p-value is the Diebold-Mariano statistic by hand on a tiny case.
    y3, pm, pk = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.7, 0.4, 0.6, 0.8]), np.array([0.6, 0.5, 0.5, 0.6])
    d = -(y3 * np.log(pm) + (1 - y3) * np.log(1 - pm)) + (y3 * np.log(pk) + (1 - y3) * np.log(1 - pk))
    z = d.mean() / (d.std(ddof=1) / 2)
    got = significance_vs_market(y3, pm, pk)
    assert got["mean_diff"] == pytest.approx(d.mean()) and got["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)))
