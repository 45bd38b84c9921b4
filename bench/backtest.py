"""Backtest benchmarks, printed as JSON:
1. SMA cross (long/short, next-bar-open fills, commission) on the real BTC 1-minute file in edgeray.backtest.bars
   and in backtesting.py 0.6.6 (`pip install backtesting==0.6.6`), side by side: wall times, speed-up, and whether
   the trade lists match (direction, entry/exit time and price).
2. 1,000,000 synthetic bets with fractional Kelly sizing and every metric (target < 1 s).
Usage: python bench/backtest.py [--fast 10 --slow 30 --commission 0.0005 --bets 1000000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeray.backtest.bars import backtest_bars, load_ohlcv_csv, sma_cross_positions  # noqa: E402
from edgeray.backtest.engine import SizingSpec, run_bets  # noqa: E402

BTC = ROOT.parent / "shared" / "data" / "markets" / "btc_perp_1m_2022-01.csv"


def bench_bars(fast: int, slow: int, commission: float) -> dict:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    bars = load_ohlcv_csv(BTC)
    t0 = time.perf_counter()
    ours = backtest_bars(bars, sma_cross_positions(bars["close"], fast, slow), commission)
    ours_s = time.perf_counter() - t0

    def sma(values, n):
        return pd.Series(values).rolling(n).mean()  # the same trailing mean as sma_cross_positions

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(sma, self.data.Close, fast)
            self.slow = self.I(sma, self.data.Close, slow)

        def next(self):
            # Reverse only when not already on that side: a repeated same-way cross (the SMAs touched exactly, so
            # the opposite cross never fired) keeps the position, as the target-position form in bars.py does.
            if crossover(self.fast, self.slow) and not self.position.is_long:
                self.position.close()
                self.buy()
            elif crossover(self.slow, self.fast) and not self.position.is_short:
                self.position.close()
                self.sell()

    data = bars.rename(columns=str.capitalize)[["Open", "High", "Low", "Close", "Volume"]]
    data.index = data.index.tz_localize(None)
    # Whole units only in backtesting.py: a large cash balance keeps every order >= 1 BTC.
    bt = Backtest(data, SmaCross, cash=1e9, commission=commission, finalize_trades=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = bt.run()
    theirs_s = time.perf_counter() - t0
    theirs = stats._trades
    mine = ours.trades
    same_len = len(theirs) == len(mine)
    match = same_len and bool(
        (np.sign(theirs["Size"].to_numpy()) == mine["direction"].to_numpy()).all()
        and (theirs["EntryTime"].to_numpy() == mine["entry_time"].dt.tz_localize(None).to_numpy()).all()
        and (theirs["ExitTime"].to_numpy() == mine["exit_time"].dt.tz_localize(None).to_numpy()).all()
        and np.allclose(theirs["EntryPrice"].to_numpy(), mine["entry_price"].to_numpy(), rtol=0, atol=1e-9)
        and np.allclose(theirs["ExitPrice"].to_numpy(), mine["exit_price"].to_numpy(), rtol=0, atol=1e-9))
    return {"data": BTC.name, "bars": len(bars), "strategy": f"SMA({fast})/SMA({slow}) cross, long/short",
            "commission": commission, "edgeray_s": round(ours_s, 4), "backtesting_py_s": round(theirs_s, 4),
            "speedup": round(theirs_s / ours_s, 1), "trades_edgeray": len(mine), "trades_backtesting_py": len(theirs),
            "trade_lists_match": match,
            "conventions": "reverse on a cross only when not already on that side; fills at next bar open; open trade closed at last bar's open (finalize_trades=True); "
                           "sizes differ (backtesting.py trades whole units of all equity, edgeray returns per unit) "
                           "so only direction, times and prices are compared"}


def bench_bets(n: int) -> dict:
    rng = np.random.default_rng(7)
    odds = 1.0 + rng.uniform(0.3, 4.0, n)
    prob = np.clip(1.0 / odds + rng.normal(0.01, 0.05, n), 0.01, 0.99)
    won = (rng.random(n) < np.clip(prob - 0.01, 0.0, 1.0)).astype(float)
    day = np.sort(rng.integers(0, 3000, n))  # ~330 bets a day over ~8 years
    frame = pd.DataFrame({"date": pd.Timestamp("2015-01-01", tz="UTC") + pd.to_timedelta(day, unit="D"),
                          "game_id": np.arange(n), "side": "home", "decimal_odds": odds, "model_prob": prob,
                          "won": won, "closing_decimal_odds": odds * rng.uniform(0.95, 1.05, n)})
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        result = run_bets(frame, SizingSpec("kelly", kelly_fraction=0.25, kelly_cap=0.1))
        times.append(time.perf_counter() - t0)
    return {"bets": n, "sizing": "kelly 0.25 cap 0.10", "metrics": "all (1000 date-bootstrap resamples)",
            "seconds_best_of_3": round(min(times), 3), "seconds_each": [round(t, 3) for t in times],
            "placed": result.metrics["total_bets"], "under_1s": min(times) < 1.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", type=int, default=10)
    parser.add_argument("--slow", type=int, default=30)
    parser.add_argument("--commission", type=float, default=0.0005)
    parser.add_argument("--bets", type=int, default=1_000_000)
    args = parser.parse_args()
    out = {"bench": "backtest", "machine": f"{platform.machine()} {os.cpu_count()} cpus"}
    out["bars"] = bench_bars(args.fast, args.slow, args.commission) if BTC.exists() else f"{BTC} absent"
    out["bets"] = bench_bets(args.bets)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
