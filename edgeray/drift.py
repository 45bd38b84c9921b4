"""Drift detection for live RL-policy inputs and rewards, measured against the training distributions.

Method
------
* Features: Population Stability Index (PSI). At training time each feature's interior quantiles
  (``np.quantile`` at 1/n_bins ... (n_bins-1)/n_bins) become bin edges, and the share of training rows
  in each bin is stored. Duplicate edges are collapsed, and a value holding a large share of the training
  rows (a one-hot level, a clipped bound, a constant) gets a bin of its own, ``[v, nextafter(v))``, so
  discrete and constant features still have meaningful bins and a live value leaving the point mass
  lands in a bin the reference barely uses. Live rows are binned once on arrival; a ring buffer of
  their bin indices and a running count per (feature, bin) make the rolling window's proportions an
  O(batch) update, and PSI = sum((live_p - ref_p) * ln(live_p / ref_p)) with both shares floored at
  ``EPS`` so it stays finite. PSI suits features because it is incremental and vectorises across
  all features in a few array operations, whatever the window length.
* Rewards: two-sample Kolmogorov-Smirnov test of the most recent ``window`` rewards against a stored
  reference sample: the statistic D and asymptotic p-value of ``scipy.stats.ks_2samp(..., method="asymp")``,
  computed against a reference sorted once. The p-value (``kstwo.sf``) costs milliseconds, so drift is
  decided by comparing D with a cached critical value and the p-value is computed only near that value,
  for alerts, and for status(). KS suits rewards because there is one stream (a full test per batch is
  affordable), it needs no binning choices (rewards are often heavy-tailed or discrete), it reacts to
  changes of location and of shape, and its p-value has a fixed false-alarm meaning (``ks_alpha``).

Alerts have hysteresis: a (kind, name) fires once when it crosses into drift (PSI >= psi_threshold, or
KS p < ks_alpha) and re-arms only after it has come back (PSI < psi_threshold / 2, or p >= ks_alpha).
No statistic is evaluated until ``min_samples`` live values are in the window.

Note that the KS p-value is re-tested after every batch on overlapping windows, so the chance of at least
one false reward alert over a run is far larger than ``ks_alpha``: with the defaults (window 2000, a
5000-value reference, batches of 100) about a quarter of 10,000-reward runs drawn from the reference
distribution itself raise one at ks_alpha=0.01, and about 2 in 100 at 1e-3. Choose ``ks_alpha`` accordingly.

Plain Python/numpy/scipy: no Ray, so it can be hosted inside any actor and pickled with it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

EPS = 1e-4                 # floor for bin shares, keeps PSI finite
MIN_REFERENCE_ROWS = 50    # fewest finite training rows (and reward values) a reference is built from
FORMAT_VERSION = 1


@dataclass(frozen=True)
class DriftAlert:
    kind: str              # "feature" or "reward"
    name: str              # feature name, or "reward"
    statistic: str         # "psi" for features, "ks" for rewards
    value: float           # the PSI value, or the KS statistic
    threshold: float       # psi_threshold, or ks_alpha for rewards (p-value threshold)
    p_value: float | None  # KS p-value for rewards, None for PSI
    n_live: int            # live samples in the window when it fired

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- input

def _numeric(values: np.ndarray, field: str) -> np.ndarray:
    """``values`` as float64, or ValueError naming ``field`` for anything non-numeric."""
    kind = values.dtype.kind
    if kind in "biuf":
        return values.astype(np.float64, copy=False)
    if kind == "O":
        bad = next((v for v in values.ravel() if not _is_number(v)), _NONE)
        if bad is not _NONE:
            raise ValueError(f"{field}: non-numeric value {bad!r}")
        floats = (np.nan if v is None or v is pd.NA else float(v) for v in values.ravel())
        return np.fromiter(floats, dtype=np.float64, count=values.size).reshape(values.shape)
    raise ValueError(f"{field}: non-numeric dtype {values.dtype}")


_NONE = object()


def _is_number(value: Any) -> bool:
    """A real number, bool, None or pd.NA (the last two read as missing, i.e. NaN); not a string."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, (str, bytes)):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, (complex, np.complexfloating))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _feature_matrix(features: Any, feature_names: list[str], field: str = "features",
                    keep_float32: bool = False) -> np.ndarray:
    """A (rows, len(feature_names)) float64 matrix from an array or a DataFrame (columns in reference order).
    With ``keep_float32`` a float32 array is returned as it is (no copy): the detector bins float32 exactly."""
    if isinstance(features, pd.DataFrame):
        missing = [name for name in feature_names if name not in features.columns]
        if missing:
            raise ValueError(f"{field}: DataFrame is missing column(s) {missing}")
        if features.columns.has_duplicates:
            duplicated = sorted(set(features.columns[features.columns.duplicated()]) & set(feature_names))
            if duplicated:
                raise ValueError(f"{field}: DataFrame has duplicate column(s) {duplicated}")
        frame = features[feature_names]
        kinds = [dtype.kind for dtype in frame.dtypes]
        if all(kind in "biuf" for kind in kinds):             # the common case: one conversion, no per-column work
            return frame.to_numpy(dtype=np.float64, na_value=np.nan)
        matrix = np.empty(frame.shape, dtype=np.float64)
        for j, (name, kind) in enumerate(zip(feature_names, kinds)):
            column = frame[name]
            if kind in "biuf":
                matrix[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            elif kind == "O" and not isinstance(column.dtype, pd.CategoricalDtype):
                matrix[:, j] = _numeric(column.to_numpy(), f"{field} column {name!r}")
            else:
                raise ValueError(f"{field}: column {name!r} has non-numeric dtype {column.dtype}")
        return matrix
    array = np.asarray(features)
    if array.ndim != 2 or array.shape[1] != len(feature_names):
        raise ValueError(f"{field}: expected shape (rows, {len(feature_names)}), got {array.shape}")
    if keep_float32 and array.dtype == np.float32:
        return array
    return _numeric(array, field)


def _float32_edges(edges: np.ndarray) -> np.ndarray:
    """Per edge e, the smallest float32 (or +-inf) c >= e. For any float32 x, ``x >= e`` iff ``x >= c``: x >= e
    makes x a float32 >= e, so x >= c; x >= c >= e. So float32 rows bin in float32 with exactly the float64 bins."""
    with np.errstate(over="ignore"):
        c = edges.astype(np.float32)                     # round to nearest: c, or the float32 below it, is the one
        below = c.astype(np.float64) < edges
        c[below] = np.nextafter(c[below], np.float32(np.inf))
    return c


def _reward_vector(rewards: Any, field: str = "rewards") -> np.ndarray:
    array = np.asarray(rewards)
    if array.ndim != 1:
        raise ValueError(f"{field}: expected a 1-D array, got shape {array.shape}")
    return _numeric(array, field)


def _ks_statistic(live: np.ndarray, ref_sorted: np.ndarray, ref_cdf: np.ndarray) -> tuple[float, int]:
    """Two-sample KS statistic D and the effective size ``round(m*n/(m+n))`` scipy's asymptotic p-value uses.
    ``ref_cdf`` is the reference's empirical CDF at its own sorted points, computed once by the caller."""
    live_sorted = np.sort(live)
    m, n = live_sorted.size, ref_sorted.size
    # the largest CDF gap lies at a data point: check both CDFs at every live and every reference value
    at_live = (np.searchsorted(live_sorted, live_sorted, side="right") / m
               - np.searchsorted(ref_sorted, live_sorted, side="right") / n)
    at_ref = np.searchsorted(live_sorted, ref_sorted, side="right") / m - ref_cdf
    d = float(max(np.abs(at_live).max(), np.abs(at_ref).max()))
    return d, int(np.round(m * n / (m + n)))


def _ks_p_value(d: float, en: int) -> float:
    """Two-sided p-value of ``scipy.stats.ks_2samp(..., method="asymp")``: ``kstwo.sf(D, en)``. Costs 0.3-3 ms,
    which is why the detector decides drift against a cached critical D and calls this only when it must."""
    return min(1.0, max(0.0, float(stats.kstwo.sf(d, en))))


_KS_BAND = 1e-3   # relative: D this close to the cached critical value is settled by the exact p-value


# ------------------------------------------------------------------------------------------- reference

def _bin_edges(column: np.ndarray, n_bins: int) -> np.ndarray:
    """Interior quantile edges, duplicates collapsed, with each heavy point mass given a bin of its own."""
    quantiles = np.quantile(column, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    edges = set(np.unique(quantiles).tolist())
    heavy = 0.5 / n_bins
    for value in list(edges):
        with np.errstate(over="ignore"):                   # nextafter(float max) is inf: no room above, skip
            above = float(np.nextafter(value, np.inf))
        if np.count_nonzero(column == value) >= heavy * column.size and math.isfinite(above):
            edges.add(above)
    return np.array(sorted(edges), dtype=np.float64)


def _bin_shares(column: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=edges.size + 1)
    return counts / column.size


class DriftReference:
    """Training-time distributions: per-feature quantile bin edges + reference bin proportions, and a reward sample.

    Bin ``i`` of a feature holds ``edges[i-1] <= x < edges[i]`` (bin 0 everything below ``edges[0]``, the
    last bin everything from ``edges[-1]`` up), i.e. ``np.searchsorted(edges, x, side="right")``.
    """

    def __init__(self, feature_names: list[str], edges: list[np.ndarray], proportions: list[np.ndarray],
                 reward_sample: np.ndarray | None = None, *, n_bins: int, n_rows: int):
        names = list(feature_names)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"feature_names: expected a non-empty list of strings, got {feature_names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"feature_names: duplicate names in {names}")
        if len(edges) != len(names) or len(proportions) != len(names):
            raise ValueError(f"edges/proportions: expected {len(names)} entries each, "
                             f"got {len(edges)} and {len(proportions)}")
        self.feature_names = names
        self.edges = [np.asarray(e, dtype=np.float64) for e in edges]
        self.proportions = [np.asarray(p, dtype=np.float64) for p in proportions]
        for name, e, p in zip(names, self.edges, self.proportions):
            if e.ndim != 1 or e.size == 0 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
                raise ValueError(f"edges[{name!r}]: expected finite, strictly increasing values, got {e.tolist()}")
            if p.shape != (e.size + 1,) or np.any(p < 0) or not math.isclose(float(p.sum()), 1.0, abs_tol=1e-6):
                raise ValueError(f"proportions[{name!r}]: expected {e.size + 1} non-negative shares summing to 1, "
                                 f"got {p.tolist()}")
        if reward_sample is not None:
            reward_sample = np.asarray(reward_sample, dtype=np.float64)
            if reward_sample.ndim != 1 or reward_sample.size == 0 or not np.all(np.isfinite(reward_sample)):
                raise ValueError(f"reward_sample: expected a non-empty 1-D array of finite values, "
                                 f"got shape {reward_sample.shape}")
        self.reward_sample = reward_sample
        self.n_bins = int(n_bins)
        self.n_rows = int(n_rows)

    @classmethod
    def from_samples(cls, features, feature_names: list[str], rewards=None, *, n_bins: int = 10,
                     max_reward_samples: int = 5000, seed: int = 0) -> "DriftReference":
        """Reference from training features (and optionally rewards). Rows with any non-finite feature and
        non-finite rewards are left out; at least ``MIN_REFERENCE_ROWS`` finite ones of each are required."""
        names = list(feature_names)
        if not names:
            raise ValueError("feature_names: expected at least one name, got []")
        if not (isinstance(n_bins, (int, np.integer)) and n_bins >= 2):
            raise ValueError(f"n_bins: expected an int >= 2, got {n_bins!r}")
        if max_reward_samples < MIN_REFERENCE_ROWS:
            raise ValueError(f"max_reward_samples: expected >= {MIN_REFERENCE_ROWS}, got {max_reward_samples}")
        matrix = _feature_matrix(features, names)
        matrix = matrix[np.isfinite(matrix).all(axis=1)]
        if matrix.shape[0] < MIN_REFERENCE_ROWS:
            raise ValueError(f"features: need at least {MIN_REFERENCE_ROWS} finite rows to build a reference, "
                             f"got {matrix.shape[0]}")
        edges = [_bin_edges(matrix[:, j], n_bins) for j in range(len(names))]
        proportions = [_bin_shares(matrix[:, j], e) for j, e in enumerate(edges)]
        sample = None
        if rewards is not None:
            values = _reward_vector(rewards)
            values = values[np.isfinite(values)]
            if values.size < MIN_REFERENCE_ROWS:
                raise ValueError(f"rewards: need at least {MIN_REFERENCE_ROWS} finite values to build a reference, "
                                 f"got {values.size}")
            if values.size > max_reward_samples:
                rng = np.random.default_rng(seed)
                values = values[np.sort(rng.choice(values.size, size=max_reward_samples, replace=False))]
            sample = values.copy()
        return cls(names, edges, proportions, sample, n_bins=n_bins, n_rows=matrix.shape[0])

    def to_dict(self) -> dict:
        """JSON-serialisable form (plain lists/floats), e.g. for drift_reference.json beside a checkpoint."""
        return {
            "version": FORMAT_VERSION,
            "feature_names": list(self.feature_names),
            "n_bins": self.n_bins,
            "n_rows": self.n_rows,
            "edges": [e.tolist() for e in self.edges],
            "proportions": [p.tolist() for p in self.proportions],
            "reward_sample": None if self.reward_sample is None else self.reward_sample.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DriftReference":
        if not isinstance(d, dict):
            raise ValueError(f"reference: expected a dict, got {type(d).__name__}")
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"reference: unsupported version {d.get('version')!r} (expected {FORMAT_VERSION})")
        missing = [k for k in ("feature_names", "n_bins", "n_rows", "edges", "proportions") if k not in d]
        if missing:
            raise ValueError(f"reference: missing key(s) {missing}")
        return cls(d["feature_names"], d["edges"], d["proportions"], d.get("reward_sample"),
                   n_bins=d["n_bins"], n_rows=d["n_rows"])


# -------------------------------------------------------------------------------------------- detector

class DriftDetector:
    """Rolling-window drift monitor over live feature rows and rewards. Not thread-safe (one actor owns it)."""

    def __init__(self, reference: DriftReference, *, window: int = 2000, min_samples: int = 200,
                 psi_threshold: float = 0.2, ks_alpha: float = 1e-3):
        if not isinstance(reference, DriftReference):
            raise ValueError(f"reference: expected a DriftReference, got {type(reference).__name__}")
        if not (isinstance(min_samples, (int, np.integer)) and min_samples >= 1):
            raise ValueError(f"min_samples: expected an int >= 1, got {min_samples!r}")
        if not (isinstance(window, (int, np.integer)) and window >= min_samples):
            raise ValueError(f"window: expected an int >= min_samples ({min_samples}), got {window!r}")
        if not (_is_real(psi_threshold) and math.isfinite(psi_threshold) and psi_threshold > 0):
            raise ValueError(f"psi_threshold: expected a finite value > 0, got {psi_threshold!r}")
        if not (_is_real(ks_alpha) and 0.0 < ks_alpha < 1.0):
            raise ValueError(f"ks_alpha: expected a value in (0, 1), got {ks_alpha!r}")
        self.reference = reference
        self.window = int(window)
        self.min_samples = int(min_samples)
        self.psi_threshold = float(psi_threshold)
        self.ks_alpha = float(ks_alpha)

        n_features = len(reference.feature_names)
        n_edges = max(e.size for e in reference.edges)
        self._n_bins = n_edges + 1                                   # bins per feature after padding
        self._edges = np.full((n_features, n_edges), np.inf)         # +inf padding never counts as <= x
        ref = np.full((n_features, self._n_bins), EPS)               # padded bins: EPS vs EPS adds 0 to PSI
        for j, (e, p) in enumerate(zip(reference.edges, reference.proportions)):
            self._edges[j, :e.size] = e
            ref[j, :p.size] = np.maximum(p, EPS)
        self._ref_p = ref
        self._log_ref_p = np.log(ref)
        self._offsets = (np.arange(n_features) * self._n_bins).astype(np.int32)
        self._edge_rows = np.ascontiguousarray(self._edges.T)                 # (edge rank, feature)
        self._edge_rows32 = _float32_edges(self._edge_rows)                   # the same bins for float32 rows
        self._rank_dtype = np.uint8 if n_edges < 255 else np.int32            # edges <= x per value
        self._ref_rewards = None if reference.reward_sample is None else np.sort(reference.reward_sample)
        self._ref_cdf = (None if self._ref_rewards is None
                         else np.searchsorted(self._ref_rewards, self._ref_rewards, side="right") / self._ref_rewards.size)
        self._ks_critical: dict[int, float] = {}     # effective size -> D at which the p-value reaches ks_alpha
        self.reset()

    # -- state

    def reset(self) -> None:
        """Forget every live value, statistic, drift state and counter."""
        n_features = len(self.reference.feature_names)
        self._bins = np.zeros((self.window, n_features), dtype=np.int32)  # flat (feature, bin) index per row
        self._counts = np.zeros(n_features * self._n_bins, dtype=np.int64)
        self._n_rows = 0
        self._row_pos = 0
        self._rewards = np.zeros(self.window, dtype=np.float64)
        self._n_rewards = 0
        self._reward_pos = 0
        self._psi: np.ndarray | None = None
        self._feature_drifting = np.zeros(n_features, dtype=bool)
        self._ks: float | None = None
        self._ks_en = 0
        self._p_value: float | None = None    # computed lazily (see _ks_p_value); None until then
        self._reward_drifting = False
        self._alerts_total = 0
        self._nonfinite_rows = 0
        self._nonfinite_rewards = 0

    # -- observation

    def observe(self, features=None, rewards=None) -> list[DriftAlert]:
        """Add a micro-batch of live feature rows and/or rewards; return the alerts it triggers (often [])."""
        matrix = None if features is None else _feature_matrix(features, self.reference.feature_names, keep_float32=True)
        values = None if rewards is None else _reward_vector(rewards)   # validate both before changing state
        alerts: list[DriftAlert] = []
        if matrix is not None and matrix.shape[0]:
            finite = np.isfinite(matrix).all(axis=1)
            self._nonfinite_rows += int(matrix.shape[0] - np.count_nonzero(finite))
            matrix = matrix[finite] if not finite.all() else matrix
            if matrix.shape[0]:
                self._add_rows(matrix)
                if self._n_rows >= self.min_samples:
                    alerts.extend(self._check_features())
        if values is not None and values.size:
            finite = np.isfinite(values)
            self._nonfinite_rewards += int(values.size - np.count_nonzero(finite))
            values = values[finite]
            if values.size:
                self._add_rewards(values)
                if self._ref_rewards is not None and self._n_rewards >= self.min_samples:
                    alert = self._check_rewards()
                    if alert is not None:
                        alerts.append(alert)
        self._alerts_total += len(alerts)
        return alerts

    def _bin_rows(self, matrix: np.ndarray) -> np.ndarray:
        """Flat (feature * n_bins + bin) index for each value, shape (rows, features). Float32 rows (the policy
        server's observations) are compared in float32 against edges rounded up (see _float32_edges): the same
        bins as float64, at half the memory traffic; ranks accumulate in uint8 for the same reason."""
        edge_rows = self._edge_rows32 if matrix.dtype == np.float32 else self._edge_rows
        ranks = np.zeros(matrix.shape, dtype=self._rank_dtype)
        above = np.empty(matrix.shape, dtype=bool)
        for row in edge_rows:                       # one pass per edge rank beats a 3-D broadcast or per-column search
            np.greater_equal(matrix, row, out=above)
            ranks += above
        bins = ranks.astype(np.int32)
        bins += self._offsets
        return bins

    def _add_rows(self, matrix: np.ndarray) -> None:
        size = self._counts.size
        if matrix.shape[0] >= self.window:
            flat = self._bin_rows(matrix[-self.window:])
            self._bins[:] = flat
            self._counts = np.bincount(flat.ravel(), minlength=size).astype(np.int64)
            self._n_rows, self._row_pos = self.window, 0
            return
        flat = self._bin_rows(matrix)
        n = flat.shape[0]
        slots = (self._row_pos + np.arange(n)) % self.window
        n_evicted = max(0, self._n_rows + n - self.window)   # the oldest rows are the last slots to be overwritten
        if n_evicted:
            self._counts -= np.bincount(self._bins[slots[n - n_evicted:]].ravel(), minlength=size)
        self._bins[slots] = flat
        self._counts += np.bincount(flat.ravel(), minlength=size)
        self._n_rows = min(self.window, self._n_rows + n)
        self._row_pos = (self._row_pos + n) % self.window

    def _add_rewards(self, values: np.ndarray) -> None:
        if values.size >= self.window:
            self._rewards[:] = values[-self.window:]
            self._n_rewards, self._reward_pos = self.window, 0
            return
        slots = (self._reward_pos + np.arange(values.size)) % self.window
        self._rewards[slots] = values                       # KS ignores order, so the ring needs no unrolling
        self._n_rewards = min(self.window, self._n_rewards + values.size)
        self._reward_pos = (self._reward_pos + values.size) % self.window

    def _check_features(self) -> list[DriftAlert]:
        live = np.maximum(self._counts.reshape(self._ref_p.shape) / self._n_rows, EPS)
        psi = ((live - self._ref_p) * (np.log(live) - self._log_ref_p)).sum(axis=1)
        self._psi = psi
        crossed = ~self._feature_drifting & (psi >= self.psi_threshold)
        self._feature_drifting &= ~(psi < self.psi_threshold / 2)   # re-arm features that have come back
        self._feature_drifting |= crossed
        return [DriftAlert(kind="feature", name=self.reference.feature_names[j], statistic="psi",
                           value=float(psi[j]), threshold=self.psi_threshold, p_value=None, n_live=self._n_rows)
                for j in np.flatnonzero(crossed)]

    def _check_rewards(self) -> DriftAlert | None:
        d, en = _ks_statistic(self._rewards[:self._n_rewards], self._ref_rewards, self._ref_cdf)
        self._ks, self._ks_en, self._p_value = d, en, None
        critical = self._ks_critical.get(en)
        if critical is None:
            critical = self._ks_critical[en] = float(stats.kstwo.isf(self.ks_alpha, en))
        if d < critical * (1 - _KS_BAND):
            drifting = False
        elif d > critical * (1 + _KS_BAND):
            drifting = True
        else:
            drifting = self._current_p_value() < self.ks_alpha
        if not drifting:
            self._reward_drifting = False        # p >= ks_alpha: re-armed
            return None
        if self._reward_drifting:
            return None
        self._reward_drifting = True
        return DriftAlert(kind="reward", name="reward", statistic="ks", value=d, threshold=self.ks_alpha,
                          p_value=self._current_p_value(), n_live=self._n_rewards)

    def _current_p_value(self) -> float | None:
        if self._p_value is None and self._ks is not None:
            self._p_value = _ks_p_value(self._ks, self._ks_en)
        return self._p_value

    # -- reporting

    def status(self) -> dict:
        """JSON-serialisable snapshot. ``psi``/``ks`` are the values from the latest evaluation (None before one).
        ``warming_up`` is true while any monitored stream has fewer than ``min_samples`` live values: the feature
        rows, and the rewards too when the reference has a reward sample."""
        names = self.reference.feature_names
        psi = [None] * len(names) if self._psi is None else [float(v) for v in self._psi]
        reward = None
        if self._ref_rewards is not None:
            reward = {"ks": self._ks, "p_value": self._current_p_value(), "drifting": bool(self._reward_drifting)}
        warming_rows = self._n_rows < self.min_samples
        warming_rewards = self._ref_rewards is not None and self._n_rewards < self.min_samples
        return {
            "n_live_rows": int(self._n_rows),
            "n_live_rewards": int(self._n_rewards),
            "warming_up": bool(warming_rows or warming_rewards),
            "features": {name: {"psi": psi[j], "drifting": bool(self._feature_drifting[j])}
                         for j, name in enumerate(names)},
            "reward": reward,
            "alerts_total": int(self._alerts_total),
            "nonfinite_rows": int(self._nonfinite_rows),
            "nonfinite_rewards": int(self._nonfinite_rewards),
        }
