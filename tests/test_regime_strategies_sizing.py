from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeray.features.market import MarketFeatureSpec, MarketFeatureState
from edgeray.generator import generate_bars
from edgeray.regime import N_REGIMES, Regime, RegimeDetector, RegimeThresholds
from policies.sizing import (FixedFractionSizer, KellySizer, SizingResult, VolTargetSizer, kelly_bet_fraction,
                             make_sizer)
from policies.strategies import (Breakout, MarketMaking, MeanReversion, Momentum, PairsStatArb, SignalBatch,
                                 ValueBet, default_market_strategies)

FEATURES = MarketFeatureSpec().names
R = Regime


# ----------------------------------------------------------------------------------------------- helpers
def feature_frame_from_bars(bars: pd.DataFrame) -> pd.DataFrame:
    """The decision-loop feature frame: identity + prices + the ten features, computed by the feature module."""
    feats = MarketFeatureState().update(bars, "bar")
    out = bars[["symbol", "event_ts", "close", "bid", "ask"]].reset_index(drop=True)
    return pd.concat([out, feats[FEATURES]], axis=1)


def handmade_frame(n: int, symbol: str = "X", start: str = "2024-01-02", **cols) -> pd.DataFrame:
    """A feature frame with every feature NaN except the given columns (scalars or arrays)."""
    frame = pd.DataFrame({"symbol": symbol, "event_ts": pd.date_range(start, periods=n, freq="1min", tz="UTC"),
                          "close": 100.0, "bid": np.nan, "ask": np.nan})
    for name in FEATURES:
        frame[name] = np.nan
    for name, value in cols.items():
        frame[name] = value
    return frame


WARM = 600  # bars of plain noise that establish each symbol's baseline volatility
N = WARM + 200
LEVEL_NOISE = 0.001  # sd of i.i.d. noise on the log price level (per-bar return sd ~ 0.0014)


def _scenario_bars() -> tuple[pd.DataFrame, dict[str, tuple[range, Regime]]]:
    """One symbol per scenario, all on the same clock; returns the bars and the designated rows per symbol."""
    rng = np.random.default_rng(5)
    designated: dict[str, tuple[range, Regime]] = {}
    frames = []

    def add(symbol, drift, noise_scale, volume, rows, regime):
        log_close = np.cumsum(drift) + LEVEL_NOISE * noise_scale * rng.standard_normal(N)
        close = 100.0 * np.exp(log_close)
        frames.append(pd.DataFrame({
            "event_ts": pd.date_range("2024-01-02", periods=N, freq="1min", tz="UTC"), "symbol": symbol,
            "open": close, "high": close * 1.0001, "low": close * 0.9999, "close": close, "volume": volume,
            "bid": close * (1 - 5e-5), "ask": close * (1 + 5e-5)}))
        designated[symbol] = (rows, regime)

    zero, one, vol = np.zeros(N), np.ones(N), np.full(N, 1000.0)
    trend = np.where(np.arange(N) >= WARM, 0.0008, 0.0)
    # Steady drift of 0.0008/bar against 0.0014 noise: 60-bar t-stat ~ 4.4 once the window lies in the trend.
    add("UP", trend, one, vol, range(WARM + 80, N), R.TRENDING_UP)
    add("DOWN", -trend, one, vol, range(WARM + 80, N), R.TRENDING_DOWN)
    add("FLAT", zero, one, vol, range(WARM, N), R.SIDEWAYS)
    burst = np.where((np.arange(N) >= WARM) & (np.arange(N) < WARM + 100), 5.0, 1.0)
    add("BURST", zero, burst, vol, range(WARM + 30, WARM + 90), R.HIGH_VOLATILITY)  # rv ~5x baseline
    quiet = np.where(np.arange(N) >= WARM, 0.2, 1.0)
    add("QUIET", zero, quiet, vol, range(WARM + 61, N), R.LOW_VOLATILITY)  # rv ~0.2x baseline
    jump_at = WARM + 50
    jump = np.where(np.arange(N) == jump_at, 0.02, 0.0)  # +2% in one bar = ~6 baseline sigmas over 5 bars
    spike = np.where((np.arange(N) >= jump_at) & (np.arange(N) < jump_at + 3), 5000.0, 1000.0)
    add("JUMP", jump, one, spike, range(jump_at, jump_at + 3), R.BREAKOUT)
    drop_at = WARM + 120
    rev = np.where(np.arange(N) < drop_at, trend, 0.0)
    rev[drop_at:drop_at + 8] = -0.005  # -4% in 8 bars after a 120-bar up-trend, volume unchanged
    # At drop_at+6: ret_15 = 8*0.0008 - 7*0.005 = -0.0286 (~ -5 baseline sigmas); prior 45-bar trend ~ +3.8 t.
    add("REVERSAL", rev, one, vol, range(drop_at + 6, drop_at + 12), R.REVERSAL)
    bars = pd.concat(frames).sort_values("event_ts", kind="stable").reset_index(drop=True)
    return bars, designated


