"""edgeray.drift: PSI feature drift and KS reward drift against a training reference."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from edgeray.drift import DriftAlert, DriftDetector, DriftReference

NAMES = ["momentum", "spread", "regime_bull", "n_events"]


def make_features(rng: np.random.Generator, n: int, *, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Mixed features: a normal (the one we perturb), a skewed one, a 15% one-hot column and a small count."""
    return np.column_stack([
        rng.normal(size=n) * scale + shift,
        rng.exponential(size=n),
        (rng.random(n) < 0.15).astype(float),
        rng.integers(0, 4, n).astype(float),
    ])


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    rng = np.random.default_rng(20240601)
    return DriftReference.from_samples(make_features(rng, 5000), NAMES, rewards=rng.normal(size=20000))


def feed(detector: DriftDetector, rng: np.random.Generator, n_batches: int, batch: int = 100, **shape) -> list:
    alerts = []
    for _ in range(n_batches):
        alerts += detector.observe(make_features(rng, batch, **shape))
    return alerts


# --------------------------------------------------------------------------------------------- features

def test_same_distribution_raises_no_alerts_and_dataframe_columns_are_matched_by_name(reference):
    rng = np.random.default_rng(1)
    detector = DriftDetector(reference)
    alerts, worst = [], 0.0
    for i in range(60):                                        # 6000 rows, three full windows
        batch = make_features(rng, 100)
        if i % 2:   # every other batch as a DataFrame with shuffled columns and an extra one
            frame = pd.DataFrame(batch, columns=NAMES)[["n_events", "regime_bull", "momentum", "spread"]]
            batch = frame.assign(unused=rng.normal(size=100) * 100)
        alerts += detector.observe(batch)
        psi = [f["psi"] for f in detector.status()["features"].values()]
        if psi[0] is not None:
            worst = max(worst, *psi)
    status = detector.status()
    assert alerts == []
    assert worst < 0.1                     # noise level is far below the 0.2 threshold
    assert status["n_live_rows"] == 2000 and status["alerts_total"] == 0
    assert status["warming_up"]            # the reference has rewards and none have been seen yet
    assert not any(f["drifting"] for f in status["features"].values())


def test_mean_shift_alerts_once_per_episode_and_rearms_after_recovery(reference):
    rng = np.random.default_rng(2)
    detector = DriftDetector(reference)

    first = feed(detector, rng, 40, shift=1.0)                 # +1 sd on momentum, persisting for 4000 rows
    assert len(first) == 1
    alert = first[0]
    assert (alert.kind, alert.name, alert.statistic) == ("feature", "momentum", "psi")
    assert alert.value >= 0.2 and alert.threshold == 0.2 and alert.p_value is None
    assert alert.n_live == 200                                 # fired at the first evaluation after warm-up
    status = detector.status()
    assert status["features"]["momentum"]["drifting"] and status["features"]["momentum"]["psi"] > 0.5
    assert not any(status["features"][n]["drifting"] for n in NAMES[1:])

    assert feed(detector, rng, 30) == []                       # back to normal; the window refills
    status = detector.status()
    assert not status["features"]["momentum"]["drifting"]
    assert status["features"]["momentum"]["psi"] < 0.1

    second = feed(detector, rng, 30, shift=1.0)                # shifts again: the re-armed alert fires again
    assert [(a.name, a.kind) for a in second] == [("momentum", "feature")]
    assert second[0].n_live == 2000                            # a full window, partly shifted, crossed 0.2
    assert detector.status()["alerts_total"] == 2


def test_variance_change_is_detected_on_that_feature_only(reference):
    rng = np.random.default_rng(3)
    detector = DriftDetector(reference)
    alerts = feed(detector, rng, 20, scale=np.sqrt(3.0))
    assert [a.name for a in alerts] == ["momentum"]
    assert detector.status()["features"]["momentum"]["psi"] > 0.2


def test_one_hot_rate_change_is_detected(reference):
    rng = np.random.default_rng(4)
    detector = DriftDetector(reference)
    batch = make_features(rng, 1000)
    batch[:, 2] = (rng.random(1000) < 0.5).astype(float)       # bull regime 15% -> 50% of rows
    assert [a.name for a in detector.observe(batch)] == ["regime_bull"]


def test_warming_up_evaluates_nothing_until_min_samples(reference):
    rng = np.random.default_rng(5)
    detector = DriftDetector(reference, min_samples=200)
    assert detector.observe(make_features(rng, 150, shift=5.0)) == []      # wildly shifted, but too few rows
    status = detector.status()
    assert status["warming_up"] and status["n_live_rows"] == 150
    assert status["features"]["momentum"] == {"psi": None, "drifting": False}
    assert status["reward"] == {"ks": None, "p_value": None, "drifting": False}

    alerts = detector.observe(make_features(rng, 50, shift=5.0))
    assert [a.name for a in alerts] == ["momentum"] and alerts[0].n_live == 200
    assert detector.status()["warming_up"]                     # still true: no rewards seen yet
    detector.observe(rewards=np.zeros(200))
    assert not detector.status()["warming_up"]


