"""The underdog model (NCAAM by default, any sport with moneylines): two L2 logistic regressions (base, market-aware) blended, with betting outputs.

Training keeps eligible, decided underdog rows, splits them chronologically (earliest 70% of rows by date for
fitting, the rest for validation; a day is never split), weights winning rows by their tier's win weight and every
row by an exponential recency decay, and fits both models by batch gradient descent. Artefacts go to one
directory per run: base_model.json, market_model.json, ensemble.json (blend, config, train window), metrics.json.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.special import expit
from sklearn.metrics import brier_score_loss, log_loss

from edgeray.sports.formats import canonical_sport
from edgeray.sports.games import load_sport
from edgeray.underdog.features import build_underdog_features, feature_sets

CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "underdog.yaml"
ARTEFACTS = {"base": "base_model.json", "market": "market_model.json", "ensemble": "ensemble.json",
             "metrics": "metrics.json"}
PROB_EPS = 1e-4
PREDICTION_COLUMNS = ["date", "game_id", "team", "opponent", "side", "tier", "american_odds", "decimal_odds",
                      "model_prob", "base_prob", "market_model_prob", "market_prob", "edge", "ev_per_10", "kelly",
                      "confidence", "recommended"]
OPPORTUNITY_COLUMNS = ["date", "game_id", "side", "team", "decimal_odds", "model_prob", "won", "confidence",
                       "closing_decimal_odds", "market_prob", "tier", "american_odds", "base_prob", "market_model_prob"]


# ---------------------------------------------------------------------------------------------- config

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TierConfig(_Strict):
    min_odds: float = Field(ge=100)
    max_odds: float | None = None      # exclusive; None: no upper bound
    win_weight: float = Field(gt=0)


class ConfidenceRule(_Strict):
    name: str
    min_edge: float                    # strictly above
    min_prob: float = Field(ge=0, le=1)  # strictly above


class UnderdogConfig(_Strict):
    sport: str = "ncaam"  # any sport with moneylines (edgeray.sports.formats.SPORTS)
    min_odds: float = Field(100, ge=100)
    tiers: dict[str, TierConfig] = Field(default_factory=lambda: {
        "moderate": TierConfig(min_odds=100, max_odds=200, win_weight=2.0),
        "heavy": TierConfig(min_odds=200, max_odds=300, win_weight=3.0),
        "extreme": TierConfig(min_odds=300, max_odds=None, win_weight=5.0)})
    min_prior_games: int = Field(5, ge=0)
    min_prior_dog_games: int = Field(3, ge=0)
    upset_windows: list[int] = Field(default_factory=lambda: [5, 10], min_length=1)
    upset_decay: float = Field(0.8, gt=0, le=1)      # per underdog game back: weight decay**lag
    trend_window: int = Field(5, ge=1)
    perf_scale_points: float = Field(8.0, gt=0)      # logistic scale of the net-rating gap, points
    standard_features: dict = Field(default_factory=dict)  # passed to edgeray.sports.features.build_features
    half_life_days: float = Field(120.0, gt=0)
    learning_rate: float = Field(0.01, gt=0)
    iterations: int = Field(1500, ge=1)
    l2_lambda: float = Field(0.3, ge=0)
    correct_win_weights: bool = True                 # undo the win-weight shift of the log-odds at prediction
    blend_base_weight: float = Field(0.5, ge=0, le=1)
    validation_fraction: float = Field(0.3, gt=0, lt=1)
    min_underdog_games: int = Field(100, ge=1)
    ece_bins: int = Field(10, ge=2)
    ece_warn: float = Field(0.15, gt=0)
    kelly_fraction: float = Field(0.25, gt=0, le=1)
    kelly_cap: float = Field(0.10, gt=0, le=1)
    min_edge: float = Field(0.03, ge=0)
    ev_stake: float = Field(10.0, gt=0)
    confidence: list[ConfidenceRule] = Field(default_factory=lambda: [
        ConfidenceRule(name="high", min_edge=0.10, min_prob=0.40),
        ConfidenceRule(name="medium", min_edge=0.05, min_prob=0.30),
        ConfidenceRule(name="low", min_edge=0.03, min_prob=0.20)])
    general_model: dict = Field(default_factory=dict)  # logistic_l2 params for `compare`

    @model_validator(mode="after")
    def _check(self) -> "UnderdogConfig":
        self.sport = canonical_sport(self.sport)
        if not self.tiers:
            raise ValueError("tiers: at least one tier is required")
        for name, t in self.tiers.items():
            if t.max_odds is not None and t.max_odds <= t.min_odds:
                raise ValueError(f"tiers.{name}.max_odds: {t.max_odds} must exceed min_odds {t.min_odds}")
        if any(k < 1 for k in self.upset_windows):
            raise ValueError(f"upset_windows: every window must be >= 1, got {self.upset_windows}")
        return self


def _validate_config(data: dict, source: str) -> UnderdogConfig:
    try:
        return UnderdogConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{source}.{'.'.join(str(p) for p in e['loc']) or '(root)'}={e.get('input')!r}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"bad underdog config: {problems}") from None


def load_config(path: str | Path | None = None) -> UnderdogConfig:
    """configs/underdog.yaml (schema defaults if that default file is absent); a named path must exist."""
    if path is None and not CONFIG_PATH.exists():
        return UnderdogConfig()
    p = Path(path) if path is not None else CONFIG_PATH
    if not p.exists():
        raise FileNotFoundError(f"path: no underdog config at {p}")
    with open(p, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"path: {p} must hold a mapping, got {type(data).__name__}")
    return _validate_config(data, "config")


def _as_config(config) -> UnderdogConfig:
    if config is None:
        return load_config()
    if isinstance(config, UnderdogConfig):
        return config
    if isinstance(config, dict):
        return _validate_config(config, "config")
    raise ValueError(f"config: expected UnderdogConfig, dict or None, got {type(config).__name__}")


# ---------------------------------------------------------------------------------------------- the learner

class GDLogisticRegression:
    """L2 logistic regression by full-batch gradient descent, with median imputation and standardisation.

    Hand-written because sklearn cannot honour "learning rate + iterations": LogisticRegression's solvers
    (lbfgs, newton-cg, saga...) take no learning rate and stop at convergence, and SGDClassifier updates per
    sample, so its max_iter counts epochs of stochastic steps, not batch steps.
    Objective: sum_i w_i logloss_i / sum_i w_i + lambda/2 |beta|^2 (the intercept is not penalised).
    """

    def __init__(self, features: list[str], learning_rate: float, iterations: int, l2_lambda: float):
        self.features = list(features)
        self.learning_rate, self.iterations, self.l2_lambda = float(learning_rate), int(iterations), float(l2_lambda)
        self.medians = self.mean = self.scale = self.coef = None
        self.intercept = 0.0
        self.loss_history: list[float] = []

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(f"frame: missing feature columns {missing}")
        return frame[self.features].to_numpy(dtype=float)

    def _prepare(self, raw: np.ndarray) -> np.ndarray:
        X = np.where(np.isnan(raw), self.medians, raw)
        return (X - self.mean) / self.scale

    def fit(self, frame: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> "GDLogisticRegression":
        raw = self._matrix(frame)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (venue unknown) has no median
            med = np.nanmedian(raw, axis=0)
        self.medians = np.where(np.isfinite(med), med, 0.0)  # all-NaN -> neutral 0
        X = np.where(np.isnan(raw), self.medians, raw)
        self.mean, sd = X.mean(axis=0), X.std(axis=0)
        self.scale = np.where(sd > 0, sd, 1.0)  # a constant column stays 0 after centring and gets no weight
        X = (X - self.mean) / self.scale
        w = np.asarray(sample_weight, dtype=float)
        w = w / w.sum()
        y = np.asarray(y, dtype=float)
        beta, b0 = np.zeros(X.shape[1]), 0.0
        for _ in range(self.iterations):
            p = expit(X @ beta + b0)
            r = w * (p - y)
            beta -= self.learning_rate * (X.T @ r + self.l2_lambda * beta)
            b0 -= self.learning_rate * r.sum()
        p = np.clip(expit(X @ beta + b0), 1e-12, 1 - 1e-12)
        self.loss_history = [float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum())]
        self.coef, self.intercept = beta, float(b0)
        return self

    def decision_function(self, frame: pd.DataFrame) -> np.ndarray:
        if self.coef is None:
            raise ValueError("model: not fitted")
        return self._prepare(self._matrix(frame)) @ self.coef + self.intercept

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return expit(self.decision_function(frame))

    def state_dict(self) -> dict:
        arr = lambda a: None if a is None else [float(v) for v in a]  # noqa: E731
        return {"features": self.features, "learning_rate": self.learning_rate, "iterations": self.iterations,
                "l2_lambda": self.l2_lambda, "medians": arr(self.medians), "mean": arr(self.mean),
                "scale": arr(self.scale), "coef": arr(self.coef), "intercept": self.intercept,
                "final_loss": self.loss_history[-1] if self.loss_history else None}

    @classmethod
    def from_state(cls, state: dict) -> "GDLogisticRegression":
        m = cls(state["features"], state["learning_rate"], state["iterations"], state["l2_lambda"])
        for key in ("medians", "mean", "scale", "coef"):
            setattr(m, key, None if state[key] is None else np.asarray(state[key], dtype=float))
        m.intercept = float(state["intercept"])
        if state.get("final_loss") is not None:
            m.loss_history = [state["final_loss"]]
        return m


class UnderdogEnsemble:
    """Base and market-aware models blended in probability space: p = w p_base + (1-w) p_market."""

    def __init__(self, base: GDLogisticRegression, market: GDLogisticRegression, config: UnderdogConfig,
                 meta: dict | None = None):
        self.base, self.market, self.config = base, market, config
        self.meta = dict(meta or {})

    def _tier_offset(self, frame: pd.DataFrame) -> np.ndarray:
        if not self.config.correct_win_weights:
            return np.zeros(len(frame))
        # Weighting wins by c shifts the fitted log-odds by log(c) (King & Zeng 2001): subtract it per tier.
        weights = {k: t.win_weight for k, t in self.config.tiers.items()}
        return np.log(frame["tier"].map(weights).fillna(1.0).to_numpy(dtype=float))

    def predict_components(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        off = self._tier_offset(frame)
        pb = np.clip(expit(self.base.decision_function(frame) - off), PROB_EPS, 1 - PROB_EPS)
        pm = np.clip(expit(self.market.decision_function(frame) - off), PROB_EPS, 1 - PROB_EPS)
        w = self.config.blend_base_weight
        return {"base": pb, "market": pm, "blend": w * pb + (1 - w) * pm}

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.predict_components(frame)["blend"]

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict(), "market": self.market.state_dict(),
                "config": self.config.model_dump(), "meta": self.meta}

    @classmethod
    def from_state(cls, state: dict) -> "UnderdogEnsemble":
        return cls(GDLogisticRegression.from_state(state["base"]), GDLogisticRegression.from_state(state["market"]),
                   _validate_config(state["config"], "ensemble.config"), state.get("meta"))

    def save(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / ARTEFACTS["base"], self.base.state_dict())
        _write_json(out / ARTEFACTS["market"], self.market.state_dict())
        _write_json(out / ARTEFACTS["ensemble"], {"blend_base_weight": self.config.blend_base_weight,
                                                  "config": self.config.model_dump(), "meta": self.meta})

    @classmethod
    def load(cls, out_dir: str | Path) -> "UnderdogEnsemble":
        out = run_dir(out_dir)
        for key in ("base", "market", "ensemble"):
            if not (out / ARTEFACTS[key]).exists():
                raise FileNotFoundError(f"out_dir: no trained underdog model at {out} "
                                        f"({ARTEFACTS[key]} missing); run `edgeray underdog train` first")
        ens = json.loads((out / ARTEFACTS["ensemble"]).read_text())
        return cls.from_state({"base": json.loads((out / ARTEFACTS["base"]).read_text()),
                               "market": json.loads((out / ARTEFACTS["market"]).read_text()),
                               "config": ens["config"], "meta": ens.get("meta")})


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, default=float))


# ---------------------------------------------------------------------------------------------- metrics & pricing

def expected_calibration_error(y, p, bins: int = 10) -> float:
    """Equal-width-bin ECE: sum over bins of (share of rows) * |mean outcome - mean probability|."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    n = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, weights=y, minlength=bins) - np.bincount(idx, weights=p, minlength=bins))
    return float(gap.sum() / max(n.sum(), 1))


