"""Veto gate: rule-based approve / reject / hold for human review, with hold timeouts.

Release semantics (what may be executed):
- `review` returns one row per order with `release=True` exactly when the verdict is "approve"
  (a rule or the default approved it). Those orders may be executed at once.
- A held order is released only by the verdict record that `approve` returns, or by an `expire`
  record when `timeout_action` is "approve". Every verdict record carries `release` (bool) and
  `order` (the full order row for a release, else None): execute `record["order"]` iff
  `record["release"]`. Nothing else ever releases an order, and each order is released at most once.
- A hold expires at its deadline (held_at + hold_timeout_s): `approve`/`reject` must come strictly
  before it; from the deadline on only `expire` can decide it, with `timeout_action`.

Rules come from configs/veto.yaml; all conditions given in a rule's `when` must match, the first
matching rule wins, and `default_action` applies when none does. Time windows use the order's own
event_ts (UTC), half-open [start, end), and wrap midnight when start > end.
"""
from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeray.watermark import timestamps_ns
from edgeray.risk import as_utc, validate_order_frame

VETO_ORDER_COLUMNS = ("decision_id", "event_ts", "symbol", "strategy", "regime", "quantity", "price", "confidence")
DEFAULT_RULE = "default"
TIMEOUT_REVIEWER = "timeout"
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VetoWhen(_Strict):
    """Conditions of one rule; all that are given must hold. An empty `when` matches every order."""

    notional_above: float | None = Field(None, ge=0)  # |quantity| * price strictly above this
    confidence_below: float | None = Field(None, ge=0, le=1)  # confidence strictly below this
    symbols: list[str] | None = Field(None, min_length=1)
    strategies: list[str] | None = Field(None, min_length=1)
    regimes: list[str] | None = Field(None, min_length=1)
    utc_time_between: tuple[str, str] | None = None  # ["HH:MM", "HH:MM"], half-open, may wrap midnight

    @field_validator("utc_time_between")
    @classmethod
    def _check_window(cls, window: tuple[str, str] | None) -> tuple[str, str] | None:
        if window is None:
            return None
        for value in window:
            if not _HHMM.match(value):
                raise ValueError(f"expected 'HH:MM' (00:00-23:59), got {value!r}")
        if window[0] == window[1]:
            raise ValueError(f"start equals end ({window[0]!r}): an empty or a full day is ambiguous")
        return window


class VetoRule(_Strict):
    name: str = Field(min_length=1)
    action: Literal["approve", "reject", "hold"]
    when: VetoWhen = VetoWhen()