def test_constant_training_feature_does_not_crash_and_detects_departure():
    rng = np.random.default_rng(6)
    train = np.column_stack([rng.normal(size=500), np.zeros(500)])
    reference = DriftReference.from_samples(train, ["x", "flat"])
    detector = DriftDetector(reference)
    live = np.column_stack([rng.normal(size=300), np.zeros(300)])
    assert detector.observe(live) == []
    assert detector.status()["features"]["flat"]["psi"] < 1e-9

    for departed in (5.0, -5.0):
        detector = DriftDetector(reference)
        live = np.column_stack([rng.normal(size=300), np.full(300, departed)])
        alerts = detector.observe(live)
        assert [a.name for a in alerts] == ["flat"], departed
        assert np.isfinite(alerts[0].value) and alerts[0].value > 1.0


# ---------------------------------------------------------------------------------------------- rewards

def test_reward_mean_shift_raises_one_reward_alert(reference):
    rng = np.random.default_rng(7)
    detector = DriftDetector(reference)
    alerts = []
    for _ in range(40):
        alerts += detector.observe(make_features(rng, 100), rng.normal(0.3, 1.0, size=100))
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.kind, alert.name, alert.statistic) == ("reward", "reward", "ks")
    assert alert.p_value < 1e-3 and alert.threshold == 1e-3 and 0 < alert.value <= 1  # the default ks_alpha
    status = detector.status()
    assert status["reward"]["drifting"] and status["n_live_rewards"] == 2000
    assert not any(f["drifting"] for f in status["features"].values())


