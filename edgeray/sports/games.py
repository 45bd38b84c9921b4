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

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from edgeray.loaders.csvfile import read_lines
from edgeray.odds import american_to_decimal, is_valid_american, remove_margin_multiplicative
from edgeray.sports.formats import (EXPECTED_HINT, FORMATS, SPORTS, TEXT_FIELDS, SportFormat, SportsFormatError,
                                    canonical_sport, detect, read_header, season_of)

log = logging.getLogger(__name__)

NFL_WEATHER_FILE, NFL_STADIUMS_FILE, NFL_TEAMS_FILE = ("nfl_scores_weather_1966_2025.csv", "nfl_stadiums.csv",
                                                       "nfl_teams.csv")
GAME_COLUMNS = ["game_id", "sport", "date", "season", "home", "away", "venue_known", "home_score", "away_score",
                "home_win", "home_ml", "away_ml", "home_dec", "away_dec", "home_ml_open", "away_ml_open",
                "market_prob_home", "temperature_f", "wind_mph", "humidity_pct", "dome"]
# Opening prices beside the closing ones (NaN where the archive has no opening line): decimal odds and the
# margin-free (multiplicative) opening probability, as home_dec/away_dec/market_prob_home are for the close.
OPEN_COLUMNS = ["home_dec_open", "away_dec_open", "market_prob_home_open"]
EXTRA_COLUMNS = [*OPEN_COLUMNS, "home_spread", "home_spread_open", "total_line", "total_line_open", "precipitation", *TEXT_FIELDS]
REJECTED_COLUMNS = ["row", "field", "value", "reason", "file"]
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


def _reject(rejected: list[dict], mask: pd.Series, values: pd.Series, fieldname: str, reason: str) -> None:
    idx = np.flatnonzero(mask.to_numpy())
    rejected.extend({"row": int(i), "field": fieldname, "value": str(values.iat[i]), "reason": reason} for i in idx)


def _numeric(raw: pd.Series) -> pd.Series:
    return pd.to_numeric(raw, errors="coerce").astype(float)


def _text(raw: pd.Series) -> pd.Series:
    """Stripped text; blanks become None."""
    text = raw.astype("string").str.strip()
    return text.where(text.notna() & (text != ""), None).astype(object)


def _flag(raw: pd.Series | None, n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool) if raw is None else (_numeric(raw).fillna(0).to_numpy() == 1)


def _team_names(sport: str, team: pd.Series) -> pd.Series:
    names = team.fillna("").astype(str).str.strip()
    # College football archives spell one team "GeorgiaState" and "Georgia State": one key for both.
    return names.str.replace(r"\s+", "", regex=True) if sport == "ncaaf" else names


def _parse_dates(raw: pd.Series, date_format: str | None) -> pd.Series:
    if date_format is not None:
        return pd.to_datetime(raw, format=date_format, errors="coerce")
    # ISO text of any precision; a kick-off time is dropped, as the archives give dates only.
    ts = pd.to_datetime(raw, format="ISO8601", errors="coerce", utc=True)
    return ts.dt.tz_convert(None).dt.floor("D")


def _decimal_or_nan(american: np.ndarray) -> np.ndarray:
    ok = is_valid_american(american)
    out = np.full(len(american), np.nan)
    if ok.any():
        out[ok] = american_to_decimal(american[ok])
    return out


def format_fields(fmt: SportFormat, raw: pd.DataFrame) -> dict[str, pd.Series]:
    """The game-table fields of a raw (all-text) frame in layout `fmt`, as raw text, 0-based index."""
    cols = {f: raw[c].reset_index(drop=True) for f, c in fmt.fields.items()}
    cols.update({f: raw[c].reset_index(drop=True) for f, c in fmt.optional.items() if c in raw.columns})
    if fmt.derive is not None:
        cols.update({f: v.reset_index(drop=True) for f, v in fmt.derive(raw).items()})
    return cols


def game_identity(sport: str, fmt: SportFormat, cols: Mapping[str, pd.Series]):
    """(date, home, away, game_id) of each row: the one spelling of a game's id, for tables and for events."""
    date = _parse_dates(cols["date"], fmt.date_format)
    home, away = _team_names(sport, cols["home"]), _team_names(sport, cols["away"])
    n = len(date)
    game_no = _numeric(cols["game_no"]).fillna(1.0) if "game_no" in cols else pd.Series(np.ones(n))
    # A doubleheader's second game (same date and teams) keeps its own id instead of reading as a duplicate.
    suffix = np.where(game_no.to_numpy() > 1, ":g" + game_no.astype(int).astype(str), "")
    game_id = sport + ":" + date.dt.strftime("%Y%m%d").fillna("?") + ":" + home + ":" + away + suffix
    return date, home, away, game_id


