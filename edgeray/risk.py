"""Pre-trade risk engine: position, exposure, concentration and volatility caps, loss stops, kill switch.

`RiskEngine.check` takes an order frame (one row per proposed order: decision_id, event_ts, symbol,
strategy, quantity (signed units), price, volatility, ...) and returns one verdict per row:
approve, resize (|quantity| shrunk to the largest size that fits every limit) or reject, with a
`risk_score` in [0, 1]: the share of its tightest limit the requested position would use (1: at or over a
limit, or stopped; 0: the order only brings the position toward flat).

Conventions:
- Exposure is absolute notional |position| * mark price; gross is the sum over symbols. A symbol's
  whole position is attributed to the strategy of its latest fill (as the ledger reports it).
- Only the risk-increasing part of an order is limited: moving a position toward zero is always
  allowed (except under the kill switch). An order that flips a position is split: the part down to
  flat is free, the part beyond is capped like any new position.
- Exposure limits are inclusive (exactly at the limit passes); loss stops trip when the loss reaches
  the limit (a daily loss equal to `daily_loss_limit`, a drawdown equal to `max_drawdown` stop trading).
- Time: an order is checked against the latest state the engine knows (the last ledger snapshot plus
  the fills assumed since), which is the state at the moment the order would go to market. Ledger
  snapshots must arrive in time order, and a price stamped earlier never replaces a later mark.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

# Relative slack on inclusive limit comparisons so that float round-off in q * p does not turn
# "exactly at the limit" into a breach.
_REL_TOL = 1e-9

REASONS = (
    "position_limit", "gross_exposure", "symbol_concentration", "strategy_concentration", "vol_cap",
    "daily_loss_limit", "max_drawdown", "kill_switch", "zero_quantity",
)
RISK_ORDER_COLUMNS = ("decision_id", "event_ts", "symbol", "strategy", "quantity", "price", "volatility")


class RiskLimits(BaseModel):
    """Risk limits (configs/risk.yaml). Notionals are in account currency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_position_notional: float = Field(100_000.0, gt=0)  # per symbol, |position| * price
    max_symbol_concentration: float = Field(0.5, gt=0, le=1)  # share of gross one symbol may hold
    max_strategy_concentration: float = Field(0.7, gt=0, le=1)  # share of gross one strategy may hold
    concentration_min_gross: float = Field(20_000.0, ge=0)  # concentration limits apply only above this gross
    max_gross_exposure: float = Field(250_000.0, gt=0)
    daily_loss_limit: float = Field(5_000.0, gt=0)  # currency, positive
    max_drawdown: float = Field(0.2, gt=0, lt=1)  # fraction of peak equity
    vol_cap_notional: float = Field(50_000.0, gt=0)  # notional allowed when volatility == target
    target_vol_per_bar: float = Field(0.001, gt=0)  # per-bar rv at which the vol cap equals vol_cap_notional

    @model_validator(mode="after")
    def _gross_covers_min(self) -> "RiskLimits":
        if self.concentration_min_gross > self.max_gross_exposure:
            raise ValueError(
                f"concentration_min_gross ({self.concentration_min_gross}) exceeds max_gross_exposure "
                f"({self.max_gross_exposure}): concentration limits would never apply")
        return self

    @classmethod
    def load(cls, path: str | Path) -> "RiskLimits":
        with open(path, encoding="utf-8") as fh:
            return cls.model_validate(yaml.safe_load(fh) or {})


# --- input validation (shared with edgeray.veto) ----------------------------------------------

def _first_bad(frame: pd.DataFrame, column: str, bad: np.ndarray) -> str:
    row = int(np.flatnonzero(bad)[0])
    return f"row {row} (decision_id {frame['decision_id'].iloc[row]!r}), value {frame[column].iloc[row]!r}"


