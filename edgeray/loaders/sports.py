"""Sports files -> odds-quote and game-result event frames.

Each game yields one closing odds quote stamped at the start of its game date (the archives
give no kick-off time; closing lines are set before the game) and one result stamped at the
end of that date, so a consumer at time t never sees a score before the odds it bets on.
The file's layout is declared or detected as for the game table (edgeray.sports.formats), and
game ids are spelled the same way; values stay as written so ingestion dead-letters a bad one
with the value it saw.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

RESULT_DELAY = pd.Timedelta(hours=23, minutes=59, seconds=59)


def load_sports_events(path: str | Path, *, sport: str | None = None, fmt: str | None = None,
                       columns: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(odds quotes, game results) of one sports archive file."""
    from edgeray.sports.games import format_fields, game_identity, read_archive  # the game table uses our csv reader

    spec, sport, raw = read_archive(path, sport=sport, fmt=fmt, columns=columns)
    cols = format_fields(spec, raw)
    ts, home, away, game_id = game_identity(sport, spec, cols)
    ts = ts.dt.tz_localize("UTC")
    date = cols["date"]
    # Unparseable dates stay as their raw text so ingestion dead-letters them with the value.
    event_ts = ts.astype(object).where(ts.notna(), date)
    common = {"symbol": game_id, "sport": sport, "team_a": home, "team_b": away,
              "home_side": "a" if spec.venue_known else "", "source": Path(path).name}
    odds = pd.DataFrame({"event_ts": event_ts, **common, "odds_a_american": cols["home_ml"],
                         "odds_b_american": cols["away_ml"], "bookmaker": "consensus", "market_type": "moneyline",
                         "is_open": False, "is_close": True})
    results = pd.DataFrame({"event_ts": (ts + RESULT_DELAY).astype(object).where(ts.notna(), date), **common,
                            "score_a": cols["home_score"], "score_b": cols["away_score"]})
    odds.attrs["bad_lines"] = raw.attrs.get("bad_lines") or []  # dead-lettered by the replay's pre-flight
    return odds, results