class VetoConfig(_Strict):
    rules: list[VetoRule] = []
    default_action: Literal["approve", "reject", "hold"] = "approve"
    hold_timeout_s: float = Field(300.0, gt=0)
    timeout_action: Literal["reject", "approve"] = "reject"

    @model_validator(mode="after")
    def _unique_names(self) -> "VetoConfig":
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rules.name: duplicated rule name(s) {dup}")
        if DEFAULT_RULE in names:
            raise ValueError(f"rules.name: {DEFAULT_RULE!r} is reserved for the default action")
        return self

    @classmethod
    def load(cls, path: str | Path) -> "VetoConfig":
        with open(path, encoding="utf-8") as fh:
            return cls.model_validate(yaml.safe_load(fh) or {})


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def rule_mask(when: VetoWhen, frame: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows (of a validated order frame) that satisfy every given condition."""
    mask = np.ones(len(frame), dtype=bool)
    if when.notional_above is not None:
        notional = np.abs(frame["quantity"].to_numpy(float)) * frame["price"].to_numpy(float)
        mask &= notional > when.notional_above
    if when.confidence_below is not None:
        mask &= frame["confidence"].to_numpy(float) < when.confidence_below
    for column, allowed in (("symbol", when.symbols), ("strategy", when.strategies), ("regime", when.regimes)):
        if allowed is not None:
            # A set lookup per row: Series.isin's hashing set-up cost ~0.1 ms a rule for a handful of orders.
            members = set(allowed)
            mask &= np.fromiter((v in members for v in frame[column].to_numpy()), bool, len(frame))
    if when.utc_time_between is not None:
        # Seconds since UTC midnight from the int64 ns (the frame is validated: UTC, no NaT); the pandas
        # normalize/total_seconds route cost ~0.4 ms a rule on a one-order batch.
        seconds = (timestamps_ns(frame["event_ts"]) % 86_400_000_000_000) / 1e9
        start, end = (_minutes(t) * 60 for t in when.utc_time_between)
        inside = (seconds >= start) & (seconds < end) if start < end else (seconds >= start) | (seconds < end)
        mask &= inside
    return mask


# --- JSON encoding of held order rows (state must be plain JSON: no NaN, no Timestamps) ---------

def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _encode_order(order: dict) -> dict:
    fields, nan_fields, ts_fields = {}, [], []
    for key, value in order.items():
        value = _native(value)
        if isinstance(value, pd.Timestamp):
            fields[key], ts_fields = value.isoformat(), ts_fields + [key]
        elif isinstance(value, float) and math.isnan(value):
            fields[key], nan_fields = None, nan_fields + [key]
        else:
            fields[key] = value
    return {"fields": fields, "nan_fields": nan_fields, "ts_fields": ts_fields}


def _decode_order(encoded: dict) -> dict:
    order = dict(encoded["fields"])
    for key in encoded["nan_fields"]:
        order[key] = float("nan")
    for key in encoded["ts_fields"]:
        order[key] = pd.Timestamp(order[key])
    return order


class VetoGate:
    """Applies the veto rules and keeps the queue of orders held for a human decision."""

    def __init__(self, config: VetoConfig, history_size: int = 10_000):
        if not isinstance(config, VetoConfig):
            raise ValueError(f"config: expected VetoConfig, got {type(config).__name__}")
        if history_size < 1:
            raise ValueError(f"history_size: must be >= 1, value {history_size!r}")
        self.config = config
        self.history_size = int(history_size)
        # decision_id -> {order, rule, held_at, deadline}; insertion order = hold order
        self._pending: dict[str, dict] = {}
        # decision_id -> short summary of how it was decided, so a second decision names the first;
        # bounded (oldest dropped) so a long run does not grow without limit.
        self._decided: OrderedDict[str, dict] = OrderedDict()
        self.counts: Counter[str] = Counter()

    # -- review ------------------------------------------------------------------------------
    def review(self, orders: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
        """Verdict per order (decision_id, verdict, rule, release); holds join the pending queue."""
        now = as_utc(now, "now")
        frame = validate_order_frame(orders, VETO_ORDER_COLUMNS)
        if frame.empty:
            return pd.DataFrame({"decision_id": pd.Series(dtype=object), "verdict": pd.Series(dtype=object),
                                 "rule": pd.Series(dtype=object), "release": pd.Series(dtype=bool)})
        late = timestamps_ns(frame["event_ts"]) > now.value  # validated: UTC, no NaT
        if late.any():
            row = int(np.flatnonzero(late)[0])
            raise ValueError(f"event_ts: order {frame['decision_id'].iloc[row]!r} stamped {frame['event_ts'].iloc[row]} "
                             f"is after now={now} (look-ahead)")
        ids = frame["decision_id"].tolist()
        for decision_id in ids:
            if decision_id in self._pending or decision_id in self._decided:
                raise ValueError(f"decision_id: {decision_id!r} was already reviewed "
                                 f"({self._describe(decision_id)}); a decision is reviewed once")

        rules = self.config.rules
        # np.select takes the first true condition per row, which is exactly first-match-wins.
        masks = [rule_mask(rule.when, frame) for rule in rules]
        verdict = np.select(masks, [r.action for r in rules], default=self.config.default_action) if rules \
            else np.full(len(frame), self.config.default_action, dtype=object)
        rule = np.select(masks, [r.name for r in rules], default=DEFAULT_RULE) if rules \
            else np.full(len(frame), DEFAULT_RULE, dtype=object)
        verdict, rule = verdict.astype(object), rule.astype(object)

        deadline = now + pd.Timedelta(seconds=self.config.hold_timeout_s)
        held_rows = np.flatnonzero(verdict == "hold")
        # Only when something is held: to_dict on the empty selection alone cost ~1 ms a batch.
        held_orders = frame.iloc[held_rows].to_dict("records") if len(held_rows) else []
        for row, order in zip(held_rows, held_orders):
            self._pending[ids[row]] = {"order": {k: _native(v) for k, v in order.items()}, "rule": rule[row],
                                       "held_at": now, "deadline": deadline}
        decided_at = now.isoformat()
        for decision_id, action, name in zip(ids, verdict.tolist(), rule.tolist()):
            if action != "hold":
                self._remember(decision_id, {"verdict": action, "rule": name, "reviewer": "rules",
                                             "decided_at": decided_at})
        self.counts.update(verdict.tolist())
        return pd.DataFrame({"decision_id": ids, "verdict": verdict, "rule": rule, "release": verdict == "approve"})

    # -- the hold queue ----------------------------------------------------------------------
    def pending(self, now: pd.Timestamp) -> list[dict]:
        """Held orders by deadline; `expired` ones can no longer be approved and wait for `expire`."""
        now = as_utc(now, "now")
        out = []
        for decision_id, hold in sorted(self._pending.items(), key=lambda item: item[1]["deadline"]):
            left = (hold["deadline"] - now).total_seconds()
            out.append({"decision_id": decision_id, "order": dict(hold["order"]), "rule": hold["rule"],
                        "held_at": hold["held_at"], "deadline": hold["deadline"],
                        "seconds_left": max(0.0, left), "expired": left <= 0})
        return out

    def approve(self, decision_id: str, reviewer: str, now: pd.Timestamp) -> dict:
        """Release a held order; the returned record's `order` is what to execute."""
        return self._decide(decision_id, reviewer, now, "approve")

    def reject(self, decision_id: str, reviewer: str, now: pd.Timestamp) -> dict:
        return self._decide(decision_id, reviewer, now, "reject")

    def expire(self, now: pd.Timestamp) -> list[dict]:
        """Apply `timeout_action` to every hold whose deadline is at or before `now`."""
        now = as_utc(now, "now")
        due = [d for d, hold in self._pending.items() if hold["deadline"] <= now]
        due.sort(key=lambda d: self._pending[d]["deadline"])
        return [self._close(d, self.config.timeout_action, TIMEOUT_REVIEWER, now) for d in due]

    def _decide(self, decision_id: str, reviewer: str, now: pd.Timestamp, action: str) -> dict:
        if not isinstance(reviewer, str) or not reviewer.strip() or reviewer == TIMEOUT_REVIEWER:
            raise ValueError(f"reviewer: must be a non-empty str other than {TIMEOUT_REVIEWER!r}, value {reviewer!r}")
        now = as_utc(now, "now")
        hold = self._pending.get(decision_id)
        if hold is None:
            if decision_id in self._decided:
                raise KeyError(f"decision_id {decision_id!r} is not pending: already decided "
                               f"({self._describe(decision_id)})")
            raise KeyError(f"decision_id {decision_id!r} is not pending: unknown to the veto gate")
        if now >= hold["deadline"]:
            # Left in the queue: only `expire` decides it now, so a timeout release is never lost.
            raise KeyError(f"decision_id {decision_id!r} hold expired at {hold['deadline']} (now {now}); "
                           f"it can no longer be {action}d and falls to timeout_action={self.config.timeout_action!r}")
        if now < hold["held_at"]:
            raise ValueError(f"now: {now} precedes the hold of {decision_id!r} at {hold['held_at']}")
        return self._close(decision_id, action, reviewer, now)

    def _close(self, decision_id: str, action: str, reviewer: str, now: pd.Timestamp) -> dict:
        hold = self._pending.pop(decision_id)
        release = action == "approve"
        record = {"decision_id": decision_id, "verdict": action, "rule": hold["rule"], "reviewer": reviewer,
                  "decided_at": now, "held_at": hold["held_at"], "deadline": hold["deadline"],
                  "release": release, "order": hold["order"] if release else None}
        self._remember(decision_id, {"verdict": action, "rule": hold["rule"], "reviewer": reviewer,
                                     "decided_at": now.isoformat()})
        self.counts[f"held_{action}" if reviewer != TIMEOUT_REVIEWER else f"timeout_{action}"] += 1
        return record

    def _remember(self, decision_id: str, summary: dict) -> None:
        self._decided[decision_id] = summary
        while len(self._decided) > self.history_size:
            self._decided.popitem(last=False)

    def _describe(self, decision_id: str) -> str:
        if decision_id in self._pending:
            return f"pending until {self._pending[decision_id]['deadline']}"
        s = self._decided[decision_id]
        return f"{s['verdict']} by {s['reviewer']} (rule {s['rule']}) at {s['decided_at']}"

    # -- reporting and persistence -----------------------------------------------------------
    def status(self) -> dict:
        return {"pending": len(self._pending), "counts": dict(self.counts),
                "config": self.config.model_dump(mode="json")}

    def state_dict(self) -> dict:
        return {
            "config": self.config.model_dump(mode="json"),
            "history_size": self.history_size,
            "pending": [{"decision_id": d, "order": _encode_order(h["order"]), "rule": h["rule"],
                         "held_at": h["held_at"].isoformat(), "deadline": h["deadline"].isoformat()}
                        for d, h in self._pending.items()],
            "decided": [[d, dict(s)] for d, s in self._decided.items()],
            "counts": dict(self.counts),
        }

    @classmethod
    def from_state(cls, state: dict) -> "VetoGate":
        gate = cls(VetoConfig.model_validate(state["config"]), history_size=state["history_size"])
        for item in state["pending"]:
            gate._pending[item["decision_id"]] = {
                "order": _decode_order(item["order"]), "rule": item["rule"],
                "held_at": pd.Timestamp(item["held_at"]), "deadline": pd.Timestamp(item["deadline"])}
        gate._decided = OrderedDict((d, dict(s)) for d, s in state["decided"])
        gate.counts = Counter(state["counts"])
        return gate
