"""Odds math: American <-> decimal <-> implied probability, and bookmaker margin removal.

Vectorised over numpy arrays; scalars work too. American odds strictly between -100 and +100
do not exist, and are reported as such rather than silently converted.
"""
from __future__ import annotations

import numpy as np


def is_valid_american(american) -> np.ndarray:
    a = np.asarray(american, dtype=float)
    return np.isfinite(a) & (np.abs(a) >= 100)


def american_to_decimal(american):
    a = np.asarray(american, dtype=float)
    if not np.all(is_valid_american(a)):
        bad = a[~is_valid_american(a)]
        raise ValueError(f"american odds must be <= -100 or >= +100, got {bad[:5].tolist()}")
    out = np.where(a > 0, 1.0 + a / 100.0, 1.0 + 100.0 / np.abs(a))
    return out if out.ndim else float(out)


def decimal_to_american(decimal):
    d = np.asarray(decimal, dtype=float)
    if not np.all(np.isfinite(d) & (d > 1.0)):
        raise ValueError(f"decimal odds must be > 1.0, got {d[~(d > 1.0)][:5].tolist()}")
    out = np.where(d >= 2.0, (d - 1.0) * 100.0, -100.0 / (d - 1.0))
    return out if out.ndim else float(out)


def implied_probability(decimal):
    d = np.asarray(decimal, dtype=float)
    out = 1.0 / d
    return out if out.ndim else float(out)


def remove_margin_multiplicative(prob_a, prob_b):
    """Scale a two-way book so the implied probabilities sum to one; returns (fair_a, fair_b, overround)."""
    pa_, pb_ = np.asarray(prob_a, dtype=float), np.asarray(prob_b, dtype=float)
    total = pa_ + pb_
    return pa_ / total, pb_ / total, total - 1.0


def _as_books(probs) -> tuple[np.ndarray, bool]:
    """Validate implied probabilities shaped (n, m) or (m,), m >= 2; returns a 2-D float copy and whether it was 1-D."""
    p = np.array(probs, dtype=float)
    one_row = p.ndim == 1
    p = np.atleast_2d(p)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs: expected shape (n, m) with m >= 2 outcomes, got shape {np.shape(probs)}")
    bad = ~(np.isfinite(p) & (p > 0) & (p < 1))
    if bad.any():
        raise ValueError(f"probs: implied probabilities must be finite and in (0, 1), got {p[bad][:5].tolist()}")
    return p, one_row


def _solve_unique_rows(p: np.ndarray, solve_row) -> np.ndarray:
    # brentq is scalar; real books repeat a lot (same prices), so solve once per distinct book and scatter back.
    uniq, inverse = np.unique(p, axis=0, return_inverse=True)
    roots = np.array([solve_row(row) for row in uniq], dtype=float)
    return roots[inverse.reshape(-1)]


def _power_k(row: np.ndarray) -> float:
    from scipy.optimize import brentq

    total = row.sum()
    if abs(total - 1.0) < 1e-15:
        return 1.0
    # sum p^k is strictly decreasing in k (every p < 1): k > 1 for an overround book, k < 1 for an underround one.
    lo, hi = (1.0, 2.0) if total > 1.0 else (0.5, 1.0)
    while np.sum(row ** hi) > 1.0:
        hi *= 2.0
    while np.sum(row ** lo) < 1.0:
        lo /= 2.0
    return brentq(lambda k: np.sum(row ** k) - 1.0, lo, hi, xtol=1e-14, rtol=1e-14)


def remove_margin_power(probs) -> np.ndarray:
    """Power method: fair p_i = pi_i ** k with k chosen so the book sums to one.

    probs: implied probabilities (1/decimal), shape (n, m) or (m,), m >= 2. Returns the same shape.
    Shifts more of the margin onto long shots than the multiplicative method does.
    """
    p, one_row = _as_books(probs)
    k = _solve_unique_rows(p, _power_k)
    fair = p ** k[:, None]
    return fair[0] if one_row else fair


