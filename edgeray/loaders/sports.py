"""Sports files -> odds-quote and game-result event frames.

Each game yields one closing odds quote stamped at the start of its game date (the archives
give no kick-off time; closing lines are set before the game) and one result stamped at the
end of that date, so a consumer at time t never sees a score before the odds it bets on.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

RESULT_DELAY = pd.Timedelta(hours=23, minutes=59, seconds=59)


def _events(sport: str, date: pd.Series, team_a: pd.Series, team_b: pd.Series, home_side: str,
            odds_a, odds_b, score_a, score_b, source: str, is_open: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    ts = pd.to_datetime(date, utc=True, errors="coerce")
    # Unparseable dates stay as their raw text so ingestion dead-letters them with the value.
    event_ts = ts.astype(object).where(ts.notna(), date)
    day = ts.dt.strftime("%Y%m%d").fillna(date.astype(str))
    game_id = sport + ":" + day + ":" + team_a.astype(str) + ":" + team_b.astype(str)
    common = {"symbol": game_id, "sport": sport, "team_a": team_a, "team_b": team_b, "home_side": home_side, "source": source}
    odds = pd.DataFrame({"event_ts": event_ts, **common, "odds_a_american": odds_a, "odds_b_american": odds_b,
                         "bookmaker": "consensus", "market_type": "moneyline", "is_open": is_open, "is_close": not is_open})
    results = pd.DataFrame({"event_ts": (ts + RESULT_DELAY).astype(object).where(ts.notna(), date), **common,
                            "score_a": score_a, "score_b": score_b})
    return odds, results


def load_sports_events(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detect the archive format by its columns; return (odds quotes, game results)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path: no such file {path}")
    raw = pd.read_csv(path, dtype=str)
    cols = set(raw.columns)
    src = path.name
    if {"top_team", "bottom_team", "top_ml_odds"} <= cols:  # NCAAM SBR: favourite first, venue unknown
        return _events("ncaam", raw["game_datetime"], raw["top_team"], raw["bottom_team"], "",
                       raw["top_ml_odds"], raw["bottom_ml_odds"], raw["top_final"], raw["bottom_final"], src)
    if {"moneyline_home", "moneyline_away", "dates"} <= cols:  # NBA
        date = pd.to_datetime(raw["dates"], format="%m/%d/%Y", errors="coerce").dt.strftime("%Y-%m-%d").fillna(raw["dates"])
        return _events("nba", date, raw["home"], raw["away"], "a", raw["moneyline_home"], raw["moneyline_away"],
                       raw["score_home"], raw["score_away"], src)
    if {"home_close_ml", "away_close_ml", "date"} <= cols:  # NFL SBR
        date = pd.to_datetime(raw["date"], format="%Y%m%d", errors="coerce").dt.strftime("%Y-%m-%d").fillna(raw["date"])
        return _events("nfl", date, raw["home_team"], raw["away_team"], "a", raw["home_close_ml"], raw["away_close_ml"],
                       raw["home_final"], raw["away_final"], src)
    raise ValueError(f"path: {path.name} is not a known sports odds format (columns {sorted(cols)[:8]}...)")
