"""The sports archive layouts edgeray reads, each declared once: its sport, the file columns behind every field
of the game table and how its dates are written.

A file's format is either declared (`format:` in `sports.sources`, or `read_games(..., fmt=...)`) or detected
from its header. Detection never guesses: a format fits when the file has every column it reads plus the
columns that tell it apart from its neighbours (`signature`); when several fit and one's columns contain the
others', the more specific one wins (CFBD's NCAAF layout is the SBRO one plus conferences); otherwise the
error names the candidates and asks for `format:`. A file that fits none gets one message with the closest
format's missing columns and the columns found. File names play no part.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

SPORTS = ("ncaam", "nba", "nfl", "mlb", "ncaaf")
# Names users write for the same sport: NCAAB is what bettors call men's college basketball.
SPORT_ALIASES = {"ncaab": "ncaam", "cbb": "ncaam", "cfb": "ncaaf", "baseball": "mlb"}
# The fields every format must give; `optional` ones are read when the file has them.
REQUIRED_FIELDS = ("date", "home", "away", "home_score", "away_score", "home_ml", "away_ml")
OPTIONAL_FIELDS = ("home_ml_open", "away_ml_open", "home_spread", "home_spread_open", "total", "total_open",
                   "game_no", "neutral", "undecided", "ml_suspect", "ml_open_suspect")
# Text fields some archives have: starting pitchers (MLB), conferences and divisions (college football).
TEXT_FIELDS = ("home_starter", "away_starter", "home_conf", "away_conf", "home_division", "away_division")


def canonical_sport(name) -> str:
    """'NBA' -> 'nba', 'NCAAB' -> 'ncaam'; ValueError naming the field and the known sports otherwise."""
    key = str(name).strip().lower() if isinstance(name, str) else ""
    key = SPORT_ALIASES.get(key, key)
    if key not in SPORTS:
        raise ValueError(f"sport: unknown sport {name!r}; known: {list(SPORTS)} (ncaab = ncaam)")
    return key


def season_of(sport: str, date: pd.Series) -> pd.Series:
    """The season a game belongs to. Baseball's season lies inside one calendar year; the winter sports
    (and college football's January bowls) belong to the season that began the previous autumn."""
    if sport == "mlb":
        return date.dt.year.astype("int64")
    return (date.dt.year - (date.dt.month < 8)).astype("int64")


def _nba_home_spread(raw: pd.DataFrame) -> dict[str, pd.Series]:
    # The spread is unsigned; whos_favored says which side gives the points.
    if "spread" not in raw.columns:
        return {}
    spread = pd.to_numeric(raw["spread"], errors="coerce")
    if "whos_favored" in raw.columns:
        spread = spread.where(raw["whos_favored"].astype(str).str.strip().str.lower() != "home", -spread)
    return {"home_spread": spread}


NFL_MIN_TOTAL = 25.0  # no NFL total is this low; a "total" under it is the spread in the wrong column


def _sbr_nfl_lines(raw: pd.DataFrame) -> dict[str, pd.Series]:
    """The SBR NFL archive swaps a line's spread and total on some rows (~260 closing lines: spread +-40.5, total
    1.0): the spread column then holds the total, signed like the home spread, and the total column the spread's
    size. Those are swapped back; a line whose total is still implausible (< 25) is unknown (spread and total NaN)."""
    out = {}
    for spread_col, total_col, spread_f, total_f in (("home_close_spread", "close_over_under", "home_spread", "total"),
                                                     ("home_open_spread", "open_over_under", "home_spread_open",
                                                      "total_open")):
        if spread_col not in raw.columns or total_col not in raw.columns:
            continue
        spread = pd.to_numeric(raw[spread_col], errors="coerce")
        total = pd.to_numeric(raw[total_col], errors="coerce")
        swapped = (spread.abs() > NFL_MIN_TOTAL) & (total < NFL_MIN_TOTAL)
        fixed_spread = spread.where(~swapped, spread.apply(lambda v: 1.0 if v > 0 else -1.0) * total)
        fixed_total = total.where(~swapped, spread.abs())
        bad = fixed_total < NFL_MIN_TOTAL
        out[spread_f], out[total_f] = fixed_spread.mask(bad), fixed_total.mask(bad)
    if "home_spread" in out and "home_spread_open" in out:
        # A few openers are a missing line written as 0 (close a touchdown or more away) or the close with its sign
        # flipped (Nov 2021: -13.5 open, +14 close); neither is a price anyone could bet, so the opener is unknown.
        close, opened = out["home_spread"], out["home_spread_open"]
        blank = (opened == 0) & (close.abs() >= 7)
        flipped = (opened * close < 0) & ((opened + close).abs() <= 1.5) & (close.abs() >= 3)
        out["home_spread_open"] = opened.mask(blank | flipped)
    return out


@dataclass(frozen=True)
class SportFormat:
    name: str
    sport: str | None            # None: the generic layout, whose sport the source declares
    description: str
    fields: Mapping[str, str]    # game-table field -> file column, all required
    optional: Mapping[str, str] = field(default_factory=dict)
    signature: tuple[str, ...] = ()   # further columns detection requires, to tell this layout from others
    date_format: str | None = "%Y-%m-%d"   # None: ISO 8601 text of any precision
    venue_known: bool = True     # False: the file lists favourite/underdog, not home/away
    derive: Callable[[pd.DataFrame], dict[str, pd.Series]] | None = None

    @property
    def columns(self) -> frozenset[str]:
        """What a header needs for this format to fit."""
        return frozenset(self.fields.values()) | frozenset(self.signature)

    def summary(self) -> str:
        return f"{self.name} ({self.sport or 'any sport'}: {', '.join(self.fields.values())})"


_SBRO_HOME_AWAY = {"date": "date", "home": "home_team", "away": "away_team", "home_score": "home_score",
                   "away_score": "away_score", "home_ml": "home_close_ml", "away_ml": "away_close_ml"}

_NCAAF_LINES = {"home_spread": "home_close_spread", "home_spread_open": "home_open_spread", "total": "close_total",
                "total_open": "open_total", "neutral": "neutral_site", "ml_suspect": "close_ml_suspect"}

FORMATS: dict[str, SportFormat] = {f.name: f for f in (
    SportFormat("sbro_ncaab", "ncaam", "sportsbookreviewsonline NCAAB closing lines: favourite listed first, venue "
                "unknown (ncaab_sbr_closing_*.csv)",
                {"date": "game_datetime", "home": "top_team", "away": "bottom_team", "home_score": "top_final",
                 "away_score": "bottom_final", "home_ml": "top_ml_odds", "away_ml": "bottom_ml_odds"},
                {"home_spread": "top_spread", "total": "top_total"}, venue_known=False),
    SportFormat("kaggle_nba", "nba", "NBA odds and scores, dates as M/D/YYYY, unsigned spread with whos_favored",
                {"date": "dates", "home": "home", "away": "away", "home_score": "score_home",
                 "away_score": "score_away", "home_ml": "moneyline_home", "away_ml": "moneyline_away"},
                {"total": "total"}, date_format="%m/%d/%Y", derive=_nba_home_spread),
    SportFormat("sbr_nfl", "nfl", "sportsbookreview NFL archive: quarter and final scores, closing moneylines, "
                "opening and closing spreads and totals, dates as YYYYMMDD",
                {"date": "date", "home": "home_team", "away": "away_team", "home_score": "home_final",
                 "away_score": "away_final", "home_ml": "home_close_ml", "away_ml": "away_close_ml"},
                {"home_spread": "home_close_spread", "home_spread_open": "home_open_spread",
                 "total": "close_over_under", "total_open": "open_over_under"}, date_format="%Y%m%d",
                derive=_sbr_nfl_lines),
    SportFormat("sbro_mlb", "mlb", "sportsbookreviewsonline MLB: opening and closing moneylines, starting pitchers, "
                "game_no numbering doubleheaders",
                _SBRO_HOME_AWAY,
                {"home_ml_open": "home_open_ml", "away_ml_open": "away_open_ml", "total": "close_total",
                 "total_open": "open_total", "game_no": "game_no", "neutral": "neutral_site",
                 "undecided": "tie_or_suspended", "ml_suspect": "close_ml_suspect",
                 "ml_open_suspect": "open_ml_suspect", "home_starter": "home_pitcher",
                 "away_starter": "away_pitcher"},
                signature=("game_no", "home_pitcher", "away_pitcher")),
    SportFormat("sbro_ncaaf", "ncaaf", "sportsbookreviewsonline NCAA football: closing moneyline, spread and total",
                _SBRO_HOME_AWAY,
                _NCAAF_LINES, signature=("home_close_spread", "close_total")),
    SportFormat("cfbd_ncaaf", "ncaaf", "CollegeFootballData NCAA football lines: conferences, divisions, closing "
                "moneyline and spreads",
                _SBRO_HOME_AWAY,
                {**_NCAAF_LINES, "home_conf": "home_conference", "away_conf": "away_conference",
                 "home_division": "home_division", "away_division": "away_division"},
                signature=("home_close_spread", "close_total", "home_conference", "away_conference", "week")),
    SportFormat("generic", None, "any sport: one row per game with these columns (ISO dates); the source names the "
                "sport",
                {f: f for f in REQUIRED_FIELDS}, {f: f for f in OPTIONAL_FIELDS + TEXT_FIELDS}, date_format=None),
)}

EXPECTED_HINT = ("declare it in the config: sports.sources: [{sport: ..., path: ..., format: ..., columns: "
                 "{FILE_COLUMN: COLUMN}}]; formats: " + ", ".join(FORMATS))


class SportsFormatError(ValueError):
    """A sports file whose layout fits no format, fits the wrong sport, or fits several."""


def read_header(path: Path) -> list[str]:
    """The first line's column names (a file that is not UTF-8 text reports the byte offset)."""
    with open(path, "rb") as fh:
        line = re.split(rb"[\r\n]", fh.read(1 << 16), maxsplit=1)[0]  # some archives end lines with a bare CR
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SportsFormatError(f"{path.name}: not a text CSV (byte offset {exc.start} is not UTF-8)") from None
    return [c.strip() for c in next(csv.reader([text]), [])]


def _closest(candidates: Iterable[SportFormat], cols: set[str]) -> tuple[SportFormat, list[str]] | None:
    ranked = sorted(((f, sorted(f.columns - cols)) for f in candidates), key=lambda fm: (len(fm[1]), fm[0].name))
    return ranked[0] if ranked else None


def detect(columns: Iterable[str], *, sport: str | None = None, fmt: str | None = None,
           where: str = "file") -> SportFormat:
    """The format of a file with these columns, declared (`fmt`) or detected; `sport`, when given, must agree."""
    cols = set(columns)
    sport = canonical_sport(sport) if sport is not None else None
    shown = sorted(cols)[:20]
    if fmt is not None and fmt != "auto":
        if fmt not in FORMATS:
            raise SportsFormatError(f"format: unknown sports format {fmt!r}; known: {list(FORMATS)}")
        f = FORMATS[fmt]
        if sport is not None and f.sport not in (None, sport):
            raise SportsFormatError(f"format: {fmt} is a {f.sport} layout, but the source says sport {sport!r}")
        if f.sport is None and sport is None:
            raise SportsFormatError(f"sport: format {fmt} needs the source to name its sport")
        missing = sorted(frozenset(f.fields.values()) - cols)
        if missing:
            raise SportsFormatError(f"{where}: does not fit format {fmt}: missing columns {missing}; found {shown}")
        return f
    fits = [f for f in FORMATS.values() if f.columns <= cols and (f.sport is not None or sport is not None)]
    # The most specific fit: drop any format whose columns another fitting format strictly contains.
    fits = [f for f in fits if not any(f.columns < g.columns for g in fits)]
    if sport is not None:
        mine = [f for f in fits if f.sport in (None, sport)]
        if not mine and fits:
            other = fits[0]
            raise SportsFormatError(f"{where}: is a {other.sport} file (format {other.name}), not {sport}; "
                                    f"check the source's sport or declare format:")
        fits = mine
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        raise SportsFormatError(f"{where}: fits several sports formats {[f.name for f in fits]}; declare format:")
    if sport is None and FORMATS["generic"].columns <= cols:
        raise SportsFormatError(f"{where}: has the generic layout's columns, which do not say the sport; "
                                f"name it (sports.sources[].sport, or --sport)")
    pool = [f for f in FORMATS.values() if sport is None or f.sport in (None, sport)]
    closest = _closest(pool, cols)
    near = f" (closest: {closest[0].name}, missing {closest[1]})" if closest else ""
    raise SportsFormatError(f"{where}: fits no sports format{near}; found columns {shown}")