def _shin_probs(p: np.ndarray, z: np.ndarray) -> np.ndarray:
    total = p.sum(axis=1, keepdims=True)
    z = z[:, None]
    return (np.sqrt(z ** 2 + 4.0 * (1.0 - z) * p ** 2 / total) - z) / (2.0 * (1.0 - z))


def _shin_z(row: np.ndarray) -> float:
    from scipy.optimize import brentq

    row2 = row[None, :]
    if abs(row.sum() - 1.0) < 1e-15:
        return 0.0
    excess = lambda z: _shin_probs(row2, np.array([z])).sum() - 1.0  # noqa: E731
    return brentq(excess, 0.0, 0.999, xtol=1e-15, rtol=1e-14)  # overround -> insider share z in (0, 1)


UNDERROUND_TOL = 1e-12  # a book summing to less than 1 by more than this is underround


def _refuse_underround(p: np.ndarray, method: str) -> None:
    """Shin's z is the share of insider money, in [0, 1): an underround book (sum < 1, e.g. best prices taken
    across books, or an exchange's back prices) would need z < 0, which the model has no meaning for."""
    total = p.sum(axis=1)
    bad = np.flatnonzero(total < 1.0 - UNDERROUND_TOL)
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"probs: book row {i} is underround (implied probabilities sum to {total[i]:.6f} < 1); "
                         f"{method} needs an overround book; use power, odds_ratio or multiplicative for it")


def remove_margin_shin(probs) -> np.ndarray:
    """Shin (1993) margin removal: fair p_i = (sqrt(z^2 + 4(1-z) pi_i^2 / S) - z) / (2(1-z)), S = sum pi.

    z (the share of insider money) has a closed form for two outcomes (Jullien & Salanie 1994):
    z = (S - 1)(D^2 - S) / (S (D^2 - 1)), D = pi_1 - pi_2; more outcomes solve sum p_i = 1 with brentq.
    probs: shape (n, m) or (m,), m >= 2. Returns the same shape.
    """
    p, one_row = _as_books(probs)
    _refuse_underround(p, "shin")
    if p.shape[1] == 2:
        total, diff = p.sum(axis=1), p[:, 0] - p[:, 1]
        z = (total - 1.0) * (diff ** 2 - total) / (total * (diff ** 2 - 1.0))
    else:
        z = _solve_unique_rows(p, _shin_z)
    fair = _shin_probs(p, z)
    fair = fair / fair.sum(axis=1, keepdims=True)  # removes float round-off only; the sum is 1 by construction
    return fair[0] if one_row else fair


def shin_z(probs) -> np.ndarray:
    """Shin's z for each book (rows of implied probabilities), solved numerically for any m >= 2."""
    p, one_row = _as_books(probs)
    _refuse_underround(p, "shin_z")
    z = _solve_unique_rows(p, _shin_z)
    return z[0] if one_row else z


def remove_margin_additive(probs) -> np.ndarray:
    """Additive (equal margin): fair p_i = pi_i - (S - 1) / m, the same amount off every outcome.

    Fails on long shots: when an outcome's implied probability is below the per-outcome margin the result
    would be <= 0, and this raises naming the book and outcome instead of returning it (use power or Shin).
    """
    p, one_row = _as_books(probs)
    fair = p - (p.sum(axis=1, keepdims=True) - 1.0) / p.shape[1]
    bad = np.argwhere(fair <= 0)
    if len(bad):
        i, j = (int(x) for x in bad[0])
        raise ValueError(f"probs: book row {i}, outcome {j}: implied probability {p[i, j]:.6f} is below the "
                         f"per-outcome margin {(p[i].sum() - 1) / p.shape[1]:.6f}, so the additive method gives it "
                         f"{fair[i, j]:.6f}; use power or shin for books with long shots")
    return fair[0] if one_row else fair


