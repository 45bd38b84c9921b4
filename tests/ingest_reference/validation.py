"""Frozen pre-optimisation reference copy of edgeray/validation.py, used only by tests/test_ingest_fastpath.py.

Vectorised validation and normalisation of raw market rows into schema columns.

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

from tests.ingest_reference.events import MARKET_EVENT_TYPES, SCHEMAS, EventKind, event_ids

# Earlier timestamps are typos or unit mistakes (seconds read as nanoseconds).
MIN_TS = pd.Timestamp("1900-01-01", tz="UTC")
# A row stamped further ahead than this is refused at the door: accepted, it would move its symbol's
# watermark (every genuine later row becomes `late`) and the decision loop's clocks into the future.
DEFAULT_MAX_FUTURE_SKEW = pd.Timedelta(seconds=300)
EPOCH_UNITS = ("s", "ms", "us", "ns")
MAX_SOURCE_ID_CHARS = 256
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
    if not len(raw.columns):  # rows of `{}`: to_dict would return no records at all
        return ["{}"] * len(idx)
    rows = raw.iloc[idx].astype(object)
    return [json.dumps(r, default=str) for r in rows.where(rows.notna(), None).to_dict("records")]


def _present(values: np.ndarray) -> np.ndarray:
    missing = pd.isna(values)
    if values.dtype == object:
        missing |= np.array([isinstance(v, str) and not v.strip() for v in values], dtype=bool)
    return ~missing


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _typed(values: np.ndarray) -> np.ndarray:
    """Values as JSON text, so a wrong_type message shows "100.0" (a string) apart from 100.0."""
    return np.array([json.dumps(v.item() if isinstance(v, np.generic) else v, default=str) for v in values], dtype=object)


def _wrong_type(values: np.ndarray, ok) -> np.ndarray:
    """Present values failing the type test `ok` (strict mode: what a JSON push must send)."""
    series = pd.Series(values)
    if series.dtype == bool:
        return np.array([not ok(True)] * len(values), dtype=bool)
    return np.array([not (v is None or (isinstance(v, float) and np.isnan(v)) or ok(v)) for v in values], dtype=bool)


def _source_ids(raw: pd.DataFrame, strict: bool, fail) -> np.ndarray:
    """The caller's own id (`source_id`, or `event_id` from a feed), kept as an opaque string for
    tracing only: a caller-chosen id must never decide what is a duplicate."""
    name = "source_id" if "source_id" in raw else "event_id"
    if name not in raw:
        return np.full(len(raw), None, dtype=object)
    values = raw[name].to_numpy()
    if strict:
        fail(_present(values) & _wrong_type(values, lambda v: isinstance(v, str) or (_is_number(v) and float(v).is_integer())),
             "wrong_type", name, _typed(values))
    out = np.full(len(values), None, dtype=object)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            continue
        # CSV columns with gaps turn integer ids into floats: 12.0 is the id "12".
        out[i] = str(int(v)) if _is_number(v) and float(v).is_integer() else str(v)
    too_long = np.array([v is not None and len(v) > MAX_SOURCE_ID_CHARS for v in out], dtype=bool)
    fail(too_long, "too_long", name, np.array([v[:64] + "..." if v and len(v) > 64 else v for v in out], dtype=object))
    return out


def parse_timestamps(values: np.ndarray, epoch_unit: str = "ns") -> np.ndarray:
    """ISO-8601 strings (naive ones read as UTC), datetimes or epoch numbers in `epoch_unit`
    -> datetime64[ns] (UTC), NaT where unparseable."""
    series = pd.Series(values)

    def parse(s: pd.Series) -> np.ndarray:
        if pd.api.types.is_bool_dtype(s):
            return np.full(len(s), np.datetime64("NaT"), dtype="datetime64[ns]")
        if pd.api.types.is_numeric_dtype(s):
            parsed = pd.to_datetime(s, unit=epoch_unit, utc=True, errors="coerce")
        else:
            parsed = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")
        return parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")

    if series.dtype != object:
        return parse(series)
    numeric = np.fromiter((_is_number(v) for v in series), bool, len(series))
    if not numeric.any():
        return parse(series)
    out = parse(series.where(~numeric, None))
    # Built from a list: int64 when all are integers, since epoch nanoseconds need all 64 bits.
    out[numeric] = parse(pd.Series(series[numeric].tolist()))
    return out


def validate(kind: EventKind | str, raw: pd.DataFrame, known_symbols: set[str] | None = None,
             known_sports: set[str] | None = None, now: pd.Timestamp | None = None,
             max_future_skew: pd.Timedelta = DEFAULT_MAX_FUTURE_SKEW, strict: bool = False,
             epoch_unit: str | None = None) -> ValidationResult:
    """`known_symbols` is the instrument universe for bars and quotes; odds and results are keyed
    by game ids, which are open-ended, so for them the sport must be known instead.

    `strict` (HTTP/WebSocket pushes): every value must already have its JSON type: numbers for float
    fields (not "100.0", not true), real booleans, strings; event_ts an ISO-8601 string, or a number
    only when `epoch_unit` ("s", "ms", "us", "ns") says how to read it. Lenient (file replays): values
    are coerced, and a numeric event_ts is epoch nanoseconds.
    """
    kind = EventKind(kind)
    if epoch_unit is not None and epoch_unit not in EPOCH_UNITS:
        raise ValueError(f"epoch_unit: must be one of {EPOCH_UNITS} or None, got {epoch_unit!r}")
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
    fail(~_present(ts_raw), "missing_field", "event_ts")
    if strict:
        fail(_present(ts_raw) & _wrong_type(ts_raw, lambda v: isinstance(v, str) or (epoch_unit is not None and _is_number(v))),
             "wrong_type", "event_ts", _typed(ts_raw))
    ts = parse_timestamps(ts_raw, epoch_unit or "ns")
    now = (now or pd.Timestamp.now(tz="UTC")).tz_convert("UTC").tz_localize(None)
    fail(np.isnat(ts) | (ts < MIN_TS.tz_localize(None).to_datetime64()), "bad_timestamp", "event_ts", ts_raw)
    fail(ts > (now + pd.Timedelta(max_future_skew)).to_datetime64(), "future", "event_ts", ts_raw)
    out["event_ts"] = ts

    sym = column("symbol")
    fail(~_present(sym), "missing_field", "symbol")
    if strict:
        fail(_present(sym) & _wrong_type(sym, lambda v: isinstance(v, str)), "wrong_type", "symbol", _typed(sym))
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
        if strict:
            fail(present & _wrong_type(col, _is_number), "wrong_type", name, _typed(col))
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
        if name in ("symbol", "source_id"):
            continue
        col = column(name)
        present = _present(col)
        if name in required:
            fail(~present, "missing_field", name)
        if strict:
            fail(present & _wrong_type(col, lambda v: isinstance(v, str)), "wrong_type", name, _typed(col))
        out[name] = np.where(present, col, defaults.get(name, "")).astype(str).astype(object)
    if known_sports is not None and "sport" in out:
        fail(~pd.Series(out["sport"]).isin(known_sports).to_numpy(), "unknown_sport", "sport", out["sport"])
    for name in bools:
        col = column(name, False)
        if strict:
            fail(_present(col) & _wrong_type(col, lambda v: isinstance(v, (bool, np.bool_))), "wrong_type", name, _typed(col))
        out[name] = pd.Series(col).astype(str).str.strip().str.lower().isin(["true", "1", "yes"]).to_numpy()
    out["received_ns"] = np.zeros(n, dtype=np.int64)
    out["source_id"] = _source_ids(raw, strict, fail)

    bad = reason != None  # noqa: E711
    good = ~bad
    accepted = {k: v[good] for k, v in out.items()}
    # Identity comes from content only (ID_KEYS): an id chosen by the caller could collide across symbols.
    accepted["event_id"] = event_ids(kind, accepted)
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
