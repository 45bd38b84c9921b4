"""The game table: one row per game from the NCAAM / NBA / NFL archives, odds in every form, NFL weather.

`read_games(path)` / `read_sport(sport, data_dir)` return a `GameTable` (valid games, rejected rows, info);
`load_games` / `load_sport` return just the games DataFrame and, given `errors=[]`, append every rejection to it.
Rejected rows (impossible American odds strictly between -100 and +100, missing/negative scores, bad dates,
missing teams, duplicate games) are never dropped silently: each problem is one row of `GameTable.rejected`
with columns row (0-based data row of the source file), field, value, reason.

Columns follow the shared contract (GAME_COLUMNS) followed by EXTRA_COLUMNS: the closing/opening home spread and
total where the source has them (for line-movement features) and a precipitation flag for NFL.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from edgeray.odds import american_to_decimal, is_valid_american, remove_margin_multiplicative

log = logging.getLogger(__name__)

SPORTS = ("ncaam", "nba", "nfl")
SPORT_FILES = {"ncaam": "ncaab_sbr_closing_2012_2022.csv", "nba": "nba_2007_2023.csv", "nfl": "nfl_sbr_2011_2021.csv"}
NFL_WEATHER_FILE, NFL_STADIUMS_FILE, NFL_TEAMS_FILE = ("nfl_scores_weather_1966_2025.csv", "nfl_stadiums.csv",
                                                       "nfl_teams.csv")
GAME_COLUMNS = ["game_id", "sport", "date", "season", "home", "away", "venue_known", "home_score", "away_score",
                "home_win", "home_ml", "away_ml", "home_dec", "away_dec", "home_ml_open", "away_ml_open",
                "market_prob_home", "temperature_f", "wind_mph", "humidity_pct", "dome"]
EXTRA_COLUMNS = ["home_spread", "home_spread_open", "total_line", "total_line_open", "precipitation"]
REJECTED_COLUMNS = ["row", "field", "value", "reason"]
WEATHER_COLUMNS = ["temperature_f", "wind_mph", "humidity_pct", "dome", "precipitation"]

# SBR spells some NFL teams by city or with typos; team_name_short in nfl_teams.csv covers the rest.
_SBR_NFL_ALIASES = {"Fortyniners": "SF", "Commanders": "WAS", "Washingtom": "WAS", "Oakland": "OAK", "LVRaiders": "OAK",
                    "SanDiego": "LAC", "St.Louis": "LAR", "KCChiefs": "KC", "Kansas": "KC", "Tampa": "TB",
                    "BuffaloBills": "BUF"}
# City-only names shared by two franchises: resolved from the weather file's game on that date.
_SBR_NFL_AMBIGUOUS = {"NewYork": ("NYG", "NYJ"), "LosAngeles": ("LAR", "LAC")}
# Weather-file names that nfl_teams.csv (which stops at 2019 names) does not list.
_WEATHER_NFL_ALIASES = {"Las Vegas Raiders": "OAK", "Las Vegas": "OAK", "Washington Football Team": "WAS",
                        "Washington Commanders": "WAS", "New England": "NE", "Tampa Bay": "TB"}


@dataclass
class GameTable:
    games: pd.DataFrame
    rejected: pd.DataFrame
    info: dict = field(default_factory=dict)


def _season(date: pd.Series) -> pd.Series:
    return (date.dt.year - (date.dt.month < 8)).astype("int64")


def _reject(rejected: list[dict], mask: pd.Series, values: pd.Series, fieldname: str, reason: str) -> None:
    idx = np.flatnonzero(mask.to_numpy())
    rejected.extend({"row": int(i), "field": fieldname, "value": str(values.iat[i]), "reason": reason} for i in idx)


def _numeric(raw: pd.Series) -> pd.Series:
    return pd.to_numeric(raw, errors="coerce").astype(float)


def _build(sport: str, source: str, date_raw: pd.Series, date_format: str, home: pd.Series, away: pd.Series,
           home_score: pd.Series, away_score: pd.Series, home_ml: pd.Series, away_ml: pd.Series, venue_known: bool,
           home_spread=None, home_spread_open=None, total=None, total_open=None) -> GameTable:
    n = len(date_raw)
    rejected: list[dict] = []
    bad = np.zeros(n, dtype=bool)

    date = pd.to_datetime(date_raw, format=date_format, errors="coerce")
    _reject(rejected, date.isna(), date_raw, "date", f"not a date in format {date_format}")
    bad |= date.isna().to_numpy()
    for name, team in (("home", home), ("away", away)):
        stripped = team.fillna("").astype(str).str.strip()
        missing = (stripped == "") | stripped.str.fullmatch(r"\d+")
        _reject(rejected, missing, team, name, "team name missing or numeric")
        bad |= missing.to_numpy()
    same = home.astype(str) == away.astype(str)
    _reject(rejected, same, home, "away", "home and away are the same team")
    bad |= same.to_numpy()
    nums = {}
    for name, raw in (("home_score", home_score), ("away_score", away_score)):
        val = _numeric(raw)
        invalid = val.isna() | (val < 0)
        _reject(rejected, invalid, raw, name, "score missing, non-numeric or negative")
        bad |= invalid.to_numpy()
        nums[name] = val
    for name, raw in (("home_ml", home_ml), ("away_ml", away_ml)):
        val = _numeric(raw)
        invalid = ~pd.Series(is_valid_american(val.to_numpy()), index=val.index)
        _reject(rejected, invalid, raw, name, "American odds must be <= -100 or >= +100")
        bad |= invalid.to_numpy()
        nums[name] = val

    day = date.dt.strftime("%Y%m%d")
    game_id = sport + ":" + day.fillna("?") + ":" + home.astype(str) + ":" + away.astype(str)
    dup = pd.Series(game_id.where(~bad).duplicated().to_numpy() & ~bad, index=game_id.index)
    _reject(rejected, dup, game_id, "game_id", "duplicate game (same date and teams as an earlier row)")
    bad |= dup.to_numpy()

    keep = ~bad

    def extra(values) -> np.ndarray:
        if values is None:
            return np.full(int(keep.sum()), np.nan)
        return _numeric(pd.Series(values).reset_index(drop=True))[keep].to_numpy()

    hs, as_ = nums["home_score"][keep].to_numpy(), nums["away_score"][keep].to_numpy()
    hml, aml = nums["home_ml"][keep].to_numpy(), nums["away_ml"][keep].to_numpy()
    hdec, adec = np.asarray(american_to_decimal(hml), dtype=float), np.asarray(american_to_decimal(aml), dtype=float)
    market = remove_margin_multiplicative(1.0 / hdec, 1.0 / adec)[0] if len(hdec) else np.empty(0)
    kept_date = date[keep].dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    m = int(keep.sum())
    games = pd.DataFrame({
        "game_id": game_id[keep].to_numpy(dtype=object), "sport": sport, "date": kept_date.to_numpy(),
        "season": _season(kept_date).to_numpy(), "home": home[keep].astype(str).to_numpy(dtype=object),
        "away": away[keep].astype(str).to_numpy(dtype=object), "venue_known": np.full(m, venue_known),
        "home_score": hs, "away_score": as_, "home_win": np.where(hs == as_, np.nan, (hs > as_).astype(float)),
        "home_ml": hml, "away_ml": aml, "home_dec": hdec, "away_dec": adec,
        "home_ml_open": np.full(m, np.nan), "away_ml_open": np.full(m, np.nan), "market_prob_home": market,
        **{c: np.full(m, np.nan) for c in ("temperature_f", "wind_mph", "humidity_pct", "dome")},
        "home_spread": extra(home_spread), "home_spread_open": extra(home_spread_open),
        "total_line": extra(total), "total_line_open": extra(total_open), "precipitation": np.full(m, np.nan),
    })
    games["date"] = games["date"].astype("datetime64[ns, UTC]")
    games = games.sort_values(["date", "game_id"], kind="mergesort").reset_index(drop=True)
    rej = pd.DataFrame(rejected, columns=REJECTED_COLUMNS).sort_values(["row", "field"], kind="mergesort")
    info = {"sport": sport, "source": source, "rows_read": n, "games": len(games),
            "rows_rejected": int(bad.sum()), "problems": len(rej)}
    return GameTable(games, rej.reset_index(drop=True), info)


def read_games(path: str | Path) -> GameTable:
    """Detect the archive format by its columns (as edgeray.loaders.sports does) and build the game table."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path: no such file {path}")
    raw = pd.read_csv(path, dtype=str)
    cols = set(raw.columns)
    if {"top_team", "bottom_team", "top_ml_odds"} <= cols:  # NCAAM SBR: top = favourite, venue unknown
        return _build("ncaam", path.name, raw["game_datetime"], "%Y-%m-%d", raw["top_team"], raw["bottom_team"],
                      raw["top_final"], raw["bottom_final"], raw["top_ml_odds"], raw["bottom_ml_odds"], False,
                      home_spread=raw.get("top_spread"), total=raw.get("top_total"))
    if {"moneyline_home", "moneyline_away", "dates"} <= cols:  # NBA: spread is unsigned, whos_favored says who gives it
        spread = _numeric(raw["spread"]) if "spread" in cols else None
        if spread is not None and "whos_favored" in cols:
            spread = spread.where(raw["whos_favored"].str.strip().str.lower() != "home", -spread)
        return _build("nba", path.name, raw["dates"], "%m/%d/%Y", raw["home"], raw["away"], raw["score_home"],
                      raw["score_away"], raw["moneyline_home"], raw["moneyline_away"], True,
                      home_spread=spread, total=raw.get("total"))
    if {"home_close_ml", "away_close_ml", "date"} <= cols:  # NFL SBR: opening spread/total but no opening moneyline
        return _build("nfl", path.name, raw["date"], "%Y%m%d", raw["home_team"], raw["away_team"], raw["home_final"],
                      raw["away_final"], raw["home_close_ml"], raw["away_close_ml"], True,
                      home_spread=raw.get("home_close_spread"), home_spread_open=raw.get("home_open_spread"),
                      total=raw.get("close_over_under"), total_open=raw.get("open_over_under"))
    raise ValueError(f"path: {path.name} is not a known sports odds format (columns {sorted(cols)[:8]}...)")