@pytest.fixture(scope="module")
def scenario():
    bars, designated = _scenario_bars()
    return feature_frame_from_bars(bars), designated


@pytest.fixture(scope="module")
def generated_frame():
    return feature_frame_from_bars(generate_bars(("SYN-A", "SYN-B"), n_bars=1500, seed=21))


# ----------------------------------------------------------------------------------------------- regime
def test_detector_labels_the_designated_rows_of_constructed_series(scenario):
    frame, designated = scenario
    labels = RegimeDetector().classify(frame)
    assert labels.dtype == np.int8 and labels.shape == (len(frame),)
    for symbol, (rows, regime) in designated.items():
        got = labels[(frame["symbol"] == symbol).to_numpy()]
        assert (got[list(rows)] == regime).all(), (symbol, [Regime(c).name for c in got[list(rows)]])
    # Warm-up rows have NaN features and no baseline: sideways.
    warm_up = (frame.groupby("symbol").cumcount() < 30).to_numpy()
    assert (labels[warm_up] == R.SIDEWAYS).all()
    # The jump's neighbour before it is not a breakout, so the label comes from the jump itself.
    jump_rows = labels[(frame["symbol"] == "JUMP").to_numpy()]
    assert jump_rows[WARM + 49] != R.BREAKOUT


def test_precedence_and_thresholds_on_hand_worked_rows():
    calm = handmade_frame(130, ret_1=0.0, ret_5=0.0, ret_15=0.0, ret_60=0.0, rv_30=0.001, mom_30=0.0,
                          volume_ratio_30=1.0)
    # baseline = 0.001; fast z = ret_5/(0.001*sqrt 5); trend t = ret_60/(rv*sqrt 60);
    # prior t = (ret_60-ret_15)/(0.001*sqrt 45); recent z = ret_15/(0.001*sqrt 15).
    cases = [  # (features, expected)
        (dict(rv_30=0.003, ret_5=0.01, volume_ratio_30=3.0), R.BREAKOUT),  # z 4.47 + volume beats high vol (ratio 3)
        (dict(rv_30=0.003, ret_5=0.01, volume_ratio_30=1.0), R.HIGH_VOLATILITY),  # no volume: not a breakout
        (dict(ret_60=0.02, ret_15=0.005, mom_30=0.005), R.TRENDING_UP),  # t 2.58
        (dict(ret_60=-0.02, ret_15=-0.005, mom_30=-0.005), R.TRENDING_DOWN),
        (dict(ret_60=0.02, ret_15=0.005, mom_30=-0.001), R.SIDEWAYS),  # mom_30 disagrees
        (dict(ret_60=0.012, ret_15=0.005, mom_30=0.005), R.SIDEWAYS),  # t 1.55 < 2
        (dict(rv_30=0.0019, ret_60=0.04, ret_15=0.01, mom_30=0.01), R.HIGH_VOLATILITY),  # t 2.72 but ratio 1.9
        (dict(rv_30=0.0004), R.LOW_VOLATILITY),  # ratio 0.4
        (dict(rv_30=0.0004, ret_60=0.01, ret_15=0.002, mom_30=0.002), R.TRENDING_UP),  # t 3.2 beats low vol
        (dict(ret_60=0.01, ret_15=-0.02, ret_5=-0.015, volume_ratio_30=3.0), R.REVERSAL),  # prior 4.5, recent -5.2
        (dict(ret_60=0.01, ret_15=0.02, mom_30=0.01), R.SIDEWAYS),  # big recent move with the trend: no reversal
        (dict(ret_5=0.01, volume_ratio_30=np.inf), R.SIDEWAYS),  # inf = no information
        (dict(rv_30=np.nan, ret_60=0.05, mom_30=0.01), R.SIDEWAYS),  # no volatility: no trend t-stat
        ({name: np.nan for name in FEATURES}, R.SIDEWAYS),
    ]
    rows = []
    for i, (overrides, _) in enumerate(cases):
        row = calm.iloc[[0]].copy()
        for name, value in overrides.items():
            row[name] = value
        row["event_ts"] = calm["event_ts"].iloc[-1] + pd.Timedelta(minutes=i + 1)
        rows.append(row)
    frame = pd.concat([calm, *rows], ignore_index=True)
    labels = RegimeDetector().classify(frame)
    assert (labels[:130] == R.SIDEWAYS).all()
    assert [Regime(c).name for c in labels[130:]] == [expected.name for _, expected in cases]


