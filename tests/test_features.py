from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeray.features import windows
from edgeray.features.market import MarketFeatureSpec, MarketFeatureState
from edgeray.generator import generate_bars
from edgeray.validation import validate
from tests.reference import reference_features

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(0, 80), elements=finite), st.integers(1, 30))
def test_window_math_matches_pandas_rolling(x, window):
    s = pd.Series(x, dtype=float)
    # pandas' online rolling algorithms carry rounding residue of order eps * max|x| (the exact
    # answer can be 0.0 where pandas gives 4e-6), so the tolerance scales with the data.
    atol = 1e-8 * (1.0 + np.abs(x).max(initial=0.0))
    np.testing.assert_allclose(windows.rolling_mean(x, window), s.rolling(window).mean(), rtol=1e-9, atol=atol)
    np.testing.assert_allclose(windows.rolling_sum(x, window), s.rolling(window).sum(), rtol=1e-9, atol=atol)
    if window > 1:
        np.testing.assert_allclose(windows.rolling_std(x, window), s.rolling(window).std(), rtol=1e-6, atol=atol)


SMALL = MarketFeatureSpec(return_horizons=(1, 3, 7), vol_window=5, momentum_window=4, volume_window=6,
                          spread_window=8, vwap_window=5)


def _bars(n: int, seed: int) -> pd.DataFrame:
    frame = generate_bars(("SYN-A", "SYN-B"), n_bars=n, seed=seed)
    return frame


@settings(max_examples=40, deadline=None)
@given(st.integers(20, 120), st.integers(0, 10_000), st.lists(st.integers(1, 40), min_size=1, max_size=12))
def test_incremental_features_over_any_batch_split_equal_the_pandas_reference(n, seed, cuts):
    bars = _bars(n, seed)
    state = MarketFeatureState(SMALL)
    bounds = np.unique(np.clip(np.cumsum(cuts), 0, len(bars)))
    pieces = np.split(np.arange(len(bars)), bounds)
    out = pd.concat([state.update(bars.iloc[idx].reset_index(drop=True), "bar") for idx in pieces if len(idx)], ignore_index=True)
    for sym, rows in bars.groupby("symbol"):
        expected = reference_features(rows.reset_index(drop=True), SMALL)
        got = out[out["symbol"] == sym].reset_index(drop=True)[SMALL.names]
        np.testing.assert_allclose(got.to_numpy(float), expected.to_numpy(float), rtol=1e-7, atol=1e-10, equal_nan=True)


def test_a_feature_at_t_never_changes_when_later_events_change():
    bars = _bars(300, 11)
    t_index = 350  # a row in the middle (both symbols interleaved)
    base = MarketFeatureState().update(bars, "bar")
    future_shocked = bars.copy()
    later = future_shocked.index > t_index
    shock = np.random.default_rng(0).uniform(0.5, 2.0, later.sum())
    for col in ("open", "high", "low", "close"):
        future_shocked.loc[later, col] *= shock
    future_shocked.loc[later, "volume"] *= 10.0
    shocked = MarketFeatureState().update(future_shocked, "bar")
    names = MarketFeatureSpec().names
    np.testing.assert_array_equal(base.loc[:t_index, names].to_numpy(), shocked.loc[:t_index, names].to_numpy())
    assert not np.allclose(base.loc[t_index + 10:, "ret_1"], shocked.loc[t_index + 10:, "ret_1"], equal_nan=True)


def test_quote_ticks_use_the_mid_and_have_no_volume_features():
    ticks = pd.DataFrame({"symbol": "Q", "event_ts": pd.date_range("2022", periods=70, freq="s", tz="UTC"),
                          "bid": np.linspace(100, 101, 70), "ask": np.linspace(100.1, 101.2, 70)})
    feats = MarketFeatureState().update(ticks, "quote")
    mid = (ticks["bid"] + ticks["ask"]) / 2
    assert feats["ret_1"].iloc[-1] == pytest.approx(np.log(mid.iloc[-1] / mid.iloc[-2]))
    assert feats["volume_ratio_30"].isna().all() and feats["spread_z_60"].notna().iloc[-1]


def test_generator_is_seeded_valid_and_has_volatility_regimes():
    a, b = generate_bars(("X",), n_bars=5000, seed=5), generate_bars(("X",), n_bars=5000, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert not generate_bars(("X",), n_bars=50, seed=6)["close"].equals(a["close"].iloc[:50])
    result = validate("bar", a, known_symbols={"X"})
    assert result.rejected.empty
    r = np.log(a["close"]).diff().abs().rolling(200).mean().dropna()
    assert r.max() / r.min() > 3  # calm and stressed stretches both occur
    assert (a["ask"] > a["bid"]).all()
