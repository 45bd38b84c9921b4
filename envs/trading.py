"""Single-asset trading environment over 1-minute bars (gymnasium API).

Timing: at step t the agent sees bar t (features computed from bars <= t only) and sends an order that
works during bar t+1; the portfolio is then marked to close[t+1] and the reward is paid.

Action Box(3) = (target_position, entry_factor, exit_factor):
- target_position in [-1, 1]: signed notional as a fraction of current equity.
- The change to the target is split into an *exit* leg (the part that moves the position toward zero) and an
  *entry* leg (the part that opens/adds exposure, including the far side of a flip). Each leg is a limit order
  whose price is set from the decision bar only (no look-ahead):
      limit = close[t] + (2 * factor - 1) * (high[t] - low[t])   for a buy,
      limit = close[t] - (2 * factor - 1) * (high[t] - low[t])   for a sell,
  so factor 0 is a passive order one bar-range away, 0.5 rests at the close, 1 is aggressive one range through it.
  A buy fills when bar t+1 trades at or below its limit (low[t+1] <= limit) at min(limit, open[t+1]) (a gap
  through the limit fills at the open); sells mirror this. An unfilled leg is cancelled (no carry-over).
- Every filled notional pays half the spread + slippage + fee (bps, configurable), times `cost_scale` (1; an
  ablation knob: 0 = frictionless, which also removes a quoted spread). The half spread is the bar's quoted
  (ask-bid)/mid when bid/ask exist, else `default_spread_bps`.
- `position_step` > 0 snaps the target to the nearest multiple of it in [-1, 1] (1.0: short, flat or long only),
  an action-design ablation that keeps the Box space, so the same learners run unchanged; 0 (default) = continuous.

Reward per step, in units of initial equity:
    pnl - drawdown_weight * drawdown - variance_weight * pnl**2 - hold_decay * |position held|
where pnl is the equity change net of costs and drawdown = (peak equity - equity) / initial equity.
Invalid actions (NaN -> 0, out of range -> clipped) never crash; they are counted in info["invalid_actions"].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from edgeray.columns import column
from edgeray.features.market import MarketFeatureSpec, MarketFeatureState
from edgeray.generator import generate_bars
from edgeray.loaders.markets import load_bid_ask_bars, load_ohlcv_bars
from edgeray.regime import N_REGIMES, RegimeDetector, float_matrix
from envs.config import from_env_config

FEATURE_SPEC = MarketFeatureSpec()
FEATURE_NAMES = FEATURE_SPEC.names
# Fixed (not data-fitted) scales, so normalisation cannot leak statistics from later bars.
FEATURE_SCALES = np.array([0.001 * np.sqrt(h) for h in FEATURE_SPEC.return_horizons]
                          + [0.001, 0.01, 1.0, 10.0, 1.0, 0.01])
FEATURE_OFFSETS = np.array([0.0] * len(FEATURE_SPEC.return_horizons) + [0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
OBS_CLIP = 10.0
N_ACCOUNT = 3  # position, cash fraction, unrealised pnl
BAR_COLUMNS = ("event_ts", "open", "high", "low", "close", "volume")


@dataclass
class TradingEnvConfig:
    source: str = "generator"  # "generator" | "csv" | "bid_ask" (csv_path = bid bars, ask_csv_path) | "frame" (`bars`)
    csv_path: str = "../shared/data/markets/btc_perp_1m_2022-01.csv"
    ask_csv_path: str | None = None  # source="bid_ask": the ask-side OHLC file joined to csv_path's bid bars
    symbol: str = "SYN-A"
    generator_bars: int = 3000
    generator_seed: int = 7
    bars: pd.DataFrame | None = None  # for source="frame": event_ts, open, high, low, close, volume[, bid, ask]
    window: int = 8
    episode_len: int = 256
    warmup_bars: int = FEATURE_SPEC.lookback  # first tradable bar has complete features
    fee_bps: float = 2.0
    slippage_bps: float = 1.0
    default_spread_bps: float = 2.0
    drawdown_weight: float = 0.1
    variance_weight: float = 0.0
    hold_decay: float = 1e-5
    initial_equity: float = 1.0
    # Walk-forward split: episodes start and end inside bars [start_fraction * n, end_fraction * n) of the source.
    # Features are still computed over the whole source, but only from bars at or before each row, so an evaluation
    # range sees no statistic of a later bar and a training range none of the evaluation range's future.
    start_fraction: float = 0.0
    end_fraction: float = 1.0
    cost_scale: float = 1.0  # multiplies every cost (spread, slippage, fee); 1 = as configured
    position_step: float = 0.0  # 0 = continuous target; > 0 = target snapped to multiples of it

    def __post_init__(self):
        if self.source not in ("generator", "csv", "bid_ask", "frame"):
            raise ValueError(f"source must be 'generator', 'csv', 'bid_ask' or 'frame', got {self.source!r}")
        if self.source == "bid_ask" and not self.ask_csv_path:
            raise ValueError("source='bid_ask' needs ask_csv_path (csv_path is the bid file)")
        if not (0.0 <= float(self.start_fraction) < float(self.end_fraction) <= 1.0):
            raise ValueError(f"need 0 <= start_fraction < end_fraction <= 1, got {self.start_fraction!r}, "
                             f"{self.end_fraction!r}")
        for name in ("window", "episode_len", "generator_bars"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("warmup_bars",):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("fee_bps", "slippage_bps", "default_spread_bps", "drawdown_weight", "variance_weight", "hold_decay"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite non-negative number, got {getattr(self, name)!r}")
        if not (np.isfinite(self.initial_equity) and self.initial_equity > 0):
            raise ValueError(f"initial_equity must be finite and > 0, got {self.initial_equity!r}")
        if not (np.isfinite(float(self.cost_scale)) and float(self.cost_scale) >= 0):
            raise ValueError(f"cost_scale must be a finite number >= 0, got {self.cost_scale!r}")
        if not (0.0 <= float(self.position_step) <= 1.0):  # NaN fails this too
            raise ValueError(f"position_step must lie in [0, 1] (0 = continuous), got {self.position_step!r}")
        if self.source == "frame" and not isinstance(self.bars, pd.DataFrame):
            raise ValueError(f"bars must be a DataFrame when source='frame', got {type(self.bars).__name__}")

    @classmethod
    def from_dict(cls, env_config: dict | None) -> TradingEnvConfig:
        return from_env_config(cls, env_config)


def load_bars(cfg: TradingEnvConfig) -> pd.DataFrame:
    if cfg.source == "generator":
        bars = generate_bars(symbols=(cfg.symbol,), n_bars=cfg.generator_bars, seed=cfg.generator_seed)
    elif cfg.source == "csv":
        bars = load_ohlcv_bars(Path(cfg.csv_path), symbol=cfg.symbol)
    elif cfg.source == "bid_ask":
        bars = load_bid_ask_bars(Path(cfg.csv_path), Path(cfg.ask_csv_path), symbol=cfg.symbol)
    else:
        bars = cfg.bars.copy()
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack columns {missing}; they have {list(bars.columns)}")
    bars = bars.reset_index(drop=True)
    bars["event_ts"] = pd.to_datetime(bars["event_ts"], utc=True)
    bars["symbol"] = cfg.symbol
    for col in ("bid", "ask"):
        if col not in bars.columns:
            bars[col] = np.nan
    prices = bars[["open", "high", "low", "close"]].to_numpy(float)
    bad = ~np.isfinite(prices).all(axis=1) | (prices <= 0).any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"bars: open/high/low/close must be finite and > 0; row {row} has {prices[row].tolist()}")
    if bars["event_ts"].isna().any() or (np.diff(bars["event_ts"].array.asi8) < 0).any():
        raise ValueError("bars: event_ts must be present and sorted ascending")
    return bars


def normalise_features(raw: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        scaled = (raw - FEATURE_OFFSETS) / FEATURE_SCALES
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=OBS_CLIP, neginf=-OBS_CLIP)  # NaN feature = neutral
    return np.clip(scaled, -OBS_CLIP, OBS_CLIP).astype(np.float32)


def market_observations(bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Normalised feature matrix (n, 10) and regime codes (n,), each row from bars at or before it."""
    feats = MarketFeatureState(FEATURE_SPEC).update(bars, kind="bar")
    regimes = RegimeDetector().classify(feats)
    return normalise_features(feats[FEATURE_NAMES].to_numpy(float)), regimes.astype(np.int64)