def _build(fmt: SportFormat, sport: str, raw: pd.DataFrame, source: str) -> GameTable:
    """The game table of one file in a declared layout; every problem row is one `rejected` row."""
    cols = format_fields(fmt, raw)
    n = len(raw)
    rejected: list[dict] = []
    bad = np.zeros(n, dtype=bool)

    date_raw = cols["date"]
    date, home, away, game_id = game_identity(sport, fmt, cols)
    _reject(rejected, date.isna(), date_raw, "date", f"not a date in format {fmt.date_format or 'ISO 8601'}")
    bad |= date.isna().to_numpy()
    for name, team in (("home", home), ("away", away)):
        missing = (team == "") | team.str.fullmatch(r"\d+")
        _reject(rejected, missing, cols[name], name, "team name missing or numeric")
        bad |= missing.to_numpy()
    same = (home == away) & (home != "")
    _reject(rejected, same, home, "away", "home and away are the same team")
    bad |= same.to_numpy()
    nums = {}
    for name in ("home_score", "away_score"):
        val = _numeric(cols[name])
        invalid = val.isna() | (val < 0)
        _reject(rejected, invalid, cols[name], name, "score missing, non-numeric or negative")
        bad |= invalid.to_numpy()
        nums[name] = val
    for name in ("home_ml", "away_ml"):
        val = _numeric(cols[name])
        absent = val.isna()
        _reject(rejected, absent, cols[name], name, "moneyline missing")
        invalid = ~absent & ~pd.Series(is_valid_american(val.to_numpy()), index=val.index)
        _reject(rejected, invalid, cols[name], name, "American odds must be <= -100 or >= +100")
        bad |= (absent | invalid).to_numpy()
        nums[name] = val
    suspect = _flag(cols.get("ml_suspect"), n)
    _reject(rejected, pd.Series(suspect & ~bad), cols["home_ml"], "home_ml", "the source flags this closing moneyline as suspect")
    bad |= suspect

    dup = pd.Series(game_id.where(~bad).duplicated().to_numpy() & ~bad, index=game_id.index)
    _reject(rejected, dup, game_id, "game_id", "duplicate game (same date and teams as an earlier row)")
    bad |= dup.to_numpy()

    keep = ~bad
    m = int(keep.sum())

    def extra(name: str) -> np.ndarray:
        return _numeric(cols[name])[keep].to_numpy() if name in cols else np.full(m, np.nan)

    open_suspect = _flag(cols.get("ml_open_suspect"), n)[keep]

    def american(name: str) -> np.ndarray:  # an opening price that is no valid (or is a flagged) price is unknown
        v = extra(name)
        return np.where(is_valid_american(v) & ~open_suspect, v, np.nan)

    hs, as_ = nums["home_score"][keep].to_numpy(), nums["away_score"][keep].to_numpy()
    hml, aml = nums["home_ml"][keep].to_numpy(), nums["away_ml"][keep].to_numpy()
    hdec, adec = np.asarray(american_to_decimal(hml), dtype=float), np.asarray(american_to_decimal(aml), dtype=float)
    market = remove_margin_multiplicative(1.0 / hdec, 1.0 / adec)[0] if len(hdec) else np.empty(0)
    hml_o, aml_o = american("home_ml_open"), american("away_ml_open")
    both_open = np.isfinite(hml_o) & np.isfinite(aml_o)  # one side's opener alone is no book
    hml_o, aml_o = np.where(both_open, hml_o, np.nan), np.where(both_open, aml_o, np.nan)
    hdec_o, adec_o = _decimal_or_nan(hml_o), _decimal_or_nan(aml_o)
    market_o = remove_margin_multiplicative(1.0 / hdec_o, 1.0 / adec_o)[0] if len(hdec_o) else np.empty(0)
    kept_date = date[keep].dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    undecided = _flag(cols.get("undecided"), n)[keep] | (hs == as_)  # ties and suspended games have no winner
    venue = np.full(m, fmt.venue_known) & ~_flag(cols.get("neutral"), n)[keep]
    games = pd.DataFrame({
        "game_id": game_id[keep].to_numpy(dtype=object), "sport": sport, "date": kept_date.to_numpy(),
        "season": season_of(sport, kept_date).to_numpy(), "home": home[keep].to_numpy(dtype=object),
        "away": away[keep].to_numpy(dtype=object), "venue_known": venue,
        "home_score": hs, "away_score": as_, "home_win": np.where(undecided, np.nan, (hs > as_).astype(float)),
        "home_ml": hml, "away_ml": aml, "home_dec": hdec, "away_dec": adec,
        "home_ml_open": hml_o, "away_ml_open": aml_o, "market_prob_home": market,
        **{c: np.full(m, np.nan) for c in ("temperature_f", "wind_mph", "humidity_pct", "dome")},
        "home_dec_open": hdec_o, "away_dec_open": adec_o, "market_prob_home_open": market_o,
        "home_spread": extra("home_spread"), "home_spread_open": extra("home_spread_open"),
        "total_line": extra("total"), "total_line_open": extra("total_open"), "precipitation": np.full(m, np.nan),
        **{f: (_text(cols[f])[keep].to_numpy(dtype=object) if f in cols else np.full(m, None, dtype=object))
           for f in TEXT_FIELDS},
    })
    games["date"] = games["date"].astype("datetime64[ns, UTC]")
    games = games.sort_values(["date", "game_id"], kind="mergesort").reset_index(drop=True)
    rej = pd.DataFrame(rejected, columns=REJECTED_COLUMNS[:4])
    lines = raw.attrs.get("file_lines")
    if lines:  # rows of the parsed frame -> data rows of the file (unreadable lines were taken out)
        rej["row"] = np.asarray(lines, dtype=np.int64)[rej["row"].to_numpy(dtype=np.int64)] - 2
    unreadable = raw.attrs.get("bad_lines") or []
    rej = pd.concat([rej, pd.DataFrame({"row": [b["line"] - 2 for b in unreadable],
                                        "field": [f"line {b['line']}" for b in unreadable],
                                        "value": [b["raw"][:200] for b in unreadable],
                                        "reason": [f"unreadable line: {b['reason']}" for b in unreadable]})],
                    ignore_index=True).sort_values(["row", "field"], kind="mergesort")
    rej["file"] = source
    info = {"sport": sport, "source": source, "format": fmt.name, "rows_read": n + len(unreadable),
            "games": len(games), "rows_rejected": int(bad.sum()) + len(unreadable), "problems": len(rej)}
    return GameTable(games, rej.reset_index(drop=True), info)


