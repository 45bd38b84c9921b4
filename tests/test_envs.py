from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs.betting import BettingEnv
from envs.trading import TradingEnv

SMALL_TRADING = {"generator_bars": 400, "episode_len": 32, "window": 4}


def tiny_bars() -> pd.DataFrame:
    # Three hand-made bars; no bid/ask, so the default spread applies.
    return pd.DataFrame({
        "event_ts": pd.date_range("2024-01-01", periods=3, freq="1min", tz="UTC"),
        "open": [100.0, 100.0, 102.0], "high": [101.0, 103.0, 102.0], "low": [99.0, 99.0, 95.0],
        "close": [100.0, 102.0, 96.0], "volume": [10.0, 10.0, 10.0]})


def tiny_env() -> TradingEnv:
    return TradingEnv({"source": "frame", "bars": tiny_bars(), "window": 1, "warmup_bars": 0, "episode_len": 2,
                       "fee_bps": 3.0, "slippage_bps": 1.0, "default_spread_bps": 4.0, "drawdown_weight": 0.5,
                       "variance_weight": 2.0, "hold_decay": 0.01, "initial_equity": 1000.0})


def test_gymnasium_registration_and_env_checker():
    trading = gym.make(envs.TRADING_ID, **{"env_config": SMALL_TRADING})
    betting = gym.make(envs.BETTING_ID)
    check_env(trading.unwrapped, skip_render_check=True)
    check_env(betting.unwrapped, skip_render_check=True)
    assert trading.unwrapped.observation_space.shape == (4 * 10 + 3 + 7,)
    assert betting.unwrapped.action_space.high[0] == pytest.approx(0.25)


def test_rllib_ppo_trains_one_iteration_on_both_envs(ray_session):
    from ray.rllib.algorithms.ppo import PPOConfig

    names = envs.register_rllib_envs()
    for name, env_config in zip(names, (SMALL_TRADING, {"episode_len": 16})):
        algo = (PPOConfig().environment(name, env_config=env_config)
                .env_runners(num_env_runners=0, rollout_fragment_length=64)
                .training(train_batch_size_per_learner=64, minibatch_size=32, num_epochs=1)
                .build_algo())
        try:
            result = algo.train()
        finally:
            algo.stop()
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 64


def rollout(env, seed: int, actions: np.ndarray):
    obs, _ = env.reset(seed=seed)
    trajectory = [obs]
    rewards = []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        trajectory.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(trajectory), np.array(rewards)


def test_trading_is_deterministic_with_a_seed():
    actions = np.random.default_rng(5).uniform([-1, 0, 0], [1, 1, 1], size=(32, 3))
    a = rollout(TradingEnv(SMALL_TRADING), 11, actions)
    b = rollout(TradingEnv(SMALL_TRADING), 11, actions)
    c = rollout(TradingEnv(SMALL_TRADING), 12, actions)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0][0], c[0][0])  # another seed starts the episode elsewhere


def test_betting_is_deterministic_with_a_seed():
    actions = np.random.default_rng(1).uniform(0, 0.25, size=(100, 1))
    a = rollout(BettingEnv(), 3, actions)
    b = rollout(BettingEnv(), 3, actions)
    c = rollout(BettingEnv(), 4, actions)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_invalid_trading_actions_are_clipped_and_counted():
    bad = [[np.nan, 0.5, 0.5], [3.0, -1.0, 2.0], [0.5, 0.5], [np.inf, np.nan, 0.2]]
    fixed = [[0.0, 0.5, 0.5], [1.0, 0.0, 1.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.2]]
    env, twin = TradingEnv(SMALL_TRADING), TradingEnv(SMALL_TRADING)
    env.reset(seed=2)
    twin.reset(seed=2)
    for i, (raw, clean) in enumerate(zip(bad, fixed), start=1):
        obs, reward, *_, info = env.step(raw)
        obs2, reward2, *_, info2 = twin.step(np.array(clean, dtype=np.float32))
        assert info["invalid_actions"] == i and info2["invalid_actions"] == 0
        assert np.isfinite(reward) and reward == pytest.approx(reward2)
        np.testing.assert_allclose(obs, obs2)
    env.step(np.array([0.3, 0.4, 0.6], dtype=np.float32))
    assert env.invalid_actions == len(bad)  # a valid action is not counted