def _is_label(values: np.ndarray) -> np.ndarray:
    """Per value: a non-empty str (plain Python over the few rows of an order batch beats Series.map)."""
    return np.fromiter((isinstance(v, str) and v != "" for v in values), dtype=bool, count=len(values))


def validate_order_frame(orders: pd.DataFrame, required: tuple[str, ...]) -> pd.DataFrame:
    """Check an order frame and return a copy with event_ts in UTC; raises ValueError naming field and value.
    It runs on every order batch of the loop, so columns already in their final form are not converted again
    (tests/test_kernel_fastpath.py compares it with the pandas code it replaced)."""
    if not isinstance(orders, pd.DataFrame):
        raise ValueError(f"orders: expected a pandas DataFrame, got {type(orders).__name__}")
    missing = [c for c in required if c not in orders.columns]
    if missing:
        raise ValueError(f"orders: missing column(s) {missing}; have {list(orders.columns)}")
    out = orders.reset_index(drop=True)
    if out is orders:  # pandas may hand back the frame itself; the caller's frame is never changed
        out = orders.copy(deep=False)
    if out.empty:
        return out
    ids = out["decision_id"].to_numpy()
    bad = ~_is_label(ids)
    if bad.any():
        raise ValueError(f"decision_id: must be a non-empty str at row {int(np.flatnonzero(bad)[0])}, "
                         f"value {ids[int(np.flatnonzero(bad)[0])]!r}")
    if len(ids) > 1:
        dup = out["decision_id"].duplicated(keep=False).to_numpy(bool)
        if dup.any():
            raise ValueError(f"decision_id: duplicated within the batch, value {ids[dup][0]!r}")
    for col in ("symbol", "strategy", "regime"):
        if col in required:
            bad = ~_is_label(out[col].to_numpy())
            if bad.any():
                raise ValueError(f"{col}: must be a non-empty str at {_first_bad(out, col, bad)}")
    ts = out["event_ts"]
    if not (isinstance(ts.dtype, pd.DatetimeTZDtype) and str(ts.dtype.tz) == "UTC"):
        if ts.dtype == object:  # e.g. a column of Timestamps; parsed without assuming a zone
            try:
                ts = pd.to_datetime(ts)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"event_ts: not parseable as timestamps ({exc})") from exc
        if not pd.api.types.is_datetime64_any_dtype(ts) or getattr(ts.dt, "tz", None) is None:
            raise ValueError(f"event_ts: must be timezone-aware datetime64 (UTC), got dtype {ts.dtype}")
        out["event_ts"] = ts = ts.dt.tz_convert("UTC")
    if ts.isna().any():
        raise ValueError(f"event_ts: missing at {_first_bad(out, 'event_ts', ts.isna().to_numpy())}")
    for col in ("quantity", "price", "volatility", "confidence"):
        if col not in required:
            continue
        column = out[col]
        if column.dtype == np.float64:
            values = column.to_numpy()
        else:
            try:
                values = pd.to_numeric(column, errors="raise").to_numpy(float)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{col}: not numeric ({exc})") from exc
        with np.errstate(invalid="ignore"):
            if col == "volatility":  # NaN means "no estimate yet" (warm-up); anything else must be >= 0
                bad = ~(np.isnan(values) | (np.isfinite(values) & (values >= 0)))
                rule = "finite and >= 0 (or NaN)"
            elif col == "price":
                bad = ~(np.isfinite(values) & (values > 0))
                rule = "finite and > 0"
            elif col == "confidence":
                bad = ~((values >= 0) & (values <= 1))
                rule = "in [0, 1]"
            else:
                bad = ~np.isfinite(values)
                rule = "finite"
        if bad.any():
            raise ValueError(f"{col}: must be {rule} at {_first_bad(out, col, bad)}")
        if column.dtype != np.float64:
            out[col] = values
    return out


