"""Replay sources: turn a configured source into ordered (kind, raw frame) micro-batches."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from edgeray.config import SourceConfig
from edgeray.events import EventKind
from edgeray.generator import generate_bars
from edgeray.loaders import load_bid_ask_bars, load_ohlcv_bars, load_quote_ticks, load_sports_events
from edgeray.loaders.csvfile import SourceError, bad_lines_frame
from edgeray.sports.formats import EXPECTED_HINT, SportsFormatError

__all__ = ["SourceError", "SourceReport", "inspect_source", "load_source", "micro_batches", "source_available", "source_identity"]


@dataclass
class SourceReport:
    rows: int
    detected: str | None = None          # e.g. "exchange kline format: open_time (ms) -> event_ts"
    bad_lines: pd.DataFrame | None = None  # unreadable lines, in the dead-letter store's shape


def inspect_source(spec: SourceConfig) -> SourceReport:
    """Load a source once, before Ray starts, so a file that cannot be replayed is reported in
    seconds as a SourceError naming the file, the field and what was found."""
    if spec.type == "generator":
        return SourceReport(spec.n_bars * len(spec.symbols))
    try:
        frames = load_source(spec)
    except SourceError:
        raise
    except SportsFormatError as exc:
        raise SourceError(str(exc), EXPECTED_HINT) from exc
    except (ValueError, KeyError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        where = spec.path or spec.type
        raise SourceError(f"{Path(where).name}: cannot be read as {spec.type}: {type(exc).__name__}: {exc}",
                          "run with --debug for the traceback") from exc
    rows = sum(len(f) for _, f in frames)
    detected = next((f.attrs.get("detected") for _, f in frames if f.attrs.get("detected")), None)
    bad = [b for _, f in frames for b in f.attrs.get("bad_lines", [])]
    return SourceReport(rows, detected, bad_lines_frame(bad, spec.path) if bad else None)


def source_available(spec: SourceConfig) -> bool:
    return spec.type == "generator" or all(Path(p).exists() for p in (spec.path, spec.ask_path) if p)


def load_source(spec: SourceConfig) -> list[tuple[EventKind, pd.DataFrame]]:
    if spec.type == "generator":
        return [(EventKind.BAR, generate_bars(tuple(spec.symbols), n_bars=spec.n_bars, seed=spec.seed))]
    if spec.path is None:
        raise SourceError(f"sources[].path: required for type {spec.type!r}")
    for p in (spec.path, spec.ask_path):
        if p and not Path(p).exists():
            raise SourceError(f"{p}: no such file", "check the path (relative paths in a config are read from the config's folder)")
    if spec.type == "bars":
        return [(EventKind.BAR, load_ohlcv_bars(spec.path, _symbol(spec), columns=spec.columns, fmt=spec.format,
                                                ts_unit=spec.ts_unit))]
    if spec.type == "bid_ask_bars":
        if spec.ask_path is None:
            raise ValueError("sources[].ask_path: required for type 'bid_ask_bars'")
        return [(EventKind.BAR, load_bid_ask_bars(spec.path, spec.ask_path, _symbol(spec)))]
    if spec.type == "quotes":
        return [(EventKind.QUOTE, load_quote_ticks(spec.path, spec.symbol))]
    if spec.type == "odds_stream":
        from edgeray.loaders.odds_stream import load_odds_stream

        return [(EventKind.ODDS, load_odds_stream(spec.path, sport=spec.sport))]
    odds, results = load_sports_events(spec.path, sport=spec.sport, fmt=spec.format, columns=spec.columns)
    return [(EventKind.ODDS, odds), (EventKind.RESULT, results)]


def _symbol(spec: SourceConfig) -> str:
    if not spec.symbol:
        raise ValueError(f"sources[].symbol: required for type {spec.type!r}")
    return spec.symbol


def micro_batches(frame: pd.DataFrame, batch_size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), batch_size):
        yield frame.iloc[start:start + batch_size]


def source_identity(spec: SourceConfig) -> str:
    """What a replay offset belongs to: the files (resolved path, size, mtime), or the generator's
    config. A file changed since the offset was taken does not match, so it is replayed from row 0."""
    if spec.type == "generator":
        return "generator:" + json.dumps(spec.model_dump(), sort_keys=True)
    parts = []
    for p in (spec.path, spec.ask_path):
        if p:
            st = Path(p).stat()
            parts.append(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return f"{spec.type}:{spec.symbol or ''}:" + "|".join(parts)