def test_no_vol_regimes_before_the_symbols_baseline_is_ready():
    th = RegimeThresholds(min_baseline_obs=10)
    frame = handmade_frame(12, ret_5=0.0, ret_15=0.0, ret_60=0.0, mom_30=0.0, volume_ratio_30=1.0,
                           rv_30=[0.001] * 10 + [0.005, 0.005])
    labels = RegimeDetector(th).classify(frame)
    # Row 10 has exactly 10 prior observations (ready), so rv 5x baseline is high volatility there;
    # with min_baseline_obs=11 the same row has too little history and stays sideways.
    assert labels[10] == R.HIGH_VOLATILITY
    assert RegimeDetector(RegimeThresholds(min_baseline_obs=11)).classify(frame)[10] == R.SIDEWAYS


def test_classify_is_split_and_truncation_invariant_and_survives_a_state_round_trip(generated_frame):
    frame = generated_frame
    full = RegimeDetector().classify(frame)
    assert len(np.unique(full)) >= 4  # the generated market visits several regimes, so the check has teeth
    rng = np.random.default_rng(0)
    for _ in range(3):
        cuts = np.sort(rng.choice(np.arange(1, len(frame)), size=6, replace=False))
        detector = RegimeDetector()
        parts = [detector.classify(frame.iloc[idx]) for idx in np.split(np.arange(len(frame)), cuts)]
        np.testing.assert_array_equal(np.concatenate(parts), full)
    for k in (400, 1777, 2500):
        np.testing.assert_array_equal(RegimeDetector().classify(frame.iloc[:k]), full[:k])
    # Changing the future leaves the past alone.
    shocked = frame.copy()
    shocked.loc[2000:, "rv_30"] *= 10
    np.testing.assert_array_equal(RegimeDetector().classify(shocked)[:2000], full[:2000])
    # Restart mid-stream from JSON state.
    detector = RegimeDetector()
    detector.classify(frame.iloc[:1234])
    restored = RegimeDetector.from_state(json.loads(json.dumps(detector.state_dict())))
    np.testing.assert_array_equal(restored.classify(frame.iloc[1234:]), full[1234:])


def test_classify_rejects_bad_frames():
    frame = handmade_frame(5, rv_30=0.001)
    with pytest.raises(ValueError, match="mom_30"):
        RegimeDetector().classify(frame.drop(columns=["mom_30"]))
    with pytest.raises(ValueError, match="'rv_30' must be numeric"):
        RegimeDetector().classify(frame.assign(rv_30="high"))
    with pytest.raises(ValueError, match="sorted"):
        RegimeDetector().classify(frame.iloc[::-1])
    detector = RegimeDetector()
    detector.classify(frame.iloc[3:])
    with pytest.raises(ValueError, match="'X'.*back in time"):
        detector.classify(frame.iloc[:2])
    with pytest.raises(ValueError, match="low_vol_ratio"):
        RegimeThresholds(low_vol_ratio=2.0, high_vol_ratio=1.5)
    with pytest.raises(ValueError, match="trend_t"):
        RegimeThresholds(trend_t=-1.0)
    assert RegimeDetector().classify(frame.iloc[:0]).shape == (0,)
    assert N_REGIMES == len(Regime)


