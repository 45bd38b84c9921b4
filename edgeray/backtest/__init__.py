"""Backtesting: bet-level engine, metrics, walk-forward, Monte Carlo, plots and a vectorised bar backtest."""
from __future__ import annotations

from edgeray.backtest.engine import (OPPORTUNITY_COLUMNS, BacktestResult, SizingSpec, compare_strategies, run_bets,
                                     validate_opportunities)
from edgeray.backtest.metrics import ODDS_BUCKETS, by_odds_range_frame, compute_metrics
from edgeray.backtest.montecarlo import (MonteCarloInputs, chunk_plan, chunk_seeds, monte_carlo, paths_chunk,
                                         summarise)
from edgeray.backtest.walkforward import (Fold, LeakageGuard, LeakageReport, WalkForwardResult, check_no_lookahead,
                                          date_folds, season_folds, walk_forward)

__all__ = ["OPPORTUNITY_COLUMNS", "BacktestResult", "SizingSpec", "compare_strategies", "run_bets",
           "validate_opportunities", "ODDS_BUCKETS", "by_odds_range_frame", "compute_metrics", "MonteCarloInputs",
           "chunk_plan", "chunk_seeds", "monte_carlo", "paths_chunk", "summarise", "Fold", "LeakageGuard",
           "LeakageReport", "WalkForwardResult", "check_no_lookahead", "date_folds", "season_folds", "walk_forward"]
