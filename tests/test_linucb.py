from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from policies.context import CONTEXT_DIM, CONTEXT_NAMES, build_context
from policies.linucb import LinUCB

ARMS4 = ["trend", "meanrev", "breakout", "carry"]


# ------------------------------------------------------------------ synthetic contextual problem
def _problem(seed: int, T: int, k: int = 4, d: int = 5):
    """Linear rewards x . theta_a with a bias column; which arm is best depends on x."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(k, d))
    X = np.column_stack([rng.normal(size=(T, d - 1)), np.ones(T)])
    means = X @ theta.T
    return rng, X, means


def _play(model: LinUCB, rng, X, means, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    T = X.shape[0]
    regret, chosen = np.empty(T), np.empty(T, dtype=int)
    best = means.max(axis=1)
    for t in range(T):
        arm, _, _ = model.select_one(X[t])
        chosen[t] = arm
        regret[t] = best[t] - means[t, arm]
        model.update(arm, X[t], means[t, arm] + noise * rng.normal())
    return regret, chosen


def test_converges_to_context_dependent_optimum_with_sublinear_regret():
    T = 2000
    rng, X, means = _problem(seed=1, T=T)
    optimal = means.argmax(axis=1)
    # Precondition: the problem really is contextual (no single arm is always best).
    assert (np.bincount(optimal, minlength=4) / T > 0.05).sum() >= 2

    regret, chosen = _play(LinUCB(ARMS4, dim=5, alpha=1.0, epsilon=0.0, seed=1), rng, X, means)
    total, last_quarter = regret.sum(), regret[-T // 4:].sum()
    # Linear regret would put a quarter of the total in the last quarter of rounds.
    assert last_quarter < 0.1 * total
    # A uniformly random policy's expected regret, computed from the true means.
    random_regret = (means.max(axis=1) - means.mean(axis=1)).sum()
    assert total < 0.05 * random_regret
    assert (chosen[-T // 4:] == optimal[-T // 4:]).mean() > 0.9


def test_guarded_exploration_still_beats_random_by_far():
    T = 2000
    rng, X, means = _problem(seed=2, T=T)
    regret, _ = _play(LinUCB(ARMS4, dim=5, alpha=1.0, epsilon=0.05, seed=2), rng, X, means)
    random_regret = (means.max(axis=1) - means.mean(axis=1)).sum()
    assert regret.sum() < 0.25 * random_regret


# ------------------------------------------------------------------ Sherman-Morrison
def test_sherman_morrison_matches_explicit_inverse_and_solve():
    rng = np.random.default_rng(3)
    k, d, ridge = 3, 6, 0.7
    model = LinUCB(["a", "b", "c"], dim=d, ridge=ridge)
    arms = rng.integers(0, k, size=300)
    X = rng.normal(size=(300, d)) * rng.uniform(0.1, 5.0, size=(300, 1))
    r = rng.normal(size=300)
    for i in range(150):
        model.update(int(arms[i]), X[i], float(r[i]))
    model.update_batch(arms[150:], X[150:], r[150:])

    A_inv, theta = model.A_inv, model.theta
    for a in range(k):
        rows = arms == a
        A = ridge * np.eye(d) + X[rows].T @ X[rows]
        b = X[rows].T @ r[rows]
        np.testing.assert_allclose(A_inv[a], np.linalg.inv(A), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(theta[a], np.linalg.solve(A, b), rtol=1e-8, atol=1e-10)
        assert np.array_equal(A_inv[a], A_inv[a].T)  # the rank-1 update keeps exact symmetry
    assert [s["pulls"] for s in model.stats()] == np.bincount(arms, minlength=k).tolist()
    assert model.recondition() < 1e-10


def test_batched_select_matches_reference_ucb_and_single_row_path():
    rng = np.random.default_rng(4)
    d, alpha = 4, 0.8
    model = LinUCB(["a", "b", "c"], dim=d, alpha=alpha, epsilon=0.0)
    arms, X, r = rng.integers(0, 3, 60), rng.normal(size=(60, d)), rng.normal(size=60)
    model.update_batch(arms, X, r)
    Q = rng.normal(size=(50, d))

    sel = model.select(Q)
    expected = np.empty((50, 3))
    for a in range(3):
        A = np.eye(d) + X[arms == a].T @ X[arms == a]
        theta = np.linalg.solve(A, X[arms == a].T @ r[arms == a])
        expected[:, a] = Q @ theta + alpha * np.sqrt(np.einsum("nd,de,ne->n", Q, np.linalg.inv(A), Q))
    np.testing.assert_allclose(sel.ucb, expected, rtol=1e-9)
    assert np.array_equal(sel.arm, expected.argmax(axis=1))
    assert not sel.explored.any() and np.all(sel.size_scale == 1.0)
    for q, ref in zip(Q, expected):
        assert model.select_one(q)[0] == int(ref.argmax())
        np.testing.assert_allclose([s["last_ucb"] for s in model.stats()], ref, rtol=1e-9)
    assert model.select(np.empty((0, d))).arm.shape == (0,)


# ------------------------------------------------------------------ delayed feedback
def test_delayed_rewards_are_applied_exactly_once():
    rng = np.random.default_rng(5)
    d = 3
    model, twin = LinUCB(ARMS4, dim=d), LinUCB(ARMS4, dim=d)
    ids = [f"dec-{i}" for i in range(10)]
    arms, X = rng.integers(0, 4, 10), rng.normal(size=(10, d))
    model.register(ids, arms, X)
    assert model.n_pending == 10

    order = [7, 2, 9, 0]
    rewards = np.array([0.5, -1.0, 2.0, 0.25])
    assert model.reward([ids[i] for i in order], rewards) == {"applied": 4, "unknown": 0}
    for i, rw in zip(order, rewards):
        twin.update(int(arms[i]), X[i], float(rw))
    assert np.array_equal(model.A_inv, twin.A_inv) and np.array_equal(model.theta, twin.theta)

    before = model.state_dict()
    # Repeats, a never-registered id, and a repeat inside one call: counted, never applied.
    res = model.reward([ids[7], ids[2], "nope", ids[9]], np.ones(4))
    assert res == {"applied": 0, "unknown": 4}
    assert model.state_dict()["A_inv"] == before["A_inv"]
    assert model.reward([ids[1], ids[1]], np.array([1.0, 1.0])) == {"applied": 1, "unknown": 1}
    assert model.n_pending == 5


def test_pending_is_bounded_and_bad_rewards_apply_nothing():
    model = LinUCB(["a", "b"], dim=2, max_pending=3)
    model.register([f"d{i}" for i in range(5)], np.array([0, 1, 0, 1, 0]), np.ones((5, 2)))
    assert model.n_pending == 3 and model.n_evicted == 2
    assert model.reward(["d0", "d1", "d2"], np.ones(3)) == {"applied": 1, "unknown": 2}

    with pytest.raises(ValueError, match="already pending"):
        model.register(["d3"], np.array([0]), np.ones((1, 2)))
    with pytest.raises(ValueError, match="rewards\\[1\\] = nan"):
        model.reward(["d3", "d4"], np.array([1.0, np.nan]))
    assert model.n_pending == 2  # the finite first reward was not applied either
    with pytest.raises(ValueError, match="arms\\[0\\] = 2"):
        model.register(["x"], np.array([2]), np.ones((1, 2)))


# ------------------------------------------------------------------ arm control
def test_disabled_arms_are_never_selected():
    rng = np.random.default_rng(6)
    model = LinUCB(["a", "b", "c"], dim=2, alpha=0.1, epsilon=1.0, seed=6)
    x = np.array([1.0, 0.5])
    for _ in range(20):  # make "b" by far the best arm
        model.update(1, x, 5.0)
        model.update(0, x, 0.1)
        model.update(2, x, 0.1)
    model.disable("b")
    sel = model.select(rng.normal(size=(500, 2)))
    assert not np.any(sel.arm == 1)
    assert np.all(np.isneginf(sel.ucb[:, 1]))
    assert all(model.select_one(x)[0] != 1 for _ in range(200))
    assert [s["enabled"] for s in model.stats()] == [True, False, True]
    assert model.stats()[1]["last_ucb"] is None

    model.enable("b")
    model.epsilon = 0.0
    assert model.select_one(x)[0] == 1

    model.disable("a")
    model.disable("c")
    with pytest.raises(ValueError, match="last enabled arm"):
        model.disable("b")
    with pytest.raises(ValueError, match="unknown arm 'zzz'"):
        model.disable("zzz")
    with pytest.raises(ValueError, match="unknown arm 'zzz'"):
        model.enable("zzz")


def test_risk_budget_shrinks_recovers_and_bounds_exploration():
    model = LinUCB(["good", "loser", "shaky"], dim=2, alpha=0.0, epsilon=1.0, min_budget=0.2,
                   loss_shrink=0.5, gain_recover=0.1, seed=7)
    x = np.array([1.0, 1.0])
    model.update(0, x, 1.0)
    for _ in range(3):
        model.update(1, x, -1.0)
    model.update(2, x, -1.0)
    model.update(2, x, 0.0)                     # a flat result leaves the budget alone
    np.testing.assert_allclose(model.risk_budget, [1.0, 0.125, 0.5])
    model.update(1, x, 2.0)
    np.testing.assert_allclose(model.risk_budget, [1.0, 0.225, 0.5])
    model.update(1, x, -0.1)
    np.testing.assert_allclose(model.risk_budget, [1.0, 0.1125, 0.5])
    assert [s["risk_budget"] for s in model.stats()] == model.risk_budget.tolist()

    # Greedy (alpha=0) is "good"; "loser" is below min_budget, so every explored row goes to "shaky" at half size.
    sel = model.select(np.tile(x, (300, 1)))
    assert np.all(sel.arm == 2) and sel.explored.all()
    np.testing.assert_allclose(sel.size_scale, 0.5)
    assert model.select_one(x) == (2, True, 0.5)

    model.update(2, x, -1.0)                    # now "shaky" is at 0.25, still eligible
    model.update(2, x, -1.0)                    # 0.125: nothing may be explored any more
    sel = model.select(np.tile(x, (300, 1)))
    assert np.all(sel.arm == 0) and not sel.explored.any() and np.all(sel.size_scale == 1.0)
    assert model.select_one(x) == (0, False, 1.0)


def test_exploration_rate_and_sizes_follow_epsilon_and_budgets():
    rng = np.random.default_rng(8)
    model = LinUCB(ARMS4, dim=3, epsilon=0.3, seed=8)
    for i, rw in enumerate([-1.0, -1.0, 0.5, -1.0]):
        model.update(i, rng.normal(size=3), rw)
    budget = model.risk_budget                  # [0.5, 0.5, 1.0, 0.5]
    n = 4000
    sel = model.select(rng.normal(size=(n, 3)))
    greedy = sel.ucb.argmax(axis=1)
    # Binomial(4000, 0.3): sd ~ 29, so +-150 is ~5 sd.
    assert abs(sel.explored.sum() - 0.3 * n) < 150
    assert np.all(sel.arm[~sel.explored] == greedy[~sel.explored])
    assert np.all(sel.arm[sel.explored] != greedy[sel.explored])
    np.testing.assert_array_equal(sel.size_scale[sel.explored], budget[sel.arm[sel.explored]])
    assert np.all(sel.size_scale[~sel.explored] == 1.0)


# ------------------------------------------------------------------ persistence
def test_state_round_trip_gives_identical_behaviour():
    rng = np.random.default_rng(9)
    d = 5
    model = LinUCB(ARMS4, dim=d, alpha=0.7, ridge=0.5, epsilon=0.3, seed=9)
    for _ in range(40):
        x = rng.normal(size=d)
        arm, _, _ = model.select_one(x)
        model.update(arm, x, float(rng.normal()))
    model.disable("carry")
    model.register(["p1", "p2", "p3"], np.array([0, 1, 2]), rng.normal(size=(3, d)))

    state = json.loads(json.dumps(model.state_dict(), allow_nan=False))
    restored = LinUCB.from_state(state)
    assert restored.stats() == model.stats()

    for step in range(100):
        x = rng.normal(size=d)
        a1, a2 = model.select_one(x), restored.select_one(x)
        assert a1 == a2
        r = float(rng.normal())
        model.update(a1[0], x, r)
        restored.update(a2[0], x, r)
    Q = rng.normal(size=(64, d))
    s1, s2 = model.select(Q), restored.select(Q)
    assert np.array_equal(s1.arm, s2.arm) and np.array_equal(s1.size_scale, s2.size_scale)
    assert model.reward(["p2", "p1"], np.array([1.0, -1.0])) == restored.reward(["p2", "p1"], np.array([1.0, -1.0]))
    assert np.array_equal(model.A_inv, restored.A_inv) and np.array_equal(model.theta, restored.theta)
    assert restored.state_dict() == model.state_dict()


def test_from_state_rejects_wrong_shapes():
    state = LinUCB(["a", "b"], dim=3).state_dict()
    state["b"] = [[0.0, 0.0]] * 2
    with pytest.raises(ValueError, match="state.b: expected shape"):
        LinUCB.from_state(state)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("kwargs, field", [
    ({"arms": []}, "arms"), ({"arms": ["a", "a"]}, "arms"), ({"dim": 0}, "dim"), ({"alpha": -1.0}, "alpha"),
    ({"ridge": 0.0}, "ridge"), ({"epsilon": 1.5}, "epsilon"), ({"min_budget": math.nan}, "min_budget"),
    ({"loss_shrink": 2.0}, "loss_shrink"), ({"gain_recover": -0.1}, "gain_recover"),
])
def test_constructor_rejects_bad_parameters(kwargs, field):
    params = {"arms": ["a", "b"], "dim": 3, **kwargs}
    with pytest.raises(ValueError, match=field):
        LinUCB(**params)


def test_contexts_and_rewards_are_validated():
    model = LinUCB(["a", "b"], dim=3)
    with pytest.raises(ValueError, match=r"x: expected shape \(3,\), got \(4,\)"):
        model.select_one(np.zeros(4))
    with pytest.raises(ValueError, match=r"x\[1\] = nan is not finite"):
        model.select_one(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match=r"contexts\[1, 2\] = inf is not finite"):
        model.select(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, np.inf]]))
    with pytest.raises(ValueError, match=r"contexts: expected shape \(n, 3\)"):
        model.select(np.zeros(3))
    with pytest.raises(ValueError, match="arm: expected an index in \\[0, 2\\), got 2"):
        model.update(2, np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="reward: expected a finite number, got inf"):
        model.update(0, np.zeros(3), math.inf)
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"X\[2, 0\] = nan"):
        model.update_batch(np.array([0, 1, 0]), np.array([[1.0, 0, 0], [1.0, 0, 0], [np.nan, 0, 0]]), np.ones(3))
    assert model.state_dict() == before  # the valid rows before the bad one were not applied
    with pytest.raises(ValueError, match=r"rewards: expected shape \(2,\)"):
        model.update_batch(np.array([0, 1]), np.zeros((2, 3)), np.ones(3))


# ------------------------------------------------------------------ context
def _feature_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "symbol": "SYN",
        "event_ts": pd.date_range("2024-03-01 22:00", periods=n, freq="min", tz="UTC"),
        "close": 100 + rng.normal(size=n).cumsum(),
        "bid": np.nan, "ask": np.nan,
        "ret_1": rng.normal(0, 1e-3, n), "ret_5": rng.normal(0, 2e-3, n), "ret_15": rng.normal(0, 4e-3, n),
        "ret_60": rng.normal(0, 8e-3, n), "rv_30": rng.uniform(1e-4, 3e-3, n), "mom_30": rng.normal(0, 3e-3, n),
        "volume_ratio_30": rng.uniform(0.2, 3.0, n), "spread_bps": rng.uniform(0.5, 20.0, n),
        "spread_z_60": rng.normal(size=n), "vwap_dist_30": rng.normal(0, 2e-3, n),
    })
    frame.loc[: min(n, 30) - 1, ["ret_15", "rv_30", "mom_30", "volume_ratio_30"]] = np.nan  # warm-up rows
    return frame


def test_build_context_hand_worked_row_and_order():
    frame = _feature_frame(3)
    frame.loc[1, ["event_ts", "rv_30", "spread_bps", "volume_ratio_30", "ret_15", "mom_30"]] = [
        pd.Timestamp("2024-03-02 06:00", tz="UTC"), 0.002, 25.0, math.e, 0.01, -0.003]
    ctx = build_context(frame, np.array([0, 3, 6]), np.array([0.0, 7.0, -1.5]))
    assert ctx.shape == (3, CONTEXT_DIM) == (3, 16) and len(CONTEXT_NAMES) == 16
    row = dict(zip(CONTEXT_NAMES, ctx[1]))
    expected = {"regime_high_volatility": 1.0, "volatility": 2.0, "tod_sin": 1.0, "tod_cos": 0.0, "spread": 2.5,
                "log_volume_ratio": 1.0, "recent_pnl": 5.0, "ret_15": 1.0, "mom_30": -0.3, "bias": 1.0}
    for name in CONTEXT_NAMES:
        assert row[name] == pytest.approx(expected.get(name, 0.0), abs=1e-12), name
    assert ctx[0, CONTEXT_NAMES.index("regime_trending_up")] == 1.0
    assert ctx[2, CONTEXT_NAMES.index("regime_reversal")] == 1.0
    assert np.all(ctx[:, :7].sum(axis=1) == 1.0)
    assert ctx[2, CONTEXT_NAMES.index("recent_pnl")] == -1.5


def test_build_context_is_finite_on_missing_and_extreme_features():
    frame = _feature_frame(40)
    frame.loc[35, "rv_30"] = np.inf
    frame.loc[36, "volume_ratio_30"] = 0.0
    frame.loc[37, "spread_bps"] = np.nan      # no bid/ask
    ctx = build_context(frame, np.full(40, 2), np.where(np.arange(40) == 38, np.nan, 0.0))
    assert np.isfinite(ctx).all()
    col = CONTEXT_NAMES.index
    assert np.all(ctx[:30, [col("volatility"), col("log_volume_ratio"), col("ret_15"), col("mom_30")]] == 0.0)
    assert ctx[35, col("volatility")] == 10.0
    assert ctx[36, col("log_volume_ratio")] == -3.0
    assert ctx[37, col("spread")] == 0.0
    assert ctx[38, col("recent_pnl")] == 0.0
    # Other timezones are read as the same instant in UTC: 01:00 New York (EST) is 06:00 UTC.
    frame.loc[:, "event_ts"] = frame["event_ts"].dt.tz_convert("America/New_York")
    frame.loc[0, "event_ts"] = pd.Timestamp("2024-01-02 01:00", tz="America/New_York")
    ctx = build_context(frame, np.zeros(40, dtype=int), np.zeros(40))
    assert ctx[0, col("tod_sin")] == pytest.approx(1.0)


def test_build_context_uses_no_future_rows():
    frame = _feature_frame(120, seed=1)
    regimes = np.arange(120) % 7
    pnl = np.linspace(-6, 6, 120)
    full = build_context(frame, regimes, pnl)
    m = 70
    np.testing.assert_array_equal(build_context(frame.iloc[:m], regimes[:m], pnl[:m]), full[:m])
    changed = frame.copy()
    changed.loc[m:, ["rv_30", "ret_15", "mom_30", "spread_bps", "volume_ratio_30"]] *= 3.0
    np.testing.assert_array_equal(build_context(changed, regimes, pnl)[:m], full[:m])


def test_build_context_validates_inputs():
    frame = _feature_frame(5)
    with pytest.raises(ValueError, match=r"regimes\[2\] = 7 is not a regime code"):
        build_context(frame, np.array([0, 1, 7, 2, 3]), np.zeros(5))
    with pytest.raises(ValueError, match=r"regimes: expected shape \(5,\)"):
        build_context(frame, np.zeros(4, dtype=int), np.zeros(5))
    with pytest.raises(ValueError, match=r"recent_pnl: expected shape \(5,\)"):
        build_context(frame, np.zeros(5, dtype=int), np.zeros(6))
    with pytest.raises(ValueError, match="missing columns \\['rv_30'\\]"):
        build_context(frame.drop(columns="rv_30"), np.zeros(5, dtype=int), np.zeros(5))
    naive = frame.assign(event_ts=frame["event_ts"].dt.tz_localize(None))
    with pytest.raises(ValueError, match="event_ts: expected tz-aware UTC"):
        build_context(naive, np.zeros(5, dtype=int), np.zeros(5))
