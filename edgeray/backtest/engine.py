"""Bet-level backtest: size a stream of binary bet opportunities and settle them date by date.

Bets on the same date are simultaneous: each is sized from the bankroll at the start of that date and all settle
at its end. With bankroll-proportional sizing a date multiplies the bankroll by g = 1 + sum(f_i * r_i), so the whole
run is one cumulative product (vectorised path). Fixed stakes are additive (a cumulative sum) until the bankroll
cap binds; from there on each date depends on the last, so those dates run in the event-ordered loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from edgeray.odds import kelly_fraction

OPPORTUNITY_COLUMNS = ("date", "game_id", "side", "decimal_odds", "model_prob", "won")
# other_decimal_odds / closing_other_decimal_odds: the other side's price at bet time and at the close, which
# margin-free CLV needs (edgeray.clv); open_market_prob / closing_market_prob: the lines' margin-free probabilities.
OPTIONAL_COLUMNS = ("confidence", "closing_decimal_odds", "market_prob", "other_decimal_odds",
                    "closing_other_decimal_odds", "open_market_prob", "closing_market_prob")
SIZING_METHODS = ("fixed", "percentage", "kelly", "confidence")
SKIP_REASONS = ("", "below_min_confidence", "below_min_edge", "no_edge", "zero_stake", "bankroll_exhausted")


@dataclass(frozen=True)
class SizingSpec:
    """How much to stake. fixed: `amount` per bet; percentage: `percentage` of bankroll; kelly: `kelly_fraction` of
    full Kelly capped at `kelly_cap` of bankroll; confidence: `percentage * confidence` of bankroll."""

    method: Literal["fixed", "percentage", "kelly", "confidence"]
    amount: float = 10.0
    percentage: float = 0.02
    kelly_fraction: float = 0.25
    kelly_cap: float = 0.10
    min_edge: float = 0.0
    min_confidence: float = 0.0

    def __post_init__(self):
        if self.method not in SIZING_METHODS:
            raise ValueError(f"method must be one of {SIZING_METHODS}, got {self.method!r}")
        checks = {"amount": (self.amount, 0.0, np.inf), "percentage": (self.percentage, 0.0, 1.0),
                  "kelly_fraction": (self.kelly_fraction, 0.0, 1.0), "kelly_cap": (self.kelly_cap, 0.0, 1.0)}
        for name, (value, lo, hi) in checks.items():
            if not (isinstance(value, (int, float)) and np.isfinite(value) and lo < value <= hi):
                raise ValueError(f"{name} must be in ({lo}, {hi}], got {value!r}")
        if not (isinstance(self.min_edge, (int, float)) and -1.0 <= self.min_edge <= 1.0):
            raise ValueError(f"min_edge must be in [-1, 1], got {self.min_edge!r}")
        if not (isinstance(self.min_confidence, (int, float)) and 0.0 <= self.min_confidence <= 1.0):
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence!r}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("method", "amount", "percentage", "kelly_fraction", "kelly_cap",
                                              "min_edge", "min_confidence")}


def _json_value(value):
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None  # JSON has no NaN/inf
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


@dataclass
class BacktestResult:
    bets: pd.DataFrame
    equity: pd.DataFrame
    metrics: dict
    sizing: SizingSpec | None = None
    initial_bankroll: float = 1000.0
    path: str = field(default="vectorised")

    BET_HISTORY_COLUMNS = ("date", "game_id", "side", "team", "decimal_odds", "closing_decimal_odds", "model_prob",
                           "market_prob", "edge", "stake", "won", "pnl", "bankroll_after", "clv_points",
                           "clv_price_pct")

    def bet_history(self, offset: int = 0, limit: int = 100) -> dict:
        """One page of placed bets in date order: {total, offset, limit, items}."""
        placed = self.bets[self.bets["placed"]]
        cols = [c for c in self.BET_HISTORY_COLUMNS if c in placed.columns]
        page = placed.iloc[offset:offset + limit][cols]
        return _json_value({"total": int(len(placed)), "offset": int(offset), "limit": int(limit),
                            "items": [{c: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for c, v in row.items()}
                                      for row in page.to_dict("records")]})

    def to_dict(self, bets_offset: int | None = None, bets_limit: int = 100) -> dict:
        """JSON-ready result; with bets_offset, one page of the bet history as `bets`."""
        out = _json_value({
            "sizing": self.sizing.to_dict() if self.sizing else None, "initial_bankroll": self.initial_bankroll,
            "path": self.path, "metrics": self.metrics,
            "equity": {"date": [ts.isoformat() for ts in self.equity["date"]],
                       "bankroll": self.equity["bankroll"].to_numpy()},
        })
        if bets_offset is not None:
            out["bets"] = self.bet_history(bets_offset, bets_limit)
        return out


def _bad(values: np.ndarray, mask: np.ndarray) -> list:
    return values[mask][:5].tolist()


def validate_opportunities(opportunities: pd.DataFrame) -> pd.DataFrame:
    """Checked, date-sorted copy (stable sort, original index kept); ValueError naming the column and value."""
    if not isinstance(opportunities, pd.DataFrame):
        raise ValueError(f"opportunities must be a pandas DataFrame, got {type(opportunities).__name__}")
    missing = [c for c in OPPORTUNITY_COLUMNS if c not in opportunities.columns]
    if missing:
        raise ValueError(f"opportunities is missing required columns {missing}")
    frame = opportunities.copy()
    try:
        dates = pd.to_datetime(frame["date"], utc=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"date: cannot parse as dates ({exc})") from exc
    if dates.isna().any():
        raise ValueError(f"date: missing dates at rows {frame.index[dates.isna()][:5].tolist()}")
    frame["date"] = dates.dt.as_unit("ns")  # one unit so `.values` is datetime64[ns] without a per-row conversion
    odds = frame["decimal_odds"].to_numpy(dtype=float)
    bad = ~(np.isfinite(odds) & (odds > 1.0))
    if bad.any():
        raise ValueError(f"decimal_odds must be finite and > 1, got {_bad(odds, bad)}")
    for col in ("model_prob", "confidence"):
        if col in frame.columns:
            p = frame[col].to_numpy(dtype=float)
            bad = ~((p >= 0.0) & (p <= 1.0))
            if bad.any():
                raise ValueError(f"{col} must be a probability in [0, 1], got {_bad(p, bad)}")
    won = frame["won"].to_numpy(dtype=float)
    bad = ~np.isin(won, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"won must be 0 or 1, got {_bad(won, bad)}")
    if "market_prob" in frame.columns:
        m = frame["market_prob"].to_numpy(dtype=float)
        bad = ~(np.isnan(m) | ((m > 0.0) & (m < 1.0)))
        if bad.any():
            raise ValueError(f"market_prob must be in (0, 1) or NaN, got {_bad(m, bad)}")
    for col in ("closing_decimal_odds", "other_decimal_odds", "closing_other_decimal_odds"):
        if col in frame.columns:
            c = frame[col].to_numpy(dtype=float)
            bad = ~(np.isnan(c) | (c > 1.0))
            if bad.any():
                raise ValueError(f"{col} must be > 1 or NaN, got {_bad(c, bad)}")
    if not frame["date"].is_monotonic_increasing:
        frame = frame.sort_values("date", kind="mergesort")  # stable: same-date rows keep their order
    return frame


def _date_codes(dates: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, start row per date) for rows sorted by date."""
    values = dates.values.view("int64")
    new_date = np.empty(len(values), dtype=bool)
    new_date[:1] = True
    new_date[1:] = values[1:] != values[:-1]
    return np.cumsum(new_date, dtype=np.int64) - 1, np.flatnonzero(new_date)


