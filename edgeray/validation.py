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
import re
import time
import typing
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from edgeray.events import MARKET_EVENT_TYPES, SCHEMAS, EventKind, event_ids

# Earlier timestamps are typos or unit mistakes (seconds read as nanoseconds).
MIN_TS = pd.Timestamp("1900-01-01", tz="UTC")
# A row stamped further ahead than this is refused at the door: accepted, it would move its symbol's
# watermark (every genuine later row becomes `late`) and the decision loop's clocks into the future.
DEFAULT_MAX_FUTURE_SKEW = pd.Timedelta(seconds=300)
EPOCH_UNITS = ("s", "ms", "us", "ns")
MAX_SOURCE_ID_CHARS = 256
Columns = dict[str, np.ndarray]
_MIN_TS64 = MIN_TS.tz_localize(None).to_datetime64()
# Fast path for the common ISO-8601 stamp forms (naive = UTC, or Z / +00:00), one per line of the joined
# text: numpy parses exactly these as pandas' format="ISO8601" does; anything else (other offsets, dates
# only, whitespace, years outside 1900-2199) goes through pandas. Impossible dates make numpy raise.
_ISO_ONE = (r"(?:19|20|21)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[T ](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
            r"(?:\.\d{1,9})?(?:Z|\+00:00)?")
_ISO_LINES = re.compile(rf"{_ISO_ONE}(?:\n{_ISO_ONE})*")
_UTC_SUFFIX = re.compile(r"(?:Z|\+00:00)(?=\n|$)")


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


def _all_str(values: np.ndarray) -> bool:
    return values.dtype == object and all(type(v) is str for v in values)