def test_same_distribution_rewards_raise_no_alert_and_match_scipy(reference):
    # The default ks_alpha is 1e-3: the test is repeated on every batch, so at 0.01 a run this long from the
    # reference distribution raises a false alarm about a quarter of the time (see the module docstring).
    rng = np.random.default_rng(8)
    detector = DriftDetector(reference)
    rewards = rng.normal(size=5000)
    alerts = []
    for start in range(0, rewards.size, 100):
        alerts += detector.observe(rewards=rewards[start:start + 100])
    assert alerts == []
    reward = detector.status()["reward"]
    assert not reward["drifting"]
    expected = stats.ks_2samp(rewards[-2000:], reference.reward_sample, method="asymp")
    assert reward["ks"] == pytest.approx(expected.statistic, abs=1e-12)
    assert reward["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)


def test_ks_matches_scipy_for_tied_discrete_rewards():
    rng = np.random.default_rng(14)
    outcomes = np.array([-1.0, 0.0, 1.0])                     # settled bets: lost, void, won
    reference = DriftReference.from_samples(rng.normal(size=(100, 1)), ["x"],
                                            rewards=rng.choice(outcomes, 3000, p=[0.5, 0.05, 0.45]))
    detector = DriftDetector(reference, window=500, min_samples=100)
    live = rng.choice(outcomes, 1230, p=[0.45, 0.05, 0.5])
    for start in range(0, live.size, 123):                    # wraps the 500-slot ring several times
        detector.observe(rewards=live[start:start + 123])
    expected = stats.ks_2samp(live[-500:], reference.reward_sample, method="asymp")
    reward = detector.status()["reward"]
    assert reward["ks"] == pytest.approx(expected.statistic, abs=1e-12)
    assert reward["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)


def test_reward_decision_agrees_with_scipy_p_value_near_the_threshold():
    # drift is decided against a cached critical KS statistic; it must agree with p < ks_alpha exactly
    rng = np.random.default_rng(15)
    reference = DriftReference.from_samples(rng.normal(size=(100, 1)), ["x"], rewards=rng.normal(size=3000))
    outcomes = []
    for _ in range(80):
        detector = DriftDetector(reference, window=300, min_samples=50, ks_alpha=0.01)
        live = rng.normal(rng.uniform(0.0, 0.35), 1.0, size=rng.integers(50, 301))
        alerts = detector.observe(rewards=live)
        p_value = stats.ks_2samp(live, reference.reward_sample, method="asymp").pvalue
        assert bool(alerts) == detector.status()["reward"]["drifting"] == (p_value < 0.01)
        assert detector.status()["reward"]["p_value"] == pytest.approx(p_value, rel=1e-9)
        outcomes.append(p_value < 0.01)
    assert 10 < sum(outcomes) < 70                            # both sides of the threshold were exercised


def test_reward_check_needs_a_reward_reference():
    rng = np.random.default_rng(9)
    reference = DriftReference.from_samples(rng.normal(size=(100, 1)), ["x"])
    detector = DriftDetector(reference, min_samples=10, window=50)
    assert detector.observe(rewards=np.full(100, 50.0)) == []          # nothing to compare against
    status = detector.status()
    assert status["reward"] is None and status["n_live_rewards"] == 50


# ------------------------------------------------------------------------------------- serialisation

def test_reference_json_round_trip_gives_identical_detector_behaviour(reference):
    restored = DriftReference.from_dict(json.loads(json.dumps(reference.to_dict())))
    assert restored.feature_names == NAMES
    detectors = [DriftDetector(reference), DriftDetector(restored)]
    rng = np.random.default_rng(10)
    batches = [(make_features(rng, 100, shift=0.8 if i > 20 else 0.0), rng.normal(0.2 * (i > 20), 1, 100))
               for i in range(40)]
    batches[3][0][5, 1] = np.nan
    batches[4][1][7] = np.inf
    alerts = [[], []]
    for features, rewards in batches:
        for k, detector in enumerate(detectors):
            alerts[k] += detector.observe(features, rewards)
    assert alerts[0] == alerts[1] and len(alerts[0]) == 2
    assert detectors[0].status() == detectors[1].status()
    json.dumps(detectors[0].status())
    json.dumps([a.to_dict() for a in alerts[0]])

    clone = pickle.loads(pickle.dumps(detectors[0]))          # the hosting actor may checkpoint it mid-stream
    extra = make_features(rng, 100, shift=-2.0)
    assert clone.observe(extra) == detectors[0].observe(extra)
    assert clone.status() == detectors[0].status()


def test_alert_to_dict():
    alert = DriftAlert("reward", "reward", "ks", 0.2, 0.01, 1e-5, 2000)
    assert alert.to_dict() == {"kind": "reward", "name": "reward", "statistic": "ks", "value": 0.2,
                               "threshold": 0.01, "p_value": 1e-5, "n_live": 2000}


def test_from_dict_rejects_inconsistent_reference(reference):
    d = reference.to_dict()
    d["proportions"][0] = d["proportions"][0][:-1]
    with pytest.raises(ValueError, match="proportions"):
        DriftReference.from_dict(d)


# ----------------------------------------------------------------------------------------- bad input

def test_bad_inputs_name_the_field(reference):
    detector = DriftDetector(reference)
    rng = np.random.default_rng(11)
    with pytest.raises(ValueError, match=r"features.*\(100, 3\)"):
        detector.observe(make_features(rng, 100)[:, :3])
    with pytest.raises(ValueError, match=r"features.*\(4,\)"):
        detector.observe(np.zeros(4))
    with pytest.raises(ValueError, match="features.*regime_bull"):
        detector.observe(pd.DataFrame(make_features(rng, 10), columns=NAMES).drop(columns="regime_bull"))
    with pytest.raises(ValueError, match="features.*spread"):
        detector.observe(pd.DataFrame(make_features(rng, 10), columns=NAMES).assign(spread="wide"))
    with pytest.raises(ValueError, match="features"):
        detector.observe(np.array([["a", "b", "c", "d"]]))
    with pytest.raises(ValueError, match=r"rewards.*\(10, 2\)"):
        detector.observe(rewards=np.zeros((10, 2)))
    with pytest.raises(ValueError, match="rewards.*'x'"):
        detector.observe(rewards=np.array([1.0, "x"], dtype=object))
    # a batch rejected for its rewards leaves the detector untouched, features included
    with pytest.raises(ValueError, match="rewards"):
        detector.observe(make_features(rng, 100), rewards=np.zeros((1, 1)))
    assert detector.status()["n_live_rows"] == 0 and detector.status()["n_live_rewards"] == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window": 100, "min_samples": 200}, r"window.*100"),
    ({"min_samples": 0}, "min_samples.*0"),
    ({"psi_threshold": 0.0}, "psi_threshold.*0.0"),
    ({"psi_threshold": -1}, "psi_threshold.*-1"),
    ({"ks_alpha": 0.0}, "ks_alpha.*0.0"),
    ({"ks_alpha": 1.0}, "ks_alpha.*1.0"),
    ({"ks_alpha": float("nan")}, "ks_alpha.*nan"),
])
def test_bad_constructor_args_name_the_arg(reference, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DriftDetector(reference, **kwargs)


def test_from_samples_rejects_too_little_data():
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match="features.*49"):
        DriftReference.from_samples(rng.normal(size=(49, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="rewards.*10"):
        DriftReference.from_samples(rng.normal(size=(100, 2)), ["a", "b"], rewards=rng.normal(size=10))
    with pytest.raises(ValueError, match="features.*\\(100, 2\\)"):
        DriftReference.from_samples(rng.normal(size=(100, 2)), ["a", "b", "c"])


def test_nonfinite_values_are_counted_not_used(reference):
    rng = np.random.default_rng(13)
    clean, dirty = DriftDetector(reference), DriftDetector(reference)
    for _ in range(5):
        features, rewards = make_features(rng, 100), rng.normal(size=100)
        bad_rows, bad_rewards = features.copy(), rewards.copy()
        bad_rows[[3, 50], 0] = np.nan
        bad_rows[70, 3] = -np.inf
        bad_rewards[[1, 2]] = [np.nan, np.inf]
        keep = np.ones(100, dtype=bool)
        keep[[3, 50, 70]] = False
        clean.observe(features[keep], rewards[np.isfinite(bad_rewards)])
        dirty.observe(bad_rows, bad_rewards)
    status = dirty.status()
    assert status["nonfinite_rows"] == 15 and status["nonfinite_rewards"] == 10
    assert status["n_live_rows"] == 485 and status["n_live_rewards"] == 490
    expected = clean.status()
    assert status["features"] == expected["features"] and status["reward"] == expected["reward"]

    dirty.reset()
    assert dirty.status() == DriftDetector(reference).status()


# ------------------------------------------------------------------------------------------- properties

@settings(max_examples=60, deadline=None)
@given(batch=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40).map(
    lambda s: (s[0], len(NAMES))), elements=st.floats(allow_nan=False, allow_infinity=False)))
