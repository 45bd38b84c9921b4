"""Betting env's walk-forward season split on the real MLB archive, and bench/rl_betting.py's baselines."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from envs.betting import BettingEnv
from tests.conftest import shared_file


def mlb_dir() -> str:
    return str(shared_file("sports/mlb_sbro_2010_2013.csv").parent)


def test_season_split_evaluates_only_games_after_training_and_opening_model_is_point_in_time():
    from edgeray.sports.games import load_sport

    base = {"source": "sport", "sport": "mlb", "data_dir": mlb_dir(), "sport_model": "open"}
    train, later = BettingEnv({**base, "seasons": [2010, 2011, 2012]}), BettingEnv({**base, "seasons": [2013]})
    assert train.game_dates.max() < later.game_dates.min()  # every evaluation game after every training game
    assert {pd.Timestamp(d).year for d in later.game_dates} == {2013}
    assert len(later.table) > 2400 and len(train.table) > 7300
    # "open": the model probability is the margin-free opening line, the price the closing one (hand-computed).
    games = load_sport("mlb", mlb_dir())
    first = games[(games["season"] == 2013) & games["home_win"].notna()].iloc[0]
    home, away = 1 / first["home_dec_open"], 1 / first["away_dec_open"]
    assert later.table["model_prob"].iat[0] == pytest.approx(home / (home + away))
    assert later.table["decimal_odds"].iat[0] == pytest.approx(first["home_dec"])
    assert later.table["won"].iat[0] == first["home_win"]


def test_season_and_model_options_are_validated_by_name():
    with pytest.raises(ValueError, match="seasons"):
        BettingEnv({"source": "sport", "sport": "mlb", "data_dir": mlb_dir(), "seasons": [1999]})
    with pytest.raises(ValueError, match="seasons applies to source='sport'"):
        BettingEnv({"seasons": [2013]})
    with pytest.raises(ValueError, match="seasons must be"):
        BettingEnv({"source": "sport", "seasons": "2013"})
    with pytest.raises(ValueError, match="seasons must be"):
        BettingEnv({"source": "sport", "seasons": []})
    with pytest.raises(ValueError, match="sport_model"):
        BettingEnv({"sport_model": "closing"})


def test_fractional_kelly_baselines_stake_the_kelly_formula_capped():
    from bench.rl_betting import BASELINES

    # Kelly f* = (p d - 1) / (d - 1): 0.26 / 1.1 for (0.6, 2.1); negative edge -> 0; (0.9, 2.0) -> 0.8.
    games = pd.DataFrame({"model_prob": [0.6, 0.4, 0.9], "decimal_odds": [2.1, 2.0, 2.0], "won": [1, 0, 1]})
    kelly = np.array([0.26 / 1.1, 0.0, 0.8])
    expected = {"quarter_kelly": np.minimum(0.25 * kelly, 0.25), "half_kelly": np.minimum(0.5 * kelly, 0.25),
                "full_kelly": np.minimum(kelly, 0.25), "fixed_1pct": np.full(3, 0.01), "flat": np.zeros(3)}
    for name, fractions in expected.items():
        env = BettingEnv({"source": "frame", "games": games, "episode_len": 3})
        obs, _ = env.reset(seed=0)
        for fraction in fractions:
            before = env.bankroll
            action = BASELINES[name](obs[None, :])[0]
            obs, _, _, _, info = env.step(action.astype(np.float32))
            assert info["stake"] == pytest.approx(fraction * before, rel=1e-6, abs=1e-12), name


def test_bench_cli_refuses_a_split_that_is_not_walk_forward():
    from bench.rl_betting import main

    with pytest.raises(SystemExit) as exc:
        main(["--train-seasons", "2012,2013", "--eval-seasons", "2013"])
    assert exc.value.code == 2
