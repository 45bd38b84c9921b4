"""Point-in-time market regime labels from the per-bar feature frame.

Each row gets one `Regime` from its own features plus a per-symbol baseline volatility: an EWMA of
`rv_30` over that symbol's rows strictly before the row, carried across calls. So a row's label never
depends on later rows, and classifying a stream in any split of micro-batches gives the same labels
as classifying it whole (the EWMA filter state is carried, so the arithmetic is the same either way).

Precedence when several conditions hold (first wins):
    REVERSAL > BREAKOUT > HIGH_VOLATILITY > TRENDING_UP / TRENDING_DOWN > LOW_VOLATILITY > SIDEWAYS
A large move against an established trend is a reversal whatever the volume; a breakout is a large,
volume-confirmed fast move that does not oppose the trend. Abnormal volatility outranks a trend because
sizing must react to it first. A condition whose inputs are NaN/inf is False, so a row with no usable
features is SIDEWAYS, and a quote stream without volume can still be trending but never a breakout.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import IntEnum

import numpy as np
import pandas as pd

from edgeray.columns import Columns


class Regime(IntEnum):
    TRENDING_UP = 0
    TRENDING_DOWN = 1
    SIDEWAYS = 2
    HIGH_VOLATILITY = 3
    LOW_VOLATILITY = 4
    BREAKOUT = 5
    REVERSAL = 6


N_REGIMES = 7

FEATURES = ("ret_5", "ret_15", "ret_60", "rv_30", "mom_30", "volume_ratio_30")
_SQRT_5, _SQRT_15, _SQRT_45, _SQRT_60 = np.sqrt(5), np.sqrt(15), np.sqrt(45), np.sqrt(60)


@dataclass(frozen=True)
class RegimeThresholds:
    """Thresholds in units of per-bar volatility; sigma-scaled returns over h bars use sigma * sqrt(h).

    trend_t: |ret_60| / (rv_30 * sqrt(60)) at or above which (with mom_30 of the same sign) the market trends.
    breakout_sigmas: |ret_5| / (sigma_ref * sqrt(5)) needed for a breakout, where sigma_ref is the baseline
        volatility (rv_30 itself contains the jump and would understate it; rv_30 until the baseline is ready).
    breakout_volume_ratio: volume_ratio_30 at or above which a breakout is volume-confirmed.
    reversal_sigmas: |ret_15| / (sigma_ref * sqrt(15)) of the recent move against the prior trend.
    reversal_trend_t: t-stat of the prior trend, (ret_60 - ret_15) / (sigma_ref * sqrt(45)).
    high_vol_ratio / low_vol_ratio: rv_30 / baseline at or above / at or below which volatility is abnormal.
    baseline_halflife_bars: half-life of the baseline EWMA (1440 = one day of 1-minute bars).
    min_baseline_obs: valid rv_30 values a symbol needs before its baseline is trusted.
    """

    trend_t: float = 2.0
    breakout_sigmas: float = 3.0
    breakout_volume_ratio: float = 2.0
    reversal_sigmas: float = 3.0
    reversal_trend_t: float = 2.0
    high_vol_ratio: float = 1.8
    low_vol_ratio: float = 0.5
    baseline_halflife_bars: float = 1440.0
    min_baseline_obs: int = 120

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"RegimeThresholds.{name} must be a finite positive number, got {value!r}")
        if self.low_vol_ratio >= self.high_vol_ratio:
            raise ValueError(f"RegimeThresholds.low_vol_ratio ({self.low_vol_ratio}) must be below "
                             f"high_vol_ratio ({self.high_vol_ratio})")


def column_array(frame: pd.DataFrame, name: str):
    """The array backing column `name` (read it, never write it), or None when `name` is not exactly one column.

    `frame[name]` builds and caches a Series, ~14 us on each fresh micro-batch frame against ~2 us here; on
    the hot path that is most of the cost for a handful of rows. Callers keep their pandas path for None
    and for dtypes they do not special-case, so those behave (and fail) exactly as before.
    """
    if isinstance(frame, Columns):
        return frame.get(name)
    get = getattr(frame, "_get_column_array", None)  # pandas-internal: guarded so another pandas just goes slow
    if get is None:
        return None
    try:
        loc = frame.columns.get_loc(name)
    except (KeyError, TypeError):
        return None
    return get(loc) if type(loc) is int else None  # a duplicated name gives a slice or mask


def float64_column(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    """Column `name` as its own float64 ndarray when it is stored as one (no copy), else None."""
    values = column_array(frame, name)
    return values if type(values) is np.ndarray and values.dtype == np.float64 else None


def float_matrix(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """frame[names].to_numpy(float), stacked from the float64 column arrays when every column is one (selecting
    the columns as a frame first cost ~0.3 ms a micro-batch)."""
    columns = [float64_column(frame, name) for name in names]
    if not names or any(c is None for c in columns):
        return frame[names].to_numpy(float)
    return np.column_stack(columns)


def feature(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A float feature column with inf mapped to NaN (inf comes from zero-volume windows = no information)."""
    values = float64_column(frame, name)
    if values is not None:
        values = values.copy()  # what to_numpy(dtype=float, copy=True) gives for a float64 column
    else:
        if name not in frame.columns:
            raise ValueError(f"feature frame lacks column {name!r}; it has {list(frame.columns)}")
        try:
            values = frame[name].to_numpy(dtype=float, copy=True)
        except (TypeError, ValueError) as exc:
            sample = frame[name].head(3).tolist()
            raise ValueError(f"feature column {name!r} must be numeric, got values like {sample}") from exc
    values[~np.isfinite(values)] = np.nan
    return values


