"""Bet opportunities from a sport model's predictions: both sides of every game, priced at the
closing moneyline, with the margin-free market probability beside the model's."""
from __future__ import annotations

import numpy as np
import pandas as pd


def game_opportunities(games: pd.DataFrame, p_home: np.ndarray) -> pd.DataFrame:
    """Two rows per decided game (home and away); the engine keeps only the sides with an edge."""
    decided = games["home_win"].notna().to_numpy()
    g = games.loc[decided].reset_index(drop=True)
    p = np.asarray(p_home, dtype=float)[decided]
    home_won = g["home_win"].to_numpy(float)
    sides = []
    for side, prob, odds, market, won in (("home", p, g["home_dec"], g["market_prob_home"], home_won),
                                          ("away", 1.0 - p, g["away_dec"], 1.0 - g["market_prob_home"], 1.0 - home_won)):
        sides.append(pd.DataFrame({"date": g["date"], "game_id": g["game_id"], "side": side, "decimal_odds": odds.to_numpy(float),
                                   "model_prob": prob, "won": won.astype(int), "confidence": prob,
                                   "closing_decimal_odds": odds.to_numpy(float), "market_prob": market.to_numpy(float),
                                   "season": g["season"].to_numpy()}))
    out = pd.concat(sides, ignore_index=True)
    return out[np.isfinite(out["decimal_odds"]) & (out["decimal_odds"] > 1)].sort_values(["date", "game_id", "side"]).reset_index(drop=True)


def _day(value, field: str) -> pd.Timestamp | None:
    if not value:
        return None
    try:
        return pd.Timestamp(value, tz="UTC")
    except (ValueError, TypeError):
        raise ValueError(f"{field}: expected a date like 2024-01-31, got {value!r}") from None


def model_opportunities(registry, model_id: int | str, frame: pd.DataFrame, start_date=None, end_date=None) -> pd.DataFrame:
    """Opportunities for games in [start_date, end_date) that the model never trained on (no look-ahead:
    a window that reaches into the model's training seasons is refused)."""
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
    return game_opportunities(window.reset_index(drop=True), model.predict_proba(window.reset_index(drop=True)))
