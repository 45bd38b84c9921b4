"""A multi-book pre-game odds stream -> per-book OddsQuote events in event time.

The stream layout (The Odds API replayed into price changes, e.g. ../shared/data/streams/mlb_h2h_*.csv)
has one row each time one bookmaker changed one game's moneyline:

    snapshot_ts_utc, event_id, commence_time_utc, home_team, away_team, bookmaker, [book_update_utc,] home_ml, away_ml

`event_ts` is `snapshot_ts_utc`: when the price was observable to us. The book's own stamp
(`book_update_utc`) is earlier and would date a price before we could have seen it, so it is kept only as
the extra column `book_update_ts`. The home team is side a. A (game, book)'s first quote in event time is
flagged `is_open`; no row is flagged `is_close`, because which quote is the last before the game is only
known afterwards (scoring derives the closing line itself, edgeray.value.closing_lines). Quotes stamped at or
after their game's commence time are in-play, not pre-game: they are dropped and counted
(`attrs["in_play_dropped"]`). Odds stay as written, so ingestion dead-letters a bad one with its value.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from edgeray.loaders.csvfile import SourceError, read_lines

REQUIRED = ("snapshot_ts_utc", "event_id", "commence_time_utc", "home_team", "away_team", "bookmaker",
            "home_ml", "away_ml")
OPTIONAL = ("book_update_utc",)
EXPECTED = ", ".join(REQUIRED[:6]) + ", [book_update_utc,] home_ml, away_ml"
DETECTED = "odds stream format: snapshot_ts_utc -> event_ts, event_id -> symbol, home -> side a"

# Columns beyond the OddsQuote schema; validation drops them, so a consumer that needs them (scoring's
# closing lines) reads them from this frame.
EXTRA_COLUMNS = ("commence_ts", "book_update_ts")


def is_odds_stream(header: list[str]) -> bool:
    """Whether a CSV header is this layout (for a source type that detects it)."""
    names = {h.strip().lower() for h in header}
    return {"snapshot_ts_utc", "bookmaker", "home_ml", "away_ml"} <= names


def load_odds_stream(path: str | Path, *, sport: str = "mlb", drop_in_play: bool = True) -> pd.DataFrame:
    """The stream file as an OddsQuote-shaped frame in event-time order, plus `commence_ts` and `book_update_ts`.

    attrs: `detected` (the layout), `in_play_dropped` (quotes at/after commence that were dropped, or with
    `drop_in_play=False` kept and marked by the bool column `in_play`), `bad_lines` (unreadable lines, for the
    dead-letter store), `rows_read`.
    """
    path = Path(path)
    parsed = read_lines(path, expected=EXPECTED)
    found = [h.strip() for h in parsed.header]
    lower = {h.lower(): h for h in found}
    missing = [c for c in REQUIRED if c not in lower]
    if missing:
        raise SourceError(f"{path.name}: not an odds stream: no column {', '.join(missing)}; expected {EXPECTED}; "
                          f"found: {', '.join(found)}")
    # Every column as text except the prices: a garbled price must reach validation as written.
    raw = pd.read_csv(io.StringIO(parsed.text), dtype=str, keep_default_na=False, skipinitialspace=True)
    raw.columns = [c.strip().lower() for c in raw.columns]
    col = {c: raw[c] for c in REQUIRED + OPTIONAL if c in raw}

    snap = pd.to_datetime(col["snapshot_ts_utc"], utc=True, errors="coerce", format="ISO8601")
    commence = pd.to_datetime(col["commence_time_utc"], utc=True, errors="coerce", format="ISO8601")
    update = (pd.to_datetime(col["book_update_utc"], utc=True, errors="coerce", format="ISO8601")
              if "book_update_utc" in col else pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]"))
    # A game whose commence cannot be read cannot be called pre-game or not: kept, for validation to judge the rest.
    in_play = (snap >= commence).to_numpy()
    n_in_play = int(in_play.sum())

    symbol = sport + ":" + col["event_id"].str.strip()
    frame = pd.DataFrame({
        # An unreadable stamp stays as its text, so ingestion dead-letters it with the value it saw.
        "event_ts": snap if snap.notna().all() else snap.astype(object).where(snap.notna(), col["snapshot_ts_utc"]),
        "symbol": symbol, "sport": sport,
        "team_a": col["home_team"].str.strip(), "team_b": col["away_team"].str.strip(),
        "odds_a_american": _numeric_or_text(col["home_ml"]), "odds_b_american": _numeric_or_text(col["away_ml"]),
        "home_side": "a", "bookmaker": col["bookmaker"].str.strip(), "market_type": "moneyline",
        "is_open": False, "is_close": False, "source": path.name,
        "commence_ts": commence, "book_update_ts": update,
    })
    if drop_in_play:
        keep = ~in_play
        frame, snap = frame[keep], snap[keep]
    else:
        frame["in_play"] = in_play
    # Event-time order (stable: a snapshot's rows keep the file's order); unreadable stamps last.
    ns = snap.to_numpy("datetime64[ns]").view(np.int64).copy()
    ns[snap.isna().to_numpy()] = np.iinfo(np.int64).max
    order = np.argsort(ns, kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    stamped = snap.notna().to_numpy()[order]
    pre_game = stamped & ~frame.get("in_play", pd.Series(False, index=frame.index)).to_numpy(bool)
    first = ~frame.loc[pre_game, ["symbol", "bookmaker"]].duplicated()
    frame.loc[first.index[first.to_numpy()], "is_open"] = True
    frame.attrs.update(detected=DETECTED, in_play_dropped=n_in_play if drop_in_play else 0,
                       in_play=n_in_play, bad_lines=parsed.bad, rows_read=len(raw))
    return frame


def _numeric_or_text(values: pd.Series) -> pd.Series:
    """Numbers as float64 when every value is one; otherwise the column as written (object), so validation
    reports the exact text of the bad value."""
    num = pd.to_numeric(values, errors="coerce")
    if num.notna().all():
        return num.astype(float)
    return values.where(values.str.strip() != "", None).astype(object)