@dataclass(frozen=True)
class CompactObservations:
    """A batch of LiveObservations without its window copies: each symbol's recent feature rows once (`base`; a row's
    window is a slice of it, so consecutive windows overlap) plus, per row, where its window starts and its account
    and regime part. At window 8 it is ~4x smaller than the expanded batch (84 KB against 360 KB at 1,000 rows),
    small enough to travel to the policy server inline instead of through the object store. `expand()` gives
    exactly what LiveObservations.build gives."""
    base: np.ndarray    # (m, k) float32 normalised feature rows, per symbol: its window - 1 previous rows, then the batch's
    starts: np.ndarray  # (n,) row i's window is base[starts[i] : starts[i] + window]
    tail: np.ndarray    # (n, N_ACCOUNT + N_REGIMES) float32
    window: int

    def __len__(self) -> int:
        return len(self.starts)

    def expand(self) -> np.ndarray:
        n, k = len(self.starts), self.base.shape[1]
        out = np.empty((n, self.window * k + self.tail.shape[1]), dtype=np.float32)
        if n == 0:
            return out
        windows = np.lib.stride_tricks.sliding_window_view(self.base, (self.window, k))[:, 0]
        out[:, : self.window * k] = windows[self.starts].reshape(n, -1)
        out[:, self.window * k:] = self.tail
        return np.clip(out, -OBS_CLIP, OBS_CLIP)


