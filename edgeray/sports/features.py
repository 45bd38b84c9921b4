"""Point-in-time sports features on the game table.

A game's features use only games on strictly earlier dates: same-day games never see each other's results.
Everything runs on a team-long "appearance" table (two rows per game), collapsed to one row per (team, date),
sorted by team then date; window sums come from cumulative sums differenced at the window edges. This is the
job of pandas groupby().rolling(), hand-written with numpy because that is ~50x faster at 80k rows and lets
windows be counted in earlier dates (so a team's second game on a day never sees its first).

Columns added (all float, NaN where there is no history yet; models impute from their training rows):
team features for each side (f_home_*, f_away_*) and their difference (f_diff_*), game-level market features,
and for sports whose config says so, weather. FEATURE_GROUPS names the groups for the default config.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_CONFIG: dict = {
    "windows": [5, 10],            # rolling windows, in a team's previous game days
    "long_window": 10,             # window for pace, rating and strength of schedule
    "league_window_days": 365,     # league scoring average over this many days before the game (scoring drifts)
    "split_window_days": 365,      # home/away split and opponent-strength win rates over this many days
    "rest_cap_days": 30,           # off-season gaps read as "fully rested" rather than as outliers
    "weather": None,               # None: on for nfl, off otherwise
    "line_moves": None,            # None: on where the source has opening lines (nfl spread/total)
    "ml_moves": False,             # moneyline open->close move (needs the close: only with market_at "close")
    # Which line the market features read: "close" (the default; a bet placed at the closing price knows it) or
    # "open" (a bet placed at the open must not see the close: the same f_ names read the opening line, and the
    # open->close moves, which need the close, are left out).
    "market_at": "close",
}
MARKET_AT = ("close", "open")
_WEATHER_SPORTS = {"nfl"}
_LINE_MOVE_SPORTS = {"nfl"}
REQUIRED = ["game_id", "sport", "date", "season", "home", "away", "home_score", "away_score", "home_win",
            "home_dec", "away_dec", "market_prob_home"]
WEATHER_SOURCE = {"f_temperature_f": "temperature_f", "f_wind_mph": "wind_mph", "f_humidity_pct": "humidity_pct",
                  "f_dome": "dome", "f_precipitation": "precipitation"}


def _team_features(cfg: dict) -> dict[str, list[str]]:
    w, lw = cfg["windows"], cfg["long_window"]
    return {
        "scoring": [f"pf_{k}" for k in w] + [f"pa_{k}" for k in w],
        "pace": [f"pace_{lw}"],
        "rating": [f"ortg_{lw}", f"drtg_{lw}"],
        "form": [f"win_rate_{k}" for k in w] + ["win_rate_season", "streak", "games_season"],
        "rest": ["rest_days"],
        "schedule": [f"sos_{lw}"],
    }


def feature_groups(config: dict | None = None, sport: str | None = None) -> dict[str, list[str]]:
    """Feature names by group for a config (and sport, which decides weather and line moves)."""
    cfg = _config(config)
    groups = {g: [f"f_{side}_{n}" for n in names for side in ("home", "away", "diff")]
              for g, names in _team_features(cfg).items()}
    groups["rating"].append("f_league_points")
    groups["splits"] = ["f_home_home_win_rate", "f_away_away_win_rate", "f_diff_venue_win_rate"]
    groups["market"] = ["f_market_prob_home", "f_market_overround", "f_home_spread", "f_total_line"]
    line_moves = cfg["line_moves"] if cfg["line_moves"] is not None else (sport is None or sport in _LINE_MOVE_SPORTS)
    at_open = cfg["market_at"] == "open"
    if line_moves and not at_open:
        groups["market"] += ["f_spread_move", "f_total_move"]
    if cfg["ml_moves"] and not at_open:
        groups["market"].append("f_line_move_prob")
    if sport in ("mlb", None):
        groups["pitching"] = [f"f_{side}_sp_{n}" for n in ("ra_5", "ra_season", "rest_days", "starts_season")
                              for side in ("home", "away", "diff")]
        groups["park"] = ["f_park_runs_factor"]
    if sport in ("ncaaf", None):
        groups["conference"] = [f"f_{side}_{n}" for n in ("fbs", "conf_strength") for side in ("home", "away", "diff")]
    weather = cfg["weather"] if cfg["weather"] is not None else (sport is None or sport in _WEATHER_SPORTS)
    if weather:
        groups["weather"] = list(WEATHER_SOURCE)
    return groups


def _config(config: dict | None) -> dict:
    cfg = dict(DEFAULT_CONFIG)
    for key, value in (config or {}).items():
        if key not in DEFAULT_CONFIG:
            raise ValueError(f"config.{key}: unknown feature option {key!r}; known: {sorted(DEFAULT_CONFIG)}")
        cfg[key] = value
    windows = cfg["windows"]
    if not isinstance(windows, (list, tuple)) or not windows or not all(isinstance(k, int) and k >= 1 for k in windows):
        raise ValueError(f"config.windows: expected a non-empty list of integers >= 1, got {windows!r}")
    cfg["windows"] = sorted(set(windows))
    for key in ("long_window", "league_window_days", "split_window_days", "rest_cap_days"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"config.{key}: expected an integer >= 1, got {cfg[key]!r}")
    for key in ("weather", "line_moves", "ml_moves"):
        if cfg[key] not in (None, True, False):
            raise ValueError(f"config.{key}: expected true, false or null, got {cfg[key]!r}")
    if cfg["market_at"] not in MARKET_AT:
        raise ValueError(f"config.market_at: expected one of {list(MARKET_AT)}, got {cfg['market_at']!r}")
    return cfg


FEATURE_GROUPS: dict[str, list[str]] = feature_groups()


def _sorted_windows(key: np.ndarray, day: np.ndarray, values: np.ndarray, window_days: int | None, k: int | None):
    """Per row: (sum, count) of `values` over earlier rows of the same key, on strictly earlier days, within
    `window_days` days or the last `k` such rows. Rows are any order; NaN values are left out."""
    order = np.lexsort((day, key))
    ks, ds, vs = key[order], day[order], values[order]
    have = np.isfinite(vs)
    ps, pc = _padded_cumsum(np.where(have, vs, 0.0)), _padded_cumsum(have.astype(float))
    big = int(ds.max() - ds.min()) + (window_days or 0) + 2 if len(ds) else 1
    composite = ks.astype(np.int64) * big + (ds - (ds.min() if len(ds) else 0))
    end = np.searchsorted(composite, composite, side="left")            # first row of this key on this day
    if window_days is not None:
        start = np.searchsorted(composite, composite - window_days, side="left")
    else:
        key_start = np.searchsorted(ks, ks, side="left")
        start = np.maximum(end - k, key_start)
    out_s, out_c = np.empty(len(order)), np.empty(len(order))
    out_s[order], out_c[order] = ps[end] - ps[start], pc[end] - pc[start]
    return out_s, out_c


def _sides(games: pd.DataFrame, home: str, away: str) -> np.ndarray:
    return np.concatenate([games[home].to_numpy(object), games[away].to_numpy(object)])


def _starter_features(games: pd.DataFrame, day_g: np.ndarray, cfg: dict) -> dict[str, np.ndarray]:
    """Each starting pitcher's runs allowed per start over his previous 5 starts and this season, his days
    since the last start and his starts this season; earlier days only."""
    if "home_starter" not in games.columns or games["home_starter"].isna().all():
        return {}
    n = len(games)
    names = _sides(games, "home_starter", "away_starter")
    known = pd.notna(names)
    pitcher = pd.factorize(np.where(known, names, "?"))[0]
    day = np.concatenate([day_g, day_g])
    season = np.concatenate([games["season"].to_numpy(np.int64)] * 2)
    allowed = np.concatenate([games["away_score"].to_numpy(float), games["home_score"].to_numpy(float)])
    s5, c5 = _sorted_windows(pitcher, day, allowed, None, 5)
    ps_key = pitcher.astype(np.int64) * 10_000 + season
    ss, cs = _sorted_windows(ps_key, day, allowed, 366, None)
    # Days since the previous start: the latest earlier day of the same pitcher.
    order = np.lexsort((day, pitcher))
    ps_, ds_ = pitcher[order], day[order]
    prev_day = np.full(len(order), np.nan)
    same = np.r_[False, ps_[1:] == ps_[:-1]]
    last = np.where(same, np.r_[np.nan, ds_[:-1].astype(float)], np.nan)
    # Carry the last *earlier* day over any same-day repeat (a pitcher does not start twice a day, but a
    # data error must not leak a same-day result).
    prev_day[order] = np.where(last == ds_, np.nan, last)
    rest = np.minimum(day - prev_day, cfg["rest_cap_days"])
    feats = {"ra_5": _div(s5, c5), "ra_season": _div(ss, cs), "rest_days": rest, "starts_season": cs}
    out = {}
    for name, v in feats.items():
        v = np.where(known, v, np.nan)
        out[f"f_home_sp_{name}"], out[f"f_away_sp_{name}"] = v[:n], v[n:]
        out[f"f_diff_sp_{name}"] = v[:n] - v[n:]
    return out


def _park_features(games: pd.DataFrame, day_g: np.ndarray, league_g: np.ndarray, cfg: dict) -> dict[str, np.ndarray]:
    """Baseball parks: runs per game at the home team's park over the trailing window of days, relative to
    the league's runs per game (1.0 = neutral)."""
    if not len(games) or games["sport"].iloc[0] != "mlb":
        return {}
    park = pd.factorize(games["home"].to_numpy(object))[0]
    runs = games["home_score"].to_numpy(float) + games["away_score"].to_numpy(float)
    s, c = _sorted_windows(park, day_g, runs, cfg["league_window_days"], None)
    return {"f_park_runs_factor": _div(s, c) / (2.0 * league_g)}


