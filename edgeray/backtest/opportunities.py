"""Bet opportunities from a sport model's predictions: both sides of every game, priced where `bet_at` says,
with the margin-free market probability beside the model's and both sides' bet-time and closing prices (which
margin-free CLV needs: edgeray.clv).

bet_at: "close" prices every bet at the closing line (CLV is then 0 by construction); "open" at the opening line
(games without one are dropped and counted); "first_seen" at the first price the source has, which for the game
archives (one opening and one closing line per game) is the open; "best_book" needs several books' prices per game,
which a game archive does not have (use an odds stream).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from edgeray.clv import DEFAULT_METHOD, check_method, fair_prob

BET_AT = ("open", "close", "first_seen", "best_book")


def check_bet_at(bet_at) -> str:
    if bet_at not in BET_AT:
        raise ValueError(f"bet_at: expected one of {list(BET_AT)}, got {bet_at!r}")
    return bet_at


def check_archive_bet_at(bet_at) -> str:
    """check_bet_at for a game archive (one opening and one closing line per game): best_book cannot be priced."""
    if check_bet_at(bet_at) == "best_book":
        raise ValueError("bet_at: 'best_book' needs a multi-book odds stream; this archive has one book")
    return bet_at


def game_opportunities(games: pd.DataFrame, p_home: np.ndarray, bet_at: str = "close",
                       clv_method: str = DEFAULT_METHOD) -> pd.DataFrame:
    """Two rows per decided game (home and away); the engine keeps only the sides with an edge.

    `market_prob` is the bet price's margin-free probability of the side (what the edge is measured against);
    `open_market_prob` / `closing_market_prob` the opening and closing lines' (for model vs market scores).
    `attrs["bet_at"]` says where bets were priced, how many games had no price there and were dropped."""
    check_archive_bet_at(bet_at)
    check_method(clv_method)
    decided = games["home_win"].notna().to_numpy()
    g = games.loc[decided].reset_index(drop=True)
    p = np.asarray(p_home, dtype=float)[decided]

    def col(name: str) -> np.ndarray:
        return g[name].to_numpy(float) if name in g.columns else np.full(len(g), np.nan)

    close_h, close_a = col("home_dec"), col("away_dec")
    open_h, open_a = col("home_dec_open"), col("away_dec_open")
    at_open = bet_at in ("open", "first_seen")  # a game archive's first price is its opening line
    bet_h, bet_a = (open_h, open_a) if at_open else (close_h, close_a)
    priced = np.isfinite(bet_h) & np.isfinite(bet_a) & (bet_h > 1) & (bet_a > 1)
    if at_open and not priced.any() and len(g):
        raise ValueError(f"bet_at: {bet_at!r} needs opening prices, and none of the {len(g)} decided games has an "
                         f"opening moneyline in this archive (home_ml_open/away_ml_open); use bet_at 'close'")
    open_fair = fair_prob(open_h, open_a, clv_method)
    close_fair = fair_prob(close_h, close_a, clv_method)
    home_won = g["home_win"].to_numpy(float)
    sides = []
    for side, prob, won, bet, other, c, co, o_f, c_f in (
            ("home", p, home_won, bet_h, bet_a, close_h, close_a, open_fair, close_fair),
            ("away", 1.0 - p, 1.0 - home_won, bet_a, bet_h, close_a, close_h, 1.0 - open_fair, 1.0 - close_fair)):
        sides.append(pd.DataFrame({
            "date": g["date"], "game_id": g["game_id"], "side": side, "decimal_odds": bet, "other_decimal_odds": other,
            "model_prob": prob, "won": won.astype(int), "confidence": prob,
            "closing_decimal_odds": c, "closing_other_decimal_odds": co,
            "market_prob": o_f if at_open else c_f, "open_market_prob": o_f, "closing_market_prob": c_f,
            "season": g["season"].to_numpy()}))
    out = pd.concat(sides, ignore_index=True)
    out = out[np.isfinite(out["decimal_odds"]) & (out["decimal_odds"] > 1)].sort_values(["date", "game_id", "side"])
    out = out.reset_index(drop=True)
    notes = {"close": "bets priced at the closing line: CLV is 0 by construction",
             "open": "bets priced at the opening line",
             "first_seen": "bets priced at the first price the archive has, its opening line (one line per game)"}
    out.attrs["bet_at"] = {"bet_at": bet_at, "clv_method": clv_method, "games": int(len(g)),
                           "games_priced": int(priced.sum()), "games_dropped_no_price": int((~priced).sum()),
                           "note": notes[bet_at] + (f"; {int((~priced).sum())} of {len(g)} games had no "
                                                    f"{'opening' if at_open else 'closing'} line and were dropped"
                                                    if (~priced).any() else "")}
    return out


def _day(value, field: str) -> pd.Timestamp | None:
    if not value:
        return None
    try:
        return pd.Timestamp(value, tz="UTC")
    except (ValueError, TypeError):
        raise ValueError(f"{field}: expected a date like 2024-01-31, got {value!r}") from None


def model_opportunities(registry, model_id: int | str, frame: pd.DataFrame, start_date=None, end_date=None,
                        bet_at: str = "close", clv_method: str = DEFAULT_METHOD) -> pd.DataFrame:
    """Opportunities for games in [start_date, end_date) that the model never trained on (no look-ahead:
    a window that reaches into the model's training seasons is refused), priced where `bet_at` says. A bet placed
    before the close must not see it: for "open"/"first_seen" the model is fed features rebuilt from the opening
    line only (edgeray.sports.features, market_at "open")."""
    check_archive_bet_at(bet_at)
    check_method(clv_method)
    record = registry.resolve(model_id)
    model_id = record["model_id"]
    trained = (record.get("data") or {}).get("train_seasons") or []
    start, end = _day(start_date, "start_date"), _day(end_date, "end_date")
    if len(frame) and ((start is not None and start > frame["date"].max()) or (end is not None and end <= frame["date"].min())):
        raise ValueError(f"{'start_date' if start is not None and start > frame['date'].max() else 'end_date'}: "
                         f"{start_date if start is not None and start > frame['date'].max() else end_date!r} is "
                         f"outside the {record['sport']} data, which spans {frame['date'].min().date()} to "
                         f"{frame['date'].max().date()}")
    window = frame[(frame["date"] >= start) if start is not None else np.ones(len(frame), bool)]
    if end is not None:
        window = window[window["date"] < end]
    if trained:
        window = window[window["season"] > max(trained)] if start is None else window
        overlap = window[window["season"].isin(trained)]
        if len(overlap):
            raise ValueError(f"start_date: {start_date!r} reaches into the model's training seasons {trained}; "
                             f"backtest only on later games (season > {max(trained)})")
    if window.empty:
        raise ValueError(f"start_date/end_date: no games between {start_date!r} and {end_date!r} after the model's training data")
    model = registry.load(model_id)
    window = window.reset_index(drop=True)
    features = window
    if bet_at in ("open", "first_seen"):
        features = open_features(frame).set_index("game_id").loc[window["game_id"]].reset_index()
    return game_opportunities(window, model.predict_proba(features), bet_at=bet_at, clv_method=clv_method)


def open_features(frame: pd.DataFrame, config: dict | None = None) -> pd.DataFrame:
    """The game table with features as known at the opening line (no closing price reaches any f_ column)."""
    from edgeray.sports.features import build_features

    games = frame[[c for c in frame.columns if not str(c).startswith("f_")]]
    return build_features(games, {**(config or {}), "market_at": "open"})