# ----------------------------------------------------------------------------------------------- strategies
def _codes(n: int, regime: Regime) -> np.ndarray:
    return np.full(n, int(regime), np.int8)


def test_momentum_follows_a_standout_move_when_the_trend_agrees():
    # z = ret_15 / (0.001 * sqrt 15): 0.008 -> 2.07 (fires), 0.003 -> 0.77 (below entry 1.0)
    frame = handmade_frame(5, rv_30=0.001, ret_15=[0.008, -0.008, 0.003, 0.008, np.nan],
                           mom_30=[0.01, -0.01, 0.01, -0.01, 0.01])
    sig = Momentum().signals(frame, _codes(5, R.TRENDING_UP))
    np.testing.assert_array_equal(sig.direction, [1, -1, 0, 0, 0])
    z = 0.008 / (0.001 * np.sqrt(15))
    np.testing.assert_allclose(sig.strength, [z / 3, z / 3, 0, 0, 0])
    np.testing.assert_allclose(sig.expected_return, [0.2 * 0.008, -0.2 * 0.008, 0, 0, 0])  # 15-bar horizon
    # Outside a trending regime it stays flat.
    assert not Momentum().signals(frame, _codes(5, R.SIDEWAYS)).direction.any()
    assert Momentum(active_regimes=None).signals(frame, _codes(5, R.SIDEWAYS)).direction[0] == 1


def test_mean_reversion_fades_a_stretched_price():
    # random-walk sd of close - mean30 is sqrt(29*59/180) ~ 3.083 sigmas; stretch 0.01 at rv 0.001 -> z 3.24
    frame = handmade_frame(4, rv_30=0.001, mom_30=[0.01, -0.01, 0.004, 0.01],
                           vwap_dist_30=[0.01, -0.01, 0.004, np.nan])
    sig = MeanReversion().signals(frame, _codes(4, R.SIDEWAYS))
    np.testing.assert_array_equal(sig.direction, [-1, 1, 0, -1])  # row 3 uses mom_30 alone
    z = 0.01 / (0.001 * np.sqrt(29 * 59 / 180))
    np.testing.assert_allclose(sig.strength, [z / 4, z / 4, 0, z / 4])
    np.testing.assert_allclose(sig.expected_return, [-0.005, 0.005, 0, -0.005])
    assert not MeanReversion().signals(frame, _codes(4, R.TRENDING_UP)).direction.any()


def test_breakout_needs_a_large_fast_move_and_volume():
    # z = ret_5 / (0.001 * sqrt 5): 0.006 -> 2.68
    frame = handmade_frame(4, rv_30=0.001, ret_5=[0.006, -0.006, 0.006, 0.002],
                           volume_ratio_30=[2.0, 2.0, 1.0, 3.0])
    sig = Breakout().signals(frame, _codes(4, R.BREAKOUT))
    np.testing.assert_array_equal(sig.direction, [1, -1, 0, 0])
    np.testing.assert_allclose(sig.strength[:2], 0.006 / (0.001 * np.sqrt(5)) / 3)
    np.testing.assert_allclose(sig.expected_return, [0.3 * 0.006, -0.3 * 0.006, 0, 0])


def test_market_making_quotes_against_the_last_move_when_the_spread_pays():
    # spread 10 bps, rv 2 bps: edge = 5 bps - 0.5 * 2 bps = 4 bps, kept share 0.8
    frame = handmade_frame(5, spread_bps=[10.0, 10.0, 10.0, np.nan, 10.0], rv_30=[2e-4, 2e-4, 8e-4, 2e-4, 2e-4],
                           ret_1=[1e-4, -1e-4, 1e-4, 1e-4, 0.0])
    sig = MarketMaking().signals(frame, _codes(5, R.LOW_VOLATILITY))
    np.testing.assert_array_equal(sig.direction, [-1, 1, 0, 0, 0])  # rv 8 bps > 0.5 * spread; NaN spread; no move
    np.testing.assert_allclose(sig.strength, [0.8, 0.8, 0, 0, 0])
    np.testing.assert_allclose(sig.expected_return, [-4e-4, 4e-4, 0, 0, 0])