def _scores(y: np.ndarray, p: np.ndarray, bins: int) -> dict:
    if len(y) == 0:
        return {"log_loss": None, "brier": None, "ece": None}
    return {"log_loss": float(log_loss(y, p, labels=[0, 1])), "brier": float(brier_score_loss(y, p)),
            "ece": expected_calibration_error(y, p, bins)}


def price_bets(model_prob, market_prob, decimal_odds, config: UnderdogConfig | dict | None = None) -> pd.DataFrame:
    """Edge, EV per stake, fractional Kelly and confidence class for each underdog price.

    edge = model_prob - market_prob (margin-free); ev = stake * (p * decimal - 1); Kelly f* = (b p - (1 - p)) / b
    with b = decimal - 1, times kelly_fraction, capped at kelly_cap, 0 below min_edge or with no positive f*.
    """
    cfg = _as_config(config)
    p, m, d = (np.asarray(v, dtype=float) for v in (model_prob, market_prob, decimal_odds))
    for name, v, ok in (("model_prob", p, (p >= 0) & (p <= 1)), ("market_prob", m, (m > 0) & (m < 1)),
                        ("decimal_odds", d, d > 1)):
        bad = ~(np.isfinite(v) & ok)
        if bad.any():
            raise ValueError(f"{name}: invalid value(s) {v[bad][:3].tolist()}")
    edge = p - m
    b = d - 1.0
    full = (b * p - (1.0 - p)) / b
    kelly = np.where(edge >= cfg.min_edge, np.clip(full * cfg.kelly_fraction, 0.0, cfg.kelly_cap), 0.0)
    conf = np.full(len(p), "none", dtype=object)
    for rule in cfg.confidence:  # listed strongest first; the first rule a row meets names it
        hit = (conf == "none") & (edge > rule.min_edge) & (p > rule.min_prob)
        conf[hit] = rule.name
    return pd.DataFrame({"edge": edge, "ev_per_10": cfg.ev_stake * (p * d - 1.0), "kelly": kelly,
                         "confidence": conf, "recommended": edge >= cfg.min_edge})