def _conference_features(games: pd.DataFrame, day_g: np.ndarray, cfg: dict) -> dict[str, np.ndarray]:
    """College football: FBS (1) or FCS (0), and each side's conference win rate in games against other
    conferences over the trailing window of days (where the archive names conferences)."""
    if "home_division" not in games.columns or games["home_division"].isna().all():
        return {}
    n = len(games)
    division = pd.Series(_sides(games, "home_division", "away_division")).str.lower()
    fbs = np.where(division == "fbs", 1.0, np.where(division == "fcs", 0.0, np.nan))
    conf = _sides(games, "home_conf", "away_conf")
    known = pd.notna(conf)
    code = pd.factorize(np.where(known, conf, "?"))[0]
    opp = np.concatenate([code[n:], code[:n]])
    hs, as_ = games["home_score"].to_numpy(float), games["away_score"].to_numpy(float)
    win = np.concatenate([np.where(hs > as_, 1.0, np.where(hs < as_, 0.0, 0.5)),
                          np.where(as_ > hs, 1.0, np.where(as_ < hs, 0.0, 0.5))])
    cross = known & np.concatenate([known[n:], known[:n]]) & (code != opp)
    day = np.concatenate([day_g, day_g])
    s, c = _sorted_windows(code, day, np.where(cross, win, np.nan), cfg["split_window_days"], None)
    strength = np.where(known, _div(s, c), np.nan)
    out = {}
    for name, v in (("fbs", fbs), ("conf_strength", strength)):
        out[f"f_home_{name}"], out[f"f_away_{name}"], out[f"f_diff_{name}"] = v[:n], v[n:], v[:n] - v[n:]
    return out