def _pair_frame(n_minutes: int, d: float, shock_minute: int, shock: float) -> pd.DataFrame:
    """A alternates +d/-d around 100 (log), B is fixed at 100, C is noise: the spread is log(A/100)."""
    ts = pd.date_range("2024-01-02", periods=n_minutes, freq="1min", tz="UTC")
    offsets = np.where(np.arange(n_minutes) % 2 == 0, d, -d)
    offsets[shock_minute] = shock
    rows = []
    for i, t in enumerate(ts):
        rows += [("A", t, 100.0 * np.exp(offsets[i])), ("B", t, 100.0), ("C", t, 50.0 + i)]
    frame = pd.DataFrame(rows, columns=["symbol", "event_ts", "close"])
    for name in FEATURES:
        frame[name] = np.nan
    return frame


def test_pairs_shorts_the_rich_leg_and_longs_the_cheap_one():
    d, window, m = 0.001, 20, 30
    frame = _pair_frame(40, d, shock_minute=m, shock=3 * d)
    strat = PairsStatArb("A", "B", window=window, entry_z=2.0)
    sig = strat.signals(frame, _codes(len(frame), R.SIDEWAYS))
    a_row, b_row = 3 * m, 3 * m + 1
    assert sig.direction[a_row] == -1 and sig.direction[b_row] == 1
    assert not sig.direction[frame["symbol"].to_numpy() == "C"].any()
    assert not sig.direction[:3 * m].any()  # alternating history alone never stretches past 2 sigmas
    # Hand-worked: the 20 observations before the shock are 10 of +d and 10 of -d: mean 0, sd d*sqrt(20/19).
    z_a = 3 * d / (d * np.sqrt(20 / 19))
    assert sig.strength[a_row] == pytest.approx(z_a / 4.0, rel=1e-6)
    assert sig.expected_return[a_row] == pytest.approx(-0.5 * 3 * d / 2, rel=1e-6)
    # B's row: z against the 20 observations just before it (numpy reference), which include A's shock.
    obs = np.log(np.where(frame["symbol"] == "A", frame["close"], np.nan))
    spread = pd.Series(obs).ffill().to_numpy()[frame["symbol"].to_numpy() != "C"] - np.log(100.0)
    j = 2 * m + 1  # index of B's observation in the spread stream
    hist = spread[j - window:j]
    z_b = (spread[j] - hist.mean()) / hist.std(ddof=1)
    assert z_b > 2 and sig.strength[b_row] == pytest.approx(min(z_b / 4.0, 1.0), rel=1e-6)
    # With a negative hedge ratio the spread is log A + log B: selling it means selling both legs.
    neg = PairsStatArb("A", "B", window=window, beta=-1.0).signals(frame, _codes(len(frame), R.SIDEWAYS))
    assert neg.direction[a_row] == -1 and neg.direction[b_row] == -1


def test_pairs_signal_for_a_row_never_depends_on_later_rows_and_survives_restart(generated_frame):
    frame = generated_frame
    codes = _codes(len(frame), R.SIDEWAYS)

    def run(f, pieces=1):
        strat = PairsStatArb("SYN-A", "SYN-B", window=60)
        parts = [strat.signals(f.iloc[idx], codes[idx]) for idx in np.array_split(np.arange(len(f)), pieces)]
        return np.concatenate([p.direction for p in parts]), np.concatenate([p.expected_return for p in parts])

    full_dir, full_er = run(frame)
    assert (full_dir != 0).sum() > 20  # it does trade on this data
    for pieces in (3, 7):
        d, e = run(frame, pieces)
        np.testing.assert_array_equal(d, full_dir)
        np.testing.assert_array_equal(e, full_er)
    d, _ = run(frame.iloc[:1111])
    np.testing.assert_array_equal(d, full_dir[:1111])
    shocked = frame.copy()
    shocked.loc[1500:, "close"] *= 1.5
    np.testing.assert_array_equal(run(shocked)[0][:1500], full_dir[:1500])
    strat = PairsStatArb("SYN-A", "SYN-B", window=60)
    strat.signals(frame.iloc[:900], codes[:900])
    restored = PairsStatArb.from_state(json.loads(json.dumps(strat.state_dict())))
    np.testing.assert_array_equal(restored.signals(frame.iloc[900:], codes[900:]).direction, full_dir[900:])