def read_games(path: str | Path, *, sport: str | None = None, fmt: str | None = None,
               columns: Mapping[str, str] | None = None) -> GameTable:
    """The game table of one archive file. Its layout is `fmt` or detected from the header (edgeray.sports.formats);
    `sport`, when given, must agree with it; `columns` renames file columns first (FILE_COLUMN -> COLUMN)."""
    spec, sport, raw = read_archive(path, sport=sport, fmt=fmt, columns=columns)
    return _build(spec, sport, raw, Path(path).name)


def read_archive(path: str | Path, *, sport: str | None = None, fmt: str | None = None,
                 columns: Mapping[str, str] | None = None) -> tuple[SportFormat, str, pd.DataFrame]:
    """(format, sport, the file as text columns) of one sports archive, its layout declared or detected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {path}")
    header = [(columns or {}).get(c, c) for c in read_header(path)]
    spec = detect(header, sport=sport, fmt=fmt, where=path.name)
    # Lines that cannot be read (wrong field count, bytes that are not UTF-8) are kept out and reported with
    # their line number; the good rows go on (edgeray.loaders.csvfile, as for market files).
    text = read_lines(path, expected=f"the {spec.name} columns: {', '.join(sorted(spec.columns))}")
    try:
        raw = pd.read_csv(io.StringIO(text.text), dtype=str)
    except pd.errors.ParserError as exc:
        raise SportsFormatError(f"{path.name}: cannot be read as CSV ({exc})") from None
    if columns:
        raw = raw.rename(columns=dict(columns))
    raw.attrs.update({"file_lines": text.good_lines, "bad_lines": text.bad})
    return spec, spec.sport or canonical_sport(sport), raw


def load_games(path: str | Path, errors: list | None = None, **kwargs) -> pd.DataFrame:
    """The game table of one archive file (read_games' keywords); rejected rows are appended to `errors`
    (dicts row/field/value/reason/file)."""
    table = read_games(path, **kwargs)
    if errors is not None:
        errors.extend(table.rejected.to_dict("records"))
    return table.games


# ---------------------------------------------------------------- NFL: team ids and weather


def _nfl_team_maps(teams_file: Path) -> tuple[dict, dict]:
    teams = pd.read_csv(teams_file)
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


def _attach_nfl_weather(table: GameTable, files: Mapping[str, Path]) -> GameTable:
    games = table.games
    by_name, by_short = _nfl_team_maps(files[NFL_TEAMS_FILE])
    sbr_ids = {**by_short, **_SBR_NFL_ALIASES}
    home_id, away_id = games["home"].map(sbr_ids), games["away"].map(sbr_ids)

    weather = pd.read_csv(files[NFL_WEATHER_FILE], dtype={"weather_detail": str})
    weather["date"] = pd.to_datetime(weather["schedule_date"], format="%m/%d/%Y", errors="coerce").dt.tz_localize("UTC")
    lo, hi = games["date"].min(), games["date"].max()
    weather = weather[(weather["date"] >= lo) & (weather["date"] <= hi)].reset_index(drop=True)
    weather["home_id"] = _weather_team_id(weather["team_home"], by_name)
    weather["away_id"] = _weather_team_id(weather["team_away"], by_name)
    stadiums = pd.read_csv(files[NFL_STADIUMS_FILE], encoding="latin-1")
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


@dataclass(frozen=True)
class SportsFile:
    """One declared sports source (`sports.sources` in the pipeline config)."""
    sport: str
    path: str
    format: str = "auto"
    columns: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SportsData:
    """Where the sports archives are: files declared per sport, else every fitting CSV in data_dir."""
    data_dir: str | None = None
    sources: tuple[SportsFile | Mapping, ...] = ()


# The NFL weather join's companion files, recognised by their headers (any file name) in the data folder.
_NFL_COMPANIONS = {NFL_WEATHER_FILE: {"schedule_date", "team_home", "team_away", "weather_temperature"},
                   NFL_STADIUMS_FILE: {"stadium_name", "stadium_type"},
                   NFL_TEAMS_FILE: {"team_name", "team_name_short", "team_id"}}


def _csv_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv")


def find_sport_files(sport: str, data_dir: str | Path) -> list[SportsFile]:
    """Every CSV in data_dir whose header fits one of the sport's formats, whatever its name."""
    sport = canonical_sport(sport)
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"data_dir: {folder} is not a folder")
    found = []
    for path in _csv_files(folder):
        try:
            fmt = detect(read_header(path), where=path.name)
        except SportsFormatError:
            continue  # another kind of file (weather, teams, a market file): not this sport's archive
        if fmt.sport == sport:
            found.append(SportsFile(sport, str(path), fmt.name))
    return found


