"""Gymnasium environments for RL position and bet sizing, registered with gymnasium and RLlib.

Importing this package registers "edgeray/Trading-v0" and "edgeray/Betting-v0" with gymnasium (cheap, no Ray).
`register_rllib_envs()` registers "edgeray-trading" / "edgeray-betting" with RLlib's registry; it imports
ray.tune.registry (about 2 s) but never starts Ray, so it is not run at import time.
"""
from __future__ import annotations

import gymnasium

TRADING_ID, BETTING_ID = "edgeray/Trading-v0", "edgeray/Betting-v0"
RLLIB_TRADING, RLLIB_BETTING = "edgeray-trading", "edgeray-betting"

for _id, _entry in ((TRADING_ID, "envs.trading:TradingEnv"), (BETTING_ID, "envs.betting:BettingEnv")):
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry)


def make_trading_env(env_config: dict | None = None):
    from envs.trading import TradingEnv

    return TradingEnv(dict(env_config or {}))


def make_betting_env(env_config: dict | None = None):
    from envs.betting import BettingEnv

    return BettingEnv(dict(env_config or {}))


def register_rllib_envs() -> tuple[str, str]:
    """Register both envs under RLlib names; safe to call repeatedly. Returns (trading_name, betting_name)."""
    from ray.tune.registry import register_env

    register_env(RLLIB_TRADING, make_trading_env)
    register_env(RLLIB_BETTING, make_betting_env)
    return RLLIB_TRADING, RLLIB_BETTING
