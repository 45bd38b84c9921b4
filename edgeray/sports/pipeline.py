"""Sports data pipeline: ingestion -> feature engineering -> validation -> preprocessing, each stage reported.

`run_pipeline(sport, data_dir)` returns a PipelineReport: per-stage rows in/out, errors and seconds, validation
scores in [0, 1] (completeness, outliers, consistency), and `.frame`, the feature frame after preprocessing.
Preprocessing statistics (medians, clip bounds) are fitted on the earlier seasons only (all but the last by
default) so the latest season's values never shape its own imputation.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from edgeray.odds import american_to_decimal, is_valid_american
from edgeray.sports.features import build_features, feature_columns
from edgeray.sports.games import GAME_COLUMNS, read_sport

STAGES = ("ingestion", "feature_engineering", "validation", "preprocessing")
OUTLIER_Z = 6.0
MAX_ERRORS_LISTED = 50  # a report carries counts for everything and examples for the first few


@dataclass
class StageReport:
    name: str
    rows_in: int
    rows_out: int
    seconds: float
    errors: list[dict] = field(default_factory=list)
    error_count: int = 0
    details: dict = field(default_factory=dict)


@dataclass
class PipelineReport:
    sport: str
    stages: list[StageReport]
    scores: dict
    frame: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict:
        """JSON-able summary (the frame itself is described by its shape, not included)."""
        return _jsonable({"sport": self.sport, "stages": [asdict(s) for s in self.stages], "scores": self.scores,
                          "frame": {"rows": len(self.frame), "columns": len(self.frame.columns),
                                    "features": len(feature_columns(self.frame))}})


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (pd.Timestamp,)):
        return obj.isoformat()
    return obj


class Preprocessor:
    """Median imputation and quantile clipping of f_* columns, fitted on training rows only."""

    def __init__(self, clip_quantiles: tuple[float, float] = (0.001, 0.999)):
        lo, hi = clip_quantiles
        if not (0.0 <= lo < hi <= 1.0):
            raise ValueError(f"clip_quantiles: expected 0 <= low < high <= 1, got {clip_quantiles!r}")
        self.clip_quantiles = (float(lo), float(hi))
        self.medians: dict[str, float] = {}
        self.lower: dict[str, float] = {}
        self.upper: dict[str, float] = {}

    def fit(self, frame: pd.DataFrame) -> "Preprocessor":
        cols = feature_columns(frame)
        if not cols:
            raise ValueError("frame: no f_* feature columns to fit")
        values = frame[cols].astype(float)
        med = values.median()
        q = values.quantile(list(self.clip_quantiles))
        # A column with no values in the fit rows imputes to 0.0 (nothing else is known) and is not clipped.
        self.medians = {c: (float(med[c]) if np.isfinite(med[c]) else 0.0) for c in cols}
        self.lower = {c: float(q.loc[self.clip_quantiles[0], c]) for c in cols if np.isfinite(med[c])}
        self.upper = {c: float(q.loc[self.clip_quantiles[1], c]) for c in cols if np.isfinite(med[c])}
        return self

    def transform(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        if not self.medians:
            raise ValueError("Preprocessor: transform called before fit")
        missing = [c for c in self.medians if c not in frame.columns]
        if missing:
            raise ValueError(f"frame: missing feature columns {missing[:5]}")
        cols = list(self.medians)
        values = frame[cols].astype(float)
        imputed = values.isna().sum()
        lower = pd.Series(self.lower, dtype=float).reindex(cols)
        upper = pd.Series(self.upper, dtype=float).reindex(cols)
        clipped = ((values < lower) | (values > upper)).sum()
        values = values.clip(lower=lower, upper=upper, axis=1).fillna(pd.Series(self.medians))
        out = frame.copy()
        out[cols] = values
        return out, {"imputed_cells": {c: int(v) for c, v in imputed.items() if v},
                     "clipped_cells": {c: int(v) for c, v in clipped.items() if v}}

    def state_dict(self) -> dict:
        return {"clip_quantiles": list(self.clip_quantiles), "medians": dict(self.medians),
                "lower": dict(self.lower), "upper": dict(self.upper)}

    @classmethod
    def from_state(cls, state: dict) -> "Preprocessor":
        obj = cls(tuple(state["clip_quantiles"]))
        obj.medians = {k: float(v) for k, v in state["medians"].items()}
        obj.lower = {k: float(v) for k, v in state["lower"].items()}
        obj.upper = {k: float(v) for k, v in state["upper"].items()}
        return obj


def completeness(frame: pd.DataFrame) -> dict:
    cols = [c for c in GAME_COLUMNS if c in frame.columns] + feature_columns(frame)
    per_column = frame[cols].notna().mean()
    feats = per_column[feature_columns(frame)]
    return {"score": float(feats.mean()) if len(feats) else 1.0, "per_column": per_column.round(4).to_dict()}


def outliers(frame: pd.DataFrame, z: float = OUTLIER_Z) -> dict:
    """Share of values with robust z = 0.6745 (x - median) / MAD beyond z, per feature column."""
    cols = feature_columns(frame)
    values = frame[cols].astype(float)
    med = values.median()
    mad = (values - med).abs().median()
    usable = mad > 0  # a constant (or mostly constant) column has no robust scale; reported, not scored
    robust = 0.6745 * (values.loc[:, usable] - med[usable]) / mad[usable]
    counts = (robust.abs() > z).sum()
    present = values.loc[:, usable].notna().sum().replace(0, np.nan)
    share = (counts / present).fillna(0.0)
    return {"score": float(1.0 - share.mean()) if len(share) else 1.0, "threshold_z": z,
            "per_column": {c: int(v) for c, v in counts.items() if v},
            "unscored_columns": [c for c in cols if not usable[c]]}


def _dec_matches(american: pd.Series, decimal: pd.Series) -> np.ndarray:
    a = american.to_numpy(dtype=float)
    valid = is_valid_american(a)  # an impossible price fails the check instead of stopping the report
    expected = american_to_decimal(np.where(valid, a, 100.0))
    return valid & np.isclose(decimal.to_numpy(dtype=float), expected, rtol=0, atol=1e-9)


def consistency(frame: pd.DataFrame) -> dict:
    """Checks that must hold row by row; each scores the share of rows that pass."""
    hs, as_ = frame["home_score"].astype(float), frame["away_score"].astype(float)
    checks = {
        "home_dec_matches_ml": _dec_matches(frame["home_ml"], frame["home_dec"]),
        "away_dec_matches_ml": _dec_matches(frame["away_ml"], frame["away_dec"]),
        "scores_non_negative": ((hs >= 0) & (as_ >= 0)).to_numpy(),
        "home_win_matches_scores": np.where(hs == as_, frame["home_win"].isna(), frame["home_win"] == (hs > as_)),
        "market_prob_in_0_1": ((frame["market_prob_home"] > 0) & (frame["market_prob_home"] < 1)).to_numpy(),
        # A consensus book that sums below one would be a free bet: usually a stale or mistyped price.
        "book_overround_non_negative": (1 / frame["home_dec"] + 1 / frame["away_dec"] >= 1 - 1e-9).to_numpy(),
        "game_id_unique": ~frame["game_id"].duplicated().to_numpy(),
    }
    per_check, failures = {}, []
    for name, ok in checks.items():
        ok = np.asarray(ok, dtype=bool)
        per_check[name] = float(ok.mean()) if len(ok) else 1.0
        failures.extend({"check": name, "game_id": gid} for gid in frame["game_id"].to_numpy()[~ok])
    return {"score": float(np.mean(list(per_check.values()))), "per_check": per_check, "failures": failures}


def run_pipeline(sport: str, data_dir, progress: Callable[[str, int, int], None] | None = None,
                 fit_seasons: list[int] | None = None, feature_config: dict | None = None) -> PipelineReport:
    """Run the four stages for one sport; progress(stage, index, total) is called as each stage finishes."""
    stages: list[StageReport] = []

    def done(report: StageReport) -> None:
        stages.append(report)
        if progress is not None:
            progress(report.name, len(stages), len(STAGES))

    t = time.perf_counter()
    table = read_sport(sport, data_dir)
    rejected = table.rejected.to_dict("records")
    done(StageReport("ingestion", table.info["rows_read"], len(table.games), time.perf_counter() - t,
                     rejected[:MAX_ERRORS_LISTED], len(rejected), {**table.info, "rows_rejected":
                                                                  table.info["rows_rejected"]}))

    t = time.perf_counter()
    frame = build_features(table.games, feature_config)
    done(StageReport("feature_engineering", len(table.games), len(frame), time.perf_counter() - t,
                     details={"features": len(feature_columns(frame))}))

    t = time.perf_counter()
    scores = {"completeness": completeness(frame), "outliers": outliers(frame), "consistency": consistency(frame)}
    failures = scores["consistency"].pop("failures")
    scores["overall"] = float(np.mean([scores[k]["score"] for k in ("completeness", "outliers", "consistency")]))
    done(StageReport("validation", len(frame), len(frame), time.perf_counter() - t, failures[:MAX_ERRORS_LISTED],
                     len(failures), {k: v["score"] for k, v in scores.items() if isinstance(v, dict)}))

    t = time.perf_counter()
    seasons = sorted(frame["season"].unique().tolist())
    if fit_seasons is None:
        fit_seasons = seasons[:-1] or seasons
    unknown = sorted(set(fit_seasons) - set(seasons))
    if unknown or not fit_seasons:
        raise ValueError(f"fit_seasons: {fit_seasons!r} must be non-empty seasons present in the data {seasons}")
    pre = Preprocessor().fit(frame[frame["season"].isin(fit_seasons)])
    final, counts = pre.transform(frame)
    done(StageReport("preprocessing", len(frame), len(final), time.perf_counter() - t,
                     details={"fit_seasons": list(fit_seasons), **counts, "state": pre.state_dict()}))
    return PipelineReport(table.info["sport"], stages, scores, final)
