"""Sports win-probability models: four families behind one interface, evaluated against the market.

Every model learns P(home win) from the `f_` columns of the feature frame (edgeray.sports.features):
median imputation and standardisation fitted on training rows only, a base learner fitted on the
earlier part of the training seasons, and a Platt or isotonic calibrator fitted on the latest time
slice of the training data (never on test rows). `evaluate` scores a model against the market's
margin-free closing probability on the same games; `train_and_evaluate` insists the test seasons
come after the training seasons.

Families: statistical (logistic_l2, poisson, bayes_logistic, linear_regression; sklearn/scipy), ensemble (voting_soft,
voting_hard, stacked; sklearn), neural (mlp; torch) and lstm (lstm_weather; torch, in models_torch).

Device policy: device="cuda" on a machine without CUDA raises ValueError (a job asked for a GPU and
silently training on the CPU would hide a mis-scheduled job). The sklearn families always compute on
the CPU; they accept "cuda" and record diagnostics["device"] = "cpu".
"""
from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import joblib
import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import linalg, optimize, stats
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectKBest, f_classif, f_regression
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from edgeray.sports.formats import SPORTS, canonical_sport

FAMILIES: dict[str, list[str]] = {
    "statistical": ["logistic_l2", "poisson", "bayes_logistic", "linear_regression"],
    "ensemble": ["voting_soft", "voting_hard", "stacked"],
    "neural": ["mlp"],
    "lstm": ["lstm_weather"],
}
MODEL_CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "sports_models.yaml"
PROB_EPS = 1e-4  # calibrated probabilities are kept inside [eps, 1-eps] so log loss stays finite
FORMAT_VERSION = 1
Progress = Callable[[int, int, dict], None]


# ----------------------------------------------------------------------------------------------
# Hyper-parameter schemas (pydantic: an unknown key or a bad value names its field)

class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    features: list[str] | None = None  # None: every f_ column of the training frame
    calibration: Literal["platt", "isotonic"] = "platt"
    calib_fraction: float = Field(0.2, gt=0, le=0.5)  # latest share of training dates kept for calibration
    seed: int = 0


PosInt = Annotated[int, Field(ge=1)]
PosFloat = Annotated[float, Field(gt=0)]
KFeatures = PosInt | Literal["all"]


class _SelectCVParams(_Params):
    k_features: list[KFeatures] = Field(default_factory=lambda: [5, 10, "all"], min_length=1)
    cv_splits: int = Field(5, ge=2, le=20)


class LogisticL2Params(_SelectCVParams):
    Cs: list[PosFloat] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0], min_length=1)


class PoissonParams(_SelectCVParams):
    alphas: list[PosFloat] = Field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0], min_length=1)


class LinearRegressionParams(_SelectCVParams):
    alphas: list[PosFloat] = Field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0], min_length=1)  # ridge strengths


class BayesLogisticParams(_SelectCVParams):
    prior_vars: list[PosFloat] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0], min_length=1)


class EnsembleParams(_Params):
    n_estimators: PosInt = 200
    max_depth: PosInt = 6
    gb_max_iter: PosInt = 100
    learning_rate: PosFloat = 0.05
    lr_C: PosFloat = 1.0
    nn_hidden: list[PosInt] = Field(default_factory=lambda: [16], min_length=1)
    nn_max_iter: PosInt = 300
    cv_splits: int = Field(5, ge=2, le=20)  # stacked: time-ordered folds for the out-of-fold predictions


