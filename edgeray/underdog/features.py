"""Underdog rows and their point-in-time features, on top of the standard sports features.

`underdog_games` keeps one row per game whose longer-priced side is +100 or longer (the underdog) and names its
tier. `build_underdog_features` re-orients the standard f_* features to the underdog ("dog") and the favourite
("fav") and adds the underdog set. Everything a row sees comes from games on strictly earlier dates.

Venue: NCAAM's file lists favourite/underdog, not venue (venue_known False), so "home" there is the favourite by
construction and says nothing about where the game is played. `f_dog_home` is therefore NaN for venue-unknown rows
(imputed to the neutral 0.0 by the model, so it carries no weight) instead of being read off the file's row order.
Conference membership is not in any archive here, so the "strength gap" is a points-based one (net rating and
schedule strength).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.special import expit

from edgeray.sports.features import build_features

if TYPE_CHECKING:
    from edgeray.underdog.model import UnderdogConfig

DOG_COLUMNS = ["game_id", "sport", "date", "season", "team", "opponent", "side", "venue_known", "american_odds",
               "decimal_odds", "fav_american_odds", "fav_decimal_odds", "market_prob", "dog_score", "fav_score",
               "won", "tier"]
# Features that carry today's market price: excluded from the base model, used by the market-aware one.
MARKET_FEATURES = ("f_market_prob_dog", "f_market_overround", "f_dog_spread", "f_total_line", "f_market_overreaction",
                   "f_spread_move", "f_total_move", "f_line_move_prob")


def _default_config():
    from edgeray.underdog.model import load_config  # lazy: model imports this module

    return load_config()


def _require(games: pd.DataFrame, columns: list[str]) -> None:
    if not isinstance(games, pd.DataFrame):
        raise ValueError(f"games: expected a DataFrame, got {type(games).__name__}")
    missing = [c for c in columns if c not in games.columns]
    if missing:
        raise ValueError(f"games: missing columns {missing}")


def assign_tier(american: np.ndarray, config: "UnderdogConfig") -> np.ndarray:
    """Tier name per American price (object array); '' where no tier covers the price."""
    a = np.asarray(american, dtype=float)
    out = np.full(len(a), "", dtype=object)
    for name, tier in config.tiers.items():
        hi = np.inf if tier.max_odds is None else tier.max_odds
        out[(a >= tier.min_odds) & (a < hi) & (out == "")] = name
    return out


def underdog_games(games: pd.DataFrame, config: "UnderdogConfig | None" = None) -> pd.DataFrame:
    """One row per underdog side (American odds >= +100 and longer than the other side), with its tier.

    Games whose two sides carry the same price (a pick'em, e.g. +100/+100 or -110/-110) have no underdog and are
    not rows here; `attrs["n_no_underdog"]` counts them so nothing vanishes unaccounted.
    """
    cfg = config or _default_config()
    _require(games, ["game_id", "sport", "date", "season", "home", "away", "venue_known", "home_score", "away_score",
                     "home_ml", "away_ml", "home_dec", "away_dec", "market_prob_home"])
    hml, aml = games["home_ml"].to_numpy(float), games["away_ml"].to_numpy(float)
    hdec, adec = games["home_dec"].to_numpy(float), games["away_dec"].to_numpy(float)
    for name, vals in (("home_dec", hdec), ("away_dec", adec)):
        bad = ~(np.isfinite(vals) & (vals > 1.0))
        if bad.any():
            raise ValueError(f"games.{name}: decimal odds must be finite and > 1, got {vals[bad][:3].tolist()} "
                             f"(game_id {games['game_id'][bad].head(3).tolist()})")
    home_dog = (hml >= cfg.min_odds) & (hdec > adec)
    away_dog = (aml >= cfg.min_odds) & (adec > hdec)
    rows = np.flatnonzero(home_dog | away_dog)
    hd = home_dog[rows]
    g = games.iloc[rows]

    def pick(home_col: str, away_col: str, dog: bool) -> np.ndarray:
        h, a = g[home_col].to_numpy(), g[away_col].to_numpy()
        return np.where(hd, h, a) if dog else np.where(hd, a, h)

    dog_score, fav_score = pick("home_score", "away_score", True), pick("home_score", "away_score", False)
    mp_home = g["market_prob_home"].to_numpy(float)
    american = pick("home_ml", "away_ml", True).astype(float)
    out = pd.DataFrame({
        "game_id": g["game_id"].to_numpy(object), "sport": g["sport"].to_numpy(object), "date": g["date"].to_numpy(),
        "season": g["season"].to_numpy(np.int64), "team": pick("home", "away", True).astype(object),
        "opponent": pick("home", "away", False).astype(object), "side": np.where(hd, "home", "away").astype(object),
        "venue_known": g["venue_known"].to_numpy(bool), "american_odds": american,
        "decimal_odds": pick("home_dec", "away_dec", True).astype(float),
        "fav_american_odds": pick("home_ml", "away_ml", False).astype(float),
        "fav_decimal_odds": pick("home_dec", "away_dec", False).astype(float),
        "market_prob": np.where(hd, mp_home, 1.0 - mp_home), "dog_score": dog_score.astype(float),
        "fav_score": fav_score.astype(float),
        "won": np.where(dog_score == fav_score, np.nan, (dog_score > fav_score).astype(float)),
        "tier": assign_tier(american, cfg),
    }, index=g.index)
    out["date"] = out["date"].astype(games["date"].dtype)
    out.attrs["n_games"] = int(len(games))
    out.attrs["n_no_underdog"] = int(len(games) - len(rows))
    return out


def _day_number(dates: pd.Series) -> np.ndarray:
    d = dates if isinstance(dates.dtype, pd.DatetimeTZDtype) else pd.to_datetime(dates, utc=True)
    return d.dt.tz_convert("UTC").array.asi8 // 86_400_000_000_000


class _History:
    """Per-team event sequences; queries see only events on strictly earlier days.

    A team-major sort key lets one searchsorted find, for every query (team, day), how many of the team's events
    came before that day; lagged values are then read at fixed offsets (k <= ~10 lags, a loop over lags, not rows).
    """

    def __init__(self, team: np.ndarray, day: np.ndarray, values: dict[str, np.ndarray], span: int):
        self.span = span
        key = team.astype(np.int64) * span + day
        order = np.argsort(key, kind="mergesort")
        self.key = key[order]
        self.values = {k: np.asarray(v, dtype=float)[order] for k, v in values.items()}

    def locate(self, team: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = np.searchsorted(self.key, team.astype(np.int64) * self.span, side="left")
        pos = np.searchsorted(self.key, team.astype(np.int64) * self.span + day, side="left")
        return start, pos

    def weighted_mean(self, name: str, start, pos, k: int, decay: float) -> np.ndarray:
        """Mean of the last k events, weight decay**lag (lag 0 = most recent); NaN with no events."""
        x = self.values[name]
        num, den = np.zeros(len(pos)), np.zeros(len(pos))
        for lag in range(k):
            idx = pos - 1 - lag
            ok = idx >= start
            w = decay ** lag
            num += np.where(ok, x[np.where(ok, idx, 0)] * w, 0.0)
            den += np.where(ok, w, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _oriented(std: pd.DataFrame, dog_is_home: np.ndarray) -> dict[str, np.ndarray]:
    """Standard home/away team features as dog/fav/gap columns; game-level columns passed through."""
    cols: dict[str, np.ndarray] = {}
    fcols = [c for c in std.columns if c.startswith("f_")]
    for c in fcols:
        if not c.startswith("f_home_") or f"f_away_{c[7:]}" not in std.columns:
            continue
        name = c[7:]
        h, a = std[c].to_numpy(float), std[f"f_away_{name}"].to_numpy(float)
        dog, fav = np.where(dog_is_home, h, a), np.where(dog_is_home, a, h)
        cols[f"f_dog_{name}"], cols[f"f_fav_{name}"], cols[f"f_gap_{name}"] = dog, fav, dog - fav
    for c in fcols:  # game-level features: not a home/away pair, a diff, or a venue split
        if c.startswith(("f_home_", "f_away_", "f_diff_")):
            continue
        cols[c] = std[c].to_numpy(float)
    mp = std["f_market_prob_home"].to_numpy(float)
    cols.pop("f_market_prob_home", None)
    cols["f_market_prob_dog"] = np.where(dog_is_home, mp, 1.0 - mp)
    if "f_home_spread" in std.columns:  # a game-level line, quoted for the home side
        s = std["f_home_spread"].to_numpy(float)
        cols["f_dog_spread"] = np.where(dog_is_home, s, -s)
    return cols


def build_underdog_features(games: pd.DataFrame, config: "UnderdogConfig | None" = None) -> pd.DataFrame:
    """Underdog rows (see `underdog_games`) with point-in-time f_* features and eligibility.

    History comes from every game in `games` (a team's favourite games count towards its prior games and form);
    underdog history from the games where that team was the underdog. Columns added besides f_*: n_prior_games,
    n_prior_dog_games, fav_prior_games and eligible (dog and favourite have >= min_prior_games earlier games and the
    dog >= min_prior_dog_games earlier underdog games). Ineligible rows are kept, flagged, never dropped here.
    """
    cfg = config or _default_config()
    games = games.sort_values(["date", "game_id"], kind="mergesort").reset_index(drop=True)
    dogs = underdog_games(games, cfg)
    std = build_features(games, dict(cfg.standard_features) or None).loc[dogs.index]
    n = len(games)

    # ---- appearance table over all games (two rows per game) and the underdog subset
    day_g = _day_number(games["date"])
    codes, uniques = pd.factorize(np.concatenate([games["home"].to_numpy(object), games["away"].to_numpy(object)]))
    day = np.concatenate([day_g, day_g])
    span = int(day.max() - day.min()) + 2 if n else 1
    day0 = day - (day.min() if n else 0)
    all_hist = _History(codes, day0, {}, span)

    dog_game = dogs.index.to_numpy()
    dog_is_home = (dogs["side"] == "home").to_numpy()
    dog_code = np.where(dog_is_home, codes[dog_game], codes[n + dog_game])
    fav_code = np.where(dog_is_home, codes[n + dog_game], codes[dog_game])
    dday = day0[dog_game]
    won = dogs["won"].to_numpy(float)
    dog_hist = _History(dog_code, dday, {
        "upset": np.where(np.isnan(won), 0.5, won),  # a tie is half an upset
        "surprise": np.where(np.isnan(won), 0.5, won) - dogs["market_prob"].to_numpy(float),
    }, span)

    s, p = all_hist.locate(dog_code, dday)
    n_prior = (p - s).astype(float)
    fs, fp = all_hist.locate(fav_code, dday)
    ds, dp = dog_hist.locate(dog_code, dday)
    n_prior_dog = (dp - ds).astype(float)

    cols = _oriented(std, dog_is_home)
    for k in cfg.upset_windows:
        cols[f"f_dog_upset_rate_{k}"] = dog_hist.weighted_mean("upset", ds, dp, k, cfg.upset_decay)
    cols["f_dog_trend"] = dog_hist.weighted_mean("surprise", ds, dp, cfg.trend_window, cfg.upset_decay)
    cols["f_dog_games"] = n_prior_dog

    # Home-dog advantage: 1/0 where the venue is known; NaN (imputed neutral) for NCAAM, whose "home" is the favourite.
    venue = dogs["venue_known"].to_numpy(bool)
    cols["f_dog_home"] = np.where(venue, dog_is_home.astype(float), np.nan)

    lw = (cfg.standard_features or {}).get("long_window", 10)
    pace = std[f"f_home_pace_{lw}"].to_numpy(float), std[f"f_away_pace_{lw}"].to_numpy(float)
    net_h = std[f"f_home_pf_{lw}"].to_numpy(float) - std[f"f_home_pa_{lw}"].to_numpy(float)
    net_a = std[f"f_away_pf_{lw}"].to_numpy(float) - std[f"f_away_pa_{lw}"].to_numpy(float)
    cols["f_pace_diff"] = np.where(dog_is_home, pace[0] - pace[1], pace[1] - pace[0])
    strength_gap = np.where(dog_is_home, net_h - net_a, net_a - net_h)  # points per game, dog minus fav
    cols["f_strength_gap"] = strength_gap
    # Performance-implied P(dog wins): logistic in the net-rating gap; the market's excess over it is overreaction.
    perf_prob = expit(strength_gap / cfg.perf_scale_points)
    cols["f_perf_prob"] = perf_prob
    cols["f_market_overreaction"] = cols["f_market_prob_dog"] - perf_prob

    out = dogs.copy()
    out["n_prior_games"], out["n_prior_dog_games"], out["fav_prior_games"] = n_prior, n_prior_dog, (fp - fs) * 1.0
    out["eligible"] = ((n_prior >= cfg.min_prior_games) & ((fp - fs) >= cfg.min_prior_games)
                       & (n_prior_dog >= cfg.min_prior_dog_games))
    feats = pd.DataFrame(cols, index=out.index)
    out = pd.concat([out, feats], axis=1).reset_index(drop=True)
    out.attrs.update(dogs.attrs)
    return out


def feature_sets(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(base, market-aware) feature names: the base model never sees today's market price."""
    allf = [c for c in frame.columns if c.startswith("f_")]
    base = [c for c in allf if c not in MARKET_FEATURES]
    return base, allf