def load_games(path: str | Path, errors: list | None = None) -> pd.DataFrame:
    """The game table of one archive file; rejected rows are appended to `errors` (dicts row/field/value/reason)."""
    table = read_games(path)
    if errors is not None:
        errors.extend(table.rejected.to_dict("records"))
    return table.games


# ---------------------------------------------------------------- NFL: team ids and weather


def _nfl_team_maps(data_dir: Path) -> tuple[dict, dict]:
    teams = pd.read_csv(data_dir / NFL_TEAMS_FILE)
    by_name = dict(zip(teams["team_name"], teams["team_id"]))
    shorts = teams.groupby("team_name_short")["team_id"].agg(lambda s: s.iloc[0] if s.nunique() == 1 else None)
    by_short = {k: v for k, v in shorts.items() if v is not None}
    return by_name, by_short


def _weather_team_id(names: pd.Series, by_name: dict) -> pd.Series:
    ids = names.map({**by_name, **_WEATHER_NFL_ALIASES})
    # A few entries carry trailing notes ("New York Jets (1p, "): match the longest listed name they start with.
    for name in sorted(by_name, key=len, reverse=True):
        hit = ids.isna() & names.str.startswith(name)
        ids = ids.where(~hit, by_name[name])
    return ids


def _dome(detail: pd.Series, stadium_type: pd.Series) -> np.ndarray:
    detail = detail.fillna("").str.lower()
    stype = stadium_type.fillna("").str.lower()
    # The game's own note wins (a retractable roof can be open or closed); else the stadium's fixed type.
    dome = np.select([detail.str.contains("indoor") | detail.str.contains("closed"), detail.str.contains("open roof"),
                      stype == "indoor", stype == "outdoor"], [1.0, 0.0, 1.0, 0.0], default=np.nan)
    return dome


