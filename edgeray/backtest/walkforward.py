"""Walk-forward evaluation (expanding or rolling train windows, refit per fold) and a look-ahead leakage guard."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Fold:
    """Train on [train_start, train_end], test on [test_start, test_end] (inclusive, by date); train_end < test_start."""

    index: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def __post_init__(self):
        if not self.train_end < self.test_start:
            raise ValueError(f"fold {self.index}: train_end {self.train_end} must be before test_start {self.test_start}")

    def masks(self, dates: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        d = pd.to_datetime(dates, utc=True)
        train = ((d >= self.train_start) & (d <= self.train_end)).to_numpy()
        test = ((d >= self.test_start) & (d <= self.test_end)).to_numpy()
        return train, test

    def to_dict(self) -> dict:
        return {"index": self.index, **{k: getattr(self, k).isoformat() for k in
                                        ("train_start", "train_end", "test_start", "test_end")}}


def _utc(ts) -> pd.Timestamp:
    return pd.Timestamp(ts).tz_localize("UTC") if pd.Timestamp(ts).tzinfo is None else pd.Timestamp(ts).tz_convert("UTC")


def season_folds(frame: pd.DataFrame, *, season_col: str = "season", date_col: str = "date",
                 mode: Literal["expanding", "rolling"] = "expanding", min_train_seasons: int = 1,
                 train_seasons: int | None = None) -> list[Fold]:
    """One fold per season after the first `min_train_seasons`: test on that season, train on earlier seasons
    (all of them when expanding, the last `train_seasons` when rolling)."""
    if mode not in ("expanding", "rolling"):
        raise ValueError(f"mode must be 'expanding' or 'rolling', got {mode!r}")
    if min_train_seasons < 1:
        raise ValueError(f"min_train_seasons must be >= 1, got {min_train_seasons}")
    if mode == "rolling" and (train_seasons is None or train_seasons < 1):
        raise ValueError(f"train_seasons must be >= 1 for a rolling window, got {train_seasons}")
    for col in (season_col, date_col):
        if col not in frame.columns:
            raise ValueError(f"frame is missing column {col!r}")
    dates = pd.to_datetime(frame[date_col], utc=True)
    span = dates.groupby(frame[season_col].to_numpy()).agg(["min", "max"]).sort_index()
    seasons = list(span.index)
    folds = []
    for i in range(min_train_seasons, len(seasons)):
        first = 0 if mode == "expanding" else max(0, i - train_seasons)
        folds.append(Fold(len(folds), span["min"].iloc[first], span["max"].iloc[i - 1],
                          span["min"].iloc[i], span["max"].iloc[i]))
    return folds


def date_folds(dates, *, n_folds: int = 5, mode: Literal["expanding", "rolling"] = "expanding",
               min_train_fraction: float = 0.4, train_window_days: int | None = None, gap_days: int = 0) -> list[Fold]:
    """Split the distinct dates after the first `min_train_fraction` into `n_folds` consecutive test blocks.
    Training ends `gap_days` before each block (an embargo for features that span several days)."""
    if mode not in ("expanding", "rolling"):
        raise ValueError(f"mode must be 'expanding' or 'rolling', got {mode!r}")
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if not 0.0 < min_train_fraction < 1.0:
        raise ValueError(f"min_train_fraction must be in (0, 1), got {min_train_fraction}")
    if mode == "rolling" and (train_window_days is None or train_window_days < 1):
        raise ValueError(f"train_window_days must be >= 1 for a rolling window, got {train_window_days}")
    if gap_days < 0:
        raise ValueError(f"gap_days must be >= 0, got {gap_days}")
    unique = pd.DatetimeIndex(pd.to_datetime(pd.Series(dates), utc=True).unique()).sort_values()
    first_test = int(np.ceil(len(unique) * min_train_fraction))
    if len(unique) - first_test < n_folds:
        raise ValueError(f"n_folds={n_folds} needs more distinct dates than {len(unique)} with "
                         f"min_train_fraction={min_train_fraction}")
    blocks = np.array_split(np.arange(first_test, len(unique)), n_folds)
    folds = []
    for block in blocks:
        test_start, test_end = unique[block[0]], unique[block[-1]]
        train_end_limit = test_start - pd.Timedelta(days=gap_days)
        train_dates = unique[unique < train_end_limit]
        if mode == "rolling":
            train_dates = train_dates[train_dates > train_end_limit - pd.Timedelta(days=train_window_days)]
        if len(train_dates) == 0:
            raise ValueError(f"fold {len(folds)}: no training dates before {test_start} (gap_days={gap_days})")
        folds.append(Fold(len(folds), train_dates[0], train_dates[-1], test_start, test_end))
    return folds


@dataclass
class WalkForwardResult:
    predictions: pd.DataFrame  # the test rows of every fold with `fold` and the prediction column
    folds: list[Fold]
    fold_summary: pd.DataFrame = field(default_factory=pd.DataFrame)


def walk_forward(frame: pd.DataFrame, fit_predict: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray],
                 folds: list[Fold] | None = None, *, date_col: str = "date", result_cols: Sequence[str] = (),
                 prediction_col: str = "model_prob", **splitter_kwargs) -> WalkForwardResult:
    """Refit per fold: fit_predict(train_rows, test_rows) -> probabilities for test_rows. Test rows reach
    fit_predict without `result_cols`, so a model cannot read the answer. Without `folds`, `date_folds` is called
    with `splitter_kwargs` (or `season_folds` when `season_col` is among them)."""
    if date_col not in frame.columns:
        raise ValueError(f"frame is missing column {date_col!r}")
    if folds is None:
        if "season_col" in splitter_kwargs:
            folds = season_folds(frame, date_col=date_col, **splitter_kwargs)
        else:
            folds = date_folds(frame[date_col], **splitter_kwargs)
    if not folds:
        raise ValueError("folds: no folds to run (too few seasons or dates)")
    pieces, summary = [], []
    for fold in folds:
        train_mask, test_mask = fold.masks(frame[date_col])
        train, test = frame.loc[train_mask], frame.loc[test_mask]
        if len(train) == 0 or len(test) == 0:
            raise ValueError(f"fold {fold.index}: empty train ({len(train)}) or test ({len(test)}) rows")
        probs = np.asarray(fit_predict(train.copy(), test.drop(columns=list(result_cols)).copy()), dtype=float)
        if probs.shape != (len(test),):
            raise ValueError(f"fit_predict returned shape {probs.shape} for fold {fold.index}, expected ({len(test)},)")
        bad = ~((probs >= 0) & (probs <= 1))
        if bad.any():
            raise ValueError(f"fit_predict returned probabilities outside [0, 1] in fold {fold.index}: "
                             f"{probs[bad][:5].tolist()}")
        out = test.copy()
        out[prediction_col] = probs
        out["fold"] = fold.index
        pieces.append(out)
        summary.append({**fold.to_dict(), "train_rows": len(train), "test_rows": len(test)})
    return WalkForwardResult(pd.concat(pieces), list(folds), pd.DataFrame(summary))


@dataclass
class LeakageReport:
    findings: list[dict]

    @property
    def ok(self) -> bool:
        return not self.findings

    def leaky_features(self) -> set[str]:
        return {f["feature"] for f in self.findings}

    def raise_if_leaky(self) -> None:
        if self.findings:
            raise ValueError(f"look-ahead in features: {self.findings[:5]}")


@dataclass
class LeakageGuard:
    """Catches features that peek at results.

    1. Correlation: no pre-event signal in a liquid market explains the result almost perfectly (the closing line
       reaches |corr| ~ 0.35 with a game's result), so |corr(feature, same-row result)| > max_abs_corr is a leak.
    2. Perturbation (when `recompute` is given): shuffle the results of every row dated on or after a cut date, and
       separately drop every row after it, recompute the features, and require the features of rows dated on or
       before the cut to be unchanged. A feature that reads its own row's result or any later row fails this,
       however weak its correlation.
    """

    max_abs_corr: float = 0.9
    n_cuts: int = 3
    seed: int = 0
    atol: float = 1e-9

    def check_no_lookahead(self, feature_frame: pd.DataFrame, feature_cols: Sequence[str], date_col: str,
                           result_cols: Sequence[str], recompute: Callable[[pd.DataFrame], pd.DataFrame] | None = None
                           ) -> LeakageReport:
        for col in [*feature_cols, date_col, *result_cols]:
            if col not in feature_frame.columns:
                raise ValueError(f"feature_frame is missing column {col!r}")
        findings = []
        for res in result_cols:
            y = feature_frame[res].to_numpy(dtype=float)
            for feat in feature_cols:
                x = feature_frame[feat].to_numpy(dtype=float)
                ok = np.isfinite(x) & np.isfinite(y)
                if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
                    continue
                corr = float(np.corrcoef(x[ok], y[ok])[0, 1])
                if abs(corr) > self.max_abs_corr:
                    findings.append({"feature": feat, "check": "correlation", "result": res, "corr": corr})
        if recompute is not None:
            findings += self._perturbation(feature_frame, list(feature_cols), date_col, list(result_cols), recompute)
        return LeakageReport(findings)

    def _perturbation(self, frame, feature_cols, date_col, result_cols, recompute) -> list[dict]:
        rng = np.random.default_rng(self.seed)
        dates = pd.to_datetime(frame[date_col], utc=True)
        unique = np.sort(dates.unique())
        cuts = unique[np.linspace(len(unique) // 4, len(unique) - 2, self.n_cuts).astype(int)] if len(unique) > 4 else unique[:1]
        base = recompute(frame.copy())
        findings = {}
        for cut in cuts:
            keep = (dates <= cut).to_numpy()
            shuffled = frame.copy()
            later = (dates >= cut).to_numpy()
            for res in result_cols:
                values = shuffled.loc[later, res].to_numpy()
                shuffled.loc[later, res] = values[rng.permutation(len(values))]
            for check, variant in (("result_shuffle", shuffled), ("truncation", frame.loc[keep].copy())):
                redone = recompute(variant)
                for feat in feature_cols:
                    a = base.loc[keep, feat].to_numpy(dtype=float)
                    b = redone.loc[frame.index[keep], feat].to_numpy(dtype=float)
                    same = np.isclose(a, b, atol=self.atol, equal_nan=True)
                    if not same.all() and feat not in findings:
                        findings[feat] = {"feature": feat, "check": check, "cut": pd.Timestamp(cut).isoformat(),
                                          "rows_changed": int((~same).sum())}
        return list(findings.values())


def check_no_lookahead(feature_frame: pd.DataFrame, feature_cols: Sequence[str], date_col: str,
                       result_cols: Sequence[str], recompute: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                       **guard_kwargs) -> LeakageReport:
    return LeakageGuard(**guard_kwargs).check_no_lookahead(feature_frame, feature_cols, date_col, result_cols, recompute)
