"""Sequential single-bet environment: one game per step, bet a fraction of bankroll on the modelled side.

Each game row has model_prob (the model's win probability for the side we may back, known before the game),
decimal_odds (the price offered for that side) and won (1 if that side won). Action Box(1) = fraction of the
current bankroll to stake, in [0, max_fraction] (max_fraction <= 1, so the stake never exceeds the bankroll).
Reward = log(bankroll_after / bankroll_before). The bankroll cannot go negative: at worst the stake is lost;
the episode terminates when the bankroll falls to `min_bankroll` or below.

Game sources:
- "generator" (default, no files): each episode draws fresh games from the env's seeded RNG: true p ~ U(0.2, 0.8),
  market prob = p + noise with a bookmaker margin, model prob = p + smaller noise (so the model has a real but
  imperfect edge), won ~ Bernoulli(p).
- "sport": edgeray.sports.games.load_sport; backs the home side at the closing price home_dec. The stand-in
  model (`sport_model`) is point-in-time either way, known before the bet is placed at the close:
  "close_noise" (default): the margin-free closing market probability plus seeded noise (an uninformed model:
  its edge over the price is noise, so the best stake is none); "open": the margin-free *opening* probability
  (a real forecast posted before the closing price; games without an opening line are left out, counted).
  `seasons` keeps only games of those seasons (edgeray.sports.formats.season_of): a walk-forward split trains
  on earlier seasons and evaluates on later ones.
- "frame": a DataFrame with model_prob, decimal_odds, won given in `games`.
Table sources start each episode at a random game drawn from the reset seed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from envs.config import from_env_config

log = logging.getLogger(__name__)

GAME_COLUMNS = ("model_prob", "decimal_odds", "won")
SPORT_MODELS = ("close_noise", "open")
OBS_HIGH = 10.0
N_OBS = 7


@dataclass
class BettingEnvConfig:
    source: str = "generator"  # "generator" | "sport" | "frame"
    sport: str = "nba"
    data_dir: str = "../shared/data/sports"
    model_noise: float = 0.03
    market_noise: float = 0.05
    bookmaker_margin: float = 0.04
    games: pd.DataFrame | None = None
    episode_len: int = 100
    max_fraction: float = 0.25
    initial_bankroll: float = 1.0
    min_bankroll: float = 1e-6
    seed: int = 0  # for the sport stand-in model's noise
    sport_model: str = "close_noise"  # source="sport": "close_noise" | "open" (see the module docstring)
    seasons: tuple[int, ...] | None = None  # source="sport": only these seasons' games (None: every season)

    def __post_init__(self):
        if self.source not in ("generator", "sport", "frame"):
            raise ValueError(f"source must be 'generator', 'sport' or 'frame', got {self.source!r}")
        if not (0 < float(self.max_fraction) <= 1):
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction!r}")
        if int(self.episode_len) < 1:
            raise ValueError(f"episode_len must be >= 1, got {self.episode_len!r}")
        if not (np.isfinite(self.initial_bankroll) and self.initial_bankroll > 0):
            raise ValueError(f"initial_bankroll must be finite and > 0, got {self.initial_bankroll!r}")
        if not (0 < self.min_bankroll < self.initial_bankroll):
            raise ValueError(f"min_bankroll must be in (0, initial_bankroll), got {self.min_bankroll!r}")
        for name in ("model_noise", "market_noise", "bookmaker_margin"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)!r}")
        if self.source == "frame" and not isinstance(self.games, pd.DataFrame):
            raise ValueError(f"games must be a DataFrame when source='frame', got {type(self.games).__name__}")
        if self.sport_model not in SPORT_MODELS:
            raise ValueError(f"sport_model must be one of {SPORT_MODELS}, got {self.sport_model!r}")
        if self.seasons is not None:
            if self.source != "sport":
                raise ValueError(f"seasons applies to source='sport' only, got source={self.source!r}")
            if (isinstance(self.seasons, (str, bytes)) or not hasattr(self.seasons, "__iter__")
                    or not list(self.seasons)
                    or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in self.seasons)):
                raise ValueError(f"seasons must be a non-empty list of integer seasons (e.g. [2010, 2011]), "
                                 f"got {self.seasons!r}")
            self.seasons = tuple(int(x) for x in self.seasons)

    @classmethod
    def from_dict(cls, env_config: dict | None) -> BettingEnvConfig:
        return from_env_config(cls, env_config)


def validate_games(games: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in GAME_COLUMNS if c not in games.columns]
    if missing:
        raise ValueError(f"games lack columns {missing}; they have {list(games.columns)}")
    out = games[list(GAME_COLUMNS)].astype(float).reset_index(drop=True)
    checks = {"model_prob": (out["model_prob"] > 0) & (out["model_prob"] < 1),
              "decimal_odds": np.isfinite(out["decimal_odds"]) & (out["decimal_odds"] > 1),
              "won": out["won"].isin([0.0, 1.0])}
    for name, ok in checks.items():
        if not ok.all():
            row = int(np.flatnonzero(~ok.to_numpy())[0])
            raise ValueError(f"games.{name} invalid at row {row}: {out[name].iat[row]!r}")
    return out


def generate_games(rng: np.random.Generator, n: int, model_noise: float, market_noise: float, margin: float) -> pd.DataFrame:
    true_p = rng.uniform(0.2, 0.8, n)
    market_p = np.clip(true_p + rng.normal(0, market_noise, n), 0.05, 0.95)
    model_p = np.clip(true_p + rng.normal(0, model_noise, n), 0.02, 0.98)
    return pd.DataFrame({"model_prob": model_p, "decimal_odds": 1.0 / (market_p * (1.0 + margin)),
                         "won": (rng.random(n) < true_p).astype(float)})


def sport_games(cfg: BettingEnvConfig) -> pd.DataFrame:
    """The bettable games of cfg.sport (cfg.seasons only, when given) in date order: model_prob, decimal_odds,
    won, plus date and season (kept so a walk-forward split can be checked)."""
    from edgeray.sports.games import load_sport  # lazy: the default generator path needs no sports data

    games = load_sport(cfg.sport, cfg.data_dir)
    if cfg.seasons is not None:
        present = sorted(int(x) for x in games["season"].unique())
        missing = sorted(set(cfg.seasons) - set(present))
        if missing:  # a typo'd season must not silently shrink the split
            raise ValueError(f"seasons {missing} have no {cfg.sport} games in {cfg.data_dir}; seasons there: {present}")
        games = games[games["season"].isin(cfg.seasons)]
    prob = "market_prob_home_open" if cfg.sport_model == "open" else "market_prob_home"
    table = pd.DataFrame({"market_prob": games[prob].to_numpy(float),
                          "decimal_odds": games["home_dec"].to_numpy(float),
                          "won": games["home_win"].to_numpy(float),
                          "date": games["date"].to_numpy(), "season": games["season"].to_numpy()})
    numeric = table[["market_prob", "decimal_odds", "won"]]
    usable = np.isfinite(numeric).all(axis=1) & (table["decimal_odds"] > 1) & table["market_prob"].between(0, 1, inclusive="neither")
    if not usable.all():  # games without a price (or, for "open", an opening line) cannot be bet; say how many
        log.warning("betting env: %d of %d %s games lack usable %s odds/results and are not bet",
                    int((~usable).sum()), len(table), cfg.sport, "opening/closing" if cfg.sport_model == "open" else "closing")
    table = table[usable].reset_index(drop=True)
    if cfg.sport_model == "open":
        table["model_prob"] = table["market_prob"]  # the opening line itself: no noise added
    else:
        rng = np.random.default_rng(cfg.seed)
        table["model_prob"] = np.clip(table["market_prob"] + rng.normal(0, cfg.model_noise, len(table)), 0.01, 0.99)
    return table


OBS_NAMES = ("model_prob", "implied_prob", "log_odds", "edge", "kelly_fraction", "log_bankroll_ratio", "remaining")


def observation(model_prob: float, odds: float, bankroll_ratio: float, remaining: float) -> np.ndarray:
    implied = 1.0 / odds
    edge = model_prob * odds - 1.0
    kelly = max(edge / (odds - 1.0), 0.0)
    obs = [model_prob, implied, np.log(odds), edge, kelly, np.log(max(bankroll_ratio, 1e-12)), remaining]
    return np.clip(np.array(obs, dtype=np.float64), -OBS_HIGH, OBS_HIGH).astype(np.float32)


class BettingEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, env_config: dict | BettingEnvConfig | None = None):
        self.cfg = env_config if isinstance(env_config, BettingEnvConfig) else BettingEnvConfig.from_dict(
            dict(env_config) if env_config is not None else None)
        self.game_dates = None  # source="sport": each table row's game date (UTC), for checking a split
        if self.cfg.source == "sport":
            games = sport_games(self.cfg)
            self.table = validate_games(games)
            self.game_dates = games["date"].to_numpy()
        elif self.cfg.source == "frame":
            self.table = validate_games(self.cfg.games)
        else:
            self.table = None
        if self.table is not None and len(self.table) < 1:
            raise ValueError("games: the table has no usable games")
        self.observation_space = spaces.Box(-OBS_HIGH, OBS_HIGH, shape=(N_OBS,), dtype=np.float32)
        self.action_space = spaces.Box(0.0, float(self.cfg.max_fraction), shape=(1,), dtype=np.float32)
        self._episode = generate_games(np.random.default_rng(0), 1, 0, 0, 0) if self.table is None else self.table.iloc[:1]
        self.i = 0
        self.bankroll = self.cfg.initial_bankroll
        self.invalid_actions = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        n = self.cfg.episode_len
        if self.table is None:
            self._episode = generate_games(self.np_random, n, self.cfg.model_noise, self.cfg.market_noise,
                                           self.cfg.bookmaker_margin)
        else:
            start = int(self.np_random.integers(0, max(len(self.table) - n, 0) + 1))
            self._episode = self.table.iloc[start: start + n].reset_index(drop=True)
        self._probs = self._episode["model_prob"].to_numpy(float)
        self._odds = self._episode["decimal_odds"].to_numpy(float)
        self._won = self._episode["won"].to_numpy(float)
        self.i = 0
        self.bankroll = self.cfg.initial_bankroll
        self.invalid_actions = 0
        return self._obs(), {"bankroll": self.bankroll}

    @staticmethod
    def observation_names() -> list[str]:
        return list(OBS_NAMES)

    def _obs(self) -> np.ndarray:
        i = min(self.i, len(self._probs) - 1)  # after the last game the observation repeats it (episode is over)
        remaining = 1.0 - self.i / len(self._probs)
        return observation(self._probs[i], self._odds[i], self.bankroll / self.cfg.initial_bankroll, remaining)

    def step(self, action):
        raw = np.asarray(action, dtype=float).ravel()
        fraction = float(raw[0]) if raw.shape == (1,) and np.isfinite(raw[0]) else 0.0
        clipped = float(np.clip(fraction, 0.0, self.cfg.max_fraction))
        self.invalid_actions += int(raw.shape != (1,) or clipped != raw[0])
        stake = clipped * self.bankroll  # max_fraction <= 1: never more than the bankroll
        odds, won = self._odds[self.i], self._won[self.i]
        before = self.bankroll
        self.bankroll = before - stake + stake * odds * won
        reward = float(np.log(max(self.bankroll, self.cfg.min_bankroll) / before))
        self.i += 1
        terminated = bool(self.bankroll <= self.cfg.min_bankroll)
        truncated = bool(not terminated and self.i >= len(self._probs))
        info = {"bankroll": self.bankroll, "stake": stake, "fraction": clipped, "won": bool(won), "odds": odds,
                "invalid_actions": self.invalid_actions}
        return self._obs(), reward, terminated, truncated, info