def _companion(data_dir: Path, name: str) -> Path | None:
    if (data_dir / name).is_file():
        return data_dir / name
    wanted = _NFL_COMPANIONS[name]
    for path in _csv_files(data_dir):
        try:
            if wanted <= set(read_header(path)):
                return path
        except SportsFormatError:
            continue
    return None


BOX_SCORES = "box_scores"  # a sports source of this format adds per-game stats to its sport's game table


def attach_box_scores(table: GameTable, source: SportsFile) -> GameTable:
    """Join a box-score file onto the game table: columns date (ISO), home, away, and any pairs
    home_<stat>/away_<stat> of numbers (rebounds, fg_pct, yards, turnovers, sacks, era, whip, ops, ...);
    game_no tells a doubleheader's games apart. The stats become point-in-time rolling features
    (edgeray.sports.features); games without a box score keep NaN."""
    path = Path(source.path)
    if not path.is_file():
        raise FileNotFoundError(f"sports.sources: box-score file {path} not found")
    raw = pd.read_csv(path, dtype=str, encoding="utf-8-sig").rename(columns=dict(source.columns))
    missing = [c for c in ("date", "home", "away") if c not in raw.columns]
    stats = sorted(c[5:] for c in raw.columns if c.startswith("home_") and f"away_{c[5:]}" in raw.columns)
    if missing or not stats:
        raise SportsFormatError(f"{path.name}: a box-score file needs date, home, away and home_<stat>/away_<stat> "
                                f"pairs; missing {missing or 'any stat pair'}; found {sorted(raw.columns)[:20]}")
    spec = FORMATS["generic"]
    cols = {"date": raw["date"], "home": raw["home"], "away": raw["away"]}
    if "game_no" in raw.columns:
        cols["game_no"] = raw["game_no"]
    _, _, _, game_id = game_identity(table.info["sport"], spec, cols)
    stat_frame = pd.DataFrame({f"box_{side}_{stat}": _numeric(raw[f"{side}_{stat}"]).to_numpy()
                               for stat in stats for side in ("home", "away")})
    stat_frame["game_id"] = game_id.to_numpy()
    stat_frame = stat_frame.drop_duplicates("game_id", keep="first")
    games = table.games.drop(columns=[c for c in stat_frame.columns if c != "game_id" and c in table.games.columns])
    games = games.merge(stat_frame, on="game_id", how="left", validate="one_to_one")
    joined = int(games["game_id"].isin(stat_frame["game_id"]).sum())
    info = {**table.info, "box_score_stats": stats, "box_scores_joined": joined,
            "box_scores_unmatched": int(len(stat_frame) - joined)}
    return GameTable(games, table.rejected, info)


