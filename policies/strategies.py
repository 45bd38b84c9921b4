"""Signal strategies over micro-batches of the feature frame (and one over odds).

Every strategy maps a whole batch to a `SignalBatch` of per-row arrays. A row whose inputs are NaN, or
whose regime is outside the strategy's `active_regimes`, gets direction 0, strength 0, expected return 0.
`expected_return` is the signed fractional return the strategy expects over its `horizon_bars`, which
is what the sizers turn into a position.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from edgeray.features.windows import rolling_mean, rolling_std
from edgeray.regime import N_REGIMES, Regime, event_times_ns, feature, symbol_strings

TREND_REGIMES = (Regime.TRENDING_UP, Regime.TRENDING_DOWN)
_SQRT_5, _SQRT_15 = np.sqrt(5), np.sqrt(15)
CALM_REGIMES = (Regime.SIDEWAYS, Regime.LOW_VOLATILITY)


@dataclass
class SignalBatch:
    direction: np.ndarray  # int8 in {-1, 0, +1}
    strength: np.ndarray  # float in [0, 1]
    expected_return: np.ndarray  # float, signed, 0 where direction is 0

    def __post_init__(self):
        self.direction = np.asarray(self.direction)
        self.strength = np.asarray(self.strength, dtype=float)
        self.expected_return = np.asarray(self.expected_return, dtype=float)
        shapes = {name: getattr(self, name).shape for name in ("direction", "strength", "expected_return")}
        if len(set(shapes.values())) != 1 or self.direction.ndim != 1:
            raise ValueError(f"SignalBatch arrays must be 1-D and the same length, got shapes {shapes}")
        if not np.isin(self.direction, (-1, 0, 1)).all():
            raise ValueError(f"direction must be -1, 0 or +1, got {np.unique(self.direction).tolist()}")
        self.direction = self.direction.astype(np.int8)
        bad = ~(np.isfinite(self.strength) & (self.strength >= 0) & (self.strength <= 1))
        if bad.any():
            raise ValueError(f"strength must be finite and in [0, 1], got {self.strength[bad][:5].tolist()}")
        if not np.isfinite(self.expected_return).all():
            raise ValueError(f"expected_return must be finite, got {self.expected_return[~np.isfinite(self.expected_return)][:5].tolist()}")
        flat = self.direction == 0
        if np.any(self.strength[flat] != 0) or np.any(self.expected_return[flat] != 0):
            raise ValueError("strength and expected_return must be 0 where direction is 0")

    def __len__(self) -> int:
        return len(self.direction)

    @classmethod
    def flat(cls, n: int) -> SignalBatch:
        return cls(np.zeros(n, np.int8), np.zeros(n), np.zeros(n))

    @classmethod
    def from_mask(cls, fire: np.ndarray, direction: np.ndarray, strength: np.ndarray,
                  expected_return: np.ndarray) -> SignalBatch:
        """Keep the rows where `fire` holds (and everything is finite); zero the rest so no NaN leaks out."""
        direction = np.nan_to_num(np.asarray(direction, dtype=float))
        fire = np.asarray(fire, bool) & (direction != 0) & np.isfinite(strength) & np.isfinite(expected_return)
        return cls(np.where(fire, np.sign(direction), 0).astype(np.int8),
                   np.where(fire, np.clip(np.nan_to_num(strength), 0.0, 1.0), 0.0),
                   np.where(fire, np.nan_to_num(expected_return), 0.0))


def _fired(fire: np.ndarray, direction: np.ndarray, strength: np.ndarray, expected_return: np.ndarray) -> SignalBatch:
    """`SignalBatch.from_mask` for a strategy's own (n,) float arrays: the same batch, built without the checks
    that only re-prove what this construction guarantees (those cost more than the signal on a tiny batch).

    The values match from_mask's: a fired row has a finite strength and expected return, so nan_to_num leaves
    them as they are, and the rest are 0 either way; a direction counts when it is neither 0 nor NaN, i.e.
    |direction| > 0 (what nan_to_num's NaN -> 0 then != 0 did), and its sign is that of nan_to_num's (inf ->
    max float keeps the sign).
    """
    shape = np.shape(fire)
    if len(shape) != 1 or direction.shape != shape or strength.shape != shape or expected_return.shape != shape:
        return SignalBatch.from_mask(fire, direction, strength, expected_return)  # e.g. a duplicated column: its error
    fire = fire & (np.abs(direction) > 0) & np.isfinite(strength) & np.isfinite(expected_return)
    batch = SignalBatch.__new__(SignalBatch)
    batch.direction = np.where(fire, np.sign(direction), 0).astype(np.int8)
    batch.strength = np.where(fire, strength.clip(0.0, 1.0), 0.0)  # ndarray.clip: np.clip's own call, less dispatch
    batch.expected_return = np.where(fire, expected_return, 0.0)
    return batch


def _flat(n: int) -> SignalBatch:
    """SignalBatch.flat(n) without re-validating its zeros: what _fired returns when nothing fires."""
    batch = SignalBatch.__new__(SignalBatch)
    batch.direction, batch.strength, batch.expected_return = np.zeros(n, np.int8), np.zeros(n), np.zeros(n)
    return batch


def _positive(name: str, value: float) -> float:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


class Strategy:
    """Base: `signals(frame, regimes)` for a feature frame and the `RegimeDetector` codes of its rows."""

    name: str = "strategy"
    horizon_bars: int = 1
    active_regimes: tuple[int, ...] | None = None  # None: every regime

    def __init__(self, horizon_bars: int, active_regimes: Iterable[int] | None, params: dict):
        # Constructor arguments, kept so a restart rebuilds the same strategy from state_dict().
        self._params = {k: v for k, v in params.items() if k not in ("self", "__class__")}
        if int(horizon_bars) != horizon_bars or horizon_bars < 1:
            raise ValueError(f"horizon_bars must be a positive integer, got {horizon_bars!r}")
        self.horizon_bars = int(horizon_bars)
        if active_regimes is not None:
            active_regimes = tuple(int(Regime(r)) for r in active_regimes)  # Regime() raises ValueError on unknown codes
        self.active_regimes = active_regimes
        self._params["active_regimes"] = None if active_regimes is None else list(active_regimes)

    def _active(self, frame: pd.DataFrame, regimes: np.ndarray) -> np.ndarray:
        regimes = np.asarray(regimes)
        if regimes.shape != (len(frame),):
            raise ValueError(f"regimes must have one code per frame row ({len(frame)}), got shape {regimes.shape}")
        if len(regimes) and not ((regimes >= 0) & (regimes < N_REGIMES)).all():
            raise ValueError(f"regimes must be codes in [0, {N_REGIMES}), got {np.unique(regimes).tolist()}")
        if self.active_regimes is None:
            return np.ones(len(frame), bool)
        if regimes.dtype.kind in "iu":  # codes checked in range above: a table lookup is np.isin's answer
            return self._active_table()[regimes]
        return np.isin(regimes, self.active_regimes)

    def _active_table(self) -> np.ndarray:
        # Rebuilt when active_regimes is reassigned; a getattr default, so instances made before it exists work.
        cached = getattr(self, "_active_cache", None)
        if cached is None or cached[0] is not self.active_regimes:
            table = np.zeros(N_REGIMES, bool)
            table[list(self.active_regimes)] = True
            cached = self._active_cache = (self.active_regimes, table)
        return cached[1]

    def signals(self, frame: pd.DataFrame, regimes: np.ndarray) -> SignalBatch:
        raise NotImplementedError

    # Stateless strategies carry only their parameters; stateful ones extend both methods.
    def state_dict(self) -> dict:
        return {"params": dict(self._params)}

    def load_state(self, state: dict) -> None:
        return None

    @classmethod
    def from_state(cls, state: dict) -> Strategy:
        strategy = cls(**state["params"])
        strategy.load_state(state)
        return strategy


class Momentum(Strategy):
    """Follow a 15-bar move that stands out from noise (ret_15 in rv_30 units) when mom_30 agrees.

    Expects a share `persistence` of the recent per-bar drift to carry on over the holding horizon.
    """

    name = "momentum"

    def __init__(self, entry_z: float = 1.0, full_z: float = 3.0, persistence: float = 0.2, horizon_bars: int = 15,
                 active_regimes: Iterable[int] | None = TREND_REGIMES):
        super().__init__(horizon_bars, active_regimes, locals())
        self.entry_z, self.full_z = _positive("entry_z", entry_z), _positive("full_z", full_z)
        self.persistence = _positive("persistence", persistence)

    def signals(self, frame: pd.DataFrame, regimes: np.ndarray) -> SignalBatch:
        active = self._active(frame, regimes)
        ret_15, rv, mom = feature(frame, "ret_15"), feature(frame, "rv_30"), feature(frame, "mom_30")
        with np.errstate(divide="ignore", invalid="ignore"):
            z = ret_15 / (np.where(rv > 0, rv, np.nan) * _SQRT_15)
        fire = active & (np.abs(z) >= self.entry_z) & (np.sign(mom) == np.sign(ret_15))
        return _fired(fire, np.sign(ret_15), np.abs(z) / self.full_z, self.persistence * ret_15 / 15 * self.horizon_bars)


# sd of (close - mean of the last n closes) for a random walk with unit per-bar sd: sqrt((n-1)(2n-1)/(6n)).
def _stretch_scale(n: int) -> float:
    return float(np.sqrt((n - 1) * (2 * n - 1) / (6 * n)))


_STRETCH_SCALE_30 = _stretch_scale(30)


class MeanReversion(Strategy):
    """Fade a price stretched away from its 30-bar mean / VWAP, measured in random-walk units of rv_30.

    The stretch is the mean of the finite values of mom_30 and vwap_dist_30; expects a share `reversion`
    of it to close over the holding horizon.
    """

    name = "mean_reversion"

    def __init__(self, entry_z: float = 2.0, full_z: float = 4.0, reversion: float = 0.5, horizon_bars: int = 10,
                 active_regimes: Iterable[int] | None = CALM_REGIMES):
        super().__init__(horizon_bars, active_regimes, locals())
        self.entry_z, self.full_z = _positive("entry_z", entry_z), _positive("full_z", full_z)
        self.reversion = _positive("reversion", reversion)

    def signals(self, frame: pd.DataFrame, regimes: np.ndarray) -> SignalBatch:
        active = self._active(frame, regimes)
        mom, vwap = feature(frame, "mom_30"), feature(frame, "vwap_dist_30")
        if mom.ndim == 1 and vwap.ndim == 1:
            # The mean of the finite ones of the two, without column_stack and nansum's copies: nansum over a
            # row of two adds (NaN -> 0) a and b to a 0.0 start, so (0.0 + a) + b (-0.0 + -0.0 sums to +0.0).
            mom_ok, vwap_ok = np.isfinite(mom), np.isfinite(vwap)
            n_finite = mom_ok.astype(np.int64) + vwap_ok
            total = (0.0 + np.where(mom_ok, mom, 0.0)) + np.where(vwap_ok, vwap, 0.0)
            stretch = np.where(n_finite > 0, total / np.maximum(n_finite, 1), np.nan)
        else:  # a duplicated column name: whatever the stacked version made of it before
            both = np.column_stack([mom, vwap])
            n_finite = np.isfinite(both).sum(axis=1)
            stretch = np.where(n_finite > 0, np.nansum(both, axis=1) / np.maximum(n_finite, 1), np.nan)
        rv = feature(frame, "rv_30")
        with np.errstate(divide="ignore", invalid="ignore"):
            z = stretch / (np.where(rv > 0, rv, np.nan) * _STRETCH_SCALE_30)
        fire = active & (np.abs(z) >= self.entry_z)
        return _fired(fire, -np.sign(stretch), np.abs(z) / self.full_z, -self.reversion * stretch)


class Breakout(Strategy):
    """Trade with a fast 5-bar move that is large against rv_30 and confirmed by volume.

    rv_30 contains the move itself, which caps |ret_5| / (rv_30 * sqrt(5)) near sqrt(6) ~ 2.45 for a
    one-bar jump, hence the modest default entry_z.
    """

    name = "breakout"

    def __init__(self, entry_z: float = 2.0, full_z: float = 3.0, min_volume_ratio: float = 1.5,
                 continuation: float = 0.3, horizon_bars: int = 5, active_regimes: Iterable[int] | None = None):
        super().__init__(horizon_bars, active_regimes, locals())
        self.entry_z, self.full_z = _positive("entry_z", entry_z), _positive("full_z", full_z)
        self.min_volume_ratio = _positive("min_volume_ratio", min_volume_ratio)
        self.continuation = _positive("continuation", continuation)

    def signals(self, frame: pd.DataFrame, regimes: np.ndarray) -> SignalBatch:
        active = self._active(frame, regimes)
        ret_5, rv = feature(frame, "ret_5"), feature(frame, "rv_30")
        with np.errstate(divide="ignore", invalid="ignore"):
            z = ret_5 / (np.where(rv > 0, rv, np.nan) * _SQRT_5)
        fire = active & (np.abs(z) >= self.entry_z) & (feature(frame, "volume_ratio_30") >= self.min_volume_ratio)
        return _fired(fire, np.sign(ret_5), np.abs(z) / self.full_z, self.continuation * ret_5)


class MarketMaking(Strategy):
    """Spread capture: quote against the last 1-bar move when the spread is wide relative to volatility.

    Expected return per fill = half the spread minus `adverse_selection` per-bar sigmas (the move against
    a resting quote); strength is the share of the half-spread kept after that cost.
    """

    name = "market_making"

    def __init__(self, max_vol_to_spread: float = 0.5, adverse_selection: float = 0.5, horizon_bars: int = 1,
                 active_regimes: Iterable[int] | None = CALM_REGIMES):
        super().__init__(horizon_bars, active_regimes, locals())
        self.max_vol_to_spread = _positive("max_vol_to_spread", max_vol_to_spread)
        self.adverse_selection = _positive("adverse_selection", adverse_selection)

    def signals(self, frame: pd.DataFrame, regimes: np.ndarray) -> SignalBatch:
        active = self._active(frame, regimes)
        spread = feature(frame, "spread_bps") / 1e4
        rv, ret_1 = feature(frame, "rv_30"), feature(frame, "ret_1")
        edge = spread / 2 - self.adverse_selection * rv
        with np.errstate(divide="ignore", invalid="ignore"):
            kept = edge / (spread / 2)
        fire = active & (spread > 0) & (rv <= self.max_vol_to_spread * spread) & (edge > 0)
        direction = -np.sign(ret_1)
        return _fired(fire, direction, kept, direction * edge)


class PairsStatArb(Strategy):
    """Trade the log spread log(price_a) - beta * log(price_b) when it is stretched against its own history.

    The z-score of a spread observation uses the `window` observations strictly before it, kept across
    calls. Each row of either leg updates that leg's last price and adds one spread observation made with
    the other leg's last price from earlier rows (rows are in event_ts order, so earlier means at or before).
    `window` counts spread observations (two per bar when both legs print every bar).
    z > entry_z: a is rich, so short a / long b (short b if beta < 0); the direction is reported for the row's own symbol, and
    rows of other symbols get 0. Expected return per leg: a share `reversion` of the spread's distance to
    its mean, split between the legs in proportion 1 : |beta|.
    """

    name = "pairs"  # one pair per default catalogue; the legs are in state_dict()["params"]

    def __init__(self, leg_a: str, leg_b: str, window: int = 120, entry_z: float = 2.0, full_z: float = 4.0,
                 beta: float = 1.0, reversion: float = 0.5, horizon_bars: int = 30,
                 active_regimes: Iterable[int] | None = None):
        super().__init__(horizon_bars, active_regimes, locals())
        if not leg_a or not leg_b or leg_a == leg_b:
            raise ValueError(f"PairsStatArb needs two distinct legs, got leg_a={leg_a!r}, leg_b={leg_b!r}")
        if int(window) != window or window < 2:
            raise ValueError(f"window must be an integer >= 2, got {window!r}")
        if not (np.isfinite(beta) and beta != 0):
            raise ValueError(f"beta must be finite and non-zero, got {beta!r}")
        self.leg_a, self.leg_b, self.window, self.beta = str(leg_a), str(leg_b), int(window), float(beta)
        self.entry_z, self.full_z = _positive("entry_z", entry_z), _positive("full_z", full_z)
        self.reversion = _positive("reversion", reversion)
        self._last_ns: int | None = None
        self._last_log_a = np.nan
        self._last_log_b = np.nan
        self._history = np.empty(0)  # the last `window` spread observations

    def _log_price(self, frame: pd.DataFrame, is_leg: np.ndarray, close: np.ndarray | None = None,
                   log_close: np.ndarray | None = None) -> np.ndarray:
        close = feature(frame, "close") if close is None else close
        bad = is_leg & (close <= 0)
        if bad.any():
            raise ValueError(f"close must be positive for pair legs, got {close[bad][:5].tolist()} "
                             f"for symbols {frame['symbol'].to_numpy()[bad][:5].tolist()}")
        if log_close is None:
            log_close = np.log(np.where(close > 0, close, np.nan))
        return np.where(is_leg, log_close, np.nan)

    def signals(self, frame: pd.DataFrame, regimes: np.ndarray) -> SignalBatch:
        active = self._active(frame, regimes)
        event_ns = event_times_ns(frame)
        symbols, _ = symbol_strings(frame)
        is_a, is_b = symbols == self.leg_a, symbols == self.leg_b
        # One close column and one log for both legs (each leg's rows keep their own values); validate before mutating.
        close = feature(frame, "close")
        log_close = np.log(np.where(close > 0, close, np.nan))
        new_log_a = self._log_price(frame, is_a, close, log_close)
        new_log_b = self._log_price(frame, is_b, close, log_close)
        if len(event_ns):
            # The history is consumed as rows arrive: re-feeding old rows (e.g. one instance shared by two
            # callers) would corrupt it, so time going backwards is refused.
            if self._last_ns is not None and event_ns[0] < self._last_ns:
                raise ValueError(f"event_ts went back in time for {self.name}: {pd.Timestamp(int(event_ns[0]), tz='UTC')} "
                                 f"is before the last row already seen ({pd.Timestamp(self._last_ns, tz='UTC')}); "
                                 f"give each caller its own PairsStatArb")
            self._last_ns = int(event_ns[-1])
        # Forward-fill each leg's log price from the carried value; a NaN close leaves the last price standing.
        log_a = _ffill(np.concatenate([[self._last_log_a], new_log_a]))
        log_b = _ffill(np.concatenate([[self._last_log_b], new_log_b]))
        self._last_log_a, self._last_log_b = float(log_a[-1]), float(log_b[-1])
        spread = (log_a - self.beta * log_b)[1:]

        obs_rows = np.flatnonzero((is_a | is_b) & np.isfinite(spread))
        if not len(obs_rows):
            # No spread observation in this batch (no leg printed, or one leg has no price yet, as for a pair
            # whose second leg is not in the stream): the history stands, z is NaN on every row, nothing fires,
            # which is all the rest would work out (it cannot warn on all-NaN z either).
            return _flat(len(frame))
        series = np.concatenate([self._history, spread[obs_rows]])
        # Stats of the `window` observations before each one: windows ending one step earlier (exact per window,
        # so any split of the stream into batches gives identical numbers).
        prev_mean = np.concatenate([[np.nan], rolling_mean(series, self.window)])[:len(series)]
        prev_std = np.concatenate([[np.nan], rolling_std(series, self.window)])[:len(series)]
        n_hist = len(self._history)
        self._history = series[-self.window:]

        z = np.full(len(frame), np.nan)
        deviation = np.full(len(frame), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            z[obs_rows] = np.where(prev_std[n_hist:] > 0, (spread[obs_rows] - prev_mean[n_hist:]) / prev_std[n_hist:], np.nan)
        deviation[obs_rows] = spread[obs_rows] - prev_mean[n_hist:]

        # z > 0: sell the spread = short a, and buy beta units of b (sell them if beta < 0).
        leg_sign = np.where(is_a, -1.0, np.where(is_b, np.sign(self.beta), 0.0))
        direction = leg_sign * np.sign(z)
        share = np.where(is_a, 1.0, abs(self.beta)) / (1.0 + abs(self.beta))
        fire = active & (np.abs(z) > self.entry_z)
        return _fired(fire, direction, np.abs(z) / self.full_z, direction * self.reversion * np.abs(deviation) * share)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "last_ns": self._last_ns,
                "last_log_a": None if np.isnan(self._last_log_a) else self._last_log_a,
                "last_log_b": None if np.isnan(self._last_log_b) else self._last_log_b,
                "history": self._history.tolist()}

    def load_state(self, state: dict) -> None:
        self._last_ns = None if state["last_ns"] is None else int(state["last_ns"])
        self._last_log_a = np.nan if state["last_log_a"] is None else float(state["last_log_a"])
        self._last_log_b = np.nan if state["last_log_b"] is None else float(state["last_log_b"])
        self._history = np.asarray(state["history"], dtype=float)[-self.window:]


def _ffill(values: np.ndarray) -> np.ndarray:
    """pd.Series(values).ffill().to_numpy() for a float array: each NaN takes the last non-NaN value before it
    (a leading NaN stays NaN), by a running max over the positions of the non-NaN values."""
    index = np.where(np.isnan(values), 0, np.arange(len(values)))
    np.maximum.accumulate(index, out=index)
    return values[index]


class ValueBet:
    """Back a side when the model's probability beats the margin-free market probability by `min_edge`.

    Also requires a positive expected value at the offered (margin-carrying) odds: a margin-free edge
    can still be a losing bet once the bookmaker's margin is paid.
    """

    name = "value_bet"
    horizon_bars = 1

    def __init__(self, min_edge: float = 0.03, full_edge: float = 0.10):
        self.min_edge, self.full_edge = _positive("min_edge", min_edge), _positive("full_edge", full_edge)

    def signals_odds(self, model_prob: np.ndarray, market_prob_margin_free: np.ndarray,
                     decimal_odds: np.ndarray) -> SignalBatch:
        arrays = {"model_prob": np.atleast_1d(np.asarray(model_prob, dtype=float)),
                  "market_prob_margin_free": np.atleast_1d(np.asarray(market_prob_margin_free, dtype=float)),
                  "decimal_odds": np.atleast_1d(np.asarray(decimal_odds, dtype=float))}
        shapes = {k: v.shape for k, v in arrays.items()}
        if len(set(shapes.values())) != 1 or arrays["model_prob"].ndim != 1:
            raise ValueError(f"ValueBet inputs must be 1-D and the same length, got shapes {shapes}")
        # NaN means "no price/no model" (no signal); any other out-of-range value is bad input.
        for name in ("model_prob", "market_prob_margin_free"):
            v = arrays[name]
            bad = ~np.isnan(v) & ~((v >= 0) & (v <= 1))
            if bad.any():
                raise ValueError(f"{name} must be in [0, 1], got {v[bad][:5].tolist()}")
        d = arrays["decimal_odds"]
        bad = ~np.isnan(d) & ~(np.isfinite(d) & (d > 1))
        if bad.any():
            raise ValueError(f"decimal_odds must be > 1.0, got {d[bad][:5].tolist()}")
        p = arrays["model_prob"]
        edge = p - arrays["market_prob_margin_free"]
        ev = p * d - 1.0
        # 1e-12: decimal inputs such as 0.58 - 0.55 land a hair below 0.03 in binary floating point.
        fire = (edge >= self.min_edge - 1e-12) & (ev > 0)
        return SignalBatch.from_mask(fire, np.ones(len(p)), edge / self.full_edge, ev)


def default_market_strategies(symbols: list[str]) -> list[Strategy]:
    strategies: list[Strategy] = [Momentum(), MeanReversion(), Breakout(), MarketMaking()]
    if len(symbols) >= 2:
        strategies.append(PairsStatArb(symbols[0], symbols[1]))
    return strategies