_NAT = np.iinfo(np.int64).min  # NaT in asi8


def event_times_ns(frame: pd.DataFrame) -> np.ndarray:
    # Common case, tz-aware with no NaT and sorted: epoch values straight from the array (asi8: no Series,
    # no notna() pass). Anything else, errors included, takes the pandas path below.
    values = column_array(frame, "event_ts")
    if isinstance(values, np.ndarray) and values.dtype == "datetime64[ns]":  # Columns: UTC already
        ns = values.view(np.int64)
        if not (ns == _NAT).any() and not (len(ns) > 1 and ((ns[1:] - ns[:-1]) < 0).any()):
            return ns
        frame = frame.to_frame()  # the errors below name the bad rows
    elif isinstance(values, pd.arrays.DatetimeArray) and values.tz is not None:
        ns = values.asi8
        # ns[1:] - ns[:-1] is what np.diff computes (wrap-around included), without its Python wrapper.
        if not (ns == _NAT).any() and not (len(ns) > 1 and ((ns[1:] - ns[:-1]) < 0).any()):
            return ns
    return _event_times_ns_pandas(frame)


def _event_times_ns_pandas(frame: pd.DataFrame) -> np.ndarray:
    if "event_ts" not in frame.columns:
        raise ValueError(f"feature frame lacks column 'event_ts'; it has {list(frame.columns)}")
    column = frame["event_ts"]
    if isinstance(column.dtype, pd.DatetimeTZDtype) and column.notna().all():
        ns = column.array.asi8  # epoch ns, whatever the zone: the common case needs no conversion
        if len(ns) > 1 and np.any(np.diff(ns) < 0):
            first = int(np.flatnonzero(np.diff(ns) < 0)[0]) + 1
            raise ValueError(f"event_ts must be sorted ascending; row {first} ({column.iloc[first]}) precedes the row before it")
        return ns
    ts = pd.to_datetime(column, utc=True)
    if ts.isna().any():
        raise ValueError(f"event_ts has missing values at rows {np.flatnonzero(ts.isna().to_numpy())[:5].tolist()}")
    ns = ts.dt.tz_localize(None).to_numpy().astype("datetime64[ns]").view(np.int64)
    if len(ns) > 1 and np.any(np.diff(ns) < 0):
        first = int(np.flatnonzero(np.diff(ns) < 0)[0]) + 1
        raise ValueError(f"event_ts must be sorted ascending; row {first} ({ts.iloc[first]}) precedes the row before it")
    return ns


def symbol_strings(frame: pd.DataFrame) -> tuple[np.ndarray, list[str] | None]:
    """`frame["symbol"].astype(str).to_numpy()` (read it, never write it), and the same as a list when it could skip
    the conversion: when every symbol already is a str, astype(str) changes nothing, so the stored object array
    serves as is."""
    values = column_array(frame, "symbol")
    if type(values) is np.ndarray and values.dtype == object:
        items = values.tolist()
        if all(type(s) is str for s in items):
            return values, items
    return frame["symbol"].astype(str).to_numpy(), None


_SMALL_BATCH = 32  # rows per symbol up to which _baseline_small beats lfilter and its array bookkeeping (~25 us)


