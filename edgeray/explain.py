"""SHAP explanations, and the edge model of the decision loop that they explain.

`EdgeModel` predicts P(log return of close over the next `horizon_bars` rows of the same symbol
> 0) from the feature columns of one row. A row's prediction uses that row's features only; the
training label of row i uses rows i+1..i+horizon, so training on a frame that ends at t only
learns from rows whose label is fully known by t (the last `horizon_bars` rows of each symbol
have no label yet and are left out of training).
"""
from __future__ import annotations

import base64
import io
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn import ensemble, tree
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from edgeray.columns import Columns
from edgeray.regime import column_array

try:  # sklearn internals behind GradientBoostingClassifier.predict_proba; without them predict takes the public path
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble._gb import _init_raw_predictions
    from sklearn.ensemble._gradient_boosting import predict_stages
except ImportError:  # pragma: no cover - another sklearn layout
    predict_stages = None

TREE_MODELS = (
    ensemble.RandomForestClassifier, ensemble.RandomForestRegressor,
    ensemble.ExtraTreesClassifier, ensemble.ExtraTreesRegressor,
    ensemble.GradientBoostingClassifier, ensemble.GradientBoostingRegressor,
    ensemble.HistGradientBoostingClassifier, ensemble.HistGradientBoostingRegressor,
    tree.DecisionTreeClassifier, tree.DecisionTreeRegressor,
)
KERNEL_BACKGROUND_CLUSTERS = 10
MAX_BACKGROUND_ROWS = 200


def _is_torch_module(model: Any) -> bool:
    # A torch model can only exist if torch is already imported, so this never pays torch's import cost.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _is_sklearn_linear(model: Any) -> bool:
    return type(model).__module__.startswith("sklearn.linear_model") and hasattr(model, "coef_")


def _check_background(background: Any) -> np.ndarray:
    bg = np.asarray(background, dtype=float)
    if bg.ndim != 2 or len(bg) == 0:
        raise ValueError(f"background: expected a non-empty 2-D array (rows, features), got shape {bg.shape}")
    if not np.isfinite(bg).all():
        raise ValueError("background: contains NaN or inf; impute before explaining")
    return bg


def make_explainer(model: Any, background: np.ndarray):
    """The fastest exact-enough SHAP explainer for `model`; `background` is representative input rows."""
    import shap  # here, not at the top: ~2 s of import in every process that only might explain (most never do)

    bg = _check_background(background)
    if isinstance(model, TREE_MODELS):
        # Tree ensembles: TreeExplainer is exact and polynomial-time in compiled code; path-dependent mode
        # (no background) uses the training cover stored in the trees, so it costs microseconds per row.
        return shap.TreeExplainer(model)
    if _is_sklearn_linear(model):
        # Linear models: SHAP values are closed form, coef * (x - mean(background)), in the margin (log-odds) space.
        return shap.LinearExplainer(model, bg)
    if _is_torch_module(model):
        # Neural nets: DeepExplainer (DeepLIFT with SHAP rescaling) backpropagates once instead of sampling.
        import torch

        return shap.DeepExplainer(model, torch.as_tensor(bg[:MAX_BACKGROUND_ROWS], dtype=torch.float32))
    predict = getattr(model, "predict_proba", None) or getattr(model, "predict", None)
    if predict is None:
        raise ValueError(f"model: {type(model).__name__} has neither predict_proba nor predict; cannot explain it")
    # Anything else is a black box: KernelExplainer is model-agnostic but evaluates the model per coalition
    # per background row, so the background is summarised to a few weighted k-means centroids.
    summary = shap.kmeans(bg, min(KERNEL_BACKGROUND_CLUSTERS, len(bg))) if len(bg) > 1 else bg
    return shap.KernelExplainer(predict, summary)


def positive_class_values(values: Any) -> np.ndarray:
    """SHAP output -> (rows, features) for a single output, taking the positive class of a classifier."""
    if isinstance(values, list):  # older shap: one array per class
        values = values[-1]
    values = np.asarray(values)
    if values.ndim == 3:  # (rows, features, classes)
        values = values[..., -1]
    return values


def forward_log_return(frame: pd.DataFrame, horizon_bars: int) -> np.ndarray:
    """log(close[i + h] / close[i]) within each symbol, in the frame's row order; NaN where i + h is past the end."""
    order = np.argsort(pd.to_datetime(frame["event_ts"], utc=True).to_numpy("datetime64[ns]"), kind="stable")
    close = frame["close"].to_numpy(float)[order]
    symbols = frame["symbol"].to_numpy(object)[order]
    future = pd.Series(close).groupby(symbols).shift(-horizon_bars).to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out_sorted = np.log(future / close)
    out = np.empty(len(frame))
    out[order] = out_sorted
    return out


