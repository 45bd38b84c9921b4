"""Ray Tune sweeps: a CI-sized Optuna + ASHA sweep of the real logistic model on the shared test Ray session,
plus the per-epoch reporting path of a trial, checked without Ray."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import log_loss

from edgeray.sports.performance import PerformanceMatrix
from edgeray.sports.registry import ModelRegistry
from tests.test_registry_performance import synthetic_games
import tune.sports as tune_sports
from tune.sports import SEARCH_SPACES, config_to_params, run_sweep


@pytest.fixture(scope="module")
def frame():
    return synthetic_games(seed=1, seasons=(2018, 2019, 2020), games_per_season=250)


def test_config_decoding_matches_the_model_schemas():
    assert config_to_params({"C": 0.3, "k_features": "all"}, {"cv_splits": 2}) == {
        "Cs": [0.3], "k_features": ["all"], "cv_splits": 2}
    assert config_to_params({"hidden_layers": "128-64-32", "lr": 0.01}, {"epochs": 2}) == {
        "hidden_layers": [128, 64, 32], "lr": 0.01, "epochs": 2}
    from edgeray.sports.models import make_model  # every search space decodes to params the models accept

    for family, names in SEARCH_SPACES.items():
        for name, space in names.items():
            sample = {k: (v.sample() if hasattr(v, "sample") else v) for k, v in space.items()}
            model = make_model(family, "nba", name, config_to_params(sample))
            for key, value in config_to_params(sample).items():
                assert model.params[key] == value


def test_bad_sweep_arguments_name_the_field(frame):
    with pytest.raises(ValueError, match="sport.*'golf'"):
        run_sweep("golf", "neural", frame, [2018], [2019], 2)
    with pytest.raises(ValueError, match="family.*'quantum'"):
        run_sweep("nba", "quantum", frame, [2018], [2019], 2)
    with pytest.raises(ValueError, match="num_samples"):
        run_sweep("nba", "neural", frame, [2018], [2019], 0)
    with pytest.raises(ValueError, match="search.*'grid'"):
        run_sweep("nba", "neural", frame, [2018], [2019], 2, search="grid")
    with pytest.raises(ValueError, match="val_seasons"):
        run_sweep("nba", "neural", frame, [2019], [2018], 2)
    with pytest.raises(ValueError, match="train_seasons.*2010"):
        run_sweep("nba", "neural", frame, [2010], [2019], 2)


def test_ci_sized_sweep_registers_the_best_trial(ray_session, tmp_path, frame):
    registry = ModelRegistry(tmp_path / "registry")
    # The statistical family keeps CI fast (no torch import in each trial process); cv_splits=2 for speed.
    result = run_sweep("nba", "statistical", frame, train_seasons=[2018, 2019], val_seasons=[2020],
                       num_samples=4, search="optuna", scheduler="asha", max_concurrent=2, registry=registry,
                       storage_path=tmp_path / "tune", fixed_params={"cv_splits": 2})
    assert len(result["trials"]) == 4 and result["n_errors"] == 0 and result["n_completed"] == 4

    # The trials' own result files, read independently of run_sweep's parsing: best = min over trials.
    finals = []
    for path in (tmp_path / "tune" / result["experiment"]).glob("*/result.json"):
        reports = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        finals += [r["val_log_loss"] for r in reports if r.get("final")]
    assert len(finals) == 4
    assert result["best_val_log_loss"] == pytest.approx(min(finals))
    assert len({round(v, 10) for v in finals}) > 1  # the sampled configs really differed

    # The best config was refitted and registered; sampled keys decoded, fixed params kept.
    record = registry.get(result["model_id"])
    assert record["version"] == 1 and "tune" in record["tags"]
    assert record["params"]["cv_splits"] == 2
    assert record["params"]["Cs"] == [pytest.approx(result["best_config"]["C"])]
    assert record["params"]["k_features"] == [result["best_config"]["k_features"]]
    val = frame[frame.season == 2020]
    loaded = registry.load(result["model_id"])
    refit_loss = log_loss(val.home_win.astype(int), loaded.predict_proba(val))
    assert refit_loss == pytest.approx(record["metrics"]["performance"]["log_loss"], rel=1e-9)
    # Seeded training: the refit reproduces the winning trial's validation loss.
    assert refit_loss == pytest.approx(result["best_val_log_loss"], rel=1e-4)

    row = PerformanceMatrix(registry).matrix().iloc[0]
    assert row.model_id == result["model_id"] and np.isfinite(row.roi) and row.log_loss == pytest.approx(refit_loss)


class EpochwiseStandIn:
    """Iterative model whose fit accepts eval_frame and reports its validation log loss each epoch."""

    family = "neural"
    fitted_seasons: set = set()

    def __init__(self, sport, params):
        self.sport, self.name, self.params = sport, "mlp", params

    def _x(self, frame):
        return frame[["f_strength_diff", "f_market_prob_home"]].fillna(0.0).to_numpy()

    def fit(self, frame, progress=None, device="cpu", eval_frame=None):
        from sklearn.linear_model import SGDClassifier

        EpochwiseStandIn.fitted_seasons = set(frame.season)
        self.clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=self.params["lr"], random_state=0)
        for epoch in range(1, self.params["epochs"] + 1):
            self.clf.partial_fit(self._x(frame), frame.home_win.astype(int), classes=[0, 1])
            val_loss = log_loss(eval_frame.home_win.astype(int), self.predict_proba(eval_frame), labels=[0, 1])
            progress(epoch, self.params["epochs"], {"loss": 0.5, "val_log_loss": val_loss})
        return self

    def predict_proba(self, frame):
        return self.clf.predict_proba(self._x(frame))[:, 1]


def test_trial_reports_every_epoch_when_the_model_scores_validation(monkeypatch, frame):
    reports = []
    monkeypatch.setattr(tune_sports.ray_tune, "report", reports.append)
    tune_sports._trial({"lr": 0.01}, frame=frame, sport="nba", family="neural", name="mlp", train_seasons=[2018],
                       val_seasons=[2019], fixed_params={"epochs": 3},
                       factory=lambda family, sport, name, params: EpochwiseStandIn(sport, params), device="cpu")
    assert EpochwiseStandIn.fitted_seasons == {2018}  # validation rows never reach fit
    assert [r["final"] for r in reports] == [False, False, False, True]
    assert [r.get("epoch") for r in reports[:3]] == [1, 2, 3]
    # The final report is the fitted model scored on the validation season, computed here independently.
    val = frame[frame.season == 2019]
    model = EpochwiseStandIn("nba", {"lr": 0.01, "epochs": 3}).fit(frame[frame.season == 2018],
                                                                    progress=lambda *a: None, eval_frame=val)
    assert reports[-1]["val_log_loss"] == pytest.approx(log_loss(val.home_win.astype(int), model.predict_proba(val)))
    assert reports[2]["val_log_loss"] == pytest.approx(reports[-1]["val_log_loss"])
