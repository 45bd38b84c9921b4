"""Vectorised validation and normalisation of raw market rows into schema columns.

Each row that fails gets exactly one reason (the first failing rule, in the order below), the
field and value that failed, and its raw content, so the dead-letter store can show a user
precisely what was wrong. Nothing is dropped silently: every input row is either accepted or
rejected. Works on numpy columns rather than DataFrame assignments: this runs on every
micro-batch and pandas' per-column overhead would dominate.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from edgeray.events import MARKET_EVENT_TYPES, SCHEMAS, EventKind, event_ids

# Timestamps outside this range are typos or unit mistakes (seconds read as nanoseconds).
MIN_TS = pd.Timestamp("1900-01-01", tz="UTC")
MAX_FUTURE = pd.Timedelta(days=1)
Columns = dict[str, np.ndarray]


@dataclass
class ValidationResult:
    accepted: Columns  # every schema column (event_ts as datetime64[ns] UTC), incl. event_id
    rejected: pd.DataFrame  # columns: row (position in the input), reason, field, value, raw (JSON)
    accepted_rows: np.ndarray  # position in the input of each accepted row

    @property
    def n_accepted(self) -> int:
        return len(self.accepted["event_id"])


@cache
def _field_kinds(kind: EventKind) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], dict]:
    cls = MARKET_EVENT_TYPES[kind]
    hints = typing.get_type_hints(cls)
    groups: dict[type, list[str]] = {float: [], str: [], bool: []}
    defaults = {}
    for f in dataclasses.fields(cls):
        base = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
        if base in groups:
            groups[base].append(f.name)
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
    return tuple(groups[float]), tuple(groups[str]), tuple(groups[bool]), defaults


def _raw_json(raw: pd.DataFrame, idx: np.ndarray) -> list[str]:
    rows = raw.iloc[idx].astype(object)
    return [json.dumps(r, default=str) for r in rows.where(rows.notna(), None).to_dict("records")]


def _present(values: np.ndarray) -> np.ndarray:
    missing = pd.isna(values)
    if values.dtype == object:
        missing |= np.array([isinstance(v, str) and not v.strip() for v in values], dtype=bool)
    return ~missing


def _source_event_ids(raw: pd.DataFrame, fail) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A feed that carries its own ids keeps them, so resends of the same event deduplicate.
    Parsed one by one: a float round trip would corrupt ids above 2**53."""
    if "event_id" not in raw:
        return None, None
    values = raw["event_id"].to_numpy()
    ids = np.zeros(len(values), dtype=np.uint64)
    has = np.zeros(len(values), dtype=bool)
    invalid = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        if pd.isna(value) or (isinstance(value, str) and not value.strip()):
            continue
        try:
            as_int = int(value)
            if not 0 <= as_int < 2**64 or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
        except (TypeError, ValueError):
            invalid[i] = True
            continue
        ids[i], has[i] = as_int, True
    fail(invalid, "bad_event_id", "event_id", values)
    return ids, has