def box_score_stats(games: pd.DataFrame) -> list[str]:
    """The stats of a plugged-in box-score source (columns box_home_<stat> with a box_away_<stat> twin)."""
    return sorted(c[len("box_home_"):] for c in games.columns
                  if c.startswith("box_home_") and f"box_away_{c[len('box_home_'):]}" in games.columns)


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("f_")]


def _padded_cumsum(x: np.ndarray) -> np.ndarray:
    out = np.zeros(len(x) + 1)
    np.cumsum(x, out=out[1:])
    return out


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _validate(games: pd.DataFrame) -> None:
    if not isinstance(games, pd.DataFrame):
        raise ValueError(f"games: expected a DataFrame, got {type(games).__name__}")
    missing = [c for c in REQUIRED if c not in games.columns]
    if missing:
        raise ValueError(f"games: missing columns {missing}")
    if games["date"].isna().any():
        raise ValueError(f"games.date: {int(games['date'].isna().sum())} missing dates")
    for col in ("home_score", "away_score"):
        bad = ~np.isfinite(games[col].to_numpy(dtype=float))
        if bad.any():
            raise ValueError(f"games.{col}: non-finite scores, e.g. {games[col][bad].head(3).tolist()} "
                             f"(game_id {games['game_id'][bad].head(3).tolist()})")