def _flat_roi(won: np.ndarray, decimal: np.ndarray, bet: np.ndarray) -> dict:
    n = int(bet.sum())
    if n == 0:
        return {"n_bets": 0, "roi": None, "profit": 0.0}
    profit = np.where(won[bet] == 1.0, decimal[bet] - 1.0, -1.0).sum()
    return {"n_bets": n, "roi": float(profit / n), "profit": float(profit)}


# ---------------------------------------------------------------------------------------------- pipeline

def _select(frame: pd.DataFrame, seasons, tiers, cfg: UnderdogConfig) -> pd.DataFrame:
    keep = np.ones(len(frame), dtype=bool)
    if seasons is not None:
        seasons = [int(s) for s in seasons]
        absent = sorted(set(seasons) - set(frame["season"].astype(int)))
        if absent:
            raise ValueError(f"seasons: {absent} have no underdog games (have {sorted(int(s) for s in frame['season'].unique())})")
        keep &= frame["season"].isin(seasons).to_numpy()
    if tiers is not None:
        tiers = [tiers] if isinstance(tiers, str) else list(tiers)
        unknown = [t for t in tiers if t not in cfg.tiers]
        if unknown:
            raise ValueError(f"tiers: unknown tier(s) {unknown}; known {list(cfg.tiers)}")
        keep &= frame["tier"].isin(tiers).to_numpy()
    return frame.loc[keep]