def test_invalid_betting_actions_are_clipped_and_counted():
    env = BettingEnv()
    env.reset(seed=0)
    *_, info = env.step([np.nan])
    assert info["fraction"] == 0.0 and info["stake"] == 0.0 and info["invalid_actions"] == 1
    *_, info = env.step([5.0])
    assert info["fraction"] == pytest.approx(0.25) and info["invalid_actions"] == 2
    *_, info = env.step([-0.1])
    assert info["fraction"] == 0.0 and info["invalid_actions"] == 3


def test_trading_reward_components_by_hand_when_exit_limit_is_not_reached():
    env = tiny_env()
    env.reset(seed=0)
    # Buy to +100% with the limit at the close (100): bar 1 trades down to 99, so it fills at min(100, open 100).
    _, reward, terminated, truncated, info = env.step([1.0, 0.5, 0.5])
    cost = 1000.0 * (2.0 + 1.0 + 3.0) / 1e4  # half spread 2 + slippage 1 + fee 3 bps on 1000 notional
    equity = 1000.0 - 1000.0 - cost + 10 * 102.0
    pnl = (equity - 1000.0) / 1000.0
    assert info["equity"] == pytest.approx(equity)
    assert info["reward_components"]["drawdown_penalty"] == 0.0
    assert reward == pytest.approx(pnl - 2.0 * pnl**2 - 0.01 * 1020.0 / equity)
    assert not (terminated or truncated)
    # Flip to short with a passive exit (factor 0 -> sell limit 102 + range 4 = 106): bar 2 tops at 102, no fill.
    _, reward, terminated, truncated, info = env.step([-1.0, 0.5, 0.0])
    equity2 = -cost + 10 * 96.0
    pnl2 = (equity2 - equity) / 1000.0
    drawdown = (equity - equity2) / 1000.0
    assert info["filled_exit"] == 0.0 and info["filled_entry"] == 0.0
    assert reward == pytest.approx(pnl2 - 0.5 * drawdown - 2.0 * pnl2**2 - 0.01 * 960.0 / equity2)
    assert truncated and not terminated


def test_trading_flip_fills_both_legs_by_hand():
    env = tiny_env()
    env.reset(seed=0)
    env.step([1.0, 0.5, 0.5])
    equity1 = 1000.0 - 0.6 + 1020.0 - 1000.0
    # Aggressive exit (sell limit 102 - 4 = 98) and entry at the close (102): bar 2 opens at 102, both fill there.
    _, reward, _, _, info = env.step([-1.0, 0.5, 1.0])
    short_qty = equity1 / 102.0
    cash = -0.6 + 10 * 102.0 * (1 - 6e-4) + short_qty * 102.0 * (1 - 6e-4)
    equity2 = cash - short_qty * 96.0
    assert info["filled_exit"] == pytest.approx(10.0) and info["filled_entry"] == pytest.approx(short_qty)
    assert info["equity"] == pytest.approx(equity2)
    assert info["position"] == pytest.approx(-short_qty * 96.0 / equity2)
    assert equity2 > equity1  # the short made money on the drop to 96


def test_trading_observation_uses_no_future_bars():
    base = TradingEnv(SMALL_TRADING).bars
    cut = 250
    altered = base.copy()
    altered.loc[cut + 1:, ["open", "high", "low", "close"]] *= 1.5
    cfg = {"source": "frame", "window": 4, "episode_len": 32}
    a, b = TradingEnv({**cfg, "bars": base}), TradingEnv({**cfg, "bars": altered})
    for env in (a, b):
        env.reset(seed=0)
        env.t = cut
    np.testing.assert_array_equal(a._obs(), b._obs())
    np.testing.assert_array_equal(a._features[: cut + 1], b._features[: cut + 1])
    assert not np.array_equal(a._features[cut + 2:], b._features[cut + 2:])