def parse_timestamps(values: np.ndarray) -> np.ndarray:
    """ISO-8601 strings, datetimes or epoch nanoseconds -> datetime64[ns] (UTC), NaT where unparseable."""
    series = pd.Series(values)
    if pd.api.types.is_numeric_dtype(series):
        parsed = pd.to_datetime(series, unit="ns", utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")
    return parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")


def validate(kind: EventKind | str, raw: pd.DataFrame, known_symbols: set[str] | None = None,
             known_sports: set[str] | None = None, now: pd.Timestamp | None = None) -> ValidationResult:
    """`known_symbols` is the instrument universe for bars and quotes; odds and results are keyed
    by game ids, which are open-ended, so for them the sport must be known instead."""
    kind = EventKind(kind)
    cls = MARKET_EVENT_TYPES[kind]
    n = len(raw)
    reason = np.full(n, None, dtype=object)
    fld = np.full(n, None, dtype=object)
    val = np.full(n, None, dtype=object)

    def fail(mask: np.ndarray, why: str, field: str, values: np.ndarray | None = None) -> None:
        new = np.asarray(mask, dtype=bool) & (reason == None)  # noqa: E711 (elementwise on object array)
        if new.any():
            reason[new] = why
            fld[new] = field
            if values is not None:
                val[new] = np.asarray(values, dtype=object)[new]

    def column(name: str, fill=None) -> np.ndarray:
        return raw[name].to_numpy() if name in raw else np.full(n, fill, dtype=object)

    floats, strs, bools, defaults = _field_kinds(kind)
    required = set(cls.REQUIRED) | {"event_ts", "symbol"}
    out: Columns = {}

    ts_raw = column("event_ts")
    ts = parse_timestamps(ts_raw)
    now = (now or pd.Timestamp.now(tz="UTC")).tz_convert("UTC").tz_localize(None)
    fail(~_present(ts_raw), "missing_field", "event_ts")
    fail(np.isnat(ts) | (ts < MIN_TS.tz_localize(None).to_datetime64()) | (ts > (now + MAX_FUTURE).to_datetime64()),
         "bad_timestamp", "event_ts", ts_raw)
    out["event_ts"] = ts

    sym = column("symbol")
    fail(~_present(sym), "missing_field", "symbol")
    sym = np.where(pd.isna(sym), "", sym).astype(object)
    if known_symbols is not None and kind in (EventKind.BAR, EventKind.QUOTE):
        fail(~pd.Series(sym).isin(known_symbols).to_numpy(), "unknown_symbol", "symbol", sym)
    out["symbol"] = sym

    for name in floats:
        col = column(name, np.nan)
        present = _present(col)
        num = pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        if name in required:
            fail(~present, "missing_field", name)
        fail(present & ~np.isfinite(num), "not_a_finite_number", name, col)
        out[name] = num

    with np.errstate(invalid="ignore"):
        for name in cls.PRICES:
            fail(out[name] <= 0, "nonpositive_price", name, out[name])
        if kind is EventKind.BAR:
            o, h, l, c = out["open"], out["high"], out["low"], out["close"]
            fail(h < np.maximum(np.maximum(o, c), l), "high_below_open_close_or_low", "high", h)
            fail(l > np.minimum(o, c), "low_above_open_or_close", "low", l)
            fail(out["volume"] < 0, "negative_volume", "volume", out["volume"])
        if "ask" in out:
            fail(out["ask"] < out["bid"], "ask_below_bid", "ask", out["ask"])
        if kind is EventKind.QUOTE:
            for name in ("bid_size", "ask_size"):
                fail(out[name] < 0, "negative_size", name, out[name])
        if kind is EventKind.ODDS:
            for side in ("a", "b"):
                am = out[f"odds_{side}_american"]
                fail(np.abs(am) < 100, "impossible_odds", f"odds_{side}_american", am)
                safe = np.where(np.abs(am) < 100, np.nan, am)
                derived = np.where(safe > 0, 1 + safe / 100, 1 + 100 / np.abs(safe))
                dec = out[f"odds_{side}_decimal"]
                given = np.isfinite(dec)
                fail(given & (dec <= 1), "impossible_odds", f"odds_{side}_decimal", dec)
                # A decimal price that disagrees with its American twin means one of them is mistyped.
                fail(given & (np.abs(dec - derived) > 0.01 * derived), "inconsistent_odds", f"odds_{side}_decimal", dec)
                out[f"odds_{side}_decimal"] = np.where(given, dec, derived)
        if kind is EventKind.RESULT:
            for name in ("score_a", "score_b"):
                fail(out[name] < 0, "negative_score", name, out[name])

    for name in strs:
        if name == "symbol":
            continue
        col = column(name)
        present = _present(col)
        if name in required:
            fail(~present, "missing_field", name)
        out[name] = np.where(present, col, defaults.get(name, "")).astype(str).astype(object)
    if known_sports is not None and "sport" in out:
        fail(~pd.Series(out["sport"]).isin(known_sports).to_numpy(), "unknown_sport", "sport", out["sport"])
    for name in bools:
        col = column(name, False)
        out[name] = pd.Series(col).astype(str).str.strip().str.lower().isin(["true", "1", "yes"]).to_numpy()
    out["received_ns"] = np.zeros(n, dtype=np.int64)
    given_ids, has_id = _source_event_ids(raw, fail)

    bad = reason != None  # noqa: E711
    good = ~bad
    accepted = {k: v[good] for k, v in out.items()}
    computed = event_ids(kind, accepted)
    if given_ids is not None:
        computed = np.where(has_id[good], given_ids[good], computed)
    accepted["event_id"] = computed
    accepted = {name: accepted[name] for name in SCHEMAS[kind].names}

    bad_idx = np.flatnonzero(bad)
    rejected = pd.DataFrame({
        "row": bad_idx,
        "reason": reason[bad_idx].astype(str),
        "field": fld[bad_idx].astype(str),
        "value": [None if v is None else str(v) for v in val[bad_idx]],
        "raw": _raw_json(raw, bad_idx) if len(bad_idx) else [],
    })
    return ValidationResult(accepted=accepted, rejected=rejected, accepted_rows=np.flatnonzero(good))
