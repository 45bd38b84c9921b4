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