def build_features(games: pd.DataFrame, config: dict | None = None) -> pd.DataFrame:
    """The game table plus point-in-time f_* feature columns; rows keep the input order and index."""
    cfg = _config(config)
    _validate(games)
    sports = games["sport"].unique().tolist()
    sport = sports[0] if len(sports) == 1 else None
    groups = feature_groups(cfg, sport if sport is not None else "mixed")
    n = len(games)
    cols: dict[str, np.ndarray] = {}

    # ---- appearance table: rows 0..n-1 are the home sides, n..2n-1 the away sides of the same games
    dates = games["date"]
    if not isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = pd.to_datetime(dates, utc=True)
    day_g = dates.dt.tz_convert("UTC").array.asi8 // 86_400_000_000_000  # UTC day number
    day = np.concatenate([day_g, day_g])
    season = np.concatenate([games["season"].to_numpy(np.int64)] * 2)
    team, _ = pd.factorize(np.concatenate([games["home"].to_numpy(object), games["away"].to_numpy(object)]))
    hs, as_ = games["home_score"].to_numpy(float), games["away_score"].to_numpy(float)
    pf, pa = np.concatenate([hs, as_]), np.concatenate([as_, hs])
    win = np.where(pf > pa, 1.0, np.where(pf < pa, 0.0, 0.5))  # a tie counts half a win
    is_home = np.concatenate([np.ones(n), np.zeros(n)])

    order = np.lexsort((day, team))
    t_s, d_s, s_s = team[order], day[order], season[order]
    new_day = np.ones(len(order), dtype=bool)
    new_day[1:] = (t_s[1:] != t_s[:-1]) | (d_s[1:] != d_s[:-1])
    first = np.flatnonzero(new_day)               # first sorted appearance of each (team, day)
    day_row_sorted = np.cumsum(new_day) - 1
    app_day_row = np.empty(len(order), dtype=np.int64)
    app_day_row[order] = day_row_sorted           # appearance -> its (team, day) row

    def per_day(x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x[order], first) if len(first) else np.zeros(0)

    m = len(first)
    tm, dd, ss = t_s[first], d_s[first], s_s[first]
    g = per_day(np.ones(2 * n))
    pf_d, pa_d, w_d = per_day(pf), per_day(pa), per_day(win)
    idx = np.arange(m)
    new_team = np.ones(m, dtype=bool)
    new_team[1:] = tm[1:] != tm[:-1]
    team_start = np.maximum.accumulate(np.where(new_team, idx, 0))
    new_season = new_team.copy()
    new_season[1:] |= ss[1:] != ss[:-1]
    season_start = np.maximum.accumulate(np.where(new_season, idx, 0))

    def window_sum(x: np.ndarray, k: int) -> np.ndarray:
        """Sum of x over the team's previous k day-rows (strictly earlier dates)."""
        p = _padded_cumsum(x)
        return p[idx] - p[np.maximum(idx - k, team_start)]

    def since(x: np.ndarray, start: np.ndarray) -> np.ndarray:
        p = _padded_cumsum(x)
        return p[idx] - p[start]

    # Time windows: team-major keys make one global searchsorted find each team's window start.
    span = int(dd.max() - dd.min()) + 2 if m else 1
    big = span + max(cfg["split_window_days"], cfg["league_window_days"]) + 1
    key = tm.astype(np.int64) * big + (dd - (dd.min() if m else 0))

    split_lo = np.searchsorted(key, key - cfg["split_window_days"], side="left")

    def days_sum(x: np.ndarray) -> np.ndarray:
        p = _padded_cumsum(x)
        return p[idx] - p[split_lo]

    day_feats: dict[str, np.ndarray] = {}
    for k in cfg["windows"]:
        gk = window_sum(g, k)
        day_feats[f"pf_{k}"] = _div(window_sum(pf_d, k), gk)
        day_feats[f"pa_{k}"] = _div(window_sum(pa_d, k), gk)
        day_feats[f"win_rate_{k}"] = _div(window_sum(w_d, k), gk)
    lw = cfg["long_window"]
    g_lw = window_sum(g, lw)
    pf_lw, pa_lw = _div(window_sum(pf_d, lw), g_lw), _div(window_sum(pa_d, lw), g_lw)
    day_feats[f"pace_{lw}"] = pf_lw + pa_lw
    g_season = since(g, season_start)
    day_feats["win_rate_season"] = _div(since(w_d, season_start), g_season)
    day_feats["games_season"] = g_season
    prev = np.where(new_team, idx, idx - 1)
    day_feats["rest_days"] = np.where(new_team, np.nan, np.minimum(dd - dd[prev], cfg["rest_cap_days"])).astype(float)

    # Streak after each day (run length of equal day results), read off the previous day.
    result = np.sign(w_d - 0.5 * g)
    run_break = new_team.copy()
    run_break[1:] |= result[1:] != result[:-1]
    run_start = np.maximum.accumulate(np.where(run_break, idx, 0))
    after = (idx - run_start + 1) * result
    day_feats["streak"] = np.where(new_team, 0.0, after[prev])

    # League scoring level: points per team-game over the window of days before the game (all teams).
    ud, inv = np.unique(day_g, return_inverse=True)
    pts_day = np.bincount(inv, weights=hs + as_, minlength=len(ud))
    tg_day = 2.0 * np.bincount(inv, minlength=len(ud))
    pp, pg = _padded_cumsum(pts_day), _padded_cumsum(tg_day)
    lo = np.searchsorted(ud, day_g - cfg["league_window_days"], side="left")
    hi = np.searchsorted(ud, day_g, side="left")
    league_g = _div(pp[hi] - pp[lo], pg[hi] - pg[lo])                # per game
    league_d = league_g[np.concatenate([np.arange(n)] * 2)[order][first]]  # per (team, day) row
    day_feats[f"ortg_{lw}"] = pf_lw / league_d
    day_feats[f"drtg_{lw}"] = pa_lw / league_d

    # Venue splits and opponent strength over a trailing window of days.
    home_g, home_w = per_day(is_home), per_day(win * is_home)
    day_feats["home_win_rate"] = _div(days_sum(home_w), days_sum(home_g))
    day_feats["away_win_rate"] = _div(days_sum(w_d - home_w), days_sum(g - home_g))
    recent_wr = _div(days_sum(w_d), days_sum(g))              # known before this day
    opp_app = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    opp_strength = recent_wr[app_day_row[opp_app]]                     # opponent's win rate before this game
    has = np.isfinite(opp_strength)
    sos_sum, sos_n = per_day(np.where(has, opp_strength, 0.0)), per_day(has.astype(float))
    day_feats[f"sos_{lw}"] = _div(window_sum(sos_sum, lw), window_sum(sos_n, lw))

    # Box-score stats a user plugged in (box_home_<stat>, box_away_<stat>): each team's mean over its previous
    # k game days, counting only games that have the stat.
    box_stats = box_score_stats(games)
    for stat in box_stats:
        own = np.concatenate([games[f"box_home_{stat}"].to_numpy(float), games[f"box_away_{stat}"].to_numpy(float)])
        has_stat = np.isfinite(own)
        s_d, n_d = per_day(np.where(has_stat, own, 0.0)), per_day(has_stat.astype(float))
        for k in cfg["windows"]:
            day_feats[f"{stat}_{k}"] = _div(window_sum(s_d, k), window_sum(n_d, k))

    home_rows, away_rows = app_day_row[:n], app_day_row[n:]
    for stat in box_stats:
        for k in cfg["windows"]:
            h, a = day_feats[f"{stat}_{k}"][home_rows], day_feats[f"{stat}_{k}"][away_rows]
            cols[f"f_home_{stat}_{k}"], cols[f"f_away_{stat}_{k}"], cols[f"f_diff_{stat}_{k}"] = h, a, h - a
    if box_stats:
        groups["box_scores"] = [f"f_{side}_{stat}_{k}" for stat in box_stats for k in cfg["windows"]
                                for side in ("home", "away", "diff")]
    for names in _team_features(cfg).values():
        for name in names:
            h, a = day_feats[name][home_rows], day_feats[name][away_rows]
            cols[f"f_home_{name}"], cols[f"f_away_{name}"], cols[f"f_diff_{name}"] = h, a, h - a
    cols["f_league_points"] = league_g
    cols["f_home_home_win_rate"] = day_feats["home_win_rate"][home_rows]
    cols["f_away_away_win_rate"] = day_feats["away_win_rate"][away_rows]
    cols["f_diff_venue_win_rate"] = cols["f_home_home_win_rate"] - cols["f_away_away_win_rate"]

    # ---- game-level market features: all known before tip-off
    def col(name: str) -> np.ndarray:
        return games[name].to_numpy(dtype=float) if name in games.columns else np.full(n, np.nan)

    if cfg["market_at"] == "open":  # the opening line only: nothing here may read a closing column
        cols["f_market_prob_home"] = col("market_prob_home_open")
        cols["f_market_overround"] = 1.0 / col("home_dec_open") + 1.0 / col("away_dec_open") - 1.0
        cols["f_home_spread"], cols["f_total_line"] = col("home_spread_open"), col("total_line_open")
    else:
        cols["f_market_prob_home"] = col("market_prob_home")
        cols["f_market_overround"] = 1.0 / col("home_dec") + 1.0 / col("away_dec") - 1.0
        cols["f_home_spread"], cols["f_total_line"] = col("home_spread"), col("total_line")
        cols["f_spread_move"] = col("home_spread") - col("home_spread_open")
        cols["f_total_move"] = col("total_line") - col("total_line_open")
    if cfg["ml_moves"] and cfg["market_at"] == "close":
        with np.errstate(divide="ignore", invalid="ignore"):
            open_h = np.where(np.abs(col("home_ml_open")) >= 100, col("home_ml_open"), np.nan)
            open_a = np.where(np.abs(col("away_ml_open")) >= 100, col("away_ml_open"), np.nan)
            dec_h = np.where(open_h > 0, 1 + open_h / 100, 1 + 100 / np.abs(open_h))
            dec_a = np.where(open_a > 0, 1 + open_a / 100, 1 + 100 / np.abs(open_a))
            cols["f_line_move_prob"] = cols["f_market_prob_home"] - (1 / dec_h) / (1 / dec_h + 1 / dec_a)
    for fname, source in WEATHER_SOURCE.items():
        cols[fname] = col(source)

    cols.update(_starter_features(games, day_g, cfg))
    cols.update(_park_features(games, day_g, league_g, cfg))
    cols.update(_conference_features(games, day_g, cfg))
    wanted = [c for names in groups.values() for c in names]
    feats = pd.DataFrame({c: cols[c] if c in cols else np.full(n, np.nan) for c in wanted}, index=games.index)
    return pd.concat([games, feats], axis=1)
