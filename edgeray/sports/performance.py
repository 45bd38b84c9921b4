"""Performance of registered sport models: classification metrics, betting figures, and the matrix.

Betting rule (flat stakes): bet the home side when the model's P(home) beats the margin-free market
probability by at least `min_edge`, the away side when the model's P(away) beats the market's P(away)
by at least `min_edge`; settle at the closing decimal odds. Games without a usable market (NaN market
probability or odds) are never bet and are counted in `n_no_market`; ties (NaN home_win) are left out
of every figure, as the contract says, and counted in `n_ties`.

`PerformanceMatrix.score` writes these figures into the registry under metrics["performance"]; the
matrix reads every record, preferring metrics["performance"], then the contract's `evaluate` output
(metrics["model"] / metrics["market"]), then top-level scalars.
"""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from sklearn import metrics as skm

from edgeray.sports.registry import FAMILIES, ModelRegistry, check_family, check_sport

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "auc", "log_loss", "brier", "confidence",
                          "n_predictions")
BETTING_METRICS = ("roi", "profit_loss", "sharpe", "n_bets", "hit_rate")
MARKET_METRICS = ("market_log_loss", "market_brier", "market_accuracy", "market_auc")
METRICS = CLASSIFICATION_METRICS + BETTING_METRICS + MARKET_METRICS
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "market_log_loss", "market_brier"})
REQUIRED_COLUMNS = ("home_win", "market_prob_home", "home_dec", "away_dec")
_IDENTITY = ("model_id", "sport", "family", "name", "version", "created_at")
_EPS = 1e-15


def check_metric(metric: Any) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric: unknown metric {metric!r}; expected one of {list(METRICS)}")
    return metric


def _none_if_nan(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _check_probabilities(p: Any, field: str, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.shape != (n,):
        raise ValueError(f"{field}: expected {n} probabilities, got shape {p.shape}")
    bad = ~(np.isfinite(p) & (p >= 0.0) & (p <= 1.0))
    if bad.any():
        raise ValueError(f"{field}: probabilities must be finite and in [0, 1], got {p[bad][:5].tolist()}")
    return p


def prediction_metrics(y_true: Any, p_home: Any, threshold: float = 0.5) -> dict:
    """Accuracy/precision/recall/F1 at `threshold` on P(home win), plus AUC, log loss and Brier (sklearn)."""
    y = np.asarray(y_true, dtype=float)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"home_win: outcomes must be 0 or 1, got {y[bad][:5].tolist()}")
    p = _check_probabilities(p_home, "p_home", len(y))
    if len(y) == 0:
        raise ValueError("home_win: no decided games to score")
    picks = (p >= threshold).astype(int)
    y_int = y.astype(int)
    both_classes = len(np.unique(y_int)) == 2
    return {
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y_int, picks)),
        "precision": float(skm.precision_score(y_int, picks, zero_division=0)),
        "recall": float(skm.recall_score(y_int, picks, zero_division=0)),
        "f1": float(skm.f1_score(y_int, picks, zero_division=0)),
        "auc": float(skm.roc_auc_score(y_int, p)) if both_classes else None,
        "log_loss": float(skm.log_loss(y_int, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y_int, p)),
        # How sure the model is of its picks: the mean probability it gives the side it picks.
        "confidence": float(np.maximum(p, 1.0 - p).mean()),
        "n_predictions": int(len(y)),
    }


