"""Frozen pre-optimisation reference copy of policies/linucb.py, used only by tests/test_decide_fastpath.py.

Disjoint LinUCB (Li et al. 2010) choosing which strategy arm acts on each context row.

Each arm a keeps A_a = ridge*I + sum x x^T and b_a = sum r x. The hot path never inverts:
A_a^-1 is kept directly and updated by Sherman-Morrison, and theta_a = A_a^-1 b_a. All arms are
stacked ((k, d, d) and (k, d)), so one row's UCB over every arm is two matrix-vector products
and a micro-batch's is one GEMM plus one einsum.

UCB optimism is the main exploration; on top of it, with probability `epsilon` a row explores
uniformly among the *other* enabled arms whose risk budget is at least `min_budget`, and such
a pick is sized at the arm's budget (`size_scale`) so an arm that has been losing is tried small.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

MAX_PENDING = 1_000_000


@dataclass(frozen=True, slots=True)
class Selection:
    """One micro-batch's choices; `ucb` is -inf in the columns of disabled arms."""

    arm: np.ndarray          # (n,) int64 arm index
    ucb: np.ndarray          # (n, k)
    explored: np.ndarray     # (n,) bool: chosen by guarded epsilon-exploration, not by the UCB argmax
    size_scale: np.ndarray   # (n,) 1.0 for UCB picks, the arm's risk budget for explored picks


