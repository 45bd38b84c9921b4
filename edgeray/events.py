"""Typed, versioned event schemas.

One dataclass per message is the single source of truth: the Arrow schema that actors exchange
micro-batches in is derived from its fields, so a single event and a batch of them cannot drift.
Market-side events (bar, quote, odds, result) travel as Arrow record batches. Decisions are not
messages here: their one schema is the audit trail (edgeray.decision).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import typing
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

# 2: market events carry `source_id` (the caller's own id, never used for dedup).
SCHEMA_VERSION = 2
KIND_METADATA_KEY = b"edgeray.kind"
VERSION_METADATA_KEY = b"edgeray.schema_version"


class EventKind(StrEnum):
    BAR = "bar"
    QUOTE = "quote"
    ODDS = "odds"
    RESULT = "result"


@dataclass(frozen=True, slots=True)
class MarketBar:
    """One OHLCV bar; `bid`/`ask` are the closing quotes when the source has them (FX bid/ask bars)."""

    KIND: ClassVar[EventKind] = EventKind.BAR
    ID_KEYS: ClassVar[tuple[str, ...]] = ("symbol", "event_ts")
    REQUIRED: ClassVar[tuple[str, ...]] = ("open", "high", "low", "close")
    PRICES: ClassVar[tuple[str, ...]] = ("open", "high", "low", "close", "bid", "ask")
    event_ts: datetime
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float | None = None
    bid: float | None = None
    ask: float | None = None
    source: str = ""
    source_id: str | None = None  # the feed's own id for this row, kept for tracing; identity is ID_KEYS
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class QuoteTick:
    KIND: ClassVar[EventKind] = EventKind.QUOTE
    # Two ticks may share a timestamp, so the prices are part of the identity.
    ID_KEYS: ClassVar[tuple[str, ...]] = ("symbol", "event_ts", "bid", "ask", "bid_size", "ask_size")
    REQUIRED: ClassVar[tuple[str, ...]] = ("bid", "ask")
    PRICES: ClassVar[tuple[str, ...]] = ("bid", "ask")
    event_ts: datetime
    symbol: str
    bid: float
    ask: float
    bid_size: float | None = None
    ask_size: float | None = None
    source: str = ""
    source_id: str | None = None  # the feed's own id for this row, kept for tracing; identity is ID_KEYS
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class OddsQuote:
    """A two-way moneyline price for one game (`symbol` is the game id).

    Sides are `a` and `b` rather than home/away because some sources (NCAAM SBR) list the
    favourite first and do not say which team is at home; `home_side` is "a", "b" or "".
    """

    KIND: ClassVar[EventKind] = EventKind.ODDS
    ID_KEYS: ClassVar[tuple[str, ...]] = ("symbol", "event_ts", "bookmaker", "market_type", "is_open", "is_close")
    REQUIRED: ClassVar[tuple[str, ...]] = ("odds_a_american", "odds_b_american")
    PRICES: ClassVar[tuple[str, ...]] = ()
    event_ts: datetime
    symbol: str
    sport: str
    team_a: str
    team_b: str
    odds_a_american: float
    odds_b_american: float
    odds_a_decimal: float | None = None
    odds_b_decimal: float | None = None
    home_side: str = ""
    bookmaker: str = "consensus"
    market_type: str = "moneyline"
    is_open: bool = False
    is_close: bool = False
    source: str = ""
    source_id: str | None = None  # the feed's own id for this row, kept for tracing; identity is ID_KEYS
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class GameResult:
    KIND: ClassVar[EventKind] = EventKind.RESULT
    ID_KEYS: ClassVar[tuple[str, ...]] = ("symbol",)
    REQUIRED: ClassVar[tuple[str, ...]] = ("score_a", "score_b")
    PRICES: ClassVar[tuple[str, ...]] = ()
    event_ts: datetime
    symbol: str
    sport: str
    team_a: str
    team_b: str
    score_a: float
    score_b: float
    home_side: str = ""
    source: str = ""
    source_id: str | None = None  # the feed's own id for this row, kept for tracing; identity is ID_KEYS
    received_ns: int = 0


MARKET_EVENT_TYPES: dict[EventKind, type] = {
    cls.KIND: cls for cls in (MarketBar, QuoteTick, OddsQuote, GameResult)
}

_ARROW_TYPES = {
    float: pa.float64(),
    str: pa.string(),
    bool: pa.bool_(),
    int: pa.int64(),
    datetime: pa.timestamp("ns", tz="UTC"),
}


def _arrow_type(hint: Any) -> tuple[pa.DataType, bool]:
    """Map a dataclass type hint to (arrow type, nullable)."""
    args = typing.get_args(hint)
    if args:  # `X | None`
        inner = next(a for a in args if a is not type(None))
        return _ARROW_TYPES[inner], True
    return _ARROW_TYPES[hint], False


def _build_schema(cls: type) -> pa.Schema:
    hints = typing.get_type_hints(cls)
    fields = [pa.field("event_id", pa.uint64(), nullable=False)]
    for f in dataclasses.fields(cls):
        arrow_type, nullable = _arrow_type(hints[f.name])
        fields.append(pa.field(f.name, arrow_type, nullable=nullable))
    return pa.schema(
        fields,
        metadata={KIND_METADATA_KEY: cls.KIND.value.encode(), VERSION_METADATA_KEY: str(SCHEMA_VERSION).encode()},
    )


SCHEMAS: dict[EventKind, pa.Schema] = {kind: _build_schema(cls) for kind, cls in MARKET_EVENT_TYPES.items()}


def columns(kind: EventKind) -> list[str]:
    return SCHEMAS[EventKind(kind)].names


def _id_column(values) -> np.ndarray:
    """One identity column as hashable numpy values; timestamps as int64 ns so any input form
    (tz-aware pandas, numpy datetime64, ISO string parsed upstream) gives the same id."""
    if type(values) is np.ndarray and values.ndim == 1:  # what the Series round trip gives, without it
        if values.dtype == _M8_NS:  # naive = UTC: to_datetime(utc=True) keeps the ns values
            return values.view(np.int64)
        if values.dtype.kind in "fiub" or values.dtype == object:
            return values
    series = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(series):
        return pd.to_datetime(series, utc=True).dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)
    return series.to_numpy()


_M8_NS = np.dtype("datetime64[ns]")
_STR_HASHES: dict[str, int] = {}  # pandas' hash of one str value, which never depends on its neighbours
_STR_HASHES_MAX = 200_000


def _hash(values: np.ndarray) -> np.ndarray:
    """pd.util.hash_array(values), bit for bit: its integer mix done here for 8-byte numbers and
    bools (pandas' own steps), and its per-value string hash looked up for all-str object arrays;
    anything else goes to pandas."""
    dtype = values.dtype
    if dtype == bool or (dtype.kind in "fiuMm" and dtype.itemsize == 8):
        vals = values.astype("u8") if dtype == bool else values.view("u8").astype("u8")
        vals ^= vals >> 30
        vals *= np.uint64(0xBF58476D1CE4E5B9)
        vals ^= vals >> 27
        vals *= np.uint64(0x94D049BB133111EB)
        vals ^= vals >> 31
        return vals
    if dtype == object and len(values) and all(type(v) is str for v in values) and _plain("".join(values)):
        # A local map, so another thread clearing the shared cache meanwhile cannot lose a value.
        cache = _STR_HASHES
        items = values.tolist()
        known = {v: cache.get(v) for v in items}
        missing = [v for v, h in known.items() if h is None]
        if missing:
            hashed = pd.util.hash_array(np.array(missing, dtype=object)).tolist()
            known.update(zip(missing, hashed))
            if len(cache) + len(missing) > _STR_HASHES_MAX:
                cache.clear()
            cache.update(zip(missing, hashed))
        return np.fromiter((known[v] for v in items), np.uint64, len(items))
    return pd.util.hash_array(values)


def _plain(text: str) -> bool:
    """ASCII without NUL: pandas' factorize (a C-string table) tells such strings apart exactly as
    Python does. "a" and "a\\x00b" fall in one bucket there, so their hash depends on which comes first."""
    return text.isascii() and "\x00" not in text


@functools.cache
def _kind_seed(kind: EventKind) -> int:
    return int(pd.util.hash_array(np.array([str(kind)], dtype=object))[0])


def event_ids(kind: EventKind, cols) -> np.ndarray:
    """Stable 64-bit ids from each row's identity columns (same input, same id, in any process).

    `cols` is a DataFrame or a mapping of column name -> array.
    """
    cls = MARKET_EVENT_TYPES[EventKind(kind)]
    n = len(cols[cls.ID_KEYS[0]])
    # pandas' hash_array uses a fixed default key, so ids are reproducible across runs and hosts.
    h = np.full(n, _kind_seed(cls.KIND), dtype=np.uint64)
    for key in cls.ID_KEYS:
        h = (h * np.uint64(1_000_003)) ^ _hash(_id_column(cols[key]))
    return h


# Not part of a row's content: who sent it, under what id, and when it arrived.
NON_CONTENT_FIELDS = frozenset({"event_id", "source", "source_id", "received_ns"})


def content_fields(kind: EventKind) -> tuple[str, ...]:
    return tuple(n for n in SCHEMAS[EventKind(kind)].names if n not in NON_CONTENT_FIELDS)


def content_hashes(kind: EventKind, cols) -> np.ndarray:
    """64-bit hash of each row's value fields, so a resend (same hash) is told from a conflicting
    version of the same identity (different hash)."""
    names = content_fields(kind)
    h = np.full(len(cols[names[0]]), 0x9E3779B97F4A7C15, dtype=np.uint64)
    for name in names:
        h = (h * np.uint64(1_000_003)) ^ _hash(_id_column(cols[name]))
    return h


def to_record_batch(kind: EventKind, cols) -> pa.RecordBatch:
    """Normalised columns (mapping name -> numpy array, event_ts as datetime64[ns] UTC) -> Arrow batch."""
    schema = SCHEMAS[EventKind(kind)]
    arrays = []
    for f in schema:
        values = np.asarray(cols[f.name])
        if pa.types.is_timestamp(f.type):
            values = values.astype("datetime64[ns]").view(np.int64)
        arrays.append(pa.array(values, type=f.type, from_pandas=True))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def batch_kind(batch: pa.RecordBatch) -> EventKind:
    meta = batch.schema.metadata or {}
    version = int(meta.get(VERSION_METADATA_KEY, b"0"))
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema_version {version} is not supported (expected {SCHEMA_VERSION})")
    return EventKind(meta[KIND_METADATA_KEY].decode())


def events_to_batch(events: list[Any]) -> pa.RecordBatch:
    """Typed events of one kind -> Arrow batch, through the same validation as any raw input."""
    from edgeray.validation import validate  # validation imports this module

    if not events:
        raise ValueError("events: empty list")
    cls = type(events[0])
    if any(type(e) is not cls for e in events):
        raise ValueError("events: a batch must hold one event kind")
    result = validate(cls.KIND, pd.DataFrame([dataclasses.asdict(e) for e in events]))
    if len(result.rejected):
        first = result.rejected.iloc[0]
        raise ValueError(f"{first.field}: {first.reason} (value {first.value})")
    return to_record_batch(cls.KIND, result.accepted)


def batch_to_events(batch: pa.RecordBatch) -> list[Any]:
    cls = MARKET_EVENT_TYPES[batch_kind(batch)]
    names = [f.name for f in dataclasses.fields(cls)]
    rows = batch.to_pandas().to_dict("records")
    return [cls(**{n: (None if _isnull(r[n]) else r[n]) for n in names}) for r in rows]


def _isnull(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


# --- feature messages --------------------------------------------------------------------------

def _stable_id(*parts: Any) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class FeatureVector:
    """The latest feature values for one entity as of `event_ts` (computed from events <= event_ts)."""

    KIND: ClassVar[str] = "feature_vector"
    entity: str
    event_ts: datetime
    feature_set: str
    values: dict[str, float]
    schema_version: int = SCHEMA_VERSION

    @property
    def event_id(self) -> str:
        return _stable_id(self.KIND, self.feature_set, self.entity, self.event_ts)