def _edge_and_requested(frame: pd.DataFrame, sizing: SizingSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edge, requested size per bet, skip reason code). Size is a bankroll share, or money for `fixed`."""
    p = frame["model_prob"].to_numpy(dtype=float)
    d = frame["decimal_odds"].to_numpy(dtype=float)
    implied = 1.0 / d
    if "market_prob" in frame.columns:
        market = frame["market_prob"].to_numpy(dtype=float)
        implied = np.where(np.isnan(market), implied, market)
    edge = p - implied
    confidence = frame["confidence"].to_numpy(dtype=float) if "confidence" in frame.columns else p
    if sizing.method == "fixed":
        size = np.full(len(frame), float(sizing.amount))
    elif sizing.method == "percentage":
        size = np.full(len(frame), float(sizing.percentage))
    elif sizing.method == "confidence":
        size = sizing.percentage * confidence
    else:
        size = np.minimum(sizing.kelly_fraction * kelly_fraction(p, d), sizing.kelly_cap)
    reason = np.zeros(len(frame), dtype=np.int8)
    reason[size <= 0] = SKIP_REASONS.index("zero_stake")
    if sizing.method == "kelly":
        # Kelly on the offered price needs p*d > 1; when a margin-free market_prob is given the edge must also be > 0.
        reason[(edge <= 0) | (size <= 0)] = SKIP_REASONS.index("no_edge")
    reason[edge < sizing.min_edge] = SKIP_REASONS.index("below_min_edge")
    reason[confidence < sizing.min_confidence] = SKIP_REASONS.index("below_min_confidence")
    size = np.where(reason == 0, size, 0.0)
    return edge, size, reason


def _settle_loop(size, ret, codes, starts, n_dates, bankroll, first_date, proportional, start_out, end_out, stake_out):
    """Event-ordered settlement from `first_date` on; fills the output arrays in place."""
    bounds = np.append(starts, len(size))
    for k in range(first_date, n_dates):
        lo, hi = bounds[k], bounds[k + 1]
        s = size[lo:hi]
        total = s.sum()
        start_out[k] = bankroll
        if proportional:
            scaled = s * (1.0 / total if total > 1.0 else 1.0)  # the date's stakes never exceed the bankroll
            stake_out[lo:hi] = scaled * bankroll
            bankroll = bankroll * max(1.0 + float(np.dot(scaled, ret[lo:hi])), 0.0)
        else:
            stakes = s * (bankroll / total if total > bankroll else 1.0)
            stake_out[lo:hi] = stakes
            bankroll = max(bankroll + float(np.dot(stakes, ret[lo:hi])), 0.0)
        end_out[k] = bankroll
    return bankroll


def _settle(size, ret, codes, starts, bankroll0, proportional, path):
    n_dates = len(starts)
    start = np.empty(n_dates)
    end = np.empty(n_dates)
    stake = np.zeros(len(size))
    if path == "sequential" or n_dates == 0:
        _settle_loop(size, ret, codes, starts, n_dates, bankroll0, 0, proportional, start, end, stake)
        return start, end, stake, "sequential"
    if proportional:
        total = np.bincount(codes, size, n_dates)
        scaled = size * np.where(total > 1.0, 1.0 / np.where(total > 1.0, total, 1.0), 1.0)[codes]
        growth = np.maximum(1.0 + np.bincount(codes, scaled * ret, n_dates), 0.0)
        curve = np.cumprod(np.concatenate(([bankroll0], growth)))
        start[:], end[:] = curve[:-1], curve[1:]
        stake[:] = scaled * start[codes]
        return start, end, stake, "vectorised"
    total = np.bincount(codes, size, n_dates)
    curve = np.cumsum(np.concatenate(([bankroll0], np.bincount(codes, size * ret, n_dates))))
    binding = np.flatnonzero(total > curve[:-1])
    first = binding[0] if len(binding) else n_dates
    start[:first], end[:first] = curve[:first], curve[1:first + 1]
    upto = starts[first] if first < n_dates else len(size)
    stake[:upto] = size[:upto]
    if first < n_dates:  # the bankroll cap binds from here on: each date now depends on the last
        _settle_loop(size, ret, codes, starts, n_dates, float(curve[first]), first, False, start, end, stake)
        return start, end, stake, "vectorised+sequential"
    return start, end, stake, "vectorised"


def run_bets(opportunities: pd.DataFrame, sizing: SizingSpec, initial_bankroll: float = 1000.0,
             path: Literal["auto", "vectorised", "sequential"] = "auto", *, metrics: bool = True,
             n_boot: int = 1000, seed: int = 0, clv_method: str = "multiplicative") -> BacktestResult:
    """Size and settle every opportunity. `bets` keeps every row (skipped ones with stake 0 and a skipped_reason)."""
    from edgeray.backtest.metrics import compute_metrics
    from edgeray.clv import bet_clv_columns, check_method

    if not isinstance(sizing, SizingSpec):
        raise ValueError(f"sizing must be a SizingSpec, got {type(sizing).__name__}")
    if not (np.isfinite(initial_bankroll) and initial_bankroll > 0):
        raise ValueError(f"initial_bankroll must be > 0, got {initial_bankroll!r}")
    if path not in ("auto", "vectorised", "sequential"):
        raise ValueError(f"path must be 'auto', 'vectorised' or 'sequential', got {path!r}")
    check_method(clv_method)
    frame = validate_opportunities(opportunities)
    edge, size, reason = _edge_and_requested(frame, sizing)
    won = frame["won"].to_numpy(dtype=float)
    ret = np.where(won == 1.0, frame["decimal_odds"].to_numpy(dtype=float) - 1.0, -1.0)  # profit per unit staked
    codes, starts = _date_codes(frame["date"])
    start, end, stake, used = _settle(size, ret, codes, starts, float(initial_bankroll), sizing.method != "fixed",
                                      "sequential" if path == "sequential" else "vectorised")
    exhausted = (reason == 0) & (start[codes] <= 0.0) if len(codes) else np.zeros(0, dtype=bool)
    reason[exhausted] = SKIP_REASONS.index("bankroll_exhausted")
    frame["edge"] = edge
    frame["stake"] = stake
    frame["pnl"] = stake * ret
    frame["bankroll_before"] = start[codes]
    frame["bankroll_after"] = end[codes]
    frame["placed"] = (reason == 0) & (stake > 0)
    for name, values in bet_clv_columns(frame, clv_method).items():  # CLV per bet (NaN where a price is unknown)
        frame[name] = values
    frame["skipped_reason"] = pd.Categorical.from_codes(reason, categories=list(SKIP_REASONS))
    equity = pd.DataFrame({"date": frame["date"].iloc[starts].reset_index(drop=True), "bankroll": end})
    result = BacktestResult(bets=frame, equity=equity, metrics={}, sizing=sizing,
                            initial_bankroll=float(initial_bankroll), path=used)
    if metrics:
        result.metrics = compute_metrics(frame, equity, float(initial_bankroll), n_boot=n_boot, seed=seed,
                                         clv_method=clv_method)
        if opportunities.attrs.get("bet_at"):  # where the bets were priced and how many games had no price there
            result.metrics["bet_at"] = dict(opportunities.attrs["bet_at"])
    return result


def compare_strategies(opportunities: pd.DataFrame, specs: dict[str, SizingSpec], initial_bankroll: float = 1000.0,
                       *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per strategy (index = name) with the scalar metrics, all on the same opportunities."""
    if not specs:
        raise ValueError("specs must name at least one strategy, got an empty dict")
    frame = validate_opportunities(opportunities)
    rows = {}
    for name, spec in specs.items():
        result = run_bets(frame, spec, initial_bankroll, n_boot=n_boot, seed=seed)
        rows[name] = {"method": spec.method, **{k: v for k, v in result.metrics.items()
                                                 if isinstance(v, (int, float, np.integer, np.floating))}}
    return pd.DataFrame.from_dict(rows, orient="index")
