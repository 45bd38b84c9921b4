"""Vectorised bar backtest for a signal strategy: a target position decided at each bar's close is filled at the
next bar's open (no look-ahead), trades are read off the position changes with numpy, commission per side.

Conventions (shared with backtesting.py 0.6.6 so bench/backtest.py can compare trade lists one to one):
- a signal on the last bar is never filled (there is no next open);
- a trade still open at the end is closed at the last bar's open (backtesting.py's finalize_trades=True re-runs its
  broker on the last bar, which fills market orders at that bar's open);
- commission is a share of traded notional charged on entry and on exit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


def load_ohlcv_csv(path: str | Path) -> pd.DataFrame:
    """A timestamp,open,high,low,close,volume CSV -> frame indexed by UTC timestamp."""
    frame = pd.read_csv(path)
    missing = [c for c in ("timestamp", "open", "high", "low", "close") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("timestamp"), utc=True), name="timestamp")
    return frame


def sma_cross_positions(close, fast: int, slow: int, allow_short: bool = True) -> np.ndarray:
    """Target position after each bar's close: +1 after the fast SMA crosses strictly above the slow one, -1 (or 0
    when long/flat) after it crosses strictly below; held in between; 0 before the first cross."""
    if not (isinstance(fast, int) and isinstance(slow, int) and 1 <= fast < slow):
        raise ValueError(f"fast and slow must be integers with 1 <= fast < slow, got fast={fast!r} slow={slow!r}")
    c = pd.Series(np.asarray(close, dtype=float))
    f = c.rolling(fast).mean().to_numpy()  # trailing windows: the value at t uses closes up to t only
    s = c.rolling(slow).mean().to_numpy()
    up = np.zeros(len(c), dtype=bool)
    down = np.zeros(len(c), dtype=bool)
    up[1:] = (f[:-1] < s[:-1]) & (f[1:] > s[1:])  # NaN compares False, so the warm-up never signals
    down[1:] = (f[:-1] > s[:-1]) & (f[1:] < s[1:])
    event = np.where(up, 1.0, np.where(down, -1.0 if allow_short else 0.0, np.nan))
    return pd.Series(event).ffill().fillna(0.0).to_numpy().astype(np.int8)


@dataclass
class BarBacktestResult:
    trades: pd.DataFrame  # direction, entry_time, exit_time, entry_price, exit_price, return_pct, entry_bar, exit_bar
    equity: pd.Series  # equity multiple after each trade closes, indexed by exit time
    metrics: dict


def backtest_bars(bars: pd.DataFrame, positions, commission: float = 0.0) -> BarBacktestResult:
    """bars: open/close columns, DatetimeIndex; positions: target (-1/0/+1) after each bar's close."""
    for col in ("open", "close"):
        if col not in bars.columns:
            raise ValueError(f"bars is missing column {col!r}")
    if not (0.0 <= commission < 0.1):
        raise ValueError(f"commission must be in [0, 0.1), got {commission!r}")
    pos = np.asarray(positions)
    n = len(bars)
    if pos.shape != (n,):
        raise ValueError(f"positions must have one value per bar ({n}), got shape {pos.shape}")
    if not np.isin(pos, (-1, 0, 1)).all():
        raise ValueError(f"positions must be -1, 0 or 1, got {np.unique(pos[~np.isin(pos, (-1, 0, 1))])[:5].tolist()}")
    opens = bars["open"].to_numpy(dtype=float)
    prev = np.concatenate(([0], pos[:-1]))
    changes = np.flatnonzero(pos != prev)
    changes = changes[changes < n - 1]  # a signal on the last bar has no next open to fill at
    held = pos[changes]
    entry_k = np.flatnonzero(held != 0)
    entry_bar = changes[entry_k] + 1
    next_k = entry_k + 1
    exit_bar = np.where(next_k < len(changes), changes[np.minimum(next_k, len(changes) - 1)] + 1, n - 1)
    direction = held[entry_k].astype(np.int64)
    entry_price, exit_price = opens[entry_bar], opens[exit_bar]
    ret = direction * (exit_price / entry_price - 1.0) - commission * (1.0 + exit_price / entry_price)
    index = bars.index
    trades = pd.DataFrame({"direction": direction, "entry_time": index[entry_bar], "exit_time": index[exit_bar],
                           "entry_price": entry_price, "exit_price": exit_price, "return_pct": ret,
                           "entry_bar": entry_bar, "exit_bar": exit_bar})
    equity = pd.Series(np.cumprod(1.0 + ret), index=index[exit_bar], name="equity_multiple")
    wins = int((ret > 0).sum())
    metrics = {"trades": int(len(trades)), "wins": wins, "win_rate": wins / len(trades) if len(trades) else float("nan"),
               "total_return": float(equity.iloc[-1] - 1.0) if len(equity) else 0.0,
               "exposure_bars": int((exit_bar - entry_bar).sum())}
    return BarBacktestResult(trades, equity, metrics)