def _present(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.float64:
        return ~np.isnan(values)
    if _all_str(values):  # pd.isna is False for every str
        return np.fromiter((bool(v.strip()) for v in values), bool, len(values))
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
    if values.dtype == bool:  # what pd.Series(values).dtype is for an ndarray
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


def _fast_timestamps(values, strict: bool) -> np.ndarray | None:
    """event_ts as datetime64[ns] without pandas' parsing, or None when the input needs the general
    path: datetime64[ns] columns (tz-aware or naive = UTC; lenient only, a push must send text) and
    text in the common ISO-8601 forms."""
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        if strict:
            return None
        try:  # other units: the same instants in ns (what to_datetime gives), unless out of its range
            values = values if dtype.unit == "ns" else values.as_unit("ns")
        except (ValueError, OverflowError):
            return None
        return values.asi8.view("datetime64[ns]").copy()
    if dtype == np.dtype("datetime64[ns]"):
        return None if strict else np.array(values, dtype="datetime64[ns]")
    if dtype != object or not isinstance(values, np.ndarray):
        return None
    if not len(values):
        return None
    if not strict and all(type(v) is pd.Timestamp and v.tzinfo is not None for v in values):
        # tz-aware Timestamps in an object column (what the sports loaders give): .value is the UTC ns
        try:
            return np.array([v.value for v in values], dtype=np.int64).view("datetime64[ns]")
        except (ValueError, OverflowError):  # a coarser unit beyond the ns range
            return None
    if not _all_str(values):
        return None
    text = "\n".join(values)
    if not _ISO_LINES.fullmatch(text):
        return None
    try:
        return np.array(_UTC_SUFFIX.sub("", text).split("\n"), dtype="datetime64[ns]")
    except ValueError:  # e.g. 2021-02-30: pandas makes it NaT, the general path says so
        return None


def _isin(values: np.ndarray, known) -> np.ndarray:
    """pd.Series(values).isin(known), by set lookups when both sides are plain strings."""
    if isinstance(known, (set, frozenset)) and _all_str(values) and all(type(k) is str for k in known):
        return np.fromiter((v in known for v in values), bool, len(values))
    return pd.Series(values).isin(known).to_numpy()


# DataFrame._get_column_array(i): private but long-standing; without it, columns come from raw[name].
_COLUMN_ARRAY = getattr(pd.DataFrame, "_get_column_array", None)
_EMPTY_REJECTED = pd.DataFrame({"row": np.flatnonzero(np.zeros(0, dtype=bool)),
                                "reason": np.full(0, None, dtype=object).astype(str),
                                "field": np.full(0, None, dtype=object).astype(str), "value": [], "raw": []})


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
        mask = np.asarray(mask, dtype=bool)
        if mask.shape == reason.shape and not mask.any():  # other shapes: numpy says what is wrong, as before
            return
        new = mask & (reason == None)  # noqa: E711 (elementwise on object array)
        if new.any():
            reason[new] = why
            fld[new] = field
            if values is not None:
                val[new] = np.asarray(values, dtype=object)[new]

    # Fast paths below give the same results as the general code; they need one column per name.
    fast = isinstance(raw, pd.DataFrame) and raw.columns.is_unique
    positions = {name: i for i, name in enumerate(raw.columns)} if fast and _COLUMN_ARRAY is not None else None

    def array(name: str):
        """The column's own values (ndarray or pandas extension array), without building a Series
        (which deep-copies the frame's attrs each time)."""
        if positions is not None:
            values = _COLUMN_ARRAY(raw, positions[name])
            if isinstance(values, (np.ndarray, pd.arrays.DatetimeArray)):
                return values
        return raw[name].array

    def column(name: str, fill=None) -> np.ndarray:
        if positions is not None and name in positions:
            values = _COLUMN_ARRAY(raw, positions[name])
            if isinstance(values, np.ndarray):  # what Series.to_numpy() returns for it
                return values
        return raw[name].to_numpy() if name in raw else np.full(n, fill, dtype=object)

    floats, strs, bools, defaults = _field_kinds(kind)
    required = set(cls.REQUIRED) | {"event_ts", "symbol"}
    out: Columns = {}

    ts = _fast_timestamps(array("event_ts"), strict) if fast and "event_ts" in raw else None
    if ts is None:
        ts_raw = column("event_ts")
        fail(~_present(ts_raw), "missing_field", "event_ts")
        if strict:
            fail(_present(ts_raw) & _wrong_type(ts_raw, lambda v: isinstance(v, str) or (epoch_unit is not None and _is_number(v))),
                 "wrong_type", "event_ts", _typed(ts_raw))
        ts = parse_timestamps(ts_raw, epoch_unit or "ns")
    else:
        # Text that parsed is present and a str (never wrong_type); only NaT of a datetime column is missing.
        missing = np.isnat(ts)
        ts_raw = column("event_ts") if missing.any() else None
        fail(missing, "missing_field", "event_ts")
    skew_ns = pd.Timedelta(max_future_skew).value
    if now is None and abs(skew_ns) < 2**62:  # pd.Timestamp.now(tz="UTC") (microseconds) + skew, as ints
        limit = np.datetime64(time.time_ns() // 1000 * 1000 + skew_ns, "ns")
    else:
        now = (now or pd.Timestamp.now(tz="UTC")).tz_convert("UTC").tz_localize(None)
        limit = (now + pd.Timedelta(max_future_skew)).to_datetime64()
    bad_ts = np.isnat(ts) | (ts < _MIN_TS64)
    future = ts > limit
    if ts_raw is None and (bad_ts.any() or future.any()):
        ts_raw = column("event_ts")
    fail(bad_ts, "bad_timestamp", "event_ts", ts_raw)
    fail(future, "future", "event_ts", ts_raw)
    out["event_ts"] = ts

    sym = column("symbol")
    fail(~_present(sym), "missing_field", "symbol")
    if strict:
        fail(_present(sym) & _wrong_type(sym, lambda v: isinstance(v, str)), "wrong_type", "symbol", _typed(sym))
    sym = sym.astype(object) if _all_str(sym) else np.where(pd.isna(sym), "", sym).astype(object)
    if known_symbols is not None and kind in (EventKind.BAR, EventKind.QUOTE):
        fail(~_isin(sym, known_symbols), "unknown_symbol", "symbol", sym)
    out["symbol"] = sym

    for name in floats:
        if fast and name not in raw:  # all NaN: only missing_field can fail
            if name in required:
                fail(np.ones(n, dtype=bool), "missing_field", name)
            out[name] = np.full(n, np.nan)
            continue
        col = column(name, np.nan)
        if fast and col.dtype.kind in "fi" and col.dtype.itemsize == 8:
            # float64: to_numeric returns the same array; int64: the same as astype(float). No value of
            # either is a wrong JSON type (np.float64 is a float, np.int64 a number).
            num = col if col.dtype == np.float64 else col.astype(np.float64)
            present = ~np.isnan(num)
            if name in required:
                fail(~present, "missing_field", name)
            not_finite = present & ~np.isfinite(num)
            if not_finite.any():
                fail(not_finite, "not_a_finite_number", name, col)
            out[name] = num
            continue
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
        if strict and not _all_str(col):
            fail(present & _wrong_type(col, lambda v: isinstance(v, str)), "wrong_type", name, _typed(col))
        out[name] = np.where(present, col, defaults.get(name, "")).astype(str).astype(object)
    if known_sports is not None and "sport" in out:
        fail(~_isin(out["sport"], known_sports), "unknown_sport", "sport", out["sport"])
    for name in bools:
        if fast and name not in raw:  # False everywhere: "False" is not a true spelling, never wrong_type
            out[name] = np.zeros(n, dtype=bool)
            continue
        col = column(name, False)
        if fast and not strict and (col.dtype == bool or (col.dtype == object and all(type(v) is bool for v in col))):
            out[name] = col.astype(bool)  # str(True) is "True", str(False) "False"
            continue
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
    if not len(bad_idx):
        return ValidationResult(accepted=accepted, rejected=_EMPTY_REJECTED.copy(), accepted_rows=np.flatnonzero(good))
    rejected = pd.DataFrame({
        "row": bad_idx,
        "reason": reason[bad_idx].astype(str),
        "field": fld[bad_idx].astype(str),
        "value": [None if v is None else str(v) for v in val[bad_idx]],
        "raw": _raw_json(raw, bad_idx) if len(bad_idx) else [],
    })
    return ValidationResult(accepted=accepted, rejected=rejected, accepted_rows=np.flatnonzero(good))
