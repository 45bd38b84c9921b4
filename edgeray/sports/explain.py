"""SHAP explanations for a registered sport model's predictions on its latest test games."""
from __future__ import annotations

import numpy as np
import pandas as pd

from edgeray.explain import make_explainer
from edgeray.sports.features import build_features
from edgeray.sports.games import load_sport
from edgeray.sports.registry import ModelRegistry

BACKGROUND_ROWS = 200
KERNEL_SAMPLES = 200  # model evaluations per explained row; KernelExplainer is model-agnostic, hence slow


class _FeatureFunction:
    """SportModel.predict_proba takes game frames; SHAP perturbs a matrix of the f_* inputs."""

    def __init__(self, model, template: pd.DataFrame, columns: list[str]):
        self.model, self.template, self.columns = model, template, columns

    def predict(self, X: np.ndarray) -> np.ndarray:
        frame = pd.concat([self.template] * len(X), ignore_index=True)
        frame[self.columns] = X
        return self.model.predict_proba(frame)


def explain_sport_model(registry: ModelRegistry | str, data_dir: str, model_id: int, rows: int = 5,
                        top_k: int = 8) -> dict:
    """`registry`: the server's registry (edgeray.sports.registry.open_registry), or its folder."""
    registry = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
    record = registry.get(model_id)
    model = registry.load(model_id)
    frame = build_features(load_sport(record["sport"], data_dir))
    test_seasons = (record.get("data") or {}).get("test_seasons") or [int(frame["season"].max())]
    test = frame[frame["season"].isin(test_seasons)].dropna(subset=["home_win"])
    train = frame[frame["season"] < min(test_seasons)]
    columns = list(model.feature_columns)
    if not columns or train.empty or test.empty:
        raise ValueError(f"model_id {model_id}: no features or no games to explain it on")
    background = train[columns].fillna(train[columns].median()).fillna(0.0).to_numpy(float)[-BACKGROUND_ROWS:]
    explained = test.tail(rows)
    function = _FeatureFunction(model, explained.iloc[[0]].reset_index(drop=True), columns)
    explainer = make_explainer(function, background)
    values = np.asarray(explainer.shap_values(explained[columns].fillna(0.0).to_numpy(float), nsamples=KERNEL_SAMPLES))
    probs = model.predict_proba(explained)
    out = []
    for i, (_, game) in enumerate(explained.iterrows()):
        order = np.argsort(-np.abs(values[i]))[:top_k]
        out.append({"game_id": game["game_id"], "p_home_win": float(probs[i]),
                    "market_prob_home": float(game["market_prob_home"]),
                    "top_features": [{"feature": columns[j], "shap": float(values[i, j])} for j in order]})
    return {"model_id": model_id, "sport": record["sport"], "family": record["family"], "name": record["name"],
            "explainer": type(explainer).__name__, "games": out}