def declared_box_score_stats(sources: Sequence[SportsFile | Mapping], sport: str) -> list[str]:
    """The stats the declared box-score files of `sport` carry, read from their headers."""
    key = canonical_sport(sport)
    stats: set[str] = set()
    for src in sources or []:
        f = src if isinstance(src, SportsFile) else SportsFile(**src)
        if f.format == BOX_SCORES and canonical_sport(f.sport) == key and Path(f.path).is_file():
            cols = [dict(f.columns).get(c, c) for c in read_header(Path(f.path))]
            stats |= {c[5:] for c in cols if c.startswith("home_") and f"away_{c[5:]}" in cols}
    return sorted(stats)


def _concat(tables: Sequence[GameTable], sport: str) -> GameTable:
    """One table from several files of a sport; a game in two files is kept once (the first file's)."""
    if len(tables) == 1:
        return tables[0]
    games = pd.concat([t.games for t in tables], ignore_index=True)
    rejected = [t.rejected for t in tables]
    dup = games["game_id"].duplicated().to_numpy()
    if dup.any():
        rejected.append(pd.DataFrame({"row": -1, "field": "game_id", "value": games.loc[dup, "game_id"].to_numpy(),
                                      "reason": "game also in an earlier file", "file": "(several files)"}))
    games = games.loc[~dup].sort_values(["date", "game_id"], kind="mergesort").reset_index(drop=True)
    info = {"sport": sport, "source": [t.info["source"] for t in tables], "format": [t.info["format"] for t in tables],
            "rows_read": sum(t.info["rows_read"] for t in tables), "games": len(games),
            "rows_rejected": sum(t.info["rows_rejected"] for t in tables) + int(dup.sum()),
            "problems": sum(t.info["problems"] for t in tables) + int(dup.sum())}
    return GameTable(games, pd.concat(rejected, ignore_index=True), info)


def read_sport(sport: str, data_dir: str | Path | SportsData | None = None,
               sources: Sequence[SportsFile | Mapping] | None = None) -> GameTable:
    """The game table for one sport: from the sources declared for it, else from every file in data_dir
    (a folder, or one file) that fits one of its formats. NFL gets weather, dome and team ids when the
    weather files are beside its archive."""
    key = canonical_sport(sport)
    if isinstance(data_dir, SportsData):
        sources, data_dir = [*data_dir.sources, *(sources or [])], data_dir.data_dir
    files = [s if isinstance(s, SportsFile) else SportsFile(**s) for s in (sources or [])]
    files = [f for f in files if canonical_sport(f.sport) == key]
    if not files:
        if data_dir is None:
            raise ValueError(f"sports.sources: none declared for {key!r} and no data_dir to search")
        target = Path(data_dir)
        if target.is_file():
            files = [SportsFile(key, str(target))]
        elif not target.exists():
            raise FileNotFoundError(f"data_dir: {target} not found for sport {key!r}")
        else:
            files = find_sport_files(key, target)
            if not files:
                raise FileNotFoundError(
                    f"data_dir: no {key} archive in {target} (no CSV there fits a {key} format: "
                    f"{[f.name for f in FORMATS.values() if f.sport == key]}); {EXPECTED_HINT}")
    boxes = [f for f in files if f.format == BOX_SCORES]
    files = [f for f in files if f.format != BOX_SCORES]
    if not files:
        raise ValueError(f"sports.sources: {key} has box scores declared but no game archive")
    tables = [read_games(f.path, sport=key, fmt=f.format, columns=f.columns) for f in files]
    table = _concat(tables, key)
    for box in boxes:
        table = attach_box_scores(table, box)
    if key == "nfl":
        folder = Path(files[0].path).parent
        found = {name: _companion(folder, name) for name in _NFL_COMPANIONS}
        if all(found.values()):
            table = _attach_nfl_weather(table, found)
        else:
            table.info["weather_join_rate"] = 0.0
            log.warning("nfl weather files absent from %s: weather columns are NaN", folder)
    return table


def load_sport(sport: str, data_dir: str | Path | SportsData | None = None, errors: list | None = None,
               sources: Sequence[SportsFile | Mapping] | None = None) -> pd.DataFrame:
    """The game table for one sport; rejected rows are appended to `errors` when given."""
    table = read_sport(sport, data_dir, sources)
    if errors is not None:
        errors.extend(table.rejected.to_dict("records"))
    return table.games
