"""A CI-sized Ray Tune sweep over betting-strategy parameters on walk-forward season folds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgeray.backtest.engine import SizingSpec, run_bets
from tune.backtest import METRIC, SIZING_KEYS, TIER_CHOICES, sweep


def opportunities(seed: int = 5) -> pd.DataFrame:
    """Seasons of bets where the model has a real but small edge over the price."""
    rng = np.random.default_rng(seed)
    rows = []
    for season in (2018, 2019, 2020, 2021):
        dates = pd.date_range(f"{season}-11-01", periods=120, freq="D", tz="UTC")
        true_p = rng.uniform(0.25, 0.6, len(dates))
        odds = 1.0 / np.clip(true_p - rng.uniform(-0.02, 0.06, len(dates)), 0.05, 0.95)
        rows.append(pd.DataFrame({"date": dates, "game_id": [f"g{season}-{i}" for i in range(len(dates))], "side": "home",
                                  "decimal_odds": odds, "model_prob": np.clip(true_p + rng.normal(0, 0.02, len(dates)), 0.01, 0.99),
                                  "won": (rng.random(len(dates)) < true_p).astype(int), "season": season,
                                  "tier": rng.choice(["moderate", "heavy", "extreme"], len(dates)),
                                  "base_prob": np.clip(true_p + rng.normal(0, 0.05, len(dates)), 0.01, 0.99),
                                  "market_model_prob": np.clip(true_p + rng.normal(0, 0.01, len(dates)), 0.01, 0.99)}))
    return pd.concat(rows, ignore_index=True)


def test_strategy_sweep_scores_on_validation_folds_and_reports_the_test_season_once(ray_session, tmp_path):
    opps = opportunities()
    result = sweep(opps, test_season=2021, num_samples=4, storage_path=tmp_path)
    assert result["val_seasons"] == [2018, 2019, 2020] and result["test_season"] == 2021
    assert len(result["trials"]) == 4
    assert result[f"best_{METRIC}"] == max(t[METRIC] for t in result["trials"])
    # The test season is scored once, with the best validation config, and only then.
    best = result["best_config"]
    assert 0 <= best["blend_weight"] <= 1 and best["tiers"] in TIER_CHOICES  # tiers and blend weight are tuned too
    test = opps[(opps["season"] == 2021) & opps["tier"].isin(best["tiers"])].reset_index(drop=True)
    w = best["blend_weight"]
    test = test.assign(model_prob=w * test["base_prob"] + (1 - w) * test["market_model_prob"])
    test = test.assign(confidence=test["model_prob"])
    expected = run_bets(test, SizingSpec(method="kelly", **{k: best[k] for k in SIZING_KEYS}), 1000.0).metrics
    assert result["test"]["total_bets"] == expected["total_bets"]
    assert result["test"]["profit"] == pytest.approx(expected["profit"])


def test_sweep_refuses_a_test_season_without_history(ray_session):
    with pytest.raises(ValueError, match="test_season"):
        sweep(opportunities(), test_season=2018, num_samples=1)