def significance_vs_market(y: Any, p_model: Any, p_market: Any, dates: Any = None, n_boot: int = 2000,
                           seed: int = 0) -> dict:
    """Is the model's per-game log loss different from the market's on the same games?

    d_i = logloss_model_i - logloss_market_i (negative: the model did better). The p-value is the
    Diebold-Mariano test (two-sided, normal approximation; games treated as independent draws); the 95% CI
    of mean(d) resamples whole dates (games on one date share news and conditions), so it is wider than an
    iid CI when same-day results move together. `model_better` only when the whole CI is below zero."""
    y = np.asarray(y, dtype=float)
    pm = np.clip(np.asarray(p_model, dtype=float), _EPS, 1 - _EPS)
    pk = np.clip(np.asarray(p_market, dtype=float), _EPS, 1 - _EPS)
    if not (len(y) == len(pm) == len(pk)):
        raise ValueError(f"y/p_model/p_market: lengths differ ({len(y)}, {len(pm)}, {len(pk)})")
    n = len(y)
    method = ("Diebold-Mariano (two-sided) on per-game log-loss differences, model minus market; 95% CI by "
              "bootstrap over dates")
    if n < 2:
        return {"n": n, "mean_diff": None, "ci95": None, "p_value": None, "model_better": False, "method": method}
    ll = lambda p: -(y * np.log(p) + (1 - y) * np.log(1 - p))  # noqa: E731
    d = ll(pm) - ll(pk)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    p_value = float(2 * scipy_stats.norm.sf(abs(mean) / (sd / np.sqrt(n)))) if sd > 0 else (0.0 if mean != 0 else 1.0)
    groups = pd.factorize(pd.Series(dates).to_numpy())[0] if dates is not None else np.arange(n)
    sums, counts = np.bincount(groups, weights=d), np.bincount(groups).astype(float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    boot = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    lo, hi = (float(v) for v in np.quantile(boot, [0.025, 0.975]))
    return {"n": n, "mean_diff": mean, "ci95": [lo, hi], "p_value": p_value, "model_better": bool(hi < 0),
            "method": method}


# The specification's performance thresholds (training-queue spec, "Performance Thresholds").
THRESHOLDS = {"min_accuracy": 0.55, "target_accuracy": 0.70, "min_roi": 0.05, "target_roi": 0.15}


def threshold_flags(accuracy: float | None, roi: float | None) -> dict:
    """Each threshold met (True/False), or None where the figure is unknown."""
    def met(value, bar):
        return None if value is None or not np.isfinite(value) else bool(value >= bar)
    return {"meets_min_accuracy": met(accuracy, THRESHOLDS["min_accuracy"]),
            "meets_target_accuracy": met(accuracy, THRESHOLDS["target_accuracy"]),
            "meets_min_roi": met(roi, THRESHOLDS["min_roi"]), "meets_target_roi": met(roi, THRESHOLDS["target_roi"])}


def betting_metrics(p_home: Any, market_prob_home: Any, home_dec: Any, away_dec: Any, home_win: Any,
                    min_edge: float = 0.02, stake: float = 1.0) -> dict:
    """Flat-stake value betting against the margin-free market; ties must already be removed."""
    if not (np.isfinite(min_edge) and min_edge >= 0):
        raise ValueError(f"min_edge: must be a finite number >= 0, got {min_edge!r}")
    if not (np.isfinite(stake) and stake > 0):
        raise ValueError(f"stake: must be a finite number > 0, got {stake!r}")
    y = np.asarray(home_win, dtype=float)
    n = len(y)
    if (~np.isin(y, (0.0, 1.0))).any():
        raise ValueError(f"home_win: outcomes must be 0 or 1, got {y[~np.isin(y, (0.0, 1.0))][:5].tolist()}")
    p = _check_probabilities(p_home, "p_home", n)
    market = np.asarray(market_prob_home, dtype=float)
    h_dec, a_dec = np.asarray(home_dec, dtype=float), np.asarray(away_dec, dtype=float)
    usable = np.isfinite(market) & np.isfinite(h_dec) & np.isfinite(a_dec)
    edge = np.where(usable, p - np.where(usable, market, 0.0), 0.0)
    # edge > 0 / < 0 as well as |edge| >= min_edge, so min_edge = 0 never bets both sides of a game.
    bet_home = usable & (edge > 0) & (edge >= min_edge)
    bet_away = usable & (edge < 0) & (-edge >= min_edge)
    bet = bet_home | bet_away
    odds = np.where(bet_home, h_dec, a_dec)
    bad_odds = bet & ~(odds > 1.0)
    if bad_odds.any():
        raise ValueError(f"home_dec/away_dec: decimal odds must be > 1.0 where a bet is placed, "
                         f"got {odds[bad_odds][:5].tolist()}")
    won = np.where(bet_home, y == 1.0, y == 0.0)
    returns = np.where(won, odds - 1.0, -1.0)[bet]  # per unit staked
    n_bets = int(bet.sum())
    staked = stake * n_bets
    profit = float(stake * returns.sum())
    sd = float(returns.std(ddof=1)) if n_bets >= 2 else np.nan
    return {
        "n_bets": n_bets, "n_home_bets": int(bet_home.sum()), "n_away_bets": int(bet_away.sum()),
        "n_no_market": int((~usable).sum()), "staked": float(staked), "profit_loss": profit,
        "roi": profit / staked if n_bets else None,
        "hit_rate": float(won[bet].mean()) if n_bets else None,
        # Sharpe of per-bet returns (not annualised): mean / sample std.
        "sharpe": _none_if_nan(returns.mean() / sd) if n_bets >= 2 and sd > 0 else None,
        "min_edge": float(min_edge), "stake": float(stake),
    }


def frame_performance(p_home: Any, frame: pd.DataFrame, min_edge: float = 0.02, stake: float = 1.0) -> dict:
    """All figures for predictions on `frame` (one probability per row, ties included and then left out)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing columns {missing}")
    p = _check_probabilities(p_home, "p_home", len(frame))
    decided = frame["home_win"].notna().to_numpy()
    games = frame.loc[decided]
    p = p[decided]
    y = games["home_win"].to_numpy(dtype=float)
    out = prediction_metrics(y, p)
    out["n_ties"] = int((~decided).sum())
    market = games["market_prob_home"].to_numpy(dtype=float)
    has_market = np.isfinite(market)
    if has_market.any():
        market_figures = prediction_metrics(y[has_market], market[has_market])
        out.update({f"market_{k}": market_figures[k] for k in ("log_loss", "brier", "accuracy", "auc")})
        # Like for like: the model on the same games the market priced.
        model_same = prediction_metrics(y[has_market], p[has_market])
        out["beats_market_log_loss"] = bool(model_same["log_loss"] < market_figures["log_loss"])
        out["beats_market_brier"] = bool(model_same["brier"] < market_figures["brier"])
    out.update(betting_metrics(p, market, games["home_dec"], games["away_dec"], y, min_edge, stake))
    return out


def model_performance(model: Any, frame: pd.DataFrame, min_edge: float = 0.02, stake: float = 1.0) -> dict:
    return frame_performance(model.predict_proba(frame), frame, min_edge, stake)


def _flat_metrics(metrics: dict) -> dict:
    flat: dict = {}
    if isinstance(metrics.get("market"), dict):
        flat.update({f"market_{k}": v for k, v in metrics["market"].items()})
    if isinstance(metrics.get("model"), dict):
        flat.update(metrics["model"])
    flat.update({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))})
    if isinstance(metrics.get("performance"), dict):
        flat.update(metrics["performance"])
    return flat


class PerformanceMatrix:
    """Comparison tables over every model in a registry."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def score(self, model_id: int, frame: pd.DataFrame, min_edge: float = 0.02, stake: float = 1.0,
              data: dict | None = None) -> dict:
        """Load the registered model, score it on `frame`, store the figures in its record; returns them."""
        model = self.registry.load(model_id)
        figures = model_performance(model, frame, min_edge, stake)
        if data:
            figures = {**figures, **{f"scored_{k}": v for k, v in data.items()}}
        self.registry.update_metrics(model_id, {"performance": figures})
        return figures

    def matrix(self, sport: str | None = None, days_back: float | None = None, sort_by: str | None = None,
               ascending: bool | None = None) -> pd.DataFrame:
        """One row per registered model, a column per metric (NaN where unknown); sorted by `sort_by` if given."""
        if days_back is not None and not (isinstance(days_back, (int, float)) and np.isfinite(days_back)
                                          and days_back > 0):
            raise ValueError(f"days_back: must be a positive number of days, got {days_back!r}")
        records = self.registry.list(sport=sport)
        if days_back is not None:
            cutoff = pd.Timestamp(self.registry.clock() - timedelta(days=days_back))
            records = [r for r in records if pd.Timestamp(r["created_at"]) >= cutoff]
        rows = []
        for r in records:
            flat = _flat_metrics(r["metrics"])
            row = {k: r[k] for k in _IDENTITY}
            row.update({m: flat.get(m) for m in METRICS})
            row["beats_market_log_loss"] = flat.get("beats_market_log_loss")
            sig = (r["metrics"].get("evaluation") or r["metrics"]).get("significance") or {}
            row["p_value_vs_market"] = sig.get("p_value")
            row["log_loss_diff_ci95"] = sig.get("ci95")
            if row.get("n_predictions") is None:  # records written before the count was kept
                row["n_predictions"] = flat.get("n")
            row.update(threshold_flags(row.get("accuracy"), row.get("roi")))
            row["tags"] = ",".join(r["tags"])
            row["params"] = json.dumps(r["params"], sort_keys=True)
            rows.append(row)
        columns = [*_IDENTITY, *METRICS, "beats_market_log_loss", "p_value_vs_market", "log_loss_diff_ci95",
                   *threshold_flags(None, None), "tags", "params"]
        table = pd.DataFrame(rows, columns=columns)
        table[list(METRICS)] = table[list(METRICS)].astype(float)  # None -> NaN
        table["created_at"] = pd.to_datetime(table["created_at"], utc=True, format="ISO8601")
        if sort_by is not None:
            table = self._sorted(table, sort_by, ascending)
        return table.reset_index(drop=True)

    def summary(self, table: pd.DataFrame) -> dict:
        """Totals over a matrix: models per sport and family, the best model by log loss and by ROI, how many
        beat the market and meet each threshold (the specification's `{matrix, summary}` response)."""
        def best(metric: str) -> dict | None:
            known = table.dropna(subset=[metric])
            if known.empty:
                return None
            row = self._sorted(known, metric).iloc[0]
            return {"model_id": int(row["model_id"]), "sport": str(row["sport"]), "family": str(row["family"]),
                    "name": str(row["name"]), metric: float(row[metric])}
        flags = list(threshold_flags(None, None))
        def counts(column: str) -> dict:
            return {str(k): int(v) for k, v in table[column].value_counts().items()}
        return {"models": int(len(table)), "by_sport": counts("sport"), "by_family": counts("family"),
                "best_log_loss": best("log_loss"), "best_roi": best("roi"),
                "beat_market_log_loss": int((table["beats_market_log_loss"] == True).sum()),  # noqa: E712 - None stays out
                "thresholds": dict(THRESHOLDS), **{f: int((table[f] == True).sum()) for f in flags}}  # noqa: E712

    @staticmethod
    def _sorted(table: pd.DataFrame, metric: str, ascending: bool | None = None) -> pd.DataFrame:
        check_metric(metric)
        if ascending is None:
            ascending = metric in LOWER_IS_BETTER
        return table.sort_values([metric, "model_id"], ascending=[ascending, True], na_position="last",
                                 kind="mergesort")

    def leaderboard(self, sport: str, metric: str = "log_loss", latest_only: bool = False,
                    top: int | None = None) -> pd.DataFrame:
        """Best first for `metric` within one sport; `latest_only` keeps each model line's newest version."""
        check_sport(sport)
        check_metric(metric)
        table = self.matrix(sport=sport)
        if latest_only and len(table):
            newest = table.groupby(["family", "name"])["version"].transform("max")
            table = table[table["version"] == newest]
        table = self._sorted(table, metric).reset_index(drop=True)
        table.insert(0, "rank", np.arange(1, len(table) + 1))
        return table if top is None else table.head(int(top))

    def by_model_type(self, sport: str | None = None) -> pd.DataFrame:
        """Per family: how many models, the mean of every metric, the best log loss and the share beating the market."""
        table = self.matrix(sport=sport)
        grouped = table.groupby("family")
        out = grouped[list(METRICS)].mean()
        out.insert(0, "n_models", grouped.size())
        out["best_log_loss"] = grouped["log_loss"].min()
        beats = table["beats_market_log_loss"].map({True: 1.0, False: 0.0})
        out["share_beating_market"] = beats.groupby(table["family"]).mean()
        return out.reindex([f for f in FAMILIES if f in out.index]).reset_index()

    def parameter_effectiveness(self, family: str, metric: str = "log_loss", sport: str | None = None) -> pd.DataFrame:
        """For each hyper-parameter and each value it took: how many models, mean/best/worst `metric`."""
        check_family(family)
        check_metric(metric)
        records = self.registry.list(sport=sport, family=family)
        long_rows = []
        for r in records:
            value = _flat_metrics(r["metrics"]).get(metric)
            for param, setting in r["params"].items():
                long_rows.append({"param": param,
                                  "value": setting if isinstance(setting, (int, float, str, bool)) or setting is None
                                  else json.dumps(setting, sort_keys=True),
                                  "metric_value": np.nan if value is None else float(value)})
        columns = ["param", "value", "n_models", f"mean_{metric}", f"best_{metric}", f"worst_{metric}"]
        if not long_rows:
            return pd.DataFrame(columns=columns)
        long = pd.DataFrame(long_rows)
        long["value_key"] = long["value"].map(lambda v: json.dumps(v, sort_keys=True))  # groupable across types
        best, worst = ("min", "max") if metric in LOWER_IS_BETTER else ("max", "min")
        stats = long.groupby(["param", "value_key"], sort=True).agg(
            value=("value", "first"), n_models=("metric_value", "size"), mean=("metric_value", "mean"),
            best=("metric_value", best), worst=("metric_value", worst)).reset_index()
        stats.columns = ["param", "value_key", "value", "n_models", f"mean_{metric}", f"best_{metric}",
                         f"worst_{metric}"]
        return stats[columns]

    def trending(self, metric: str = "log_loss", window: int = 3, sport: str | None = None) -> pd.DataFrame:
        """Each model line's metric over its versions: a trailing rolling mean and the change from the previous
        version; `improving` is True where the change goes the better way for this metric."""
        check_metric(metric)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window: must be an integer >= 1, got {window!r}")
        table = self.matrix(sport=sport).sort_values(["sport", "family", "name", "version"], kind="mergesort")
        cols = ["sport", "family", "name", "version", "model_id", "created_at", metric]
        out = table[cols].reset_index(drop=True)
        by_line = out.groupby(["sport", "family", "name"], sort=False)[metric]
        out["rolling_mean"] = by_line.transform(lambda s: s.rolling(window, min_periods=1).mean())
        out["change"] = by_line.diff()
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        out["improving"] = (sign * out["change"]).gt(0).where(out["change"].notna())
        return out

    def compare(self, model_ids: Iterable[int]) -> pd.DataFrame:
        """Side by side: one row per requested model (in the order given), metrics and hyper-parameters."""
        ids = list(model_ids)
        if not ids:
            raise ValueError("model_ids: need at least one model id")
        table = self.matrix().set_index("model_id")
        unknown = [i for i in ids if i not in table.index]
        if unknown:
            raise ValueError(f"model_ids: unknown model ids {unknown}")
        out = table.loc[ids].drop(columns=["params"]).reset_index()
        params = pd.DataFrame([self.registry.get(i)["params"] for i in ids]).add_prefix("param_")
        return pd.concat([out, params], axis=1)
