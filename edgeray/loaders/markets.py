from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PRICE_COLS = ["open", "high", "low", "close"]


def _read(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path: no such file {path}")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"timestamp": str})


def load_ohlcv_bars(path: str | Path, symbol: str, source: str | None = None, columns: dict[str, str] | None = None,
                    fmt: str = "auto", ts_unit: str = "auto") -> pd.DataFrame:
    """OHLCV bars: generic (timestamp,open,high,low,close,volume; ISO or epoch), exchange kline
    (open_time in epoch ms), or any layout named by `columns` (see edgeray.loaders.csvfile).
    Unreadable lines are left out and listed in frame.attrs["bad_lines"]; the detected layout is
    in frame.attrs["detected"]."""
    from edgeray.loaders.csvfile import load_bars_csv

    frame, detected, bad = load_bars_csv(path, columns, fmt, ts_unit)
    frame = frame.drop(columns=[c for c in ("symbol", "source") if c in frame.columns])
    frame.insert(1, "symbol", symbol)
    frame["source"] = source or Path(path).name
    frame.attrs["detected"], frame.attrs["bad_lines"] = detected, bad
    return frame


def load_bid_ask_bars(bid_path: str | Path, ask_path: str | Path, symbol: str, source: str | None = None) -> pd.DataFrame:
    """Separate bid and ask OHLC bar files joined on timestamp; OHLC become mid prices and the
    closing bid/ask are kept for spread features. A timestamp present on one side only is kept
    with the other side missing, so validation rejects it instead of it vanishing in the join."""
    bid, ask = _read(bid_path), _read(ask_path)
    joined = bid.merge(ask, on="timestamp", how="outer", suffixes=("_bid", "_ask"), sort=True)
    frame = pd.DataFrame({"event_ts": joined["timestamp"], "symbol": symbol})
    for col in PRICE_COLS:
        b = pd.to_numeric(joined[f"{col}_bid"], errors="coerce")
        a = pd.to_numeric(joined[f"{col}_ask"], errors="coerce")
        frame[col] = (b + a) / 2.0
    frame["volume"] = np.nan
    frame["bid"] = joined["close_bid"]
    frame["ask"] = joined["close_ask"]
    frame["source"] = source or f"{Path(bid_path).name}+{Path(ask_path).name}"
    return frame


def load_quote_ticks(path: str | Path, symbol: str | None = None, source: str | None = None) -> pd.DataFrame:
    """Best bid/ask ticks (CSV timestamp,bid,ask or parquet with sizes and a symbol column)."""
    raw = _read(path)
    frame = raw.rename(columns={"timestamp": "event_ts"})
    if symbol is not None:
        frame["symbol"] = symbol
    elif "symbol" in frame:
        frame["symbol"] = frame["symbol"].astype(str).str.replace("/", "", regex=False)
    else:
        raise ValueError(f"symbol: {path} has no symbol column; pass symbol=")
    frame["source"] = source or Path(path).name
    return frame