class RegimeDetector:
    """Labels each feature row with a `Regime`; keeps per-symbol baseline volatility between calls.

    `classify` consumes the rows: calling it twice on the same rows advances the baseline twice.
    """

    def __init__(self, thresholds: RegimeThresholds | None = None):
        self.thresholds = thresholds or RegimeThresholds()
        # symbol -> {"n_obs", "last_ns", "weighted_sum", "weight", "filter_state"}: see _baseline.
        self._symbols: dict[str, dict] = {}

    def _baseline(self, symbol: str, rv: np.ndarray, event_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Baseline volatility and its observation count for each row, from rows strictly before it.

        The baseline is the bias-corrected EWMA sum(w_i * rv_i) / sum(w_i), w_i = decay^(age): unlike a
        recursion seeded on the first value, it is a plain mean while history is short. Numerator and
        denominator run through scipy's lfilter, whose final filter state is carried to the next call,
        so a split stream continues with exactly the arithmetic of an unsplit one.
        """
        st = self._symbols.get(symbol)
        if st is not None and event_ns[0] < st["last_ns"]:
            raise ValueError(f"event_ts for symbol {symbol!r} went back in time: {pd.Timestamp(int(event_ns[0]), tz='UTC')} "
                             f"is before the last row already classified ({pd.Timestamp(st['last_ns'], tz='UTC')})")
        if st is None:
            st = {"n_obs": 0, "last_ns": int(event_ns[0]), "weighted_sum": 0.0, "weight": 0.0, "filter_state": [0.0, 0.0]}
        decay = 0.5 ** (1.0 / self.thresholds.baseline_halflife_bars)
        zi = np.asarray(st["filter_state"], dtype=float).reshape(2, 1)
        if rv.ndim == 1 and len(rv) <= _SMALL_BATCH:  # (a duplicated rv_30 column fails below, as it did)
            return self._baseline_small(symbol, st, rv, event_ns, decay, zi)
        valid = np.isfinite(rv)
        if valid.any():
            inputs = np.vstack([rv[valid], np.ones(int(valid.sum()))])  # rows: numerator, denominator
            from scipy.signal import lfilter  # here: scipy.signal costs ~1.5 s of import in processes that never decide

            sums, filter_state = lfilter([1.0], [1.0, -decay], inputs, axis=1, zi=zi)
        else:
            sums, filter_state = np.empty((2, 0)), zi
        weighted_sum = np.concatenate([[st["weighted_sum"]], sums[0]])
        weight = np.concatenate([[st["weight"]], sums[1]])
        with np.errstate(invalid="ignore", divide="ignore"):
            ewma = np.where(weight > 0, weighted_sum / weight, np.nan)
        before = np.cumsum(valid) - valid  # valid observations in this batch strictly before each row
        self._symbols[symbol] = {"n_obs": int(st["n_obs"] + valid.sum()), "last_ns": int(event_ns[-1]),
                                 "weighted_sum": float(weighted_sum[-1]), "weight": float(weight[-1]),
                                 "filter_state": filter_state[:, 0].tolist()}
        return ewma[before], st["n_obs"] + before

    def _baseline_small(self, symbol: str, st: dict, rv: np.ndarray, event_ns: np.ndarray, decay: float,
                        zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`_baseline` for a few rows in plain floats, with lfilter's own arithmetic, so either path (and any
        split of a stream between them) gives the same bits.

        For this filter lfilter computes y = z + 1.0 * x, then z = 0.0 * x - (-decay) * y; for finite x (and
        z never -0.0) that is exactly y = z + x, z = decay * y. The EWMA a row sees is the sums' ratio after
        the valid rows before it, as ewma[before] is there.
        """
        weighted_sum, weight = float(st["weighted_sum"]), float(st["weight"])
        z0, z1 = float(zi[0, 0]), float(zi[1, 0])
        ewma = weighted_sum / weight if weight > 0 else np.nan
        baseline, before, seen = [], [], 0
        for value in rv.tolist():
            baseline.append(ewma)
            before.append(seen)
            if math.isfinite(value):
                weighted_sum = z0 + value
                weight = z1 + 1.0
                z0 = decay * weighted_sum
                z1 = decay * weight
                ewma = weighted_sum / weight if weight > 0 else np.nan
                seen += 1
        self._symbols[symbol] = {"n_obs": int(st["n_obs"] + seen), "last_ns": int(event_ns[-1]),
                                 "weighted_sum": weighted_sum, "weight": weight, "filter_state": [z0, z1]}
        return np.array(baseline, dtype=float), st["n_obs"] + np.array(before, dtype=np.int64)

    def classify(self, frame: pd.DataFrame) -> np.ndarray:
        """One int8 `Regime` code per row of `frame` (sorted by event_ts), in the same order."""
        th = self.thresholds
        n = len(frame)
        if "symbol" not in frame.columns:
            raise ValueError(f"feature frame lacks column 'symbol'; it has {list(frame.columns)}")
        event_ns = event_times_ns(frame)
        f = {name: feature(frame, name) for name in FEATURES}
        sigma = np.where(f["rv_30"] > 0, f["rv_30"], np.nan)
        symbols, items = symbol_strings(frame)
        # In order of first appearance, as pd.unique gives them (dict.fromkeys is far cheaper on a few rows).
        distinct = list(pd.unique(symbols)) if items is None else list(dict.fromkeys(items))
        if len(distinct) == 1 and f["rv_30"].ndim == 1:  # the usual micro-batch: one symbol, no gather/scatter
            baseline, n_obs = self._baseline(distinct[0], f["rv_30"], event_ns)
        else:
            baseline = np.full(n, np.nan)
            n_obs = np.zeros(n, dtype=np.int64)
            for sym in distinct:
                idx = np.flatnonzero(symbols == sym)
                baseline[idx], n_obs[idx] = self._baseline(sym, f["rv_30"][idx], event_ns[idx])
        baseline = np.where((n_obs >= th.min_baseline_obs) & (baseline > 0), baseline, np.nan)
        sigma_ref = np.where(np.isfinite(baseline), baseline, sigma)

        with np.errstate(divide="ignore", invalid="ignore"):
            fast_z = f["ret_5"] / (sigma_ref * _SQRT_5)
            recent_z = f["ret_15"] / (sigma_ref * _SQRT_15)
            prior_t = (f["ret_60"] - f["ret_15"]) / (sigma_ref * _SQRT_45)
            trend_t = f["ret_60"] / (sigma * _SQRT_60)
            vol_ratio = sigma / baseline

        reversal = ((np.abs(prior_t) >= th.reversal_trend_t) & (np.abs(recent_z) >= th.reversal_sigmas)
                    & (np.sign(recent_z) == -np.sign(prior_t)))
        breakout = (np.abs(fast_z) >= th.breakout_sigmas) & (f["volume_ratio_30"] >= th.breakout_volume_ratio)
        high_vol = vol_ratio >= th.high_vol_ratio
        trend_up = (trend_t >= th.trend_t) & (f["mom_30"] > 0)
        trend_down = (trend_t <= -th.trend_t) & (f["mom_30"] < 0)
        low_vol = vol_ratio <= th.low_vol_ratio

        conditions = [reversal, breakout, high_vol, trend_up, trend_down, low_vol]
        if any(c.shape != (n,) for c in conditions):  # a duplicated column broadcasts: whatever np.select made of it
            return np.select(conditions, [Regime.REVERSAL, Regime.BREAKOUT, Regime.HIGH_VOLATILITY, Regime.TRENDING_UP,
                                          Regime.TRENDING_DOWN, Regime.LOW_VOLATILITY], default=Regime.SIDEWAYS).astype(np.int8)
        # First matching condition wins (the precedence in the module docstring): what np.select does, but
        # assigned lowest precedence first so each later mask overrides, without np.select's per-call overhead.
        out = np.full(n, Regime.SIDEWAYS, dtype=np.int8)
        out[low_vol] = Regime.LOW_VOLATILITY
        out[trend_down] = Regime.TRENDING_DOWN
        out[trend_up] = Regime.TRENDING_UP
        out[high_vol] = Regime.HIGH_VOLATILITY
        out[breakout] = Regime.BREAKOUT
        out[reversal] = Regime.REVERSAL
        return out

    def state_dict(self) -> dict:
        return {"thresholds": asdict(self.thresholds),
                "symbols": {sym: dict(st) for sym, st in self._symbols.items()}}

    @classmethod
    def from_state(cls, state: dict) -> RegimeDetector:
        detector = cls(RegimeThresholds(**state["thresholds"]))
        detector._symbols = {
            str(sym): {"n_obs": int(st["n_obs"]), "last_ns": int(st["last_ns"]),
                       "weighted_sum": float(st["weighted_sum"]), "weight": float(st["weight"]),
                       "filter_state": [float(v) for v in st["filter_state"]]}
            for sym, st in state["symbols"].items()
        }
        return detector