def test_stateless_strategies_rebuild_with_their_parameters_from_json_state(generated_frame):
    frame = generated_frame
    codes = _codes(len(frame), R.SIDEWAYS)
    for strat in (Momentum(entry_z=0.5, active_regimes=[R.SIDEWAYS]), MeanReversion(entry_z=1.5, horizon_bars=4),
                  Breakout(min_volume_ratio=1.1), MarketMaking(max_vol_to_spread=0.8)):
        restored = type(strat).from_state(json.loads(json.dumps(strat.state_dict())))
        assert restored.horizon_bars == strat.horizon_bars and restored.active_regimes == strat.active_regimes
        a, b = strat.signals(frame, codes), restored.signals(frame, codes)
        assert (a.direction != 0).any()
        np.testing.assert_array_equal(a.direction, b.direction)
        np.testing.assert_array_equal(a.expected_return, b.expected_return)
    # Non-default parameters really travel: a default Momentum would not fire in SIDEWAYS at all.
    assert not Momentum().signals(frame, codes).direction.any()


def test_pairs_refuses_rows_older_than_those_it_has_consumed():
    frame = _pair_frame(10, 0.001, 0, 0.001)
    strat = PairsStatArb("A", "B", window=4)
    strat.signals(frame, _codes(len(frame), R.SIDEWAYS))
    with pytest.raises(ValueError, match="back in time"):
        strat.signals(frame, _codes(len(frame), R.SIDEWAYS))


def test_pairs_rejects_bad_legs_and_prices():
    with pytest.raises(ValueError, match="leg_b='A'"):
        PairsStatArb("A", "A")
    frame = _pair_frame(3, 0.001, 0, 0.001)
    frame.loc[1, "close"] = -1.0
    with pytest.raises(ValueError, match="close must be positive"):
        PairsStatArb("A", "B").signals(frame, _codes(len(frame), R.SIDEWAYS))


def test_all_default_strategies_are_valid_on_real_looking_data_and_flat_on_nan(generated_frame):
    frame = generated_frame
    codes = RegimeDetector().classify(frame)
    strategies = default_market_strategies(["SYN-A", "SYN-B"])
    assert [s.name for s in strategies] == ["momentum", "mean_reversion", "breakout", "market_making", "pairs"]
    assert strategies[-1].state_dict()["params"]["leg_b"] == "SYN-B"
    assert len(default_market_strategies(["SYN-A"])) == 4
    fired = 0
    for strat in strategies:
        sig = strat.signals(frame, codes)
        assert len(sig) == len(frame)
        assert ((sig.strength >= 0) & (sig.strength <= 1)).all() and np.isfinite(sig.expected_return).all()
        # Signed expectation agrees with the direction wherever a strategy trades.
        assert (np.sign(sig.expected_return[sig.direction != 0]) == sig.direction[sig.direction != 0]).all()
        fired += (sig.direction != 0).any()
        nan_frame = handmade_frame(10, symbol="SYN-A", start="2030-01-01")
        assert not strat.signals(nan_frame, _codes(10, R.SIDEWAYS)).direction.any()
    assert fired >= 4


