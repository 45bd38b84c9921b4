"""Readers for the market and sports file formats edgeray replays.

Loaders rename columns to the event schema but do not validate or coerce values: a malformed
row must reach ingestion as it is, to be dead-lettered with its raw content.
"""
from edgeray.loaders.markets import load_bid_ask_bars, load_ohlcv_bars, load_quote_ticks
from edgeray.loaders.sports import load_sports_events

__all__ = ["load_ohlcv_bars", "load_bid_ask_bars", "load_quote_ticks", "load_sports_events"]