def test_psi_is_finite_and_non_negative_for_any_finite_batch(reference, batch):
    detector = DriftDetector(reference, window=50, min_samples=1)
    detector.observe(batch)
    psi = [f["psi"] for f in detector.status()["features"].values()]
    assert all(np.isfinite(v) and v >= 0 for v in psi)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 90), min_size=1, max_size=12), seed=st.integers(0, 2**32 - 1))
def test_rolling_window_matches_a_fresh_detector_on_the_last_window_rows(reference, sizes, seed):
    rng = np.random.default_rng(seed)
    rows = make_features(rng, sum(sizes), shift=0.5)
    rewards = rng.normal(size=rows.shape[0])
    rolling = DriftDetector(reference, window=60, min_samples=1)
    start = 0
    for size in sizes:
        rolling.observe(rows[start:start + size], rewards[start:start + size])
        start += size
    fresh = DriftDetector(reference, window=60, min_samples=1)
    fresh.observe(rows[-60:], rewards[-60:])
    got, want = rolling.status(), fresh.status()
    assert got["n_live_rows"] == want["n_live_rows"] == min(60, rows.shape[0])
    for name in NAMES:
        assert got["features"][name]["psi"] == pytest.approx(want["features"][name]["psi"], rel=1e-12, abs=1e-15)
    assert got["reward"]["ks"] == pytest.approx(want["reward"]["ks"], abs=1e-12)


def test_float32_rows_bin_exactly_like_the_same_values_in_float64():
    """Float32 batches (the policy server's observations) are binned in float32 against rounded-up edges: every
    value, including ones on an edge, one float32 step either side of it, and a point mass, gets the float64 bin."""
    rng = np.random.default_rng(7)
    training = make_features(rng, 5000)
    training[:, 1] = np.round(training[:, 1], 1)               # edges that are not float32 numbers (0.1, 0.7, ...)
    ref = DriftReference.from_samples(training, NAMES)
    wide, narrow = DriftDetector(ref, window=2000), DriftDetector(ref, window=2000)
    on_edges = []
    for j, edges in enumerate(ref.edges):
        e32 = edges.astype(np.float32)
        for values in (e32, np.nextafter(e32, np.float32(np.inf)), np.nextafter(e32, np.float32(-np.inf))):
            rows = training[:values.size].astype(np.float32)
            rows[:, j] = values
            on_edges.append(rows)
    assert any((e.astype(np.float32).astype(np.float64) != e).any() for e in ref.edges)  # the case that matters
    batches = on_edges + [(make_features(rng, 300) * (1 + i)).astype(np.float32) for i in range(8)]
    for batch in batches:
        assert batch.dtype == np.float32
        np.testing.assert_array_equal(narrow._bin_rows(batch), wide._bin_rows(batch.astype(np.float64)))
        got, want = narrow.observe(batch), wide.observe(batch.astype(np.float64))
        assert got == want
    assert narrow.status() == wide.status() and narrow.status()["alerts_total"] > 0
    np.testing.assert_array_equal(narrow._counts, wide._counts)