class MLPParams(_Params):
    hidden_layers: list[PosInt] = Field(default_factory=lambda: [64, 32], min_length=1)
    epochs: PosInt = 30
    lr: PosFloat = 1e-3
    batch_size: int = Field(256, ge=2)  # batch norm needs two rows a batch
    dropout: float = Field(0.2, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"  # torch.autocast (edgeray.device)


class LSTMParams(_Params):
    units: PosInt = 64
    layers: PosInt = 2
    dropout: float = Field(0.3, ge=0, lt=1)
    seq_len: PosInt = 10
    head_units: PosInt = 32
    epochs: PosInt = 15
    lr: PosFloat = 1e-3
    batch_size: int = Field(256, ge=2)
    weight_decay: float = Field(1e-4, ge=0)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"  # torch.autocast (edgeray.device)


PARAM_SCHEMAS: dict[str, type[_Params]] = {
    "logistic_l2": LogisticL2Params, "poisson": PoissonParams, "bayes_logistic": BayesLogisticParams,
    "linear_regression": LinearRegressionParams,
    "voting_soft": EnsembleParams, "voting_hard": EnsembleParams, "stacked": EnsembleParams,
    "mlp": MLPParams, "lstm_weather": LSTMParams,
}


def resolve_model_type(model_type: Any, name: str | None = None) -> tuple[str, str]:
    """A family ('ensemble') or one model of a family ('lstm_weather', 'stacked') -> (family, model name)."""
    key = str(model_type).strip().lower() if isinstance(model_type, str) else ""
    if key in FAMILIES:
        return key, FAMILIES[key][0] if name is None else name
    for family, names in FAMILIES.items():
        if key in names:
            if name not in (None, key):
                raise ValueError(f"name: {name!r} is not the model that model_type {model_type!r} names")
            return family, key
    known = sorted(FAMILIES) + [n for names in FAMILIES.values() for n in names]
    raise ValueError(f"model_type: unknown model type {model_type!r}; known: {known}")


# The specification's generic training knobs, mapped onto each model's own parameter (first that exists).
SPEC_HYPERPARAMETERS = {"epochs": ("epochs",), "batch_size": ("batch_size",), "learning_rate": ("lr",)}


def spec_hyperparameters(name: str, values: dict) -> tuple[dict, list[str]]:
    """(the model's params from the generic knobs given, the knobs this model has no use for)."""
    fields = PARAM_SCHEMAS[name].model_fields
    params, ignored = {}, []
    for key, value in values.items():
        if value is None:
            continue
        target = next((f for f in SPEC_HYPERPARAMETERS[key] if f in fields), None)
        if target is None:
            ignored.append(key)
        else:
            params[target] = value
    return params, ignored


def _validate_params(name: str, params: dict, source: str) -> _Params:
    try:
        return PARAM_SCHEMAS[name].model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(f"{source}.{'.'.join(str(p) for p in err['loc'])}={err.get('input')!r}: {err['msg']}"
                             for err in exc.errors())
        raise ValueError(f"bad hyper-parameters for {name}: {problems}") from None


def load_model_config(path: str | Path | None = None) -> dict:
    """Family defaults from configs/sports_models.yaml; {} when the file is absent (schema defaults apply)."""
    path = Path(path) if path is not None else MODEL_CONFIG_PATH
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


# ----------------------------------------------------------------------------------------------
# Frame checks, time slicing and time-ordered folds

def _require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: frame lacks column(s) {missing}")


def _dates(frame: pd.DataFrame) -> pd.Series:
    try:
        dates = pd.to_datetime(frame["date"], utc=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"date: cannot parse as datetimes ({exc})") from None
    if dates.isna().any():
        raise ValueError(f"date: {int(dates.isna().sum())} missing value(s), e.g. row {dates[dates.isna()].index[0]!r}")
    return dates


def _home_win(frame: pd.DataFrame) -> np.ndarray:
    y = pd.to_numeric(frame["home_win"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isnan(y) & (y != 0.0) & (y != 1.0)
    raw_nan = frame["home_win"].isna().to_numpy()
    bad |= np.isnan(y) & ~raw_nan  # a non-numeric value coerced to NaN is bad input, not a tie
    if bad.any():
        raise ValueError(f"home_win must be 1.0, 0.0 or NaN (tie), got {frame['home_win'][bad].iloc[:5].tolist()}")
    return y


def decided_games(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a result (home_win not NaN: ties carry no win label), sorted by (date, game_id)."""
    _require_columns(frame, ["date", "home_win"], "decided_games")
    y = _home_win(frame)
    out = frame.loc[~np.isnan(y)].copy()
    out["date"] = _dates(out)
    keys = ["date", "game_id"] if "game_id" in out.columns else ["date"]
    return out.sort_values(keys, kind="mergesort").reset_index(drop=True)


def _utc_ns(dates) -> np.ndarray:
    """Dates as naive UTC datetime64[ns] (a tz-aware Series would become an object array of Timestamps)."""
    return pd.to_datetime(pd.Series(dates), utc=True).dt.tz_localize(None).to_numpy("datetime64[ns]")


def time_ordered_folds(dates, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """TimeSeriesSplit over distinct dates, mapped back to row indices.

    Splitting dates rather than rows keeps same-day games on one side, so no fold validates on a
    day it also trained on; every training row is strictly earlier than every validation row.
    """
    day = _utc_ns(dates)
    unique_days = np.unique(day)
    if len(unique_days) <= n_splits:
        raise ValueError(f"cv_splits={n_splits} needs more than {n_splits} distinct dates, got {len(unique_days)}")
    position = np.searchsorted(unique_days, day)
    folds = []
    for train_days, val_days in TimeSeriesSplit(n_splits=n_splits).split(unique_days):
        train_rows = np.flatnonzero(np.isin(position, train_days))
        val_rows = np.flatnonzero(np.isin(position, val_days))
        folds.append((train_rows, val_rows))
    return folds


def calibration_split(dates, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (base, calib): calib holds the latest `fraction` of distinct dates."""
    day = _utc_ns(dates)
    unique_days = np.unique(day)
    if len(unique_days) < 4:
        raise ValueError(f"date: training needs at least 4 distinct dates for a calibration slice, "
                         f"got {len(unique_days)}")
    n_calib = max(1, int(round(len(unique_days) * fraction)))
    cut = unique_days[len(unique_days) - n_calib]
    calib = day >= cut
    return ~calib, calib


# ----------------------------------------------------------------------------------------------
# Calibration

class ProbabilityCalibrator:
    """Platt (logistic on the logit) or isotonic map from raw scores to probabilities."""

    def __init__(self, method: str):
        self.method = method
        self._model: Any = None

    def fit(self, p_raw: np.ndarray, y: np.ndarray) -> "ProbabilityCalibrator":
        if len(np.unique(y)) < 2:
            raise ValueError("home_win: the calibration slice holds only one outcome; use more training seasons "
                             "or a larger calib_fraction")
        if self.method == "isotonic":
            self._model = IsotonicRegression(y_min=PROB_EPS, y_max=1 - PROB_EPS, out_of_bounds="clip").fit(p_raw, y)
        else:
            self._model = LogisticRegression(C=1e4).fit(_logit(p_raw)[:, None], y)
        return self

    def transform(self, p_raw: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            p = self._model.predict(p_raw)
        else:
            p = self._model.predict_proba(_logit(p_raw)[:, None])[:, 1]
        return np.clip(p, PROB_EPS, 1 - PROB_EPS)


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6))


# ----------------------------------------------------------------------------------------------
# Device

def resolve_device(device: str, uses_torch: bool) -> str:
    if not isinstance(device, str) or not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"device must be 'cpu', 'mps', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu" or not uses_torch:
        return "cpu"
    import torch  # only the torch families pay for the import

    if device == "mps":  # Apple Silicon: the device manager's (edgeray.device) second choice after CUDA
        if not torch.backends.mps.is_available():
            raise ValueError("device='mps' requested but MPS is not available here; use device='cpu'")
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available here "
                         f"(torch {torch.__version__}, cuda build {torch.version.cuda}); use device='cpu'")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


# ----------------------------------------------------------------------------------------------
# Base class

class SportModel:
    """Common fit/predict/save logic; subclasses implement _fit_base and _predict_base on prepared inputs."""

    family: str = ""
    uses_torch: bool = False
    required_columns: tuple[str, ...] = ()

    def __init__(self, sport: str, name: str, params: _Params):
        self.sport = sport
        self.name = name
        self.params: dict = params.model_dump()
        self.diagnostics: dict = {}
        self.feature_columns: list[str] = []
        self._prep: Pipeline | None = None
        self._keep: np.ndarray | None = None  # standardised columns that vary on the training rows
        self._calibrator: ProbabilityCalibrator | None = None

    # -- public API ---------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame, progress: Progress | None = None, device: str = "cpu") -> "SportModel":
        started = time.perf_counter()
        device = resolve_device(device, self.uses_torch)
        self._check_sport(frame)
        _require_columns(frame, ["date", "home_win", *self.required_columns], f"{self.name}.fit")
        n_ties = int(np.isnan(_home_win(frame)).sum())
        train = decided_games(frame)
        if len(train) < 40:
            raise ValueError(f"home_win: {self.name} needs at least 40 decided training games, got {len(train)}")
        self.feature_columns = self._choose_features(train)
        raw = self._raw_features(train)
        base, calib = calibration_split(train["date"], self.params["calib_fraction"])
        y = train["home_win"].to_numpy(dtype=float).astype(int)
        if len(np.unique(y[base])) < 2:
            raise ValueError("home_win: the training rows before the calibration slice hold only one outcome")
        # Imputer medians and scaler moments come from the base training rows only.
        self._prep = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())
        self._prep.fit(raw[base])
        scaled = self._prep.transform(raw)
        self._keep = scaled[base].std(axis=0) > 0
        X = scaled[:, self._keep]
        self._fit_base(train.loc[base].reset_index(drop=True), X[base], y[base], progress, device)
        calib_rows = train.loc[calib].reset_index(drop=True)
        p_raw = self._predict_base(calib_rows, X[calib])
        self._calibrator = ProbabilityCalibrator(self.params["calibration"]).fit(p_raw, y[calib])
        self.diagnostics.update({
            "n_train": int(len(train)), "n_base": int(base.sum()), "n_calibration": int(calib.sum()),
            "n_ties_excluded": n_ties, "calibration_from": str(train.loc[calib, "date"].min().date()),
            "train_from": str(train["date"].min().date()), "train_to": str(train["date"].max().date()),
            "features_used": [c for c, k in zip(self.feature_columns, self._keep) if k],
            "device": device, "fit_seconds": round(time.perf_counter() - started, 3),
        })
        self.diagnostics.update(self.prediction_diagnostics(calib_rows, _prepared=X[calib]))
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated P(home win) for every row of `frame`, in its order (unplayed games included)."""
        if self._calibrator is None:
            raise ValueError(f"{self.name}: model is not fitted; call fit() or load() first")
        self._check_sport(frame)
        _require_columns(frame, ["date", *self._predict_columns()], f"{self.name}.predict_proba")
        rows = frame.reset_index(drop=True).copy()
        rows["date"] = _dates(rows)
        X = self._prepare(rows)
        raw = self._predict_base(rows, X)
        if not np.all(np.isfinite(raw)):  # never hand a NaN probability to a sizer
            bad = int(np.flatnonzero(~np.isfinite(raw))[0])
            raise ValueError(f"{self.feature_columns}: {self.name} produced a non-finite score for row {bad}; "
                             f"check that row's features")
        return self._calibrator.transform(raw)

    def prediction_diagnostics(self, frame: pd.DataFrame, _prepared: np.ndarray | None = None) -> dict:
        """Model-specific facts about predictions on `frame` (e.g. ensemble agreement); {} by default."""
        return {}

    def save(self, directory: str | Path) -> None:
        if self._calibrator is None:
            raise ValueError(f"{self.name}: cannot save an unfitted model")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT_VERSION, "family": self.family, "name": self.name, "sport": self.sport,
                "params": self.params, "feature_columns": self.feature_columns, "diagnostics": self.diagnostics}
        (directory / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default), encoding="utf-8")
        state = {"prep": self._prep, "keep": self._keep, "calibrator": self._calibrator, "model": self._model_state()}
        joblib.dump(state, directory / "artefacts.joblib")

    @classmethod
    def load(cls, directory: str | Path) -> "SportModel":
        """Rebuild a saved model. artefacts.joblib is a pickle: load only directories this system wrote."""
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.exists():
            raise ValueError(f"directory: {str(directory)!r} holds no saved model (meta.json missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"format: unsupported saved-model format {meta.get('format')!r}")
        model = make_model(meta["family"], meta["sport"], meta["name"], meta["params"], config_path=False)
        state = joblib.load(directory / "artefacts.joblib")
        model.feature_columns = list(meta["feature_columns"])
        model.diagnostics = meta["diagnostics"]
        model._prep, model._keep, model._calibrator = state["prep"], state["keep"], state["calibrator"]
        model._restore_model_state(state["model"])
        return model

    # -- helpers for subclasses ---------------------------------------------------------------
    def _check_sport(self, frame: pd.DataFrame) -> None:
        if isinstance(frame, pd.DataFrame) and "sport" in frame.columns:
            other = frame.loc[frame["sport"] != self.sport, "sport"]
            if len(other):
                raise ValueError(f"sport: a {self.sport} model got rows of sport {other.iloc[0]!r}")

    def _choose_features(self, train: pd.DataFrame) -> list[str]:
        chosen = self.params["features"]
        if chosen is None:
            chosen = [c for c in train.columns if str(c).startswith("f_")]
            if not chosen:
                raise ValueError("features: the frame has no f_ feature columns (build it with build_features)")
        missing = [c for c in chosen if c not in train.columns]
        if missing:
            raise ValueError(f"features: column(s) {missing} not in the frame")
        return list(chosen)

    def _predict_columns(self) -> list[str]:
        return [*self.feature_columns, *[c for c in self.required_columns if c not in ("home_score", "away_score")]]

    def _raw_features(self, frame: pd.DataFrame) -> np.ndarray:
        block = frame[self.feature_columns]
        for col in self.feature_columns:
            if not pd.api.types.is_numeric_dtype(block[col]):
                raise ValueError(f"{col}: feature columns must be numeric, got dtype {block[col].dtype}")
        values = block.to_numpy(dtype=float)
        infinite = np.isinf(values)
        if infinite.any():
            col = self.feature_columns[int(np.flatnonzero(infinite.any(axis=0))[0])]
            raise ValueError(f"{col}: {int(infinite.sum())} infinite value(s); features must be finite or NaN")
        return values

    def _prepare(self, frame: pd.DataFrame) -> np.ndarray:
        return self._prep.transform(self._raw_features(frame))[:, self._keep]

    def _fit_base(self, rows: pd.DataFrame, X: np.ndarray, y: np.ndarray, progress: Progress | None,
                  device: str) -> None:
        raise NotImplementedError

    def _predict_base(self, rows: pd.DataFrame, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _model_state(self) -> Any:
        raise NotImplementedError

    def _restore_model_state(self, state: Any) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sport={self.sport!r}, name={self.name!r})"


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _report(progress: Progress | None, epoch: int, total: int, info: dict) -> None:
    if progress is not None:
        progress(epoch, total, info)


# ----------------------------------------------------------------------------------------------
# Statistical family

class LaplaceLogisticRegression(ClassifierMixin, BaseEstimator):
    """Bayesian logistic regression: Gaussian prior, MAP by L-BFGS, Laplace posterior, probit predictive.

    Hand-written because neither sklearn nor scipy ships a Laplace-approximated logistic model; the
    optimiser and the Cholesky solve are scipy's.
    """

    def __init__(self, prior_var: float = 1.0, intercept_var: float = 100.0):
        self.prior_var = prior_var
        self.intercept_var = intercept_var

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        self.classes_ = np.array([0, 1])
        design = np.column_stack([np.ones(len(X)), X])
        precision = np.r_[1.0 / self.intercept_var, np.full(X.shape[1], 1.0 / self.prior_var)]

        def neg_log_posterior(w):
            z = design @ w
            value = np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(precision * w * w)
            return value, design.T @ (expit(z) - y) + precision * w

        result = optimize.minimize(neg_log_posterior, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B")
        w = result.x
        p = expit(design @ w)
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + np.diag(precision)
        self.coef_mean_ = w
        self.coef_cov_ = linalg.cho_solve(linalg.cho_factor(hessian), np.eye(len(w)))
        return self

    def predict_proba(self, X):
        design = np.column_stack([np.ones(len(X)), np.asarray(X, dtype=float)])
        mean = design @ self.coef_mean_
        var = np.einsum("ij,jk,ik->i", design, self.coef_cov_, design)
        p = expit(mean / np.sqrt(1.0 + np.pi * var / 8.0))  # probit approximation of the predictive
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


def _k_grid(ks: list, n_features: int) -> list:
    grid = {("all" if k == "all" or k >= n_features else int(k)) for k in ks}
    return sorted(grid, key=lambda k: n_features if k == "all" else k)


class _SelectCVModel(SportModel):
    """SelectKBest + a regularised learner; k and the strength chosen by time-ordered CV."""

    family = "statistical"

    def _search(self, rows, X, target, estimator, score_func, strength_key, strengths, scoring):
        folds = time_ordered_folds(rows["date"], self.params["cv_splits"])
        pipeline = Pipeline([("select", SelectKBest(score_func)), ("est", estimator)])
        grid = {"select__k": _k_grid(self.params["k_features"], X.shape[1]), f"est__{strength_key}": strengths}
        search = GridSearchCV(pipeline, grid, cv=folds, scoring=scoring, error_score="raise", n_jobs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # a k above a fold's informative count is fine
            search.fit(X, target)
        chosen = search.best_estimator_.named_steps["select"].get_support()
        features = [c for c, k in zip(self.feature_columns, self._keep) if k]
        return search, {"cv_best_params": {k: v for k, v in search.best_params_.items()},
                        "cv_best_score": float(search.best_score_), "cv_folds": len(folds),
                        "selected_features": [f for f, s in zip(features, chosen) if s]}


class LogisticL2Model(_SelectCVModel):
    def _fit_base(self, rows, X, y, progress, device):
        search, info = self._search(rows, X, y, LogisticRegression(max_iter=1000), f_classif,  # default penalty: L2
                                    "C", self.params["Cs"], "neg_log_loss")
        self._estimator = search.best_estimator_
        self.diagnostics.update(info)
        _report(progress, 1, 1, {"loss": float(log_loss(y, self._estimator.predict_proba(X)[:, 1], labels=[0, 1]))})

    def _predict_base(self, rows, X):
        return self._estimator.predict_proba(X)[:, 1]

    def _model_state(self):
        return self._estimator

    def _restore_model_state(self, state):
        self._estimator = state


class BayesLogisticModel(LogisticL2Model):
    def _fit_base(self, rows, X, y, progress, device):
        search, info = self._search(rows, X, y, LaplaceLogisticRegression(), f_classif, "prior_var",
                                    self.params["prior_vars"], "neg_log_loss")
        self._estimator = search.best_estimator_
        self.diagnostics.update(info)
        _report(progress, 1, 1, {"loss": float(log_loss(y, self._estimator.predict_proba(X)[:, 1], labels=[0, 1]))})


def skellam_home_win_probability(mu_home: np.ndarray, mu_away: np.ndarray) -> np.ndarray:
    """P(home wins) for independent Poisson scores; a level score is split like the decisive outcomes
    (basketball goes to overtime, an NFL tie is rare and carries no win label)."""
    # No sport scores 10,000 points; beyond that scipy's Skellam overflows (and crawls) on absurd inputs.
    mu_home, mu_away = (np.clip(np.nan_to_num(np.asarray(m, dtype=float), nan=1e-6, posinf=1e4), 1e-6, 1e4)
                        for m in (mu_home, mu_away))
    p_win = stats.skellam.sf(0, mu_home, mu_away)
    p_tie = stats.skellam.pmf(0, mu_home, mu_away)
    return p_win + p_tie * p_win / np.maximum(1.0 - p_tie, 1e-12)


class PoissonScoreModel(_SelectCVModel):
    """Poisson regressions for home and away points; P(home win) from the Skellam difference."""

    required_columns = ("home_score", "away_score")

    def _fit_base(self, rows, X, y, progress, device):
        self._estimators = {}
        for side in ("home_score", "away_score"):
            score = pd.to_numeric(rows[side], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isfinite(score) | (score < 0)
            if bad.any():
                raise ValueError(f"{side}: decided games need a finite score >= 0, "
                                 f"got {rows[side][bad].iloc[:5].tolist()}")
            search, info = self._search(rows, X, score, PoissonRegressor(solver="newton-cholesky", max_iter=300),
                                        f_regression, "alpha", self.params["alphas"], None)
            self._estimators[side] = search.best_estimator_
            self.diagnostics[f"{side}_cv"] = info
        p = self._predict_base(rows, X)
        _report(progress, 1, 1, {"loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1]))})

    def _predict_base(self, rows, X):
        with np.errstate(over="ignore"):  # an absurd input overflows exp(); the rates are clipped below
            mu_home, mu_away = (self._estimators[side].predict(X) for side in ("home_score", "away_score"))
        return skellam_home_win_probability(mu_home, mu_away)

    def _model_state(self):
        return self._estimators

    def _restore_model_state(self, state):
        self._estimators = state


class LinearMarginModel(_SelectCVModel):
    """Linear regression (ridge) of the home margin; P(home win) = Phi(predicted margin / residual sd), the
    sports analyst's classic: margins are roughly normal around the prediction."""

    required_columns = ("home_score", "away_score")

    def _fit_base(self, rows, X, y, progress, device):
        margin = (pd.to_numeric(rows["home_score"], errors="coerce")
                  - pd.to_numeric(rows["away_score"], errors="coerce")).to_numpy(dtype=float)
        if not np.isfinite(margin).all():
            raise ValueError("home_score/away_score: decided games need finite scores")
        search, info = self._search(rows, X, margin, Ridge(), f_regression, "alpha", self.params["alphas"],
                                    "neg_mean_squared_error")
        self._estimator = search.best_estimator_
        residual = margin - self._estimator.predict(X)
        self._sigma = float(max(residual.std(ddof=X.shape[1] if len(margin) > X.shape[1] + 1 else 0), 1e-6))
        self.diagnostics.update({**info, "residual_sd": self._sigma})
        _report(progress, 1, 1, {"loss": float(log_loss(y, np.clip(self._predict_base(rows, X), 1e-6, 1 - 1e-6),
                                                         labels=[0, 1]))})

    def _predict_base(self, rows, X):
        return stats.norm.cdf(self._estimator.predict(X) / self._sigma)

    def _model_state(self):
        return {"estimator": self._estimator, "sigma": self._sigma}

    def _restore_model_state(self, state):
        self._estimator, self._sigma = state["estimator"], state["sigma"]


# ----------------------------------------------------------------------------------------------
# Ensemble family

class EnsembleModel(SportModel):
    """Random forest, XGBoost, logistic regression and a small MLP, combined three ways.

    Members are combined by hand: VotingClassifier hides the per-member votes that agreement needs and
    has no probability for hard voting; StackingClassifier's cross_val_predict needs folds that
    partition the rows, which time-ordered folds do not.
    """

    family = "ensemble"
    MEMBERS = ("random_forest", "xgboost", "logistic", "mlp")

    def _members(self) -> dict[str, BaseEstimator]:
        p = self.params
        return {
            "random_forest": RandomForestClassifier(n_estimators=p["n_estimators"], max_depth=p["max_depth"],
                                                    min_samples_leaf=20, random_state=p["seed"], n_jobs=1),
            # XGBoost, as the specification names it; hist trees on the CPU (a few thousand games train in
            # well under a second, so a GPU would only add transfer time).
            "xgboost": XGBClassifier(n_estimators=p["gb_max_iter"], max_depth=3, learning_rate=p["learning_rate"],
                                     tree_method="hist", device="cpu", n_jobs=1, random_state=p["seed"],
                                     eval_metric="logloss"),
            "logistic": LogisticRegression(C=p["lr_C"], max_iter=1000),
            "mlp": MLPClassifier(hidden_layer_sizes=tuple(p["nn_hidden"]), alpha=1e-3, max_iter=p["nn_max_iter"],
                                 early_stopping=True, random_state=p["seed"]),
        }

    def _fit_base(self, rows, X, y, progress, device):
        members = self._members()
        steps = len(members) + (1 if self.name == "stacked" else 0)
        self._meta = None
        if self.name == "stacked":
            folds = time_ordered_folds(rows["date"], self.params["cv_splits"])
            oof = np.full((len(X), len(members)), np.nan)
            for train_rows, val_rows in folds:
                for j, estimator in enumerate(members.values()):
                    member = clone(estimator).fit(X[train_rows], y[train_rows])
                    oof[val_rows, j] = member.predict_proba(X[val_rows])[:, 1]
            covered = ~np.isnan(oof).any(axis=1)  # the first fold's rows have no earlier data to predict them
            self._meta = LogisticRegression().fit(_logit(oof[covered]), y[covered])
            loss = float(log_loss(y[covered], self._meta.predict_proba(_logit(oof[covered]))[:, 1], labels=[0, 1]))
            self.diagnostics["stack_weights"] = dict(zip(members, self._meta.coef_[0].round(4).tolist()))
            _report(progress, 1, steps, {"loss": loss, "stage": "meta-learner (out-of-fold)"})
        self._fitted = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            for i, (name, estimator) in enumerate(members.items(), start=steps - len(members) + 1):
                self._fitted[name] = estimator.fit(X, y)
                loss = float(log_loss(y, estimator.predict_proba(X)[:, 1], labels=[0, 1]))
                _report(progress, i, steps, {"loss": loss, "stage": name})

    def member_probabilities(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([m.predict_proba(X)[:, 1] for m in self._fitted.values()])

    def _predict_base(self, rows, X):
        probs = self.member_probabilities(X)
        if self.name == "voting_soft":
            return probs.mean(axis=1)
        if self.name == "voting_hard":
            return (probs > 0.5).mean(axis=1)  # share of members picking home; calibration maps it to a probability
        return self._meta.predict_proba(_logit(probs))[:, 1]

    def prediction_diagnostics(self, frame, _prepared=None):
        X = _prepared if _prepared is not None else self._prepare(frame)
        picks = self.member_probabilities(X) > 0.5
        return {"agreement": float(np.mean(picks.all(axis=1) | (~picks).all(axis=1))) if len(picks) else None}

    def _model_state(self):
        return {"members": self._fitted, "meta": self._meta}

    def _restore_model_state(self, state):
        self._fitted, self._meta = state["members"], state["meta"]


# ----------------------------------------------------------------------------------------------
# Factory, evaluation

def _model_class(name: str) -> type[SportModel]:
    if name in ("mlp", "lstm_weather"):
        from edgeray.sports import models_torch  # torch is imported only for the families that need it

        return {"mlp": models_torch.MLPModel, "lstm_weather": models_torch.LSTMWeatherModel}[name]
    return {"logistic_l2": LogisticL2Model, "bayes_logistic": BayesLogisticModel, "poisson": PoissonScoreModel,
            "linear_regression": LinearMarginModel,
            "voting_soft": EnsembleModel, "voting_hard": EnsembleModel, "stacked": EnsembleModel}[name]


def make_model(family: str, sport: str, name: str | None = None, params: dict | None = None, *,
               config_path: str | Path | None | Literal[False] = None) -> SportModel:
    """Build an unfitted model. Defaults: schema < config file "all" < config file sport < params.

    config_path=False skips the config file (used by load, whose params are already complete).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    sport = canonical_sport(sport)
    name = FAMILIES[family][0] if name is None else name
    if name not in FAMILIES[family]:
        raise ValueError(f"name must be one of {FAMILIES[family]} for family {family!r}, got {name!r}")
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    merged: dict = {}
    if config_path is not False:
        block = load_model_config(config_path).get(family, {}).get(name, {}) or {}
        for source in ("all", sport):
            defaults = block.get(source) or {}
            _validate_params(name, defaults, f"config.{family}.{name}.{source}")
            merged.update(defaults)
    merged.update(params or {})
    validated = _validate_params(name, merged, "params")
    model = _model_class(name)(sport, name, validated)
    model.family = family
    return model


def _metrics(y: np.ndarray, p: np.ndarray) -> dict:
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None  # AUC is undefined with one outcome
    return {"log_loss": float(log_loss(y, p, labels=[0, 1])), "brier": float(brier_score_loss(y, p)),
            "accuracy": float(accuracy_score(y, p > 0.5)), "auc": auc}


def evaluate(model: SportModel, frame: pd.DataFrame) -> dict:
    """Score `model` and the market's margin-free closing probability on the same decided games."""
    _require_columns(frame, ["date", "home_win", "market_prob_home"], "evaluate")
    n_ties = int(np.isnan(_home_win(frame)).sum())
    games = decided_games(frame)
    if games.empty:
        raise ValueError("home_win: evaluate needs at least one decided game, got none")
    market = pd.to_numeric(games["market_prob_home"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(market) | (market <= 0) | (market >= 1)
    if bad.any():
        first = games["game_id"][bad].iloc[0] if "game_id" in games else f"row {int(np.flatnonzero(bad)[0])}"
        raise ValueError(f"market_prob_home must be in (0, 1) on every evaluated game, got "
                         f"{games['market_prob_home'][bad].iloc[:5].tolist()} (first: {first!r})")
    y = games["home_win"].to_numpy(dtype=float).astype(int)
    p = model.predict_proba(games)
    report = {"n": int(len(games)), "n_ties_excluded": n_ties, "model": _metrics(y, p), "market": _metrics(y, market)}
    report["beats_market_log_loss"] = bool(report["model"]["log_loss"] < report["market"]["log_loss"])
    report["beats_market_brier"] = bool(report["model"]["brier"] < report["market"]["brier"])
    report["diagnostics"] = model.prediction_diagnostics(games)
    from edgeray.sports.performance import significance_vs_market  # performance imports this module's registry

    sig = report["significance"] = significance_vs_market(y, p, market, games["date"])
    verdict = "BEATS" if report["beats_market_log_loss"] and report["beats_market_brier"] else (
        "does NOT beat" if not (report["beats_market_log_loss"] or report["beats_market_brier"]) else "partly beats")
    report["summary"] = (
        f"{model.sport} {model.family}/{model.name} {verdict} the market on {len(games):,} games: "
        f"log loss {report['model']['log_loss']:.4f} vs market {report['market']['log_loss']:.4f} "
        f"({'better' if report['beats_market_log_loss'] else 'worse'}), Brier {report['model']['brier']:.4f} vs "
        f"{report['market']['brier']:.4f} ({'better' if report['beats_market_brier'] else 'worse'})"
        + (f"; log-loss difference {sig['mean_diff']:+.4f} per game, 95% CI [{sig['ci95'][0]:+.4f}, "
           f"{sig['ci95'][1]:+.4f}], p = {sig['p_value']:.3g} (Diebold-Mariano)." if sig["p_value"] is not None else "."))
    return report


def train_and_evaluate(sport: str, family: str, name: str | None, params: dict, frame: pd.DataFrame,
                       train_seasons: list[int], test_seasons: list[int], progress: Progress | None = None,
                       device: str = "cpu", allow_earlier: bool = False) -> tuple[SportModel, dict]:
    """Fit on `train_seasons`, report on strictly later `test_seasons` (or, with `allow_earlier`, on seasons
    before the training ones as well; never on one inside the training span)."""
    model = make_model(family, sport, name, params)
    _require_columns(frame, ["season"], "train_and_evaluate")
    train_seasons, test_seasons = [int(s) for s in train_seasons or []], [int(s) for s in test_seasons or []]
    if not train_seasons:
        raise ValueError(f"train_seasons must name at least one season, got {train_seasons!r}")
    if not test_seasons:
        raise ValueError(f"test_seasons must name at least one season, got {test_seasons!r}")
    lo, hi = min(train_seasons), max(train_seasons)
    inside = [s for s in test_seasons if lo <= s <= hi]
    earlier = [s for s in test_seasons if s < lo]
    if inside:
        raise ValueError(f"test_seasons: {inside} lie inside the training span {lo}-{hi} (train {train_seasons})")
    if earlier and not allow_earlier:
        raise ValueError(f"test_seasons must all come after train_seasons: test {test_seasons} vs train "
                         f"{train_seasons}; ask for earlier ones with --allow-earlier (allow_earlier)")
    season = frame["season"]
    train, test = frame.loc[season.isin(train_seasons)], frame.loc[season.isin(test_seasons)]
    for label, part, wanted in (("train_seasons", train, train_seasons), ("test_seasons", test, test_seasons)):
        absent = sorted(set(wanted) - set(part["season"].astype(int)))
        if absent:
            held = sorted(int(x) for x in season.dropna().unique())
            span = f"{held[0]}-{held[-1]}" if held else "no seasons"
            raise ValueError(f"{label}: season(s) {absent} have no games in the frame, which holds {span}")
    started = time.perf_counter()
    model.fit(train, progress=progress, device=device)
    fit_seconds = time.perf_counter() - started
    report = evaluate(model, test)
    report.update({"sport": model.sport, "family": model.family, "name": model.name, "params": model.params,
                   "train_seasons": train_seasons, "test_seasons": test_seasons,
                   "evaluation": ("before and after training" if earlier and len(earlier) < len(test_seasons) else
                                  "before training" if earlier else "after training"),
                   "n_train": model.diagnostics["n_train"],
                   "fit_seconds": round(fit_seconds, 3), "device": model.diagnostics["device"]})
    return model, report
