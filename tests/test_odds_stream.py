"""Odds streams across books: the stream loader, the multi-book features, the value strategy and its CLV scoring.
Ray-free; the real stream file is used where ../shared/data is present."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgeray.events import EventKind
from edgeray.features.books import NAMES, MultiBookOddsState
from edgeray.loaders.csvfile import SourceError
from edgeray.loaders.odds_stream import load_odds_stream
from edgeray.odds import kelly_fraction
from edgeray.validation import validate
from edgeray.value import (BET_COLUMNS, ValueConfig, ValueStrategy, closing_lines, cluster_bootstrap_mean,
                           score_bets)
from tests.conftest import shared_file

STREAM = "streams/mlb_h2h_2026-07.csv"
T0 = pd.Timestamp("2026-07-05T12:00:00Z")
HEADER = "snapshot_ts_utc,event_id,commence_time_utc,home_team,away_team,bookmaker,book_update_utc,home_ml,away_ml"


def quote(minute: float, game: str, book: str, a: float, b: float, is_open: bool = False) -> dict:
    return {"event_ts": T0 + pd.Timedelta(minutes=minute), "symbol": game, "sport": "mlb", "team_a": "H",
            "team_b": "A", "odds_a_american": float(a), "odds_b_american": float(b), "home_side": "a",
            "bookmaker": book, "market_type": "moneyline", "is_open": is_open, "is_close": False}


def american(p: np.ndarray) -> np.ndarray:
    """American prices of probabilities p (margin already in p)."""
    dec = 1.0 / p
    return np.round(np.where(dec >= 2.0, (dec - 1.0) * 100.0, -100.0 / (dec - 1.0)))


def synthetic_stream(seed: int, n: int = 3000, games: int = 12, books: int = 7) -> pd.DataFrame:
    """A random multi-book stream: drifting fair probabilities, per-book noise and margins, some stale
    books (a value strategy finds bets), a few off-the-board placeholders; several quotes share a stamp."""
    rng = np.random.default_rng(seed)
    minute = np.sort(rng.integers(0, 600, n)).astype(float)
    game = rng.integers(0, games, n)
    book = rng.integers(0, books, n)
    fair = np.clip(0.5 + 0.15 * np.sin(game + minute / 200.0) + rng.normal(0, 0.03, n), 0.1, 0.9)
    margin = rng.uniform(0.02, 0.06, n)
    pa_, pb_ = fair * (1 + margin), (1 - fair) * (1 + margin)
    a, b = american(pa_), american(pb_)
    off = rng.random(n) < 0.01
    a[off], b[off] = -10000.0, -10000.0
    return pd.DataFrame([quote(m, f"g{g}", f"book{k}", x, y) for m, g, k, x, y in zip(minute, game, book, a, b)])


def run(frame: pd.DataFrame, batch: int | None = None, config: ValueConfig | None = None):
    state, strategy = MultiBookOddsState(), ValueStrategy(config or ValueConfig(min_edge=0.01))
    parts = [frame] if batch is None else [frame.iloc[i:i + batch] for i in range(0, len(frame), batch)]
    feats = [state.update(p) for p in parts]
    bets = [strategy.decide(f) for f in feats]
    return pd.concat(feats, ignore_index=True), pd.concat(bets, ignore_index=True)


def scramble_after(frame: pd.DataFrame, t: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Every quote stamped after t: prices changed, rows shuffled among the later stamps, a new book added."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    later = np.flatnonzero((out["event_ts"] > t).to_numpy())
    assert len(later) > 100
    out.loc[later, "odds_a_american"] = rng.choice([-300.0, -150.0, 110.0, 180.0, 400.0], len(later))
    out.loc[later, "odds_b_american"] = rng.choice([-250.0, -130.0, 120.0, 200.0, 350.0], len(later))
    out.loc[later, "bookmaker"] = rng.permutation(out.loc[later, "bookmaker"].to_numpy())
    out.loc[later[::7], "bookmaker"] = "newbook"
    out.loc[later, "event_ts"] = rng.permutation(out.loc[later, "event_ts"].to_numpy())
    return out.sort_values("event_ts", kind="stable").reset_index(drop=True)


def _prefix(frame: pd.DataFrame, t: pd.Timestamp) -> pd.DataFrame:
    return frame[frame["event_ts"] <= t].reset_index(drop=True)


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_no_look_ahead_features_and_bets(source):
    """Scrambling every quote after t leaves each feature row and each bet at or before t unchanged,
    and so does cutting the stream into micro-batches."""
    if source == "real":
        frame = load_odds_stream(shared_file(STREAM)).iloc[:8000].reset_index(drop=True)
    else:
        frame = synthetic_stream(seed=1)
    t = frame["event_ts"].iloc[len(frame) // 2]
    feats, bets = run(frame)
    assert len(bets[bets["event_ts"] <= t]) > 0, "the check needs bets before t"
    feats2, bets2 = run(scramble_after(frame, t, seed=2), batch=257)
    pd.testing.assert_frame_equal(_prefix(feats, t), _prefix(feats2, t))
    pd.testing.assert_frame_equal(_prefix(bets, t), _prefix(bets2, t))
    # The scramble did change what comes after t (the check is not vacuous).
    later = feats["event_ts"] > t
    assert not np.allclose(feats.loc[later, "consensus_prob_a"].to_numpy(),
                           feats2.loc[feats2["event_ts"] > t, "consensus_prob_a"].to_numpy(), equal_nan=True)
    # Micro-batching alone changes nothing anywhere.
    feats3, bets3 = run(frame, batch=101)
    pd.testing.assert_frame_equal(feats, feats3)
    pd.testing.assert_frame_equal(bets, bets3)


def test_features_by_hand():
    g1 = [quote(0, "G", "X", 100, 100), quote(1, "G", "Y", -150, 130), quote(2, "H", "X", -200, 170),
          quote(3, "G", "X", -120, 100), quote(4, "G", "Z", -10000, -10000), quote(5, "G", "Z", 150, -170)]
    state = MultiBookOddsState()
    f = pd.concat([state.update(pd.DataFrame(g1[:3])), state.update(pd.DataFrame(g1[3:]))], ignore_index=True)
    assert list(f["bookmaker"]) == ["X", "Y", "X", "X", "Z", "Z"]
    x0 = 0.5                                                      # +100/+100
    y = (1 / (1 + 100 / 150)) / (1 / (1 + 100 / 150) + 1 / 2.3)   # -150/+130: 0.6 / (0.6 + 0.4348)
    x1 = (1 / (1 + 100 / 120)) / (1 / (1 + 100 / 120) + 1 / 2.0)  # -120/+100
    z = (1 / 2.5) / (1 / 2.5 + 1 / (1 + 100 / 170))               # +150/-170
    g = f[f["symbol"] == "G"].reset_index(drop=True)
    np.testing.assert_allclose(g["n_books"], [1, 2, 2, 2, 3])
    np.testing.assert_allclose(g["consensus_prob_a"], [x0, (x0 + y) / 2, (x1 + y) / 2, (x1 + y) / 2, (x1 + y + z) / 3])
    np.testing.assert_allclose(g["consensus_prob_b"], 1 - g["consensus_prob_a"])
    np.testing.assert_allclose(g["book_dispersion"], [0, abs(y - x0) / 2, abs(y - x1) / 2, abs(y - x1) / 2,
                                                      np.std([x1, y, z])])
    np.testing.assert_allclose(g["best_decimal_a"], [2.0, 2.0, 1 + 100 / 120, 1 + 100 / 120, 2.5])
    assert list(g["best_book_a"]) == ["X", "X", "X", "X", "Z"]
    np.testing.assert_allclose(g["best_decimal_b"], [2.0, 2.3, 2.3, 2.3, 2.3])
    assert list(g["best_book_b"]) == ["X", "Y", "Y", "Y", "Y"]
    np.testing.assert_allclose(g["best_fair_b"], [1 - x0, 1 - y, 1 - y, 1 - y, 1 - y])
    np.testing.assert_allclose(g["best_overround"].iloc[1], 1 / 2.0 + 1 / 2.3 - 1)
    # Movement: X since its open (+100/+100), consensus since the game's first consensus (X alone).
    np.testing.assert_allclose(g["book_move_a"], [0, 0, x1 - x0, np.nan, 0], equal_nan=True)
    np.testing.assert_allclose(g["consensus_move_a"], g["consensus_prob_a"] - x0)
    np.testing.assert_allclose(g["mean_book_move_a"], [0, 0, (x1 - x0) / 2, (x1 - x0) / 2, (x1 - x0) / 3])
    np.testing.assert_allclose(g["consensus_edge_a"], g["consensus_prob_a"] * g["best_decimal_a"] - 1)
    # The off-the-board placeholder (-10000/-10000) is not a price: Z is out until it quotes again.
    assert np.isnan(g["book_prob_a_fair"].iloc[3]) and state.off_board == 1
    h = f[f["symbol"] == "H"]
    np.testing.assert_allclose(h["n_books"], [1])
    np.testing.assert_allclose(h["consensus_move_a"], [0])
    # Every Feast feature is a float column.
    assert all(f[n].dtype == float for n in NAMES)
    # A quote older than its book's latest (late after ingestion) does not overwrite the newer price.
    late = state.update(pd.DataFrame([quote(2.5, "G", "X", 300, -400)]))
    np.testing.assert_allclose(late["consensus_prob_a"], [(x1 + y + z) / 3])
    assert state.stale == 1
    # The snapshot is each book's closing line: X's last usable price, Z's first real one.
    snap = state.snapshot().set_index(["symbol", "bookmaker"])
    np.testing.assert_allclose(snap.loc[("G", "X"), ["decimal_a", "decimal_b", "fair_a", "open_fair_a"]],
                               [1 + 100 / 120, 2.0, x1, x0])


def test_value_strategy_gates_and_sizes():
    feats = pd.DataFrame({
        "symbol": ["G", "G", "G", "G", "H"],
        "event_ts": T0 + pd.to_timedelta([0, 1, 2, 90, 3], unit="min"),
        "consensus_prob_a": [0.50, 0.50, 0.52, 0.50, 0.60], "n_books": [5.0, 5, 5, 5, 2],
        "best_decimal_a": [2.02, 2.10, 2.20, 2.10, 2.0], "best_decimal_b": [1.9, 1.9, 1.9, 2.2, 1.6],
        "best_book_a": ["X", "Y", "Y", "Y", "X"], "best_book_b": ["X"] * 5,
        "best_fair_a": [0.49, 0.47, 0.46, 0.47, 0.5], "best_fair_b": [0.5, 0.5, 0.5, 0.45, 0.4]})
    bets = ValueStrategy(ValueConfig(min_edge=0.04, kelly_multiplier=0.5, max_stake=0.03)).decide(feats)
    # Row 0: edge 0.01 < 0.04; row 1: 0.05, bet; row 2 (0.144) and row 3 repeat (G, a): no second bet;
    # row 3 side b: 0.5 * 2.2 - 1 = 0.10, bet; H: consensus of two books < min_books.
    assert list(zip(bets["symbol"], bets["side"], bets["bookmaker"])) == [("G", "a", "Y"), ("G", "b", "X")]
    np.testing.assert_allclose(bets["edge"], [0.5 * 2.10 - 1, 0.5 * 2.2 - 1])
    np.testing.assert_allclose(bets["stake_fraction"], np.minimum(0.5 * kelly_fraction([0.5, 0.5], [2.10, 2.2]), 0.03))
    np.testing.assert_allclose(bets["book_prob_fair"], [0.47, 0.45])
    assert list(bets.columns) == BET_COLUMNS
    # With a cool-down of an hour, (G, a) is bet again at minute 90; a model probability replaces the consensus.
    again = ValueStrategy(ValueConfig(min_edge=0.04, cooldown=pd.Timedelta(hours=1))).decide(feats)
    assert list(zip(again["side"], again["event_ts"].dt.minute)) == [("a", 1), ("a", 30), ("b", 30)]
    model = ValueStrategy(ValueConfig(min_edge=0.04)).decide(feats, p_ref_a=np.array([0.6, np.nan, np.nan, 0.3, 0.6]))
    assert list(zip(model["side"], model["reference"])) == [("a", "model"), ("b", "model")]
    np.testing.assert_allclose(model["p_ref"], [0.6, 0.7])


def test_clv_sign_and_scale():
    quotes = pd.DataFrame([quote(0, "G", "X", 110, -130), quote(0, "G", "Y", 105, -125),
                           quote(50, "G", "X", -110, -110), quote(60, "G", "Y", -105, -115)])
    quotes["commence_ts"] = T0 + pd.Timedelta(minutes=100)
    fair_x0 = (1 / 2.1) / (1 / 2.1 + 1 / (1 + 100 / 130))
    close_x = 0.5
    close_y = (1 / (1 + 100 / 105)) / (1 / (1 + 100 / 105) + 1 / (1 + 100 / 115))
    bets = pd.DataFrame({"symbol": ["G", "G"], "event_ts": [T0, T0], "side": ["a", "b"], "bookmaker": ["X", "X"],
                         "decimal_odds": [2.1, 1 + 100 / 130], "p_ref": [0.5, 0.5],
                         "book_prob_fair": [fair_x0, 1 - fair_x0], "edge": [0.05, 0.0]})
    out = score_bets(bets, quotes, n_boot=200)
    s = out["scored"]
    # Backing a at +110 before it closed at -110: the close says a is likelier than the price we took.
    np.testing.assert_allclose(s["clv_points"], [(close_x - fair_x0) * 100, ((1 - close_x) - (1 - fair_x0)) * 100])
    assert s["clv_points"].iloc[0] > 0 > s["clv_points"].iloc[1]
    np.testing.assert_allclose(s["clv_price_pct"], [(2.1 / (1 + 100 / 110) - 1) * 100,
                                                    ((1 + 100 / 130) / (1 + 100 / 110) - 1) * 100])
    np.testing.assert_allclose(s["clv_points_consensus"].iloc[0], ((close_x + close_y) / 2 - fair_x0) * 100)
    assert out["bets"] == 2 and out["games"] == 1 and out["method"] == "multiplicative"
    np.testing.assert_allclose(out["clv_points_mean"], 0.0, atol=1e-12)  # +d and -d on one game
    closes = closing_lines(quotes).set_index("bookmaker")
    np.testing.assert_allclose(closes.loc["Y", "close_fair_a"], close_y)


def test_cluster_bootstrap_resamples_games():
    # Two games, each internally constant: the CI spans their two values only if whole games are resampled.
    values = np.r_[np.full(50, 1.0), np.full(50, 3.0), [np.nan]]
    games = np.r_[np.zeros(50), np.ones(50), [0]]
    mean, (lo, hi) = cluster_bootstrap_mean(values, games, n_boot=2000, seed=1)
    assert mean == 2.0 and lo == 1.0 and hi == 3.0
    mean, (lo, hi) = cluster_bootstrap_mean(values, np.arange(len(values)), n_boot=2000, seed=1)
    assert 1.5 < lo < 2.0 < hi < 2.5  # bet-level resampling would claim far more precision


def test_loader_on_real_stream():
    path = shared_file(STREAM)
    frame = load_odds_stream(path)
    raw = pd.read_csv(path)
    assert len(frame) == len(raw) == 54_177 and frame.attrs["in_play_dropped"] == 0
    assert frame["bookmaker"].nunique() == 11 and frame["symbol"].nunique() == 452
    assert (frame["event_ts"] < frame["commence_ts"]).all()
    assert frame["event_ts"].is_monotonic_increasing
    opens = frame[frame["is_open"]]
    pairs = frame.groupby(["symbol", "bookmaker"]).ngroups
    assert len(opens) == pairs and not opens.duplicated(["symbol", "bookmaker"]).any()
    first = frame.groupby(["symbol", "bookmaker"])["event_ts"].transform("min")
    assert (opens["event_ts"] == first[opens.index]).all()
    assert (frame["home_side"] == "a").all() and not frame["is_close"].any()
    # Side a is the home team, event time is when the price was seen (the book's own stamp is never later).
    row = raw.iloc[0]
    hit = frame[(frame["symbol"] == "mlb:" + row["event_id"]) & (frame["bookmaker"] == row["bookmaker"])
                & (frame["event_ts"] == pd.Timestamp(row["snapshot_ts_utc"]))]
    assert list(hit[["team_a", "odds_a_american", "odds_b_american"]].iloc[0]) == [row["home_team"], row["home_ml"],
                                                                                   row["away_ml"]]
    assert (frame["book_update_ts"] <= frame["event_ts"]).all()
    result = validate(EventKind.ODDS, frame)
    assert len(result.rejected) == 0 and result.n_accepted == len(frame)


def test_loader_drops_in_play_and_keeps_bad_values(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(HEADER + "\n"
                    "2026-07-05T10:00:00Z,e1,2026-07-05T16:00:00Z,H,A,bk1,2026-07-05T09:59:00Z,-120,110\n"
                    "2026-07-05T09:00:00Z,e1,2026-07-05T16:00:00Z,H,A,bk1,2026-07-05T08:59:00Z,-115,105\n"
                    "2026-07-05T16:00:00Z,e1,2026-07-05T16:00:00Z,H,A,bk1,2026-07-05T15:59:00Z,-300,250\n"
                    "2026-07-05T11:00:00Z,e1,2026-07-05T16:00:00Z,H,A,bk2,2026-07-05T10:59:00Z,-12O,110\n")
    frame = load_odds_stream(path)
    assert frame.attrs["in_play_dropped"] == 1 and len(frame) == 3
    assert list(frame["event_ts"].dt.hour) == [9, 10, 11] and list(frame["is_open"]) == [True, False, True]
    result = validate(EventKind.ODDS, frame)  # the garbled price reaches ingestion as written
    assert list(result.rejected["value"]) == ["-12O"]
    flagged = load_odds_stream(path, drop_in_play=False)
    assert len(flagged) == 4 and flagged["in_play"].sum() == 1


def test_bad_header_names_missing_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("snapshot_ts_utc,event_id,commence_time_utc,home_team,away_team,book,home_price,away_ml\n"
                    "2026-07-05T10:00:00Z,e1,2026-07-05T16:00:00Z,H,A,bk1,-120,110\n")
    with pytest.raises(SourceError, match=r"no column bookmaker, home_ml;.*found: .*home_price"):
        load_odds_stream(path)