class LinUCB:
    def __init__(self, arms: list[str], dim: int, alpha: float = 1.0, ridge: float = 1.0, epsilon: float = 0.05,
                 min_budget: float = 0.2, loss_shrink: float = 0.5, gain_recover: float = 0.1, seed: int = 0,
                 max_pending: int = MAX_PENDING) -> None:
        arms = list(arms)
        if not arms:
            raise ValueError("arms: need at least one arm, got []")
        for name in arms:
            if not isinstance(name, str) or not name:
                raise ValueError(f"arms: each arm must be a non-empty str, got {name!r}")
        if len(set(arms)) != len(arms):
            raise ValueError(f"arms: names must be unique, got {arms!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: must be a positive int, got {dim!r}")
        _check_param("alpha", alpha, 0.0, math.inf)
        _check_param("ridge", ridge, 0.0, math.inf, low_open=True)
        _check_param("epsilon", epsilon, 0.0, 1.0)
        _check_param("min_budget", min_budget, 0.0, 1.0)
        _check_param("loss_shrink", loss_shrink, 0.0, 1.0)
        _check_param("gain_recover", gain_recover, 0.0, 1.0)
        if isinstance(max_pending, bool) or not isinstance(max_pending, (int, np.integer)) or max_pending < 1:
            raise ValueError(f"max_pending: must be a positive int, got {max_pending!r}")

        self.arms = arms
        self.dim = int(dim)
        self.alpha = float(alpha)
        self.ridge = float(ridge)
        self.epsilon = float(epsilon)
        self.min_budget = float(min_budget)
        self.loss_shrink = float(loss_shrink)
        self.gain_recover = float(gain_recover)
        self.seed = int(seed)
        self.max_pending = int(max_pending)
        self._index = {name: i for i, name in enumerate(arms)}

        k, d = len(arms), self.dim
        self._A = np.tile(np.eye(d) * self.ridge, (k, 1, 1))           # kept only for recondition()
        self._A_inv = np.tile(np.eye(d) / self.ridge, (k, 1, 1))
        self._b = np.zeros((k, d))
        self._theta = np.zeros((k, d))
        self._pulls = np.zeros(k, dtype=np.int64)
        self._reward_sum = np.zeros(k)
        self._budget = np.ones(k)
        self._enabled = np.ones(k, dtype=bool)
        self._mask = np.zeros(k)                 # 0 for enabled arms, -inf for disabled ones
        self._last_ucb = np.full(k, np.nan)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self._pending: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        self._evicted = 0
        # Scratch buffers so the single-row path allocates (almost) nothing.
        self._Ax = np.empty((k, d))
        self._ucb = np.empty(k)
        self._mean = np.empty(k)
        self._u = np.empty(d)
        self._outer = np.empty((d, d))
        self._rx = np.empty(d)

    # ----------------------------------------------------------------- selection
    def select(self, contexts: np.ndarray) -> Selection:
        """Choose an arm for every row of `contexts` (n, d); does not change the model."""
        X = self._check_matrix("contexts", contexts)
        n = X.shape[0]
        # var_nk = x_n^T A_k^-1 x_n: one GEMM against all arms side by side ((d, k*d)), then a row-wise
        # contraction; ~10x faster than the equivalent three-operand einsum at n=256, k=8, d=16.
        k, d = self._A_inv.shape[0], self.dim
        XA = (X @ self._A_inv.transpose(1, 0, 2).reshape(d, k * d)).reshape(n, k, d)
        var = np.einsum("nkd,nd->nk", XA, X)
        ucb = X @ self._theta.T + self.alpha * np.sqrt(np.maximum(var, 0.0))
        ucb += self._mask
        greedy = ucb.argmax(axis=1)
        arm = greedy.copy()
        explored = np.zeros(n, dtype=bool)
        size_scale = np.ones(n)
        if n:
            self._last_ucb[:] = ucb[-1]
        draws = self._rng.random(n)
        rows = np.flatnonzero(draws < self.epsilon)
        if rows.size:
            eligible = np.flatnonzero(self._enabled & (self._budget >= self.min_budget))
            if eligible.size:
                g = greedy[rows]
                pos = np.searchsorted(eligible, g)
                greedy_eligible = (pos < eligible.size) & (eligible[np.minimum(pos, eligible.size - 1)] == g)
                n_choices = eligible.size - greedy_eligible.astype(np.int64)
                can = n_choices > 0
                rows, pos, greedy_eligible, n_choices = rows[can], pos[can], greedy_eligible[can], n_choices[can]
                if rows.size:
                    j = self._rng.integers(0, n_choices)
                    # Skip over the greedy arm's slot so the draw is uniform over the other eligible arms.
                    j = j + (greedy_eligible & (j >= pos))
                    picked = eligible[j]
                    arm[rows] = picked
                    explored[rows] = True
                    size_scale[rows] = self._budget[picked]
        return Selection(arm=arm, ucb=ucb, explored=explored, size_scale=size_scale)

    def select_one(self, x: np.ndarray) -> tuple[int, bool, float]:
        """Fast path for one context row: (arm index, explored, size_scale)."""
        x = self._check_row("x", x)
        ucb = self._ucb
        np.dot(self._A_inv, x, out=self._Ax)
        np.dot(self._Ax, x, out=ucb)
        np.maximum(ucb, 0.0, out=ucb)            # rounding can leave -1e-18 under the sqrt
        np.sqrt(ucb, out=ucb)
        ucb *= self.alpha
        ucb += np.dot(self._theta, x, out=self._mean)
        ucb += self._mask
        self._last_ucb[:] = ucb
        greedy = int(ucb.argmax())
        if self._rng.random() < self.epsilon:
            candidates = np.flatnonzero(self._enabled & (self._budget >= self.min_budget))
            candidates = candidates[candidates != greedy]
            if candidates.size:
                arm = int(candidates[self._rng.integers(0, candidates.size)])
                return arm, True, float(self._budget[arm])
        return greedy, False, 1.0

    # ----------------------------------------------------------------- learning
    def update(self, arm: int, x: np.ndarray, reward: float) -> None:
        a = self._check_arm_index(arm)
        x = self._check_row("x", x)
        r = _check_reward("reward", reward)
        self._apply(a, x, r)

    def update_batch(self, arms: np.ndarray, X: np.ndarray, rewards: np.ndarray) -> None:
        """Apply rows in order; everything is validated before anything is applied."""
        a, X, r = self._check_batch(arms, X, rewards, field="X")
        # Sherman-Morrison is sequential per arm (each step needs the previous A^-1), hence the loop.
        for i in range(a.size):
            self._apply(int(a[i]), X[i], float(r[i]))

    def _apply(self, a: int, x: np.ndarray, r: float) -> None:
        A_inv = self._A_inv[a]
        u = np.dot(A_inv, x, out=self._u)
        denom = 1.0 + float(np.dot(x, u))
        outer = np.outer(u, u, out=self._outer)   # exactly symmetric, so A^-1 stays symmetric
        outer /= denom
        A_inv -= outer
        self._A[a] += np.outer(x, x, out=self._outer)
        self._b[a] += np.multiply(x, r, out=self._rx)
        np.dot(A_inv, self._b[a], out=self._theta[a])
        self._pulls[a] += 1
        self._reward_sum[a] += r
        if r < 0.0:
            self._budget[a] *= self.loss_shrink
        elif r > 0.0:
            self._budget[a] = min(1.0, self._budget[a] + self.gain_recover)

    def recondition(self) -> float:
        """Re-invert every A off the hot path (e.g. every ~100k updates) to shed Sherman-Morrison
        rounding drift; returns the largest absolute change to any A^-1 entry."""
        fresh = np.linalg.inv(self._A)
        drift = float(np.abs(fresh - self._A_inv).max())
        fresh = (fresh + fresh.transpose(0, 2, 1)) / 2.0
        self._A_inv[:] = fresh
        np.einsum("kde,ke->kd", self._A_inv, self._b, out=self._theta)
        return drift

    # ----------------------------------------------------------------- delayed feedback
    def register(self, decision_ids: list[str], arms: np.ndarray, contexts: np.ndarray) -> None:
        """Remember each decision's arm and context until its reward arrives (oldest evicted past max_pending)."""
        ids = list(decision_ids)
        a, X, _ = self._check_batch(arms, contexts, np.zeros(len(ids)), n_ids=len(ids))
        seen: set[str] = set()
        for did in ids:
            if not isinstance(did, str) or not did:
                raise ValueError(f"decision_ids: each id must be a non-empty str, got {did!r}")
            if did in seen or did in self._pending:
                raise ValueError(f"decision_ids: {did!r} is already pending")
            seen.add(did)
        X = X.copy()
        for i, did in enumerate(ids):
            self._pending[did] = (int(a[i]), X[i])
        overflow = len(self._pending) - self.max_pending
        for _ in range(max(overflow, 0)):
            self._pending.popitem(last=False)
        self._evicted += max(overflow, 0)

    def reward(self, decision_ids: list[str], rewards: np.ndarray) -> dict:
        """Apply each known id's reward once, in the given order; unknown, evicted or
        already-rewarded ids are counted, never applied."""
        ids = list(decision_ids)
        r = np.asarray(rewards, dtype=float)
        if r.shape != (len(ids),):
            raise ValueError(f"rewards: expected shape ({len(ids)},) to match decision_ids, got {r.shape}")
        bad = np.flatnonzero(~np.isfinite(r))
        if bad.size:
            raise ValueError(f"rewards[{bad[0]}] = {float(r[bad[0]])!r} is not finite (decision_id {ids[bad[0]]!r})")
        applied = unknown = 0
        for did, value in zip(ids, r.tolist()):
            entry = self._pending.pop(did, None)
            if entry is None:
                unknown += 1
                continue
            self._apply(entry[0], entry[1], value)
            applied += 1
        return {"applied": applied, "unknown": unknown}

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    @property
    def n_evicted(self) -> int:
        return self._evicted

    # ----------------------------------------------------------------- arm control
    def enable(self, arm: str) -> None:
        a = self._check_arm_name(arm)
        self._enabled[a] = True
        self._mask[a] = 0.0

    def disable(self, arm: str) -> None:
        a = self._check_arm_name(arm)
        if self._enabled[a] and self._enabled.sum() == 1:
            raise ValueError(f"arm: refusing to disable {arm!r}, the last enabled arm")
        self._enabled[a] = False
        self._mask[a] = -np.inf

    def stats(self) -> list[dict]:
        """Per arm; mean_reward is 0.0 before the first pull, last_ucb None before the first
        selection or while disabled."""
        out = []
        for i, name in enumerate(self.arms):
            pulls = int(self._pulls[i])
            last = float(self._last_ucb[i])
            out.append({
                "arm": name,
                "enabled": bool(self._enabled[i]),
                "pulls": pulls,
                "mean_reward": float(self._reward_sum[i] / pulls) if pulls else 0.0,
                "risk_budget": float(self._budget[i]),
                "last_ucb": last if math.isfinite(last) else None,
            })
        return out

    # Read-only copies for inspection and tests.
    @property
    def A_inv(self) -> np.ndarray:
        return self._A_inv.copy()

    @property
    def b(self) -> np.ndarray:
        return self._b.copy()

    @property
    def theta(self) -> np.ndarray:
        return self._theta.copy()

    @property
    def risk_budget(self) -> np.ndarray:
        return self._budget.copy()

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        rng_state = self._rng.bit_generator.state
        return {
            "version": 1,
            "params": {
                "arms": list(self.arms), "dim": self.dim, "alpha": self.alpha, "ridge": self.ridge,
                "epsilon": self.epsilon, "min_budget": self.min_budget, "loss_shrink": self.loss_shrink,
                "gain_recover": self.gain_recover, "seed": self.seed, "max_pending": self.max_pending,
            },
            "A": self._A.tolist(),
            "A_inv": self._A_inv.tolist(),
            "b": self._b.tolist(),
            "theta": self._theta.tolist(),
            "pulls": self._pulls.tolist(),
            "reward_sum": self._reward_sum.tolist(),
            "risk_budget": self._budget.tolist(),
            "enabled": self._enabled.tolist(),
            "last_ucb": [v if math.isfinite(v) else None for v in self._last_ucb.tolist()],
            "pending": [[did, arm, x.tolist()] for did, (arm, x) in self._pending.items()],
            "evicted": self._evicted,
            # PCG64's 128-bit integers go as strings so any JSON reader keeps them exact.
            "rng": {
                "bit_generator": rng_state["bit_generator"],
                "state": str(rng_state["state"]["state"]),
                "inc": str(rng_state["state"]["inc"]),
                "has_uint32": int(rng_state["has_uint32"]),
                "uinteger": str(rng_state["uinteger"]),
            },
        }

    @classmethod
    def from_state(cls, state: dict) -> LinUCB:
        if state.get("version") != 1:
            raise ValueError(f"state.version: expected 1, got {state.get('version')!r}")
        obj = cls(**state["params"])
        k, d = len(obj.arms), obj.dim
        obj._A[:] = _load_array(state, "A", (k, d, d))
        obj._A_inv[:] = _load_array(state, "A_inv", (k, d, d))
        obj._b[:] = _load_array(state, "b", (k, d))
        obj._theta[:] = _load_array(state, "theta", (k, d))
        obj._pulls[:] = _load_array(state, "pulls", (k,))
        obj._reward_sum[:] = _load_array(state, "reward_sum", (k,))
        obj._budget[:] = _load_array(state, "risk_budget", (k,))
        enabled = np.asarray(state["enabled"], dtype=bool)
        if enabled.shape != (k,) or not enabled.any():
            raise ValueError(f"state.enabled: expected {k} flags with at least one True, got {state['enabled']!r}")
        obj._enabled[:] = enabled
        obj._mask[:] = np.where(enabled, 0.0, -np.inf)
        obj._last_ucb[:] = [np.nan if v is None else v for v in state["last_ucb"]]
        for did, arm, x in state["pending"]:
            obj._pending[did] = (int(arm), np.asarray(x, dtype=float))
        obj._evicted = int(state["evicted"])
        rng = state["rng"]
        obj._rng.bit_generator.state = {
            "bit_generator": rng["bit_generator"],
            "state": {"state": int(rng["state"]), "inc": int(rng["inc"])},
            "has_uint32": int(rng["has_uint32"]),
            "uinteger": int(rng["uinteger"]),
        }
        return obj

    # ----------------------------------------------------------------- validation
    def _check_row(self, field: str, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,):
            raise ValueError(f"{field}: expected shape ({self.dim},), got {x.shape}")
        if not np.isfinite(x).all():
            j = int(np.flatnonzero(~np.isfinite(x))[0])
            raise ValueError(f"{field}[{j}] = {float(x[j])!r} is not finite")
        return x

    def _check_matrix(self, field: str, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"{field}: expected shape (n, {self.dim}), got {X.shape}")
        bad = np.argwhere(~np.isfinite(X))
        if bad.size:
            i, j = (int(v) for v in bad[0])
            raise ValueError(f"{field}[{i}, {j}] = {float(X[i, j])!r} is not finite")
        return X

    def _check_arm_index(self, arm) -> int:
        if isinstance(arm, (bool, np.bool_)) or not isinstance(arm, (int, np.integer)) \
                or not 0 <= arm < len(self.arms):
            raise ValueError(f"arm: expected an index in [0, {len(self.arms)}), got {arm!r}")
        return int(arm)

    def _check_arm_name(self, arm: str) -> int:
        if arm not in self._index:
            raise ValueError(f"arm: unknown arm {arm!r}; known arms are {self.arms!r}")
        return self._index[arm]

    def _check_batch(self, arms, X, rewards, n_ids: int | None = None,
                     field: str = "contexts") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = np.asarray(arms)
        X = self._check_matrix(field, X)
        r = np.asarray(rewards, dtype=float)
        n = X.shape[0]
        if n_ids is not None and n_ids != n:
            raise ValueError(f"decision_ids: got {n_ids} ids for {n} context rows")
        if a.shape != (n,):
            raise ValueError(f"arms: expected shape ({n},) to match {field}, got {a.shape}")
        if n and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"arms: expected integer arm indices, got dtype {a.dtype}")
        out = np.flatnonzero((a < 0) | (a >= len(self.arms))) if n else np.array([], dtype=int)
        if out.size:
            raise ValueError(f"arms[{out[0]}] = {a[out[0]].item()!r} is not an index in [0, {len(self.arms)})")
        if r.shape != (n,):
            raise ValueError(f"rewards: expected shape ({n},) to match {field}, got {r.shape}")
        bad = np.flatnonzero(~np.isfinite(r))
        if bad.size:
            raise ValueError(f"rewards[{bad[0]}] = {float(r[bad[0]])!r} is not finite")
        return a.astype(np.int64), X, r


def _check_param(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value)) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name}: must be a finite number in {bracket}{low}, {high}], got {value!r}")


def _check_reward(field: str, reward: float) -> float:
    try:
        r = float(reward)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: expected a finite number, got {reward!r}") from None
    if not math.isfinite(r):
        raise ValueError(f"{field}: expected a finite number, got {reward!r}")
    return r


def _load_array(state: dict, key: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(state[key], dtype=float)
    if arr.shape != shape:
        raise ValueError(f"state.{key}: expected shape {shape}, got {arr.shape}")
    return arr