def _attach_nfl_weather(table: GameTable, data_dir: Path) -> GameTable:
    games = table.games
    by_name, by_short = _nfl_team_maps(data_dir)
    sbr_ids = {**by_short, **_SBR_NFL_ALIASES}
    home_id, away_id = games["home"].map(sbr_ids), games["away"].map(sbr_ids)

    weather = pd.read_csv(data_dir / NFL_WEATHER_FILE, dtype={"weather_detail": str})
    weather["date"] = pd.to_datetime(weather["schedule_date"], format="%m/%d/%Y", errors="coerce").dt.tz_localize("UTC")
    lo, hi = games["date"].min(), games["date"].max()
    weather = weather[(weather["date"] >= lo) & (weather["date"] <= hi)].reset_index(drop=True)
    weather["home_id"] = _weather_team_id(weather["team_home"], by_name)
    weather["away_id"] = _weather_team_id(weather["team_away"], by_name)
    stadiums = pd.read_csv(data_dir / NFL_STADIUMS_FILE, encoding="latin-1")
    stype = weather["stadium"].map(dict(zip(stadiums["stadium_name"], stadiums["stadium_type"])))
    detail = weather["weather_detail"].fillna("").str.lower()
    known = weather["weather_temperature"].notna() | (detail != "")
    weather["dome"] = _dome(weather["weather_detail"], stype)
    # The detail column notes rain/snow when it fell; a game with recorded weather and no such note had none.
    wet = detail.str.contains("rain") | detail.str.contains("snow")
    weather["precipitation"] = np.where(wet, 1.0, np.where(known, 0.0, np.nan))
    weather.loc[weather["dome"] == 1.0, "precipitation"] = 0.0

    # (date, team) -> weather row; a team plays at most once a day, so either side of a game finds it.
    long = pd.concat([weather[["date", "home_id"]].rename(columns={"home_id": "team"}),
                      weather[["date", "away_id"]].rename(columns={"away_id": "team"})])
    long["widx"] = np.concatenate([np.arange(len(weather))] * 2)
    long = long.dropna(subset=["team"]).drop_duplicates(["date", "team"], keep=False)
    lookup = long.set_index(["date", "team"])["widx"]

    def find(ids: pd.Series) -> np.ndarray:
        key = pd.MultiIndex.from_arrays([games["date"], ids])
        return lookup.reindex(key).to_numpy(dtype=float)

    via_home, via_away = find(home_id), find(away_id)
    widx = np.where(np.isnan(via_home), via_away, via_home)
    conflict = ~np.isnan(via_home) & ~np.isnan(via_away) & (via_home != via_away)
    widx[conflict] = np.nan
    joined = ~np.isnan(widx)
    w = weather.reindex(np.where(joined, widx, -1).astype(int)).reset_index(drop=True)  # -1 -> all-NaN row

    # Fill city-only names ("NewYork") with the franchise the weather file shows opposite the known team.
    for side, ids, other in (("home", home_id, away_id), ("away", away_id, home_id)):
        raw = games[side]
        candidates = raw.map(_SBR_NFL_AMBIGUOUS)
        opposite = np.where(w["home_id"].to_numpy() == other.to_numpy(), w["away_id"], w["home_id"])
        resolved = pd.Series(opposite, index=games.index)
        ok = candidates.notna().to_numpy() & joined & np.array(
            [isinstance(c, tuple) and r in c for r, c in zip(resolved, candidates)], dtype=bool)
        ids = ids.where(~ok, resolved)
        games[side] = ids.fillna(raw)  # unmapped names stay as written rather than vanish

    games["temperature_f"] = _numeric(w["weather_temperature"]).to_numpy()
    games["wind_mph"] = _numeric(w["weather_wind_mph"]).to_numpy()
    games["humidity_pct"] = _numeric(w["weather_humidity"].astype(str).str.rstrip("%")).to_numpy()
    games["dome"] = w["dome"].to_numpy(dtype=float)
    games["precipitation"] = w["precipitation"].to_numpy(dtype=float)
    games["game_id"] = "nfl:" + games["date"].dt.strftime("%Y%m%d") + ":" + games["home"] + ":" + games["away"]
    games = games.sort_values(["date", "game_id"], kind="mergesort").reset_index(drop=True)
    rate = float(joined.mean()) if len(joined) else 0.0
    unmapped = sorted(set(games["home"][~games["home"].isin(weather["home_id"])]) |
                      set(games["away"][~games["away"].isin(weather["home_id"])]))
    info = {**table.info, "weather_join_rate": rate, "weather_joined": int(joined.sum()), "weather_conflicts":
            int(conflict.sum()), "unmapped_teams": unmapped}
    log.info("nfl weather join: %d of %d games (%.1f%%)", joined.sum(), len(joined), 100 * rate)
    return GameTable(games, table.rejected, info)


def read_sport(sport: str, data_dir: str | Path) -> GameTable:
    """The game table for one sport from its archive in data_dir; NFL gets weather, dome and team ids."""
    key = str(sport).strip().lower()
    if key not in SPORTS:
        raise ValueError(f"sport: unknown sport {sport!r}; expected one of {list(SPORTS)}")
    data_dir = Path(data_dir)
    path = data_dir / SPORT_FILES[key]
    if not path.exists():
        raise FileNotFoundError(f"data_dir: {path} not found for sport {key!r}")
    table = read_games(path)
    if key == "nfl" and all((data_dir / f).exists() for f in (NFL_WEATHER_FILE, NFL_STADIUMS_FILE, NFL_TEAMS_FILE)):
        table = _attach_nfl_weather(table, data_dir)
    elif key == "nfl":
        table.info["weather_join_rate"] = 0.0
        log.warning("nfl weather files absent from %s: weather columns are NaN", data_dir)
    return table


def load_sport(sport: str, data_dir: str | Path, errors: list | None = None) -> pd.DataFrame:
    """The game table for one sport; rejected rows are appended to `errors` when given."""
    table = read_sport(sport, data_dir)
    if errors is not None:
        errors.extend(table.rejected.to_dict("records"))
    return table.games