def _odds_ratio(p: np.ndarray, c: np.ndarray) -> np.ndarray:
    return p / (c + p - c * p)  # fair odds = implied odds / c: y / (1 - y) = (pi / (1 - pi)) / c


def _odds_ratio_c(row: np.ndarray) -> float:
    from scipy.optimize import brentq

    total = row.sum()
    if abs(total - 1.0) < 1e-15:
        return 1.0
    # sum y(c) falls as c grows, and equals S at c = 1: c > 1 for an overround book, c < 1 for an underround one.
    lo, hi = (1.0, 2.0) if total > 1.0 else (0.5, 1.0)
    while _odds_ratio(row, hi).sum() > 1.0:
        hi *= 2.0
    while _odds_ratio(row, lo).sum() < 1.0:
        lo /= 2.0
    return brentq(lambda c: _odds_ratio(row, c).sum() - 1.0, lo, hi, xtol=1e-15, rtol=1e-14)


def remove_margin_odds_ratio(probs) -> np.ndarray:
    """Odds ratio (Cheung; Buchdahl): every outcome's fair odds are its implied odds divided by one constant c,
    p_i / (1 - p_i) = (pi_i / (1 - pi_i)) / c, with c chosen so the book sums to one. Works for under- and
    overround books. The "logarithmic" (log-odds shift) method, logit(p_i) = logit(pi_i) - log c, is the same
    model written in log space, so `remove_margin(..., "logarithmic")` gives these numbers."""
    p, one_row = _as_books(probs)
    c = _solve_unique_rows(p, _odds_ratio_c)
    fair = _odds_ratio(p, c[:, None])
    return fair[0] if one_row else fair


def _multiplicative(probs) -> np.ndarray:
    p, one_row = _as_books(probs)
    fair = p / p.sum(axis=1, keepdims=True)
    return fair[0] if one_row else fair


MARGIN_METHODS = {
    "multiplicative": _multiplicative,  # proportional: the margin off each outcome in proportion to its price
    "additive": remove_margin_additive,
    "power": remove_margin_power,
    "shin": remove_margin_shin,
    "odds_ratio": remove_margin_odds_ratio,
    "logarithmic": remove_margin_odds_ratio,  # the same model (see remove_margin_odds_ratio), under its other name
}


def remove_margin(probs, method: str = "multiplicative") -> np.ndarray:
    """Margin-free probabilities of an n-way book (two-way moneylines, three-way 1X2, ...) by `method`, one of
    MARGIN_METHODS. probs: implied probabilities (1/decimal odds), shape (m,) or (n books, m outcomes)."""
    if method not in MARGIN_METHODS:
        raise ValueError(f"method: {method!r} is not a margin-removal method; choose one of {sorted(MARGIN_METHODS)}")
    return MARGIN_METHODS[method](probs)


def kelly_fraction(p, decimal_odds):
    """Full-Kelly share of bankroll for a binary bet, vectorised: (p*d - 1) / (d - 1), floored at 0 (no edge, no bet).

    The fractional multiplier and the cap belong to the caller's sizing policy, not to the formula.
    """
    p_arr = np.asarray(p, dtype=float)
    d_arr = np.asarray(decimal_odds, dtype=float)
    bad_p = ~((p_arr >= 0) & (p_arr <= 1))
    if np.any(bad_p):
        raise ValueError(f"p must be a probability in [0, 1], got {np.atleast_1d(p_arr)[np.atleast_1d(bad_p)][:5].tolist()}")
    bad_d = ~(np.isfinite(d_arr) & (d_arr > 1))
    if np.any(bad_d):
        raise ValueError(f"decimal_odds must be > 1.0, got {np.atleast_1d(d_arr)[np.atleast_1d(bad_d)][:5].tolist()}")
    out = np.maximum((p_arr * d_arr - 1.0) / (d_arr - 1.0), 0.0)
    return out if out.ndim else float(out)