class EdgeModel:
    def __init__(self, feature_names: list[str], horizon_bars: int = 15, model: str = "gbt"):
        if not feature_names or not all(isinstance(f, str) and f for f in feature_names):
            raise ValueError(f"feature_names: must be a non-empty list of str, got {feature_names!r}")
        if len(set(feature_names)) != len(feature_names):
            raise ValueError(f"feature_names: duplicates in {feature_names!r}")
        if not (isinstance(horizon_bars, int) and horizon_bars >= 1):
            raise ValueError(f"horizon_bars: must be an int >= 1, got {horizon_bars!r}")
        if model not in ("gbt", "logistic"):
            raise ValueError(f"model: must be 'gbt' or 'logistic', got {model!r}")
        self.feature_names = list(feature_names)
        self.horizon_bars = horizon_bars
        self.model_kind = model
        self.estimator: GradientBoostingClassifier | LogisticRegression | None = None
        self.background: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._explainer = None

    # --- features ----------------------------------------------------------------------------

    def _raw_features(self, frame: pd.DataFrame) -> np.ndarray:
        if not isinstance(frame, (pd.DataFrame, Columns)):
            raise ValueError(f"frame: expected a pandas DataFrame, got {type(frame).__name__}")
        x = self._feature_matrix(frame)
        owned = x is not None
        if not owned:
            missing = [f for f in self.feature_names if f not in frame.columns]
            if missing:
                raise ValueError(f"frame: missing feature column(s) {missing}")
            x = frame[self.feature_names].to_numpy(float)
        bad = np.isinf(x)
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            raise ValueError(f"{self.feature_names[j]}: infinite value {x[i, j]} at row {i}")
        # NaN (warm-up rows, no quotes) -> 0, the neutral value of every return/distance feature ("no signal").
        if owned:  # nan_to_num's result without its copy: x is ours, and holds no inf
            x[np.isnan(x)] = 0.0
            return x
        return np.nan_to_num(x, nan=0.0)

    def _feature_matrix(self, frame: pd.DataFrame) -> np.ndarray | None:
        """frame[self.feature_names].to_numpy(float) as a new array, filled column by column from the stored arrays,
        when every feature is one float64 column (selecting a column list builds a whole new DataFrame, ~150 us
        at any size); None otherwise."""
        columns = [column_array(frame, name) for name in self.feature_names]
        if not all(type(c) is np.ndarray and c.dtype == np.float64 for c in columns):
            return None
        # Filled as pandas does it, the transpose of a (features, rows) array: the same Fortran-ordered layout,
        # which matters beyond the values, as BLAS (the logistic model's X @ coef) sums in layout-dependent order.
        xt = np.empty((len(columns), len(frame)))
        for j, values in enumerate(columns):
            xt[j] = values
        return xt.T

    def _design(self, frame: pd.DataFrame) -> np.ndarray:
        if self.estimator is None:
            raise RuntimeError("EdgeModel is not fitted: call fit() or load() first")
        # Standardised so the logistic model's L2 penalty treats bps- and return-scaled features alike;
        # a per-feature affine map leaves trees and each feature's SHAP attribution unchanged.
        return (self._raw_features(frame) - self._mean) / self._scale

    # --- training / inference ----------------------------------------------------------------

    def fit(self, frame: pd.DataFrame) -> EdgeModel:
        for col in ("symbol", "event_ts", "close"):
            if col not in frame.columns:
                raise ValueError(f"frame: missing column {col!r}")
        fwd = forward_log_return(frame, self.horizon_bars)
        labelled = np.isfinite(fwd)  # rows within horizon_bars of their symbol's end have no label yet
        if labelled.sum() < 2:
            raise ValueError(f"frame: only {int(labelled.sum())} row(s) have a {self.horizon_bars}-bar forward "
                             f"return; need more rows than horizon_bars per symbol")
        raw = self._raw_features(frame)[labelled]
        y = (fwd[labelled] > 0).astype(int)
        if len(np.unique(y)) < 2:
            raise ValueError(f"frame: every labelled row has up={int(y[0])}; need both up and down moves to fit")
        self._mean = raw.mean(axis=0)
        std = raw.std(axis=0)
        self._scale = np.where(std > 0, std, 1.0)
        x = (raw - self._mean) / self._scale
        if self.model_kind == "gbt":
            self.estimator = GradientBoostingClassifier(n_estimators=50, max_depth=3, learning_rate=0.1, random_state=0)
        else:
            self.estimator = LogisticRegression(C=1.0, max_iter=1000)
        self.estimator.fit(x, y)
        rng = np.random.default_rng(0)
        self.background = x[np.sort(rng.choice(len(x), size=min(MAX_BACKGROUND_ROWS, len(x)), replace=False))]
        self._explainer = None
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """P(up over the next horizon_bars) for each row."""
        x = self._design(frame)
        if len(x) == 0:
            return np.empty(0)
        if self._gbt_init_row() is not None:
            p_up = self._gbt_predict_up(x)
            if p_up is not None:
                return p_up
        return self.estimator.predict_proba(x)[:, 1]

    def _gbt_init_row(self) -> np.ndarray | None:
        """The init estimator's (1, 1) raw prediction when `_gbt_predict_up` applies to the estimator, else None:
        the binary, default-initialised GradientBoostingClassifier that fit() makes. Cached per estimator
        (plain data, so the model still pickles)."""
        est = self.estimator
        cached = getattr(self, "_gbt_cache", None)
        if cached is not None and cached[0] is est and cached[1] is getattr(est, "init_", None):  # refit: new init_
            return cached[2]
        init_row = None
        if (predict_stages is not None and type(est) is GradientBoostingClassifier
                and getattr(est, "n_trees_per_iteration_", None) == 1 and hasattr(est, "estimators_")
                and not hasattr(est, "feature_names_in_") and type(getattr(est, "init_", None)) is DummyClassifier
                and est.init_.strategy == "prior"):
            # DummyClassifier("prior") predicts the class prior whatever the row: one row stands for all.
            init_row = _init_raw_predictions(np.zeros((1, est.n_features_in_), np.float32), est.init_, est._loss, True)
        self._gbt_cache = (est, getattr(est, "init_", None), init_row)
        return init_row

    def _gbt_predict_up(self, x: np.ndarray) -> np.ndarray | None:
        """GradientBoostingClassifier.predict_proba(x)[:, 1] without its per-call input validation (~240 us of its
        ~265 us on two rows, warm): the same steps in the same order. x goes to C-ordered float32, the raw
        prediction starts at the init row, predict_stages adds the trees in place, and the loss's own
        predict_proba maps it. An input the validation would refuse (inf after the float32 cast, a wrong width)
        gives None, and the caller's public call raises as before."""
        est = self.estimator
        with np.errstate(over="ignore"):  # an overflow is left to the public call to warn about and refuse, once
            x32 = np.asarray(x, dtype=np.float32, order="C")
        if x32.ndim != 2 or x32.shape[1] != est.n_features_in_ or not np.isfinite(x32).all():
            return None
        raw = np.repeat(self._gbt_cache[2], len(x32), axis=0)
        predict_stages(est.estimators_, x32, est.learning_rate, raw)
        return est._loss.predict_proba(raw.ravel())[:, 1]

    @property
    def explainer(self):
        if self._explainer is None:
            self._explainer = make_explainer(self.estimator, self.background)
        return self._explainer

    def shap_values(self, frame: pd.DataFrame) -> np.ndarray:
        """(rows, features) SHAP values in log-odds of the up class."""
        x = self._design(frame)
        if len(x) == 0:
            return np.empty((0, len(self.feature_names)))
        return positive_class_values(self.explainer.shap_values(x))

    def explain(self, frame: pd.DataFrame, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Per row, the top_k (feature, SHAP value in log-odds) by |value|, largest first."""
        if not (isinstance(top_k, int) and 1 <= top_k):
            raise ValueError(f"top_k: must be an int >= 1, got {top_k!r}")
        values = self.shap_values(frame)
        k = min(top_k, len(self.feature_names))
        top = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
        names = self.feature_names
        return [[(names[j], float(row[j])) for j in idx] for row, idx in zip(values, top)]

    # --- persistence -------------------------------------------------------------------------

    def _payload(self) -> dict[str, Any]:
        return {"feature_names": self.feature_names, "horizon_bars": self.horizon_bars, "model": self.model_kind,
                "estimator": self.estimator, "background": self.background, "mean": self._mean, "scale": self._scale}

    @classmethod
    def _from_payload(cls, payload: dict[str, Any]) -> EdgeModel:
        model = cls(payload["feature_names"], payload["horizon_bars"], payload["model"])
        model.estimator = payload["estimator"]
        model.background = payload["background"]
        model._mean = payload["mean"]
        model._scale = payload["scale"]
        return model

    def save(self, path: str | Path) -> None:
        joblib.dump(self._payload(), path)

    @classmethod
    def load(cls, path: str | Path) -> EdgeModel:
        return cls._from_payload(joblib.load(path))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the joblib bytes, base64-encoded (a fitted sklearn model has no JSON form)."""
        buffer = io.BytesIO()
        joblib.dump(self._payload(), buffer)
        return {"format": "joblib-base64", "blob": base64.b64encode(buffer.getvalue()).decode("ascii")}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EdgeModel:
        if state.get("format") != "joblib-base64":
            raise ValueError(f"format: expected 'joblib-base64', got {state.get('format')!r}")
        return cls._from_payload(joblib.load(io.BytesIO(base64.b64decode(state["blob"]))))