def _sample_weights(rows: pd.DataFrame, cfg: UnderdogConfig, ref_date) -> np.ndarray:
    age = (ref_date - rows["date"]).dt.total_seconds().to_numpy() / 86_400.0
    recency = 0.5 ** (age / cfg.half_life_days)
    win_w = rows["tier"].map({k: t.win_weight for k, t in cfg.tiers.items()}).to_numpy(dtype=float)
    return recency * np.where(rows["won"].to_numpy(float) == 1.0, win_w, 1.0)


def _chronological_split(rows: pd.DataFrame, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) masks: the first 1-fraction of rows by date; the cut falls between days."""
    dates = rows["date"].to_numpy()
    cut = np.sort(dates)[int(np.floor(len(dates) * (1.0 - fraction)))]
    train = dates < cut
    if train.sum() == 0 or (~train).sum() == 0:
        raise ValueError(f"validation_fraction: {fraction} leaves an empty train or validation part "
                         f"({len(rows)} rows over {len(np.unique(dates))} days)")
    return train, ~train


def fit_ensemble(rows: pd.DataFrame, cfg: UnderdogConfig) -> UnderdogEnsemble:
    """Fit both models on decided underdog rows (already selected/eligible) with tier and recency weights."""
    y = rows["won"].to_numpy(float)
    if np.isnan(y).any() or len(np.unique(y)) < 2:
        raise ValueError(f"won: training rows need decided games with both outcomes, got {np.unique(y).tolist()}")
    base_f, all_f = feature_sets(rows)
    w = _sample_weights(rows, cfg, rows["date"].max())
    mk = lambda f: GDLogisticRegression(f, cfg.learning_rate, cfg.iterations, cfg.l2_lambda)  # noqa: E731
    meta = {"train_from": str(rows["date"].min().date()), "train_to": str(rows["date"].max().date()),
            "n_train": int(len(rows)), "train_end_ns": int(rows["date"].max().value)}
    return UnderdogEnsemble(mk(base_f).fit(rows, y, w), mk(all_f).fit(rows, y, w), cfg, meta)


def _data_signature(data) -> tuple:
    """What identifies the sports data on disk: every CSV path with its size and mtime (a changed or added
    file gives a new signature, so cached features are never stale)."""
    from edgeray.sports.games import SportsData

    paths: list[Path] = []
    if isinstance(data, SportsData):
        paths += [Path(f["path"] if isinstance(f, dict) else f.path) for f in data.sources]
        data = data.data_dir
    if data is not None:
        target = Path(data)
        paths += sorted(target.glob("*.csv")) if target.is_dir() else [target]
    sig = []
    for p in paths:
        try:
            st = p.stat()
            sig.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
        except OSError:
            sig.append((str(p), None, None))
    return tuple(sig)


_FRAMES: dict[tuple, pd.DataFrame] = {}  # (sport, data signature, config) -> underdog feature frame
_MAX_FRAMES = 4


def _underdog_frame(data_dir, cfg: UnderdogConfig) -> pd.DataFrame:
    """The sport's underdog rows with their features, cached per data signature and config: a day's slate is
    then priced in milliseconds instead of rebuilding every feature (point-in-time features of earlier games
    do not change when later games are added, and any change on disk gives a new key)."""
    key = (cfg.sport, _data_signature(data_dir), cfg.model_dump_json())
    frame = _FRAMES.get(key)
    if frame is None:
        frame = build_underdog_features(load_sport(cfg.sport, data_dir), cfg)
        if len(_FRAMES) >= _MAX_FRAMES:
            _FRAMES.pop(next(iter(_FRAMES)))
        _FRAMES[key] = frame
    return frame


def _trainable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[frame["eligible"].to_numpy() & frame["won"].notna().to_numpy() & (frame["tier"] != "").to_numpy()]


def train(data_dir, out_dir, config=None, tiers=None, seasons=None, sport: str | None = None) -> dict:
    """Train on one sport's underdog games (the config's sport, NCAAM by default), validate on the latest 30% by
    date, save the artefacts in a new run folder under out_dir (out_dir/latest points at it); returns the metrics."""
    cfg = _as_config(config)
    if sport is not None:
        cfg = cfg.model_copy(update={"sport": canonical_sport(sport)})
    frame = _select(_underdog_frame(data_dir, cfg), seasons, tiers, cfg)
    rows = _trainable(frame).sort_values(["date", "game_id"], kind="mergesort").reset_index(drop=True)
    if len(rows) < cfg.min_underdog_games:
        raise ValueError(f"underdog games: {len(rows)} eligible decided underdog games (seasons={seasons}, "
                         f"tiers={tiers}); training needs at least min_underdog_games={cfg.min_underdog_games}")
    train_m, val_m = _chronological_split(rows, cfg.validation_fraction)
    ens = fit_ensemble(rows.loc[train_m], cfg)
    val = rows.loc[val_m]
    comp = ens.predict_components(val)
    y, market = val["won"].to_numpy(float), val["market_prob"].to_numpy(float)
    priced = price_bets(comp["blend"], market, val["decimal_odds"].to_numpy(float), cfg)

    def block(mask: np.ndarray) -> dict:
        out = {"n": int(mask.sum()), "upset_rate": float(y[mask].mean()) if mask.any() else None}
        for name, p in (("model", comp["blend"]), ("base", comp["base"]), ("market_aware", comp["market"]),
                        ("market", market)):
            out[name] = _scores(y[mask], p[mask], cfg.ece_bins)
        if mask.any():
            out["beats_market_log_loss"] = out["model"]["log_loss"] < out["market"]["log_loss"]
            out["beats_market_brier"] = out["model"]["brier"] < out["market"]["brier"]
        out["flat_bets_at_min_edge"] = _flat_roi(y, val["decimal_odds"].to_numpy(float),
                                                 priced["recommended"].to_numpy() & mask)
        return out

    tier_v = val["tier"].to_numpy()
    metrics = {
        "n_underdog_rows": int(len(frame)), "n_ineligible": int((~frame["eligible"]).sum()),
        "n_undecided": int(frame["won"].isna().sum()), "n_train": int(train_m.sum()), "n_validation": int(val_m.sum()),
        "train_from": ens.meta["train_from"], "train_to": ens.meta["train_to"],
        "validation_from": str(val["date"].min().date()), "validation_to": str(val["date"].max().date()),
        "seasons": None if seasons is None else [int(s) for s in seasons], "tiers": tiers,
        "n_games_per_tier": {"train": rows.loc[train_m, "tier"].value_counts().to_dict(),
                             "validation": val["tier"].value_counts().to_dict()},
        "validation": block(np.ones(len(val), dtype=bool)),
        "validation_by_tier": {t: block(tier_v == t) for t in cfg.tiers if (tier_v == t).any()},
        "features": {"base": ens.base.features, "market_aware": ens.market.features},
        "warnings": [],
    }
    ece = metrics["validation"]["model"]["ece"]
    if ece > cfg.ece_warn:
        msg = (f"validation ECE {ece:.1%} exceeds {cfg.ece_warn:.0%}: the underdog model is overconfident")
        metrics["warnings"].append(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    ens.meta.update({"validation_from": metrics["validation_from"], "validation_to": metrics["validation_to"]})
    run = new_run_dir(out_dir, cfg.sport)
    ens.save(run)
    metrics.update({"sport": cfg.sport, "run_dir": str(run)})
    _write_json(run / ARTEFACTS["metrics"], metrics)
    point_latest(out_dir, run)
    return metrics


def new_run_dir(out_dir, sport: str) -> Path:
    """out_dir/runs/<UTC time>-<sport>: one folder per training run, never overwritten."""
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    run = Path(out_dir) / "runs" / f"{stamp}-{sport}"
    run.mkdir(parents=True, exist_ok=False)
    return run


def point_latest(out_dir, run: Path) -> None:
    """out_dir/latest -> the run folder, replaced atomically (a reader sees the old run or the new one)."""
    import os

    link, tmp = Path(out_dir) / "latest", Path(out_dir) / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(Path("runs") / run.name, tmp, target_is_directory=True)
    os.replace(tmp, link)


def run_dir(out_dir) -> Path:
    """The artefact folder a model directory means: itself when it holds a model (a run folder, or the
    layout before run folders), else the run its `latest` points at."""
    out = Path(out_dir)
    if (out / ARTEFACTS["ensemble"]).exists() or not (out / "latest").exists():
        return out
    return (out / "latest").resolve()


def _parse_date(date: str) -> pd.Timestamp:
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return pd.to_datetime(str(date), format=fmt).tz_localize("UTC")
        except ValueError:
            continue
    raise ValueError(f"date: expected YYYYMMDD or YYYY-MM-DD, got {date!r}")


def predict(out_dir, data_dir, date: str | None = None, min_odds=100, max_odds=None) -> pd.DataFrame:
    """Priced predictions for the eligible underdogs of one date (default: the latest date in the file).

    All eligible rows come back, sorted by edge; `recommended` marks edge >= min_edge (Kelly is 0 otherwise).
    """
    ens = UnderdogEnsemble.load(out_dir)
    cfg = ens.config
    if min_odds is None or not np.isfinite(float(min_odds)) or float(min_odds) < 100:
        raise ValueError(f"min_odds: must be >= 100 (an underdog price), got {min_odds!r}")
    if max_odds is not None and float(max_odds) < float(min_odds):
        raise ValueError(f"max_odds: {max_odds!r} is below min_odds {min_odds!r}")
    frame = _underdog_frame(data_dir, cfg)
    day = frame["date"].max() if date is None else _parse_date(date)
    sel = (frame["date"] == day) & frame["eligible"] & (frame["tier"] != "") & (frame["american_odds"] >= float(min_odds))
    if max_odds is not None:
        sel &= frame["american_odds"] <= float(max_odds)
    rows = frame.loc[sel.to_numpy()]
    if rows.empty:
        out = pd.DataFrame(columns=PREDICTION_COLUMNS)
    else:
        comp = ens.predict_components(rows)
        priced = price_bets(comp["blend"], rows["market_prob"], rows["decimal_odds"], cfg)
        out = pd.DataFrame({c: rows[c].to_numpy() for c in ("date", "game_id", "team", "opponent", "side", "tier",
                                                               "american_odds", "decimal_odds")})
        out["model_prob"], out["base_prob"], out["market_model_prob"] = comp["blend"], comp["base"], comp["market"]
        out["market_prob"] = rows["market_prob"].to_numpy()
        for c in priced.columns:
            out[c] = priced[c].to_numpy()
        out = out.sort_values("edge", ascending=False, kind="mergesort").reset_index(drop=True)[PREDICTION_COLUMNS]
    out.attrs.update({"date": str(day.date()), "sport": cfg.sport, "n_underdogs_on_date": int((frame["date"] == day).sum()),
                      "n_ineligible_on_date": int(((frame["date"] == day) & ~frame["eligible"]).sum()),
                      "summary": predict_summary(out, cfg)})
    return out


def predict_summary(picks: pd.DataFrame, cfg: UnderdogConfig) -> dict:
    """The slate at a glance: games priced, bets recommended, their total EV per stake and mean edge."""
    rec = picks[picks["recommended"].astype(bool)] if len(picks) else picks
    return {"games": int(len(picks)), "recommended": int(len(rec)),
            "total_ev_per_stake": float(rec["ev_per_10"].sum()) if len(rec) else 0.0, "ev_stake": cfg.ev_stake,
            "mean_edge_recommended": float(rec["edge"].mean()) if len(rec) else None,
            "mean_edge_all": float(picks["edge"].mean()) if len(picks) else None,
            "by_confidence": {str(k): int(v) for k, v in rec["confidence"].value_counts().items()} if len(rec) else {},
            "total_kelly_fraction": float(rec["kelly"].sum()) if len(rec) else 0.0}


def _out_of_sample(out_dir, data_dir, seasons, tiers, allow_earlier: bool = False) -> tuple[UnderdogEnsemble, pd.DataFrame]:
    """The games a trained model may be evaluated on: those after its training window, and, when
    `allow_earlier`, those before it. Games inside the window are in-sample and never evaluated.
    attrs say what was left out and why, and `empty_reason` why nothing is left, if so."""
    ens = UnderdogEnsemble.load(out_dir)
    frame = _select(_underdog_frame(data_dir, ens.config), seasons, tiers, ens.config)
    rows = _trainable(frame)
    train_start = pd.Timestamp(ens.meta["train_from"], tz="UTC")
    train_end = pd.Timestamp(ens.meta["train_end_ns"], tz="UTC")
    window = f"{ens.meta['train_from']} to {ens.meta['train_to']}"
    after = (rows["date"] > train_end).to_numpy()
    before = (rows["date"] < train_start).to_numpy()
    if before.any() and seasons is not None and not allow_earlier:
        early = sorted(int(s) for s in rows.loc[before, "season"].unique())
        raise ValueError(f"seasons: {int(before.sum())} games of season(s) {early} come before the model's training "
                         f"window ({window}); ask for them with --allow-earlier (allow_earlier), knowing the model "
                         f"was fitted on later seasons")
    keep = after | (before & allow_earlier)
    oos = rows.loc[keep].sort_values(["date", "game_id"], kind="mergesort").reset_index(drop=True)
    inside = ~after & ~before
    n_before, n_after = int((before & keep).sum()), int(after.sum())
    evaluation = ("before and after training" if n_before and n_after else
                  "before training" if n_before else "after training")
    oos.attrs.update({"n_in_sample_excluded": int(inside.sum()), "n_before_training": n_before,
                      "n_after_training": n_after, "n_before_excluded": int((before & ~keep).sum()),
                      "n_ineligible_excluded": int((~frame["eligible"]).sum()), "train_from": ens.meta["train_from"],
                      "train_to": ens.meta["train_to"], "evaluation": evaluation})
    if n_before:
        oos.attrs["note"] = (f"{n_before} games precede the training window ({window}): out of sample, but not a "
                             f"forward test, as the model was fitted on later seasons")
    if oos.empty:
        asked = f"season(s) {sorted(int(s) for s in seasons)}" if seasons is not None else "the data"
        if len(rows) == 0:
            reason = f"{asked} hold no eligible decided underdog games{' of tiers ' + str(tiers) if tiers else ''}"
        elif before.any() and not allow_earlier:
            reason = (f"all {len(rows)} games of {asked} outside the training window ({window}) come before it; "
                      f"ask for them with --allow-earlier")
        else:
            reason = f"all {len(rows)} games of {asked} fall inside the training window ({window}): in-sample"
        oos.attrs["empty_reason"] = reason
    return ens, oos


def backtest_opportunities(out_dir, data_dir, seasons=None, tiers=None, allow_earlier: bool = False) -> pd.DataFrame:
    """Out-of-sample bet opportunities for the backtest engine: games after the model's training window, and
    with `allow_earlier` those before it (named seasons before the window are an error without it).

    Games inside the training window are left out (they would be look-ahead), counted in
    attrs["n_in_sample_excluded"]; ineligible rows are counted in attrs["n_ineligible_excluded"];
    attrs["empty_reason"] says why there is nothing to bet on, when so.
    """
    ens, rows = _out_of_sample(out_dir, data_dir, seasons, tiers, allow_earlier)
    parts = ens.predict_components(rows) if len(rows) else {k: np.empty(0) for k in ("base", "market", "blend")}
    p = parts["blend"]
    # The two component probabilities travel along so a sweep can tune the blend weight without refitting.
    out = pd.DataFrame({"base_prob": parts["base"], "market_model_prob": parts["market"],"date": rows["date"], "game_id": rows["game_id"], "side": rows["side"], "team": rows["team"],
                        "decimal_odds": rows["decimal_odds"], "model_prob": p, "won": rows["won"], "confidence": p,
                        "closing_decimal_odds": rows["decimal_odds"], "market_prob": rows["market_prob"],
                        "tier": rows["tier"], "american_odds": rows["american_odds"]})[OPPORTUNITY_COLUMNS]
    out.attrs.update(rows.attrs)
    return out


def compare(out_dir, data_dir, seasons=None, allow_earlier: bool = False) -> dict:
    """Underdog model vs the general logistic_l2 (trained on all games in the same window) on the same games."""
    from edgeray.sports.features import build_features
    from edgeray.sports.models import decided_games, make_model

    ens, rows = _out_of_sample(out_dir, data_dir, seasons, None, allow_earlier)
    if rows.empty:
        raise ValueError(f"seasons: nothing to compare on: {rows.attrs['empty_reason']}")
    cfg = ens.config
    games = load_sport(cfg.sport, data_dir)
    feats = build_features(games, dict(cfg.standard_features) or None)
    lo = pd.Timestamp(ens.meta["train_from"], tz="UTC")
    hi = pd.Timestamp(ens.meta["train_end_ns"], tz="UTC")
    general = make_model("statistical", cfg.sport, "logistic_l2", dict(cfg.general_model))
    general.fit(decided_games(feats.loc[(feats["date"] >= lo) & (feats["date"] <= hi)]))
    by_id = feats.set_index("game_id").loc[rows["game_id"]]
    p_home = general.predict_proba(by_id.reset_index())
    p_general = np.where(rows["side"].to_numpy() == "home", p_home, 1.0 - p_home)
    y, market, dec = rows["won"].to_numpy(float), rows["market_prob"].to_numpy(float), rows["decimal_odds"].to_numpy(float)
    report = {"n": int(len(rows)), "from": str(rows["date"].min().date()), "to": str(rows["date"].max().date()),
              "min_edge": cfg.min_edge, "evaluation": rows.attrs["evaluation"]}
    if "note" in rows.attrs:
        report["note"] = rows.attrs["note"]
    for name, p in (("underdog", ens.predict_proba(rows)), ("general", p_general), ("market", market)):
        report[name] = _scores(y, p, cfg.ece_bins)
        report[name]["flat_bets_at_min_edge"] = _flat_roi(y, dec, (p - market) >= cfg.min_edge)
    report["underdog_beats_general_log_loss"] = report["underdog"]["log_loss"] < report["general"]["log_loss"]
    report["underdog_beats_general_brier"] = report["underdog"]["brier"] < report["general"]["brier"]
    return report
