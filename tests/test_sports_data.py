"""Game table, margin removal, point-in-time sports features and the sports data pipeline."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from edgeray.odds import (decimal_to_american, remove_margin_multiplicative, remove_margin_power, remove_margin_shin,
                          shin_z)
from edgeray.sports.features import FEATURE_GROUPS, build_features, feature_columns, feature_groups
from edgeray.sports.games import GAME_COLUMNS, load_games, load_sport, read_games, read_sport
from edgeray.sports.pipeline import Preprocessor, consistency, run_pipeline
from tests.conftest import shared_file

# ------------------------------------------------------------------ odds: margin removal


def test_power_and_shin_hand_worked_two_way_book():
    # Decimal 1.8 / 2.1 -> implied 1/1.8 = 0.555556, 1/2.1 = 0.476190, book S = 1.031746 (3.17% margin).
    p = np.array([1 / 1.8, 1 / 2.1])
    # Multiplicative: 0.555556 / 1.031746 = 0.538462.
    assert remove_margin_multiplicative(p[0], p[1])[0] == pytest.approx(0.538462, abs=1e-6)
    # Shin, two outcomes: D = 0.079365, D^2 = 0.0062988,
    # z = (S-1)(D^2-S) / (S(D^2-1)) = 0.031746 * -1.025447 / (1.031746 * -0.993701) = 0.031752;
    # fair p1 = (sqrt(z^2 + 4(1-z) p1^2 / S) - z) / (2(1-z))
    #         = (sqrt(0.0010082 + 4 * 0.968248 * 0.308642 / 1.031746) - 0.031752) / 1.936496 = 0.539683,
    # i.e. for two outcomes Shin takes the margin off equally: 0.555556 - 0.031746 / 2 = 0.539683.
    assert shin_z(p) == pytest.approx(0.031752, abs=1e-6)
    fair_shin = remove_margin_shin(p)
    assert fair_shin == pytest.approx([0.539683, 0.460317], abs=1e-6)
    # Power: k solves 0.555556^k + 0.476190^k = 1. At k = 1.05: 0.539660 + 0.459113 = 0.998773 (< 1);
    # at k = 1.04: 0.542535 + 0.462496 = 1.005031 (> 1); linear interpolation gives k ~ 1.04804,
    # fair p1 = 0.555556^1.04804 ~ 0.54023.
    fair_power = remove_margin_power(p)
    k = np.log(fair_power[0]) / np.log(p[0])
    assert k == pytest.approx(1.048, abs=1e-3)
    assert np.log(fair_power[1]) / np.log(p[1]) == pytest.approx(k, rel=1e-9)  # one k for both outcomes
    assert fair_power[0] == pytest.approx(0.54023, abs=1e-4)
    # Both push more of the margin onto the long shot than the multiplicative method.
    assert fair_power[0] > 0.538462 and fair_shin[0] > 0.538462


def _bisect_power(row: np.ndarray) -> np.ndarray:
    """Independent reference: plain bisection on k for sum p^k = 1."""
    lo, hi = 0.01, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.sum(row ** mid) > 1 else (lo, mid)
    return row ** ((lo + hi) / 2)


def test_margin_removal_properties_vectorised_over_rows():
    rng = np.random.default_rng(7)
    fair = rng.dirichlet([2.0, 2.0, 2.0], size=200)
    books = np.clip(fair * rng.uniform(1.0, 1.15, size=(200, 1)), 0.01, 0.99)
    for method in (remove_margin_power, remove_margin_shin):
        out = method(books)
        assert out.shape == books.shape
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-9)
        assert (np.argsort(out, axis=1) == np.argsort(books, axis=1)).all()  # order preserved
        assert ((out <= books + 1e-12)).all()  # removing a margin never raises a price's probability
        fair_book = np.array([[0.2, 0.3, 0.5], [0.25, 0.25, 0.5]])
        np.testing.assert_allclose(method(fair_book), fair_book, atol=1e-12)  # a fair book is unchanged
        np.testing.assert_allclose(method([0.4, 0.6]), [0.4, 0.6], atol=1e-12)
    for row in books[:20]:
        np.testing.assert_allclose(remove_margin_power(row), _bisect_power(row), atol=1e-9)
    # Shin's two-outcome closed form agrees with the numerical solution of sum p_i = 1.
    two = np.column_stack([books[:, 0], 1.07 - books[:, 0]])
    two = two[(two > 0.01).all(axis=1) & (two < 0.99).all(axis=1)]
    total, diff2 = two.sum(1), (two[:, 0] - two[:, 1]) ** 2
    z_closed = (total - 1) * (diff2 - total) / (total * (diff2 - 1))
    np.testing.assert_allclose(shin_z(two), z_closed, atol=1e-10)


@pytest.mark.parametrize("bad", [[0.5], [[0.6, 1.2]], [[0.5, np.nan]], [[0.5, -0.1]]])
def test_margin_removal_rejects_bad_books(bad):
    for method in (remove_margin_power, remove_margin_shin):
        with pytest.raises(ValueError, match="probs"):
            method(bad)


# ------------------------------------------------------------------ game table

NBA_HEADER = ("season,dates,regular,playoffs,away,home,score_away,score_home,whos_favored,spread,total,"
              "moneyline_away,moneyline_home")


def _write_nba(tmp_path, rows: list[str]):
    path = tmp_path / "nba.csv"
    path.write_text("\n".join([NBA_HEADER, *rows]) + "\n")
    return path


def test_load_games_schema_and_rejections(tmp_path):
    path = _write_nba(tmp_path, [
        "2019,1/5/2019,TRUE,FALSE,bos,ny,100,90,away,4,210,-160,140",   # valid
        "2018,10/20/2018,TRUE,FALSE,lal,gs,95,95,home,7,220,250,-300",  # valid, a tie
        "2019,1/6/2019,TRUE,FALSE,mia,chi,,90,home,2,200,120,-140",     # missing score
        "2019,1/6/2019,TRUE,FALSE,det,was,99,98,home,2,200,120,-40",    # impossible odds
        "2019,1/5/2019,TRUE,FALSE,bos,ny,100,90,away,4,210,-160,140",   # duplicate of row 0
        "2019,13/45/2019,TRUE,FALSE,phx,uta,99,98,home,2,200,120,-140",  # bad date
    ])
    errors: list = []
    games = load_games(path, errors=errors)
    assert list(games.columns[: len(GAME_COLUMNS)]) == GAME_COLUMNS
    assert len(games) == 2 and games["game_id"].is_unique
    assert str(games["date"].dtype) == "datetime64[ns, UTC]" and games["date"].is_monotonic_increasing
    assert games["season"].tolist() == [2018, 2018]  # October 2018 and January 2019 are both the 2018 season
    tie, win = games.iloc[0], games.iloc[1]
    assert np.isnan(tie["home_win"]) and win["home_win"] == 0.0 and win["home"] == "ny"
    assert win["home_dec"] == pytest.approx(2.4) and win["away_dec"] == pytest.approx(1 + 100 / 160)
    implied = np.array([1 / 2.4, 1 / (1 + 100 / 160)])
    assert win["market_prob_home"] == pytest.approx(implied[0] / implied.sum())
    assert win["home_spread"] == 4.0 and tie["home_spread"] == -7.0  # favourite gives points
    got = {(e["row"], e["field"]): e for e in errors}
    assert set(got) == {(2, "away_score"), (3, "home_ml"), (4, "game_id"), (5, "date")}
    assert got[(3, "home_ml")]["value"] == "-40" and "-100" in got[(3, "home_ml")]["reason"]
    table = read_games(path)
    assert len(table.games) + table.info["rows_rejected"] == table.info["rows_read"] == 6


def test_load_games_unknown_format(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"x.csv: fits no sports format \(closest: .*\); found columns \['a', 'b'\]"):
        load_games(path)
    with pytest.raises(ValueError, match="sport"):
        load_sport("curling", tmp_path)


@pytest.mark.parametrize("sport,file,min_games", [("ncaam", "ncaab_sbr_closing_2012_2022.csv", 40_000),
                                                  ("nba", "nba_2007_2023.csv", 19_000)])
def test_real_basketball_tables(sport, file, min_games):
    path = shared_file(f"sports/{file}")
    table = read_sport(sport, path.parent)
    g = table.games
    assert len(g) >= min_games and g["game_id"].is_unique and (g["sport"] == sport).all()
    assert len(g) + table.info["rows_rejected"] == table.info["rows_read"]
    assert (table.rejected["field"].isin(["home_ml", "away_ml"])).all()  # the archives' impossible prices
    assert ((g["home_ml"].abs() >= 100) & (g["away_ml"].abs() >= 100)).all()
    assert g["market_prob_home"].between(0, 1).all() and g["temperature_f"].isna().all()
    assert bool(g["venue_known"].all()) == (sport == "nba")
    ordered = g.sort_values(["date", "game_id"]).index
    assert (ordered == g.index).all()


def test_real_nfl_table_joins_weather():
    path = shared_file("sports/nfl_sbr_2011_2021.csv")
    table = read_sport("nfl", path.parent)
    g = table.games
    assert table.info["weather_join_rate"] > 0.95 and table.info["unmapped_teams"] == []
    assert g["home"].nunique() == 32  # city-only and misspelt SBR names resolve to franchise ids
    # Super Bowl rows in the SBR file have home team "0" and moneyline 0: rejected, not dropped silently.
    assert set(table.rejected["row"]) == {266, 533, 800, 1067, 1334, 1601, 1868, 2135, 2402, 2671}
    assert g["dome"].notna().mean() > 0.9 and set(g["dome"].dropna()) == {0.0, 1.0}
    assert (g.loc[g["dome"] == 1.0, "precipitation"] == 0.0).all()
    gb_opener = g[g["game_id"] == "nfl:20110908:GB:NO"].iloc[0]  # Lambeau, 8 Sep 2011: 68F, wind 5, 67%
    assert (gb_opener["temperature_f"], gb_opener["wind_mph"], gb_opener["humidity_pct"]) == (68.0, 5.0, 67.0)
    assert gb_opener["home_spread_open"] == -4.5 and gb_opener["home_spread"] == -5.0


# ------------------------------------------------------------------ features


def _tiny_games(seed: int = 3) -> pd.DataFrame:
    """A league of 6 teams, each playing at most once a day, several games a day, two seasons."""
    rng = np.random.default_rng(seed)
    teams = list("ABCDEF")
    rows = []
    start = pd.Timestamp("2021-07-01", tz="UTC")
    for day in range(0, 90, 3):
        if rng.random() < 0.25:
            continue
        perm = rng.permutation(teams)
        for i in range(rng.integers(1, 4)):
            home, away = perm[2 * i], perm[2 * i + 1]
            hs, as_ = int(rng.integers(60, 100)), int(rng.integers(60, 100))
            date = start + pd.Timedelta(days=int(day))
            rows.append({"game_id": f"t:{day}:{home}:{away}", "sport": "nba", "date": date, "home": home,
                         "away": away, "home_score": float(hs), "away_score": float(as_),
                         "home_win": np.nan if hs == as_ else float(hs > as_)})
    g = pd.DataFrame(rows)
    g["season"] = (g["date"].dt.year - (g["date"].dt.month < 8)).astype("int64")
    dec_h = rng.uniform(1.3, 3.0, len(g))
    g["home_dec"], g["away_dec"] = dec_h, 1 / (1.04 - 1 / dec_h)
    g["market_prob_home"] = (1 / dec_h) / (1 / dec_h + 1 / g["away_dec"])
    g["home_ml"], g["away_ml"] = decimal_to_american(g["home_dec"]), decimal_to_american(g["away_dec"])
    return g.sort_values(["date", "game_id"]).reset_index(drop=True)


def _reference(g: pd.DataFrame, i: int, side: str) -> dict:
    """Plain-loop features of one side of game i, from games strictly before its date."""
    row = g.loc[i]
    team, date = row[side], row["date"]

    def apps(t, before, after=None):
        out = []
        for _, r in g.iterrows():
            if r["date"] >= before or (after is not None and r["date"] < after) or t not in (r["home"], r["away"]):
                continue
            home = r["home"] == t
            pf, pa = (r["home_score"], r["away_score"]) if home else (r["away_score"], r["home_score"])
            out.append({"date": r["date"], "pf": pf, "pa": pa, "win": 1.0 if pf > pa else 0.0 if pf < pa else 0.5,
                        "home": home, "season": r["season"], "opp": r["away"] if home else r["home"]})
        return out

    prev = apps(team, date)
    ref = {}
    last5, last10 = prev[-5:], prev[-10:]
    ref["pf_5"] = np.mean([a["pf"] for a in last5]) if last5 else np.nan
    ref["pa_10"] = np.mean([a["pa"] for a in last10]) if last10 else np.nan
    ref["win_rate_5"] = np.mean([a["win"] for a in last5]) if last5 else np.nan
    season = [a for a in prev if a["season"] == row["season"]]
    ref["win_rate_season"] = np.mean([a["win"] for a in season]) if season else np.nan
    ref["games_season"] = float(len(season))
    ref["rest_days"] = min((date - prev[-1]["date"]).days, 30) if prev else np.nan
    streak = 0
    for a in reversed(prev):
        s = np.sign(a["win"] - 0.5)
        if s == 0 or (streak and np.sign(streak) != s):
            break
        streak += s
    ref["streak"] = float(streak)
    year = pd.Timedelta(days=365)
    window = [a for a in prev if a["date"] >= date - year]
    venue = [a["win"] for a in window if a["home"] == (side == "home")]
    ref["venue_win_rate"] = np.mean(venue) if venue else np.nan
    strengths = []
    for a in last10:
        opp_prev = apps(a["opp"], a["date"], a["date"] - year)
        if opp_prev:
            strengths.append(np.mean([o["win"] for o in opp_prev]))
    ref["sos_10"] = np.mean(strengths) if strengths else np.nan
    league = g[(g["date"] < date) & (g["date"] >= date - year)]
    points = league["home_score"].sum() + league["away_score"].sum()
    league_pts = points / (2 * len(league)) if len(league) else np.nan
    pf10 = np.mean([a["pf"] for a in last10]) if last10 else np.nan
    ref["ortg_10"] = pf10 / league_pts
    return ref


def test_features_match_plain_loop_reference():
    g = _tiny_games()
    f = build_features(g)
    assert f[list(g.columns)].equals(g) and len(f) == len(g)
    checked = 0
    for i in range(0, len(g), 3):
        for side in ("home", "away"):
            ref = _reference(g, i, side)
            venue = "f_home_home_win_rate" if side == "home" else "f_away_away_win_rate"
            got = {k: f.loc[i, f"f_{side}_{k}"] for k in ref if k != "venue_win_rate"}
            got["venue_win_rate"] = f.loc[i, venue]
            for k, v in ref.items():
                assert got[k] == pytest.approx(v, nan_ok=True), (i, side, k)
            checked += 1
        assert f.loc[i, "f_diff_pf_5"] == pytest.approx(f.loc[i, "f_home_pf_5"] - f.loc[i, "f_away_pf_5"], nan_ok=True)
    assert checked >= 20
    # The first day has no history at all.
    first = f[f["date"] == f["date"].min()]
    assert first["f_home_pf_5"].isna().all() and (first["f_home_streak"] == 0).all()


def _altered_from(g: pd.DataFrame, cutoff) -> pd.DataFrame:
    changed = g.copy()
    later = changed["date"] >= cutoff
    changed.loc[later, ["home_score", "away_score"]] = changed.loc[later, ["away_score", "home_score"]].to_numpy() + 37
    changed.loc[later, "home_win"] = 1.0 - changed.loc[later, "home_win"]
    return changed


def test_no_look_ahead_alter_or_delete_later_games():
    g = _tiny_games(seed=11)
    full = build_features(g)
    cols = feature_columns(full)
    busy_days = g.groupby("date").size()
    for cutoff in busy_days[busy_days >= 2].index[1:4]:
        on_or_before = g["date"] <= cutoff
        # Altering every result on or after the cutoff changes nothing for games up to the cutoff day,
        # including the other games of the same day.
        altered = build_features(_altered_from(g, cutoff))
        pd.testing.assert_frame_equal(altered.loc[on_or_before, cols], full.loc[on_or_before, cols])
        # Deleting every later game, and every other game of the same day, leaves a game's features as they were.
        for gid in g.loc[g["date"] == cutoff, "game_id"]:
            keep = (g["date"] < cutoff) | (g["game_id"] == gid)
            alone = build_features(g[keep])
            pd.testing.assert_frame_equal(alone.loc[g["game_id"] == gid, cols], full.loc[g["game_id"] == gid, cols])
    # ...and the check can fail: results before the cutoff do move later features.
    cutoff = busy_days.index[5]
    moved = build_features(_altered_from(g, busy_days.index[1]))
    assert not moved.loc[g["date"] >= cutoff, "f_home_pf_5"].equals(full.loc[g["date"] >= cutoff, "f_home_pf_5"])


def test_no_look_ahead_on_real_nba_season():
    g = load_sport("nba", shared_file("sports/nba_2007_2023.csv").parent)
    g = g[g["season"] == 2015].reset_index(drop=True)
    full = build_features(g)
    cols = feature_columns(full)
    cutoff = g["date"].iloc[len(g) // 2]
    mask = g["date"] <= cutoff
    altered = build_features(_altered_from(g, cutoff))
    pd.testing.assert_frame_equal(altered.loc[mask, cols], full.loc[mask, cols])
    truncated = build_features(g[mask])
    pd.testing.assert_frame_equal(truncated[cols], full.loc[mask, cols])
    assert full["f_diff_win_rate_10"].notna().mean() > 0.9


def test_feature_groups_and_config():
    g = _tiny_games()
    f = build_features(g, {"windows": [3], "weather": False})
    assert "f_home_pf_3" in f and "f_home_pf_5" not in f and "f_temperature_f" not in f
    assert set(feature_columns(f)) == {c for cols in feature_groups({"windows": [3], "weather": False}, "nba").values()
                                       for c in cols}
    assert "f_market_prob_home" in FEATURE_GROUPS["market"] and "f_temperature_f" in FEATURE_GROUPS["weather"]
    with pytest.raises(ValueError, match="config.windows"):
        build_features(g, {"windows": [0]})
    with pytest.raises(ValueError, match="config.bogus"):
        build_features(g, {"bogus": 1})
    with pytest.raises(ValueError, match="games.home_score"):
        build_features(g.assign(home_score=np.nan))
    with pytest.raises(ValueError, match="missing columns"):
        build_features(g.drop(columns=["home"]))


# ------------------------------------------------------------------ pipeline


def test_pipeline_on_real_nfl():
    data_dir = shared_file("sports/nfl_sbr_2011_2021.csv").parent
    seen = []
    report = run_pipeline("nfl", data_dir, progress=lambda stage, i, n: seen.append((stage, i, n)))
    assert [s for s, _, _ in seen] == ["ingestion", "feature_engineering", "validation", "preprocessing"]
    d = json.loads(json.dumps(report.to_dict()))
    ingest = d["stages"][0]
    assert ingest["rows_in"] == 2956 and ingest["rows_out"] == 2946 and ingest["error_count"] == 20
    assert all(s["seconds"] >= 0 for s in d["stages"])
    for key in ("completeness", "outliers", "consistency"):
        assert 0.0 <= d["scores"][key]["score"] <= 1.0
    assert d["scores"]["consistency"]["score"] == 1.0
    frame = report.frame
    assert len(frame) == 2946 and not frame[feature_columns(frame)].isna().any().any()
    assert "f_temperature_f" in frame and d["stages"][3]["details"]["fit_seasons"][-1] == 2020


def test_consistency_catches_bad_rows_and_preprocessor_round_trip():
    g = _tiny_games()
    f = build_features(g)
    assert consistency(f)["score"] == 1.0
    broken = f.copy()
    broken.loc[0, "home_dec"] = 9.0
    broken.loc[1, "home_win"] = 1.0 - broken.loc[1, "home_win"]
    broken.loc[2, "away_ml"] = 50.0  # an impossible price is scored as a failure, not raised
    result = consistency(broken)
    assert result["per_check"]["home_dec_matches_ml"] < 1.0 and result["per_check"]["home_win_matches_scores"] < 1.0
    assert {x["game_id"] for x in result["failures"]} == set(f.loc[[0, 1, 2], "game_id"])

    train = f[f["season"] == f["season"].min()]
    pre = Preprocessor().fit(train)
    out, counts = pre.transform(f)
    col = "f_home_pf_5"
    assert out[col].notna().all()
    assert (out.loc[f[col].isna(), col] == train[col].median()).all()  # imputed with the TRAIN median
    assert counts["imputed_cells"][col] == int(f[col].isna().sum())
    restored = Preprocessor.from_state(json.loads(json.dumps(pre.state_dict())))
    pd.testing.assert_frame_equal(restored.transform(f)[0], out)
    with pytest.raises(ValueError, match="clip_quantiles"):
        Preprocessor((0.9, 0.1))