def test_signal_batch_and_regimes_are_validated():
    with pytest.raises(ValueError, match="shapes"):
        SignalBatch(np.zeros(3, np.int8), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="direction"):
        SignalBatch(np.array([2]), np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="strength"):
        SignalBatch(np.array([1]), np.array([1.5]), np.array([0.01]))
    with pytest.raises(ValueError, match="direction is 0"):
        SignalBatch(np.array([0]), np.array([0.0]), np.array([0.01]))
    frame = handmade_frame(3, rv_30=0.001)
    with pytest.raises(ValueError, match="one code per frame row"):
        Momentum().signals(frame, _codes(2, R.SIDEWAYS))
    with pytest.raises(ValueError, match="regimes must be codes"):
        Momentum().signals(frame, np.array([0, 9, 1]))


def test_value_bet_backs_only_an_edge_with_positive_expected_value():
    sig = ValueBet(min_edge=0.03).signals_odds(
        model_prob=np.array([0.55, 0.52, 0.54, 0.58, np.nan]),
        market_prob_margin_free=np.array([0.50, 0.50, 0.50, 0.55, 0.50]),
        decimal_odds=np.array([1.95, 1.95, 1.80, 1.78, 2.0]))
    # row 0: edge 0.05, EV 0.55*1.95-1 = 0.0725; row 1: edge 0.02 < 0.03; row 2: edge 0.04 but EV -0.028;
    # row 3: edge exactly 0.03 (decimal), EV 0.58*1.78-1 = 0.0324; row 4: no model.
    np.testing.assert_array_equal(sig.direction, [1, 0, 0, 1, 0])
    np.testing.assert_allclose(sig.expected_return, [0.0725, 0, 0, 0.0324, 0], atol=1e-12)
    np.testing.assert_allclose(sig.strength, [0.5, 0, 0, 0.3, 0], atol=1e-9)
    with pytest.raises(ValueError, match="model_prob.*1.2"):
        ValueBet().signals_odds(np.array([1.2]), np.array([0.5]), np.array([2.0]))
    with pytest.raises(ValueError, match="decimal_odds.*1.0"):
        ValueBet().signals_odds(np.array([0.5]), np.array([0.5]), np.array([1.0]))


# ----------------------------------------------------------------------------------------------- sizing
def test_kelly_bet_fraction_hand_worked():
    # p=0.55, d=2: full Kelly (0.55*2-1)/(2-1) = 0.10
    assert kelly_bet_fraction(0.55, 2.0, fraction=1.0, cap=1.0) == pytest.approx(0.10)
    assert kelly_bet_fraction(0.55, 2.0) == pytest.approx(0.025)
    assert kelly_bet_fraction(0.55, 2.0, fraction=1.0, cap=0.04) == 0.04
    # p=0.4, d=3: (1.2-1)/2 = 0.1 full
    np.testing.assert_allclose(kelly_bet_fraction(np.array([0.5, 0.45, 0.4]), np.array([2.0, 2.0, 3.0]), fraction=0.5),
                               [0.0, 0.0, 0.05])
    with pytest.raises(ValueError, match="p must .*1.1"):
        kelly_bet_fraction(1.1, 2.0)
    with pytest.raises(ValueError, match="p must"):
        kelly_bet_fraction(np.nan, 2.0)
    with pytest.raises(ValueError, match="decimal_odds.*0.9"):
        kelly_bet_fraction(0.5, np.array([2.0, 0.9]))