def as_utc(ts: Any, field: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(ts)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{field}: not a timestamp, value {ts!r}") from exc
    if stamp is pd.NaT or pd.isna(stamp):
        raise ValueError(f"{field}: missing timestamp, value {ts!r}")
    if stamp.tzinfo is None:
        raise ValueError(f"{field}: must be timezone-aware (UTC), value {ts!r}")
    return stamp.tz_convert("UTC")


def _finite(value: Any, field: str) -> float:
    try:
        number = float(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{field}: not a number, value {value!r}") from exc
    if not math.isfinite(number):
        raise ValueError(f"{field}: must be finite, value {value!r}")
    return number


# --- the engine --------------------------------------------------------------------------------

class RiskEngine:
    """Stateful pre-trade checks; one instance per account (lives in the risk actor)."""

    def __init__(self, limits: RiskLimits, initial_equity: float):
        if not isinstance(limits, RiskLimits):
            raise ValueError(f"limits: expected RiskLimits, got {type(limits).__name__}")
        equity = _finite(initial_equity, "initial_equity")
        if equity <= 0:
            raise ValueError(f"initial_equity: must be > 0, value {initial_equity!r}")
        self.limits = limits
        self.initial_equity = equity
        self.positions: dict[str, float] = {}
        self.marks: dict[str, float] = {}  # latest price per symbol
        self.mark_ts: dict[str, pd.Timestamp] = {}  # stamp of that price: an older order never overwrites it
        self.position_strategy: dict[str, str] = {}
        self.equity = equity
        self.peak_equity = equity
        # Until the first snapshot, the starting equity is the day's start (a first snapshot that
        # already shows a loss then counts against the day, rather than resetting it).
        self.day: str | None = None
        self.day_start_equity = equity
        self.last_ledger_ts: pd.Timestamp | None = None
        self.killed = False
        self.kill_reason = ""
        self.verdict_counts: Counter[str] = Counter()
        self.reason_counts: Counter[str] = Counter()

    # -- derived state -----------------------------------------------------------------------
    @property
    def drawdown(self) -> float:
        return max(0.0, (self.peak_equity - self.equity) / self.peak_equity)

    @property
    def daily_pnl(self) -> float:
        return self.equity - self.day_start_equity

    def _loss_stops(self) -> list[str]:
        stops = []
        # The stops trip at the limit; the slack errs towards stopping when round-off blurs equality.
        if -self.daily_pnl >= self.limits.daily_loss_limit * (1 - _REL_TOL):
            stops.append("daily_loss_limit")
        if self.peak_equity - self.equity >= self.limits.max_drawdown * self.peak_equity * (1 - _REL_TOL):
            stops.append("max_drawdown")
        return stops

    def _notional(self, symbol: str) -> float:
        return abs(self.positions.get(symbol, 0.0)) * self.marks.get(symbol, 0.0)

    def exposure_by_symbol(self) -> dict[str, float]:
        return {s: self._notional(s) for s in self.positions if self.positions[s] != 0}

    def exposure_by_strategy(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for symbol, notional in self.exposure_by_symbol().items():
            strategy = self.position_strategy.get(symbol, "unknown")
            out[strategy] = out.get(strategy, 0.0) + notional
        return out

    # -- checks ------------------------------------------------------------------------------
    def check(self, orders: pd.DataFrame) -> pd.DataFrame:
        """One verdict per order row, in row order; approved quantities count towards later rows."""
        frame = validate_order_frame(orders, RISK_ORDER_COLUMNS)
        if frame.empty:
            return pd.DataFrame({"decision_id": pd.Series(dtype=object), "verdict": pd.Series(dtype=object),
                                 "quantity": pd.Series(dtype=float), "reasons": pd.Series(dtype=object),
                                 "risk_score": pd.Series(dtype=float)})
        ts = frame["event_ts"]
        if not ts.is_monotonic_increasing:
            bad = int(np.flatnonzero((ts.diff() < pd.Timedelta(0)).to_numpy(bool))[0])
            raise ValueError(f"event_ts: orders must be sorted by event_ts; row {bad} "
                             f"(decision_id {frame['decision_id'].iloc[bad]!r}) is stamped {ts.iloc[bad]} "
                             f"before the row above it")

        lim = self.limits
        quantity = frame["quantity"].to_numpy(float)
        price = frame["price"].to_numpy(float)
        vol = frame["volatility"].to_numpy(float)
        # The vol cap is row-local, so it is computed for the whole batch at once. NaN (warm-up) or
        # zero volatility is no usable estimate: the cap stays at vol_cap_notional, unscaled.
        usable = np.isfinite(vol) & (vol > 0)
        vol_cap = np.where(usable, lim.vol_cap_notional * lim.target_vol_per_bar / np.where(usable, vol, 1.0),
                           lim.vol_cap_notional)
        stops = (["kill_switch"] if self.killed else []) + self._loss_stops()

        verdicts, approved, reasons, scores = [], np.zeros(len(frame)), [], np.zeros(len(frame))
        # A Python loop: each approved row changes positions and gross exposure, which are the inputs
        # of the next row's limits, so the rows cannot be evaluated independently.
        for i, (symbol, strategy, stamp) in enumerate(zip(frame["symbol"], frame["strategy"], ts)):
            p = float(price[i])
            verdict, qty, why, scores[i] = self._check_one(symbol, strategy, float(quantity[i]), p, float(vol_cap[i]), stops)
            if qty != 0:
                self._apply(symbol, strategy, qty, p, stamp)
            elif symbol not in self.mark_ts or stamp >= self.mark_ts[symbol]:
                self.marks[symbol], self.mark_ts[symbol] = p, stamp  # fresher price, no fill
            verdicts.append(verdict)
            approved[i] = qty
            reasons.append("; ".join(why))
            self.verdict_counts[verdict] += 1
            self.reason_counts.update(why)
        return pd.DataFrame({"decision_id": frame["decision_id"].to_numpy(), "verdict": verdicts,
                             "quantity": approved, "reasons": reasons, "risk_score": scores})

    def _check_one(self, symbol: str, strategy: str, dq: float, p: float, vol_cap: float,
                   stops: list[str]) -> tuple[str, float, list[str], float]:
        """(verdict, approved quantity, binding reasons, risk score). The score is the share of the tightest
        limit the requested position would use, capped at 1 (at a limit, or stopped); 0 for an order that
        only brings the position toward flat."""
        if "kill_switch" in stops:
            return "reject", 0.0, ["kill_switch"], 1.0
        if dq == 0:
            return "reject", 0.0, ["zero_quantity"], 0.0
        q0 = self.positions.get(symbol, 0.0)
        side = math.copysign(1.0, dq)
        # Units that only bring the position toward flat: always allowed.
        free = min(abs(dq), abs(q0)) if q0 * dq < 0 else 0.0
        wanted = abs(dq) - free  # units that open or enlarge exposure
        if wanted == 0:
            return "approve", dq, [], 0.0
        base = abs(q0) if q0 * dq > 0 else 0.0  # |position| before the increasing part
        if stops:
            return ("resize", side * free, stops, 1.0) if free > 0 else ("reject", 0.0, stops, 1.0)

        lim = self.limits
        gross_other = sum(self._notional(s) for s in self.positions if s != symbol)
        strategy_other = sum(self._notional(s) for s, st in self.position_strategy.items()
                             if st == strategy and s != symbol)
        # Largest notional the new position may have under each limit (negative: no room at all).
        caps = {
            "position_limit": lim.max_position_notional,
            "vol_cap": vol_cap,
            "gross_exposure": lim.max_gross_exposure - gross_other,
        }
        room_below_min = lim.concentration_min_gross - gross_other  # concentration ignored up to here
        if lim.max_symbol_concentration < 1:
            c = lim.max_symbol_concentration
            # N / (G_other + N) <= c  <=>  N <= c * G_other / (1 - c)
            caps["symbol_concentration"] = max(room_below_min, c * gross_other / (1 - c))
        if lim.max_strategy_concentration < 1:
            c = lim.max_strategy_concentration
            # (S_other + N) / (G_other + N) <= c  <=>  N <= (c * G_other - S_other) / (1 - c)
            caps["strategy_concentration"] = max(room_below_min, (c * gross_other - strategy_other) / (1 - c))

        requested = (base + wanted) * p
        binding = [name for name, cap in caps.items() if requested > cap * (1 + _REL_TOL) + 1e-12]
        tightest = min(caps.values())
        if not binding:
            return "approve", dq, [], min(1.0, requested / tightest) if tightest > 0 else 1.0
        allowed_abs = max(0.0, tightest / p)  # largest |position| that fits every limit
        extra = max(0.0, allowed_abs - base)
        extra = min(extra, wanted)
        if extra <= wanted * _REL_TOL:
            extra = 0.0
        qty = side * (free + extra)
        if qty == 0:
            return "reject", 0.0, binding, 1.0
        return "resize", qty, binding, 1.0

    def _apply(self, symbol: str, strategy: str, qty: float, price: float, stamp: pd.Timestamp) -> None:
        """Assume the approved order fills at its price; the next ledger snapshot replaces this."""
        new = self.positions.get(symbol, 0.0) + qty
        self.positions[symbol] = new
        if symbol not in self.mark_ts or stamp >= self.mark_ts[symbol]:
            self.marks[symbol], self.mark_ts[symbol] = price, stamp
        self.position_strategy[symbol] = strategy

    # -- ledger ------------------------------------------------------------------------------
    def on_ledger(self, snapshot: dict) -> None:
        """Replace positions, marks and equity with the ledger's truth; update peak, drawdown, daily PnL."""
        if not isinstance(snapshot, dict):
            raise ValueError(f"snapshot: expected a dict, got {type(snapshot).__name__}")
        missing = [k for k in ("ts", "equity", "positions", "prices") if k not in snapshot]
        if missing:
            raise ValueError(f"snapshot: missing key(s) {missing}")
        if snapshot["ts"] is None and self.last_ledger_ts is None:
            ts = None  # a ledger that has seen no market data yet: positions and equity apply, no day
        else:
            ts = as_utc(snapshot["ts"], "snapshot.ts")
        if ts is not None and self.last_ledger_ts is not None and ts < self.last_ledger_ts:
            raise ValueError(f"snapshot.ts: {ts} is older than the last snapshot at {self.last_ledger_ts}")
        equity = _finite(snapshot["equity"], "snapshot.equity")
        positions = {str(s): _finite(q, f"snapshot.positions[{s!r}]") for s, q in dict(snapshot["positions"]).items()}
        prices = {}
        for s, p in dict(snapshot["prices"]).items():
            value = _finite(p, f"snapshot.prices[{s!r}]")
            if value <= 0:
                raise ValueError(f"snapshot.prices[{s!r}]: must be > 0, value {p!r}")
            prices[str(s)] = value
        for s, q in positions.items():
            if q != 0 and s not in prices and s not in self.marks:
                raise ValueError(f"snapshot.prices: no price for held symbol {s!r} (position {q})")
        strategies = dict(snapshot.get("position_strategy") or {})

        self.positions = {s: q for s, q in positions.items() if q != 0}
        for s, p in prices.items():
            if ts is None:
                self.marks[s] = p
            else:
                self.marks[s], self.mark_ts[s] = p, ts
        self.position_strategy = {s: str(strategies.get(s, self.position_strategy.get(s, "unknown")))
                                  for s in self.positions}
        if ts is not None:
            day = ts.date().isoformat()
            if self.day is not None and day != self.day:
                self.day_start_equity = equity  # first equity seen on the new UTC day
            self.day = day
            self.last_ledger_ts = ts
        self.equity = equity
        self.peak_equity = max(self.peak_equity, equity)

    # -- kill switch -------------------------------------------------------------------------
    def kill(self, reason: str, actor: str, ts: pd.Timestamp | None = None) -> dict:
        """Reject every order (risk-reducing ones too) until `resume`; returns the audit event."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"reason: a kill needs a non-empty reason, value {reason!r}")
        if not isinstance(actor, str) or not actor.strip():
            raise ValueError(f"actor: must be a non-empty str, value {actor!r}")
        self.killed, self.kill_reason = True, reason
        return {"ts": as_utc(ts, "ts") if ts is not None else pd.Timestamp.now(tz="UTC"), "action": "kill",
                "actor": actor, "reason": reason}

    def resume(self, actor: str, ts: pd.Timestamp | None = None) -> dict:
        if not isinstance(actor, str) or not actor.strip():
            raise ValueError(f"actor: must be a non-empty str, value {actor!r}")
        previous = self.kill_reason
        self.killed, self.kill_reason = False, ""
        return {"ts": as_utc(ts, "ts") if ts is not None else pd.Timestamp.now(tz="UTC"), "action": "resume",
                "actor": actor, "reason": f"resumed after: {previous}" if previous else "resume (was not killed)"}

    # -- reporting and persistence -----------------------------------------------------------
    def status(self) -> dict:
        by_symbol = self.exposure_by_symbol()
        return {
            "limits": self.limits.model_dump(),
            "exposure_by_symbol": by_symbol,
            "exposure_by_strategy": self.exposure_by_strategy(),
            "positions": dict(self.positions),
            "gross": float(sum(by_symbol.values())),
            "equity": self.equity,
            "peak_equity": self.peak_equity,
            "drawdown": self.drawdown,
            "daily_pnl": self.daily_pnl,
            "day": self.day,
            "loss_stops": self._loss_stops(),
            "killed": self.killed,
            "kill_reason": self.kill_reason,
            "verdict_counts": dict(self.verdict_counts),
            "reason_counts": dict(self.reason_counts),
        }

    def state_dict(self) -> dict:
        return {
            "limits": self.limits.model_dump(),
            "initial_equity": self.initial_equity,
            "positions": {s: float(q) for s, q in self.positions.items()},
            "marks": {s: float(p) for s, p in self.marks.items()},
            "mark_ts": {s: t.isoformat() for s, t in self.mark_ts.items()},
            "position_strategy": dict(self.position_strategy),
            "equity": self.equity,
            "peak_equity": self.peak_equity,
            "day": self.day,
            "day_start_equity": self.day_start_equity,
            "last_ledger_ts": None if self.last_ledger_ts is None else self.last_ledger_ts.isoformat(),
            "killed": self.killed,
            "kill_reason": self.kill_reason,
            "verdict_counts": dict(self.verdict_counts),
            "reason_counts": dict(self.reason_counts),
        }

    @classmethod
    def from_state(cls, state: dict) -> "RiskEngine":
        engine = cls(RiskLimits.model_validate(state["limits"]), state["initial_equity"])
        engine.positions = {s: float(q) for s, q in state["positions"].items()}
        engine.marks = {s: float(p) for s, p in state["marks"].items()}
        engine.mark_ts = {s: pd.Timestamp(t) for s, t in state["mark_ts"].items()}
        engine.position_strategy = dict(state["position_strategy"])
        engine.equity = float(state["equity"])
        engine.peak_equity = float(state["peak_equity"])
        engine.day = state["day"]
        engine.day_start_equity = float(state["day_start_equity"])
        engine.last_ledger_ts = None if state["last_ledger_ts"] is None else pd.Timestamp(state["last_ledger_ts"])
        engine.killed = bool(state["killed"])
        engine.kill_reason = str(state["kill_reason"])
        engine.verdict_counts = Counter(state["verdict_counts"])
        engine.reason_counts = Counter(state["reason_counts"])
        return engine
