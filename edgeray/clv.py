"""Closing line value, measured without the bookmaker's margin, and where an edge is measured (issue 15).

Definitions, per bet on one side of a two-way market (all arrays are per bet, decimal odds):
- Margin-free CLV (probability points) = 100 * (q_close - q_bet), where q_bet is the bet side's margin-free
  probability in the book the bet was struck in (both sides' prices at bet time) and q_close the same in the
  closing book; the margin is removed with `edgeray.odds.remove_margin(probs, method)`, method named in every
  report (default multiplicative). Positive: the market moved towards the side bet after the bet.
- Price CLV (percent of odds) = 100 * (decimal_odds / closing_decimal_odds - 1): how much better the price taken
  was than the closing price of the same side. It needs only this side's prices, and it still carries the margin.
- Raw-price CLV (points) = 100 * (1/closing - 1/decimal_odds): the old figure. It includes the margin (a book
  whose margin shrinks towards the close reads as negative CLV though nothing moved), so it is kept only as a
  labelled extra (`clv_raw_points_mean`).

A bet priced at the close has CLV 0 by construction under every definition.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from edgeray.odds import MARGIN_METHODS, remove_margin

DEFAULT_METHOD = "multiplicative"
_EPS = 1e-15


def check_method(method: str) -> str:
    if method not in MARGIN_METHODS:
        raise ValueError(f"clv_method: {method!r} is not a margin-removal method; choose one of "
                         f"{sorted(MARGIN_METHODS)}")
    return method


def fair_prob(decimal_odds, other_decimal_odds, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Margin-free probability of the first side of each two-way book (NaN where either price is unknown)."""
    check_method(method)
    d = np.atleast_1d(np.asarray(decimal_odds, dtype=float))
    o = np.atleast_1d(np.asarray(other_decimal_odds, dtype=float))
    out = np.full(len(d), np.nan)
    ok = np.isfinite(d) & np.isfinite(o) & (d > 1.0) & (o > 1.0)
    if ok.any():
        out[ok] = remove_margin(np.column_stack([1.0 / d[ok], 1.0 / o[ok]]), method)[:, 0]
    return out


def clv_points(decimal_odds, other_decimal_odds, closing_decimal_odds, closing_other_decimal_odds,
               method: str = DEFAULT_METHOD) -> np.ndarray:
    """Margin-free CLV in probability points: 100 * (close's fair prob - bet price's fair prob) of the side bet."""
    return 100.0 * (fair_prob(closing_decimal_odds, closing_other_decimal_odds, method)
                    - fair_prob(decimal_odds, other_decimal_odds, method))


def price_clv_pct(decimal_odds, closing_decimal_odds) -> np.ndarray:
    """Price CLV in percent of odds: 100 * (odds taken / closing odds - 1)."""
    d = np.asarray(decimal_odds, dtype=float)
    c = np.asarray(closing_decimal_odds, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * (d / c - 1.0)


def raw_clv_points(decimal_odds, closing_decimal_odds) -> np.ndarray:
    """The raw-price figure 100 * (1/closing - 1/odds): it includes the bookmaker's margin."""
    d = np.asarray(decimal_odds, dtype=float)
    c = np.asarray(closing_decimal_odds, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * (1.0 / c - 1.0 / d)


def date_clusters(dates) -> np.ndarray:
    """0-based code per row of its date (rows in any order), for the bootstrap over dates."""
    days = pd.to_datetime(pd.Series(np.asarray(dates)), utc=True).dt.floor("D").to_numpy()
    return pd.factorize(days, sort=True)[0].astype(np.int64)


def forecast_comparison(won, forecasts: dict[str, np.ndarray], dates, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Log loss and Brier of each forecast of the same outcomes, each with a 95% bootstrap CI that resamples whole
    dates, plus each forecast's log loss minus the first one's with its CI (negative: that forecast did better).
    Rows where any forecast is unknown are left out of all (`n`)."""
    from edgeray.backtest.metrics import _bootstrap_counts, _ci

    y = np.asarray(won, dtype=float)
    probs = {k: np.asarray(v, dtype=float) for k, v in forecasts.items()}
    ok = np.isfinite(y)
    for p in probs.values():
        ok &= np.isfinite(p)
    y = y[ok]
    cluster = date_clusters(np.asarray(dates)[ok]) if ok.any() else np.zeros(0, dtype=np.int64)
    counts = _bootstrap_counts(cluster, n_boot, seed)
    n_cl = int(cluster.max()) + 1 if len(cluster) else 0
    per_date_n = np.bincount(cluster, minlength=n_cl).astype(float)
    boot_n = counts @ per_date_n if len(cluster) else np.zeros(0)
    out: dict = {"n": int(ok.sum()), "dates": n_cl, "bootstrap": {"n_boot": int(n_boot), "seed": int(seed),
                                                                   "resampled_unit": "date",
                                                                   "interval": "95% percentile"}}
    losses = {}
    for name, p in probs.items():
        pc = np.clip(p[ok], _EPS, 1 - _EPS)
        ll = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
        br = (pc - y) ** 2
        losses[name] = ll
        row = {}
        for key, v in (("log_loss", ll), ("brier", br)):
            row[key] = float(v.mean()) if len(v) else float("nan")
            with np.errstate(invalid="ignore", divide="ignore"):
                row[f"{key}_ci95"] = list(_ci(counts @ np.bincount(cluster, v, n_cl) / boot_n)) if len(v) else \
                    [float("nan")] * 2
        out[name] = row
    names = list(probs)
    for name in names[1:]:
        d = losses[name] - losses[names[0]]
        with np.errstate(invalid="ignore", divide="ignore"):
            ci = list(_ci(counts @ np.bincount(cluster, d, n_cl) / boot_n)) if len(d) else [float("nan")] * 2
        out[f"{name}_minus_{names[0]}_log_loss"] = {"mean": float(d.mean()) if len(d) else float("nan"), "ci95": ci}
    return out


def bet_clv_columns(bets: pd.DataFrame, method: str = DEFAULT_METHOD) -> dict[str, np.ndarray]:
    """Per-bet CLV columns of an opportunities/bets frame: clv_points (margin-free, NaN without both sides' bet-time
    and closing prices), clv_price_pct and clv_raw_points (NaN without a closing price)."""
    n = len(bets)

    def col(name: str) -> np.ndarray:
        return bets[name].to_numpy(dtype=float) if name in bets.columns else np.full(n, np.nan)

    odds, closing = col("decimal_odds"), col("closing_decimal_odds")
    return {"clv_points": clv_points(odds, col("other_decimal_odds"), closing, col("closing_other_decimal_odds"),
                                     method),
            "clv_price_pct": price_clv_pct(odds, closing), "clv_raw_points": raw_clv_points(odds, closing)}
