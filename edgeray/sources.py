"""Replay sources: turn a configured source into ordered (kind, raw frame) micro-batches."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from edgeray.config import SourceConfig
from edgeray.events import EventKind
from edgeray.generator import generate_bars
from edgeray.loaders import load_bid_ask_bars, load_ohlcv_bars, load_quote_ticks, load_sports_events


def source_available(spec: SourceConfig) -> bool:
    return spec.type == "generator" or all(Path(p).exists() for p in (spec.path, spec.ask_path) if p)


def load_source(spec: SourceConfig) -> list[tuple[EventKind, pd.DataFrame]]:
    if spec.type == "generator":
        return [(EventKind.BAR, generate_bars(tuple(spec.symbols), n_bars=spec.n_bars, seed=spec.seed))]
    if spec.path is None:
        raise ValueError(f"sources[].path: required for type {spec.type!r}")
    if spec.type == "bars":
        return [(EventKind.BAR, load_ohlcv_bars(spec.path, _symbol(spec)))]
    if spec.type == "bid_ask_bars":
        if spec.ask_path is None:
            raise ValueError("sources[].ask_path: required for type 'bid_ask_bars'")
        return [(EventKind.BAR, load_bid_ask_bars(spec.path, spec.ask_path, _symbol(spec)))]
    if spec.type == "quotes":
        return [(EventKind.QUOTE, load_quote_ticks(spec.path, spec.symbol))]
    odds, results = load_sports_events(spec.path)
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
