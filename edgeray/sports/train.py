"""One sport-model training run, end to end: game table -> point-in-time features -> fit on
earlier seasons -> evaluate against the market on later ones -> betting figures -> registry.

Used by `edgeray train`, the training queue's "sport_model" task and the HTTP API.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pandas as pd

from edgeray.device import parse_memory_gb, validate_precision
from edgeray.sports.features import build_features
from edgeray.sports.formats import canonical_sport
from edgeray.sports.games import SportsData, load_sport
from edgeray.sports.models import FAMILIES, make_model, train_and_evaluate
from edgeray.sports.performance import frame_performance
from edgeray.sports.registry import ModelRegistry

DEFAULT_DATA_DIR = os.environ.get("EDGERAY_SPORTS_DATA", "../shared/data/sports")
DEFAULT_REGISTRY = os.environ.get("EDGERAY_REGISTRY", "runs/registry")
DEFAULT_TRAIN_SEASONS = 3  # seasons before the test season, when none are named


def default_seasons(frame: pd.DataFrame, train_seasons: list[int] | None, test_seasons: list[int] | None) -> tuple[list[int], list[int]]:
    """Test on the latest complete season, train on the seasons just before it."""
    seasons = sorted(int(s) for s in frame["season"].dropna().unique())
    if not seasons:
        raise ValueError("data: the sport's files hold no games")
    if not test_seasons:
        test_seasons = [seasons[-1]]
    if not train_seasons:
        train_seasons = [s for s in seasons if s < min(test_seasons)][-DEFAULT_TRAIN_SEASONS:]
    return list(train_seasons), list(test_seasons)


def validate_params(params: dict) -> dict:
    """Normalise and check a training request; ValueError names the field and value."""
    p = dict(params or {})
    try:
        sport = canonical_sport(p.get("sport"))
    except ValueError as exc:
        raise ValueError(f"params.{exc}") from None
    family = p.get("family")
    if family not in FAMILIES:
        raise ValueError(f"params.family: unknown model family {family!r}; known: {sorted(FAMILIES)}")
    if not isinstance(p.get("allow_earlier", False), bool):
        raise ValueError(f"params.allow_earlier: must be true or false, got {p.get('allow_earlier')!r}")
    for key in ("train_seasons", "test_seasons"):
        value = p.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(s, int) for s in value)):
            raise ValueError(f"params.{key}: must be a list of season years, got {value!r}")
    model_params = p.get("model_params") or {}
    if "precision" in p:  # the job-level option every training task takes; it is the torch models' parameter
        precision = validate_precision(p["precision"], "params.precision")
        if not make_model(family, sport, p.get("name"), model_params).uses_torch:
            if precision not in ("fp32", "auto"):
                raise ValueError(f"params.precision: {precision!r} applies only to the torch families (neural, "
                                 f"lstm); family {family!r} trains with scikit-learn in float64")
        else:
            model_params = {**model_params, "precision": precision}
            p["model_params"] = model_params
    if p.get("gpu_memory_gb") is not None:
        p["gpu_memory_gb"] = parse_memory_gb(p["gpu_memory_gb"], "params.gpu_memory_gb")
    make_model(family, sport, p.get("name"), model_params)  # raises on a bad name or parameter
    return {**p, "sport": sport, "data_dir": str(p.get("data_dir") or DEFAULT_DATA_DIR),
            "registry_dir": str(p.get("registry_dir") or DEFAULT_REGISTRY)}


def train_sport_model(params: dict, progress: Callable[[int, int, dict], None] | None = None, device: str = "cpu") -> dict:
    p = validate_params(params)
    data_dir = Path(p["data_dir"])
    if not p.get("sources") and not data_dir.exists():
        raise ValueError(f"params.data_dir: {data_dir} does not exist")
    frame = build_features(load_sport(p["sport"], SportsData(str(data_dir), tuple(p.get("sources") or ()))))
    train_seasons, test_seasons = default_seasons(frame, p.get("train_seasons"), p.get("test_seasons"))
    model, report = train_and_evaluate(p["sport"], p["family"], p.get("name"), p.get("model_params") or {}, frame,
                                       train_seasons, test_seasons, progress=progress, device=device,
                                       allow_earlier=bool(p.get("allow_earlier")))
    test = frame[frame["season"].isin(test_seasons)]
    performance = frame_performance(model.predict_proba(test), test)
    record = ModelRegistry(p["registry_dir"]).register(
        model, {"evaluation": report, "performance": performance}, tags=p.get("tags") or [],
        data={"train_seasons": train_seasons, "test_seasons": test_seasons, "games": int(len(frame))})
    return {"model_id": record["model_id"], "version": record["version"], "report": report, "performance": performance,
            "device": report["device"], "precision": model.diagnostics.get("precision", "fp32"),
            "batch_size": model.params.get("batch_size")}