def test_trading_real_btc_bars_episode():
    from tests.conftest import shared_file

    path = shared_file("markets/btc_perp_1m_2022-01.csv")
    env = TradingEnv({"source": "csv", "csv_path": str(path), "symbol": "BTCUSDT-PERP", "episode_len": 64})
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=9)
    assert info["t"] >= env.first_start and np.isfinite(obs).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000),
       fractions=st.lists(st.one_of(st.floats(-2.0, 3.0), st.sampled_from([math.nan, math.inf, -math.inf])),
                          min_size=1, max_size=60))
def test_bankroll_never_negative_under_random_actions(seed, fractions):
    env = BettingEnv({"max_fraction": 1.0, "episode_len": 60})
    env.reset(seed=seed)
    for fraction in fractions:
        before = env.bankroll
        _, reward, terminated, truncated, info = env.step([fraction])
        assert info["bankroll"] >= 0.0 and info["stake"] <= before + 1e-12
        assert np.isfinite(reward)
        if terminated or truncated:
            break


def test_betting_log_growth_and_ruin_by_hand():
    games = pd.DataFrame({"model_prob": [0.6, 0.5, 0.5], "decimal_odds": [2.0, 3.0, 1.5], "won": [1, 0, 0]})
    env = BettingEnv({"source": "frame", "games": games, "episode_len": 3, "max_fraction": 1.0})
    obs, _ = env.reset(seed=0)
    assert obs[3] == pytest.approx(0.6 * 2.0 - 1.0)  # edge
    assert obs[4] == pytest.approx(0.2)  # Kelly: edge / (odds - 1)
    _, reward, terminated, _, info = env.step([0.5])  # stake 0.5 at 2.0 and win -> 1.5
    assert info["bankroll"] == pytest.approx(1.5) and reward == pytest.approx(math.log(1.5))
    _, reward, _, _, info = env.step([0.2])  # stake 0.3, lose -> 1.2
    assert info["bankroll"] == pytest.approx(1.2) and reward == pytest.approx(math.log(1.2 / 1.5))
    _, reward, terminated, _, info = env.step([1.0])  # everything on a loser: ruin, terminated, finite reward
    assert info["bankroll"] == 0.0 and terminated
    assert reward == pytest.approx(math.log(1e-6 / 1.2))


def test_betting_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_fraction"):
        BettingEnv({"max_fraction": 1.5})
    with pytest.raises(ValueError, match="decimal_odds"):
        BettingEnv({"source": "frame", "games": pd.DataFrame({"model_prob": [0.5], "decimal_odds": [0.9], "won": [1]})})
    with pytest.raises(ValueError, match="unknown keys"):
        TradingEnv({"windw": 3})


def test_walk_forward_fractions_keep_every_episode_inside_its_range():
    cfg = {"generator_bars": 1000, "episode_len": 20, "window": 4}
    train, later = TradingEnv({**cfg, "end_fraction": 0.6}), TradingEnv({**cfg, "start_fraction": 0.6})
    n = len(train.bars)
    assert np.array_equal(train._features, later._features)  # same causal features; only episode starts move
    for env, lo, hi in ((train, 0, int(0.6 * n)), (later, int(0.6 * n), n)):
        for seed in range(40):
            _, info = env.reset(seed=seed)
            start = info["t"]
            for _ in range(cfg["episode_len"]):
                *_, terminated, truncated, step_info = env.step([0.5, 0.5, 0.5])
                if terminated or truncated:
                    break
            assert lo <= start and step_info["t"] <= hi - 1, (start, step_info["t"], lo, hi)
    # A range too short for one episode, or an empty/reversed one, is refused by name.
    with pytest.raises(ValueError, match="start/end_fraction"):
        TradingEnv({**cfg, "start_fraction": 0.99})
    with pytest.raises(ValueError, match="start_fraction < end_fraction"):
        TradingEnv({**cfg, "start_fraction": 0.5, "end_fraction": 0.5})
    with pytest.raises(ValueError, match="ask_csv_path"):
        TradingEnv({"source": "bid_ask"})