def test_kelly_sizer_hand_worked_values_caps_and_edge_rules():
    sizer = KellySizer(fraction=0.25, cap=0.2, horizon_bars=4)
    res = sizer.size(direction=np.array([1, -1, 1, 1, 1, 1, 0]),
                     strength=np.ones(7),
                     expected_return=np.array([2e-4, -2e-4, -2e-4, 2e-3, 2e-4, 2e-4, 2e-4]),
                     volatility=np.array([0.01, 0.01, 0.01, 0.01, np.nan, 0.0, 0.01]),
                     price=np.full(7, 50.0), equity=10_000.0)
    # sigma^2 = 0.01^2 * 4 = 4e-4: mu 2e-4 -> full 0.5 -> quarter 0.125; mu 2e-3 -> 1.25 -> capped at 0.2
    np.testing.assert_allclose(res.fraction, [0.125, -0.125, 0.0, 0.2, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(res.quantity, [25.0, -25.0, 0, 40.0, 0, 0, 0])  # fraction * 10000 / 50
    # Per-call horizon override: 1 bar -> sigma^2 1e-4 -> full 2 -> quarter 0.5 -> cap 0.2
    assert sizer.size([1], [1], [2e-4], [0.01], [50.0], 1e4, horizon_bars=1).fraction[0] == 0.2


def test_fixed_fraction_and_vol_target_sizers():
    res = FixedFractionSizer(0.02).size([1, -1, 0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0], np.nan, 100.0, 1e5)
    np.testing.assert_allclose(res.fraction, [0.02, -0.02, 0.0])
    np.testing.assert_allclose(res.quantity, [20.0, -20.0, 0.0])
    scaled = FixedFractionSizer(0.02, scale_by_strength=True).size([1, 1], [0.5, np.nan], 0.0, 0.01, 100.0, 1e5)
    np.testing.assert_allclose(scaled.fraction, [0.01, 0.0])
    vt = VolTargetSizer(target_vol_per_bar=0.001, cap=1.0).size([1, -1, 1, 1], 1.0, 0.0, [0.004, 0.004, 0.0005, np.nan],
                                                                 20.0, 1000.0)
    np.testing.assert_allclose(vt.fraction, [0.25, -0.25, 1.0, 0.0])  # 0.001/0.0005 = 2 -> cap 1
    np.testing.assert_allclose(vt.quantity, [12.5, -12.5, 50.0, 0.0])


def test_make_sizer_and_input_validation():
    assert isinstance(make_sizer("kelly", horizon_bars=5), KellySizer)
    assert make_sizer("kelly", horizon_bars=5).horizon_bars == 5
    assert isinstance(make_sizer("fixed_fraction"), FixedFractionSizer)
    assert isinstance(make_sizer("vol_target", cap=0.5), VolTargetSizer)
    with pytest.raises(ValueError, match="'martingale'"):
        make_sizer("martingale")
    with pytest.raises(ValueError, match="fraction.*1.5"):
        KellySizer(fraction=1.5)
    sizer = FixedFractionSizer()
    with pytest.raises(ValueError, match="equity.*-5"):
        sizer.size([1], [1], [0.0], [0.01], [10.0], -5.0)
    with pytest.raises(ValueError, match="direction"):
        sizer.size([2], [1], [0.0], [0.01], [10.0], 1.0)
    with pytest.raises(ValueError, match="price.*nan"):
        sizer.size([1], [1], [0.0], [0.01], [np.nan], 1.0)
    # A flat row needs no price.
    assert sizer.size([0], [1], [0.0], [0.01], [np.nan], 1.0).quantity[0] == 0.0
    with pytest.raises(ValueError, match="volatility"):
        sizer.size([1, 1], [1, 1], [0.0, 0.0], [0.01, 0.01, 0.01], [10.0, 10.0], 1.0)
    with pytest.raises(ValueError, match="same length"):
        SizingResult(np.zeros(2), np.zeros(3))


finite_or_nan = st.one_of(st.floats(-1.0, 1.0), st.just(float("nan")))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-1, 0, 1]), finite_or_nan, finite_or_nan,
                          st.one_of(st.floats(0.0, 0.1), st.just(float("nan")))), min_size=1, max_size=20),
       st.sampled_from(["kelly", "fixed_fraction", "vol_target"]))
def test_any_sizer_gives_finite_capped_sizes_in_the_signal_direction(rows, name):
    direction, strength, expected, vol = (np.array(col, dtype=float) for col in zip(*rows))
    sizer = make_sizer(name)
    res = sizer.size(direction.astype(int), np.clip(strength, 0, 1), expected, vol, 10.0, 1000.0)
    assert np.isfinite(res.fraction).all() and np.isfinite(res.quantity).all()
    assert (np.abs(res.fraction) <= getattr(sizer, "cap", sizer.__dict__.get("fraction", 1.0)) + 1e-12).all()
    assert (res.fraction * direction >= 0).all() and (res.fraction[direction == 0] == 0).all()
    if name == "kelly":  # never a bet without a positive edge in the traded direction
        assert (res.fraction[~(expected * direction > 0)] == 0).all()