class LiveObservations:
    """TradingEnv observations built from the decision loop's feature rows, so a policy trained on the env can
    size live orders. Keeps the last `window - 1` normalised rows per symbol (zeros before a symbol's first row,
    i.e. neutral features); the account part comes from the ledger snapshot taken before the batch."""

    def __init__(self, window: int):
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        self.window = int(window)
        self.obs_dim = self.window * len(FEATURE_NAMES) + N_ACCOUNT + N_REGIMES
        self._history: dict[str, np.ndarray] = {}

    def build(self, frame: pd.DataFrame, regimes: np.ndarray, snapshot: dict) -> np.ndarray:
        return self.build_compact(frame, regimes, snapshot).expand()

    def build_compact(self, frame: pd.DataFrame, regimes: np.ndarray, snapshot: dict) -> CompactObservations:
        missing = [c for c in FEATURE_NAMES if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks the policy's feature columns {missing}")
        feats = normalise_features(float_matrix(frame, FEATURE_NAMES))
        symbols = column(frame, "symbol")
        n, k = feats.shape
        blocks, starts, offset = [], np.zeros(n, dtype=np.int64), 0
        for symbol in pd.unique(symbols):
            rows = np.flatnonzero(symbols == symbol)
            past = self._history.get(symbol, np.zeros((self.window - 1, k), dtype=np.float32))
            stacked = np.concatenate([past, feats[rows]]).astype(np.float32, copy=False)
            blocks.append(stacked)
            starts[rows] = offset + np.arange(len(rows))
            offset += len(stacked)
            self._history[symbol] = stacked[len(stacked) - (self.window - 1):]
        tail = np.zeros((n, N_ACCOUNT + N_REGIMES), dtype=np.float32)
        equity = float(snapshot.get("equity", 0.0))
        if equity > 0:
            positions, prices = snapshot.get("positions", {}), snapshot.get("prices", {})
            price = column(frame, "close", float)
            held = np.array([positions.get(s, 0.0) * prices.get(s, p) for s, p in zip(symbols, price)])
            tail[:, 0] = held / equity
            tail[:, 1] = float(snapshot.get("cash", equity)) / equity
            tail[:, 2] = float(snapshot.get("unrealised_pnl", 0.0)) / equity
        tail[np.arange(n), N_ACCOUNT + np.asarray(regimes, dtype=np.int64)] = 1.0
        base = np.concatenate(blocks) if blocks else np.zeros((0, k), dtype=np.float32)
        return CompactObservations(base, starts, tail, self.window)

    def state_dict(self) -> dict:
        return {"window": self.window, "history": {s: h.tolist() for s, h in self._history.items()}}

    def load_state(self, state: dict) -> None:
        self._history = {s: np.asarray(h, dtype=np.float32) for s, h in state["history"].items()}


def limit_price(side: float, factor: float, close: float, bar_range: float) -> float:
    return close + side * (2.0 * factor - 1.0) * bar_range


def fill_price(side: float, limit: float, open_: float, high: float, low: float) -> float | None:
    """Price at which a limit order resting through the next bar fills, or None if the bar never reached it."""
    if side > 0:
        return min(limit, open_) if low <= limit else None
    return max(limit, open_) if high >= limit else None


class TradingEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, env_config: dict | TradingEnvConfig | None = None):
        self.cfg = env_config if isinstance(env_config, TradingEnvConfig) else TradingEnvConfig.from_dict(
            dict(env_config) if env_config is not None else None)
        self.bars = load_bars(self.cfg)
        self._open, self._high, self._low, self._close = (self.bars[c].to_numpy(float) for c in ("open", "high", "low", "close"))
        bid, ask = self.bars["bid"].to_numpy(float), self.bars["ask"].to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            quoted = (ask - bid) / ((ask + bid) / 2.0) * 1e4
        self._spread_bps = np.where(np.isfinite(quoted) & (quoted >= 0), quoted, self.cfg.default_spread_bps)
        self._features, self._regimes = market_observations(self.bars)
        n = len(self.bars)
        self.first_start = max(self.cfg.warmup_bars, self.cfg.window - 1, int(self.cfg.start_fraction * n))
        self.last_start = min(n, int(self.cfg.end_fraction * n)) - 1 - self.cfg.episode_len
        if self.last_start < self.first_start:
            raise ValueError(f"bars: {n} bars are too few for window={self.cfg.window}, "
                             f"warmup_bars={self.cfg.warmup_bars}, episode_len={self.cfg.episode_len}, "
                             f"start/end_fraction={self.cfg.start_fraction}/{self.cfg.end_fraction}")
        n_obs = self.cfg.window * len(FEATURE_NAMES) + N_ACCOUNT + N_REGIMES
        self.observation_space = spaces.Box(-OBS_CLIP, OBS_CLIP, shape=(n_obs,), dtype=np.float32)
        self.action_space = spaces.Box(np.array([-1.0, 0.0, 0.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32),
                                       dtype=np.float32)
        self._reset_account(self.first_start)

    def _reset_account(self, start: int) -> None:
        self.t = start
        self.steps = 0
        self.cash = self.cfg.initial_equity
        self.qty = 0.0
        self.avg_entry = 0.0
        self.peak = self.cfg.initial_equity
        self.invalid_actions = 0

    def equity(self, t: int | None = None) -> float:
        return self.cash + self.qty * self._close[self.t if t is None else t]

    def observation_names(self) -> list[str]:
        lags = [f"{name}_lag{lag}" for lag in range(self.cfg.window - 1, -1, -1) for name in FEATURE_NAMES]
        return lags + ["position", "cash_fraction", "unrealised_pnl"] + [f"regime_{r}" for r in range(N_REGIMES)]

    def _obs(self) -> np.ndarray:
        t, eq = self.t, self.equity()
        window = self._features[t - self.cfg.window + 1: t + 1].ravel()
        price = self._close[t]
        position = self.qty * price / eq if eq > 0 else 0.0
        unrealised = self.qty * (price - self.avg_entry) / eq if eq > 0 and self.qty != 0 else 0.0
        account = np.array([position, self.cash / eq if eq > 0 else 0.0, unrealised])
        regime = np.zeros(N_REGIMES)
        regime[self._regimes[t]] = 1.0
        obs = np.concatenate([window, account, regime])
        return np.clip(np.nan_to_num(obs, nan=0.0), -OBS_CLIP, OBS_CLIP).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        start = int(self.np_random.integers(self.first_start, self.last_start + 1))
        self._reset_account(start)
        return self._obs(), {"t": start, "event_ts": str(self.bars["event_ts"].iat[start])}

    def sanitize(self, action) -> tuple[np.ndarray, int]:
        """(clipped action, 1 if it had to be changed else 0)."""
        raw = np.asarray(action, dtype=float).ravel()
        if raw.shape != (3,):
            return np.array([0.0, 0.5, 0.5]), 1
        fixed = np.clip(np.nan_to_num(raw, nan=0.0, posinf=np.inf, neginf=-np.inf),
                        self.action_space.low, self.action_space.high)
        return fixed, int(not np.array_equal(fixed, raw))

    def _trade(self, side: float, qty: float, factor: float, t: int) -> float:
        """Fill one leg during bar t+1; returns the filled (unsigned) qty."""
        if qty <= 0:
            return 0.0
        limit = limit_price(side, factor, self._close[t], self._high[t] - self._low[t])
        price = fill_price(side, limit, self._open[t + 1], self._high[t + 1], self._low[t + 1])
        if price is None:
            return 0.0
        cost_bps = (self._spread_bps[t + 1] / 2.0 + self.cfg.slippage_bps + self.cfg.fee_bps) * self.cfg.cost_scale
        self.cash -= side * qty * price + qty * price * cost_bps / 1e4
        new_qty = self.qty + side * qty
        if self.qty == 0 or np.sign(new_qty) != np.sign(self.qty):
            self.avg_entry = price if new_qty != 0 else 0.0
        elif abs(new_qty) > abs(self.qty):
            self.avg_entry = (self.avg_entry * abs(self.qty) + price * qty) / abs(new_qty)
        self.qty = new_qty
        return qty

    def step(self, action):
        act, invalid = self.sanitize(action)
        self.invalid_actions += invalid
        target, entry_factor, exit_factor = act
        if self.cfg.position_step > 0:
            step = self.cfg.position_step
            target = float(np.clip(np.round(target / step) * step, -1.0, 1.0))
        t, init = self.t, self.cfg.initial_equity
        eq_before = self.equity()
        target_qty = target * eq_before / self._close[t] if eq_before > 0 else 0.0
        delta = target_qty - self.qty
        side = float(np.sign(delta))
        # Part of the change that moves toward flat is the exit leg; the remainder opens exposure.
        exit_qty = min(abs(delta), abs(self.qty)) if side != 0 and side == -np.sign(self.qty) else 0.0
        filled_exit = self._trade(side, exit_qty, exit_factor, t)
        filled_entry = self._trade(side, abs(delta) - exit_qty, entry_factor, t) if filled_exit == exit_qty else 0.0
        self.t = t + 1
        self.steps += 1
        eq_after = self.equity()
        self.peak = max(self.peak, eq_after)
        pnl = (eq_after - eq_before) / init
        drawdown = (self.peak - eq_after) / init
        held = abs(self.qty * self._close[self.t] / eq_after) if eq_after > 0 else 0.0
        components = {"pnl": pnl, "drawdown_penalty": self.cfg.drawdown_weight * drawdown,
                      "variance_penalty": self.cfg.variance_weight * pnl ** 2, "hold_penalty": self.cfg.hold_decay * held}
        reward = pnl - components["drawdown_penalty"] - components["variance_penalty"] - components["hold_penalty"]
        terminated = bool(eq_after <= 1e-9 * init)  # bust: nothing left to trade
        truncated = bool(not terminated and self.steps >= self.cfg.episode_len)
        info = {"invalid_actions": self.invalid_actions, "equity": eq_after, "position": held * np.sign(self.qty),
                "filled_entry": filled_entry, "filled_exit": filled_exit, "reward_components": components,
                "t": self.t}
        return self._obs(), float(reward), terminated, truncated, info

    def config_dict(self) -> dict:
        cfg = asdict(self.cfg)
        cfg.pop("bars")
        return cfg