def test_trading_on_real_fx_bid_ask_bars_prices_the_quoted_spread():
    from tests.conftest import shared_file

    bid, ask = shared_file("markets/gbpusd_1m_bid_2012-02.csv"), shared_file("markets/gbpusd_1m_ask_2012-02.csv")
    env = TradingEnv({"source": "bid_ask", "csv_path": str(bid), "ask_csv_path": str(ask), "symbol": "GBPUSD",
                      "episode_len": 64})
    check_env(env, skip_render_check=True)
    raw_bid, raw_ask = pd.read_csv(bid), pd.read_csv(ask)
    assert len(env.bars) == len(raw_bid) == len(raw_ask)
    mid = (raw_bid["close"].iloc[0] + raw_ask["close"].iloc[0]) / 2
    assert env._close[0] == pytest.approx(mid)
    quoted = (raw_ask["close"].iloc[0] - raw_bid["close"].iloc[0]) / mid * 1e4
    assert env._spread_bps[0] == pytest.approx(quoted)  # costs from the quotes, not default_spread_bps
    obs, _ = env.reset(seed=3)
    assert np.isfinite(obs).all()


def test_trading_cost_scale_and_position_step_by_hand():
    tiny = {"source": "frame", "bars": tiny_bars(), "window": 1, "warmup_bars": 0, "episode_len": 2,
            "fee_bps": 3.0, "slippage_bps": 1.0, "default_spread_bps": 4.0, "initial_equity": 1000.0}
    # The same buy at 100 as the by-hand test above: 6 bps on 1,000 notional, scaled by cost_scale.
    for scale in (1.0, 0.5, 0.0):
        env = TradingEnv({**tiny, "cost_scale": scale})
        env.reset(seed=0)
        *_, info = env.step([1.0, 0.5, 0.5])
        assert info["equity"] == pytest.approx(1020.0 - 0.6 * scale)
    # position_step=1: a 0.4 target snaps to flat (no order at all), 0.6 to fully long.
    env = TradingEnv({**tiny, "position_step": 1.0})
    env.reset(seed=0)
    *_, info = env.step([0.4, 1.0, 1.0])
    assert info["filled_entry"] == 0.0 and info["position"] == 0.0 and info["equity"] == 1000.0
    env.reset(seed=0)
    *_, info = env.step([0.6, 0.5, 0.5])
    assert info["filled_entry"] == pytest.approx(10.0)  # 1,000 / 100, as a target of 1.0 buys
    assert TradingEnv({**tiny, "position_step": 0.5}).cfg.position_step == 0.5
    for bad in ({"cost_scale": -0.1}, {"cost_scale": math.nan}, {"position_step": 1.5}, {"position_step": math.nan}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TradingEnv({**tiny, **bad})


def test_reward_weights_change_the_reward_but_not_the_trades():
    # bench/rl.py --net-pnl scores a policy on a copy of the eval set with the penalties at 0 and relies on this.
    cfg = {**SMALL_TRADING, "drawdown_weight": 0.3, "hold_decay": 1e-3, "variance_weight": 1.0}
    net = {**cfg, "drawdown_weight": 0.0, "hold_decay": 0.0, "variance_weight": 0.0}
    actions = np.random.default_rng(4).uniform([-1, 0, 0], [1, 1, 1], size=(SMALL_TRADING["episode_len"], 3))
    penalised, plain = TradingEnv(cfg), TradingEnv(net)
    traj_a, rewards_a = rollout(penalised, 9, actions)
    traj_b, rewards_b = rollout(plain, 9, actions)
    np.testing.assert_array_equal(traj_a, traj_b)
    assert not np.allclose(rewards_a, rewards_b)
    assert rewards_b.sum() == pytest.approx(plain.equity() / plain.cfg.initial_equity - 1.0)
