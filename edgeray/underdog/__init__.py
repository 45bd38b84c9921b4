"""NCAAM underdog model: underdog rows, their point-in-time features, the blended logistic model (no Ray here)."""
from __future__ import annotations

from edgeray.underdog.features import build_underdog_features, feature_sets, underdog_games
from edgeray.underdog.model import (GDLogisticRegression, UnderdogConfig, UnderdogEnsemble, backtest_opportunities,
                                    compare, expected_calibration_error, load_config, predict, price_bets, train)

__all__ = ["GDLogisticRegression", "UnderdogConfig", "UnderdogEnsemble", "backtest_opportunities",
           "build_underdog_features", "compare", "expected_calibration_error", "feature_sets", "load_config",
           "predict", "price_bets", "train", "underdog_games"]
