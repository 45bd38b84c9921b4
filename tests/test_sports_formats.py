"""Sports archives by declared format (issue 13 item 6): detection by header, never by file name or guess;
MLB and NCAAF game tables (seasons, doubleheaders, ties, opening lines, two NCAAF layouts in one table)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from edgeray.config import PipelineConfig
from edgeray.loaders import load_sports_events
from edgeray.sports.features import build_features
from edgeray.sports.formats import FORMATS, SportsFormatError, canonical_sport, detect, read_header
from edgeray.sports.games import find_sport_files, read_games, read_sport
from edgeray.training.jobs import validate_submission
from tests.conftest import shared_file


@pytest.mark.parametrize("file, fmt", [
    ("ncaab_sbr_closing_2012_2022.csv", "sbro_ncaab"), ("nba_2007_2023.csv", "kaggle_nba"),
    ("nfl_sbr_2011_2021.csv", "sbr_nfl"), ("mlb_sbro_2010_2013.csv", "sbro_mlb"),
    ("ncaaf_sbro_2014_2019.csv", "sbro_ncaaf"), ("ncaaf_cfbd_2020_2022.csv", "cfbd_ncaaf")])
def test_every_archive_is_detected_by_its_header(file, fmt):
    header = read_header(shared_file(f"sports/{file}"))
    assert detect(header).name == fmt
    assert detect(header, sport=FORMATS[fmt].sport).name == fmt


def test_the_more_specific_layout_wins_and_companion_files_are_not_archives():
    cfbd = set(read_header(shared_file("sports/ncaaf_cfbd_2020_2022.csv")))
    assert FORMATS["sbro_ncaaf"].columns <= cfbd  # CFBD's header fits both NCAAF layouts...
    assert detect(cfbd).name == "cfbd_ncaaf"      # ...and its own, the superset, is the one taken
    for companion in ("nfl_scores_weather_1966_2025.csv", "nfl_stadiums.csv", "nfl_teams.csv"):
        with pytest.raises(SportsFormatError, match="fits no sports format"):
            detect(read_header(shared_file(f"sports/{companion}")), where=companion)


def test_no_guessing_wrong_sport_unknown_format_and_generic_without_a_sport():
    nfl_like = ["date", "home_team", "away_team", "home_close_ml", "away_close_ml", "home_score", "away_score"]
    with pytest.raises(SportsFormatError, match=r"x.csv: fits no sports format \(closest: sbr_nfl, missing "
                                                r"\['away_final', 'home_final'\]\)"):
        detect(nfl_like, where="x.csv")
    nfl = read_header(shared_file("sports/nfl_sbr_2011_2021.csv"))
    with pytest.raises(SportsFormatError, match="is a nfl file \\(format sbr_nfl\\), not mlb"):
        detect(nfl, sport="mlb")
    with pytest.raises(SportsFormatError, match="format: unknown sports format 'sbr'"):
        detect(nfl, fmt="sbr")
    with pytest.raises(SportsFormatError, match="does not fit format sbro_ncaab: missing columns"):
        detect(nfl, fmt="sbro_ncaab")
    generic = ["date", "home", "away", "home_score", "away_score", "home_ml", "away_ml"]
    with pytest.raises(SportsFormatError, match="do not say the sport"):
        detect(generic)
    assert detect(generic, sport="NCAAB").name == "generic"
    assert [canonical_sport(s) for s in ("NBA", "ncaab", "NCAAM", " mlb ", "CFB")] == ["nba", "ncaam", "ncaam", "mlb", "ncaaf"]
    with pytest.raises(ValueError, match="sport: unknown sport 'curling'"):
        canonical_sport("curling")


def test_mlb_seasons_doubleheaders_ties_and_opening_lines():
    path = shared_file("sports/mlb_sbro_2010_2013.csv")
    raw = pd.read_csv(path)
    table = read_sport("mlb", path.parent)
    g = table.games
    assert len(g) == len(raw) and table.info["rows_rejected"] == 0 and g["game_id"].is_unique
    assert sorted(g["season"].unique()) == [2010, 2011, 2012, 2013]  # not split at August
    second = g[g["game_id"].str.endswith(":g2")]
    assert len(second) == int((raw["game_no"] == 2).sum()) > 0
    first_ids = second["game_id"].str.removesuffix(":g2")
    assert first_ids.isin(g["game_id"]).all()  # each has its first game, same date and teams
    flagged = raw["tie_or_suspended"] == 1
    assert g["home_win"].isna().sum() >= int(flagged.sum()) > 0
    has_open = raw["home_open_ml"].notna() & raw["away_open_ml"].notna()
    assert int(g["home_ml_open"].notna().sum()) == int(has_open.sum()) > 0.99 * len(raw)

    feats = build_features(g)
    pair = feats.set_index("game_id")
    gid = second["game_id"].iloc[0]
    home_cols = [c for c in feats.columns if c.startswith("f_home_") and "_sp_" not in c]  # starters differ
    # A doubleheader's second game sees no more of its teams' history than the first (same-day games are blind).
    np.testing.assert_array_equal(pair.loc[gid, home_cols].to_numpy(float),
                                  pair.loc[gid.removesuffix(":g2"), home_cols].to_numpy(float))

    odds, results = load_sports_events(path)
    assert list(odds["symbol"]) == list(g.set_index("game_id").reindex(odds["symbol"]).index)
    assert set(odds["symbol"]) == set(g["game_id"]) and (results["event_ts"] > odds["event_ts"]).all()


def test_ncaaf_two_layouts_make_one_table_with_one_spelling_per_team():
    folder = shared_file("sports/ncaaf_sbro_2014_2019.csv").parent
    files = find_sport_files("ncaaf", folder)
    assert sorted(f.format for f in files) == ["cfbd_ncaaf", "sbro_ncaaf"]
    table = read_sport("NCAAF", folder)
    g = table.games
    assert g["game_id"].is_unique and set(table.info["format"]) == {"cfbd_ncaaf", "sbro_ncaaf"}
    teams = set(g["home"]) | set(g["away"])
    assert "GeorgiaState" in teams and "Georgia State" not in teams
    assert {2019, 2021}.issubset(set(g.loc[g["home"] == "GeorgiaState", "season"]) | set(g.loc[g["away"] == "GeorgiaState", "season"]))
    january = g[g["date"].dt.month == 1]
    assert len(january) and (january["season"] == january["date"].dt.year - 1).all()  # bowls: the autumn's season
    assert (table.rejected["reason"] == "moneyline missing").sum() > 0  # CFBD 2020 has no moneylines: counted
    assert len(g) + table.info["rows_rejected"] == table.info["rows_read"]


def test_declared_sources_in_a_config_resolve_against_it_and_must_fit(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    nba = pd.read_csv(shared_file("sports/nba_2007_2023.csv"), dtype=str, nrows=500)
    nba.rename(columns={"dates": "Game Date"}).to_csv(data / "league.csv", index=False)
    cfg_path = tmp_path / "conf" / "pipeline.yaml"
    cfg_path.parent.mkdir()
    cfg_path.write_text(yaml.safe_dump({
        "ingestion": {"symbols": ["X"]}, "sources": [{"type": "generator"}],
        "sports": {"data_dir": "../nowhere", "sources": [
            {"sport": "NBA", "path": "../data/league.csv", "format": "kaggle_nba", "columns": {"Game Date": "dates"}}]}}))
    cfg = PipelineConfig.load(cfg_path)
    src = cfg.sports.sources[0]
    assert src.sport == "nba" and src.path == str(data / "league.csv")
    games = read_sport("nba", cfg.sports.data_dir, cfg.sports.file_sources()).games
    assert len(games) == 500 and games["game_id"].str.startswith("nba:").all()
    with pytest.raises(SportsFormatError, match="league.csv: does not fit format kaggle_nba: missing columns \\['dates'\\]"):
        read_games(data / "league.csv", fmt="kaggle_nba")
    with pytest.raises(ValueError, match="unknown sports format 'nba_csv'"):
        PipelineConfig.model_validate({"ingestion": {"symbols": ["X"]}, "sources": [{"type": "generator"}],
                                       "sports": {"sources": [{"sport": "nba", "path": "x", "format": "nba_csv"}]}})
    with pytest.raises(FileNotFoundError, match="data_dir: no mlb archive in"):
        read_sport("mlb", data)


def test_a_training_request_cannot_name_files_to_read():
    with pytest.raises(ValueError, match="sources"):
        validate_submission("ann", "sport_model", {"sport": "nba", "family": "statistical",
                                                  "sources": [{"sport": "nba", "path": "/etc/passwd"}]}, 0, 0)


def test_mlb_trains_and_evaluates_after_or_when_asked_before_its_training_seasons():
    from edgeray.sports.models import train_and_evaluate

    frame = build_features(read_sport("mlb", shared_file("sports/mlb_sbro_2010_2013.csv").parent).games)
    _, forward = train_and_evaluate("mlb", "statistical", "logistic_l2", {}, frame, [2011, 2012], [2013])
    assert forward["evaluation"] == "after training" and forward["n"] > 2000
    with pytest.raises(ValueError, match="test_seasons must all come after train_seasons.*--allow-earlier"):
        train_and_evaluate("mlb", "statistical", "logistic_l2", {}, frame, [2012, 2013], [2010])
    with pytest.raises(ValueError, match=r"test_seasons: \[2011\] lie inside the training span 2010-2012"):
        train_and_evaluate("mlb", "statistical", "logistic_l2", {}, frame, [2010, 2012], [2011], allow_earlier=True)
    _, backward = train_and_evaluate("mlb", "statistical", "logistic_l2", {}, frame, [2012, 2013], [2010],
                                     allow_earlier=True)
    assert backward["evaluation"] == "before training" and backward["test_seasons"] == [2010]
    assert 0.6 < backward["model"]["log_loss"] < 0.75 and 0.6 < backward["market"]["log_loss"] < 0.75


def test_a_box_score_source_adds_point_in_time_features_and_makes_named_features_available(tmp_path):
    from edgeray.sports.catalogue import sport_feature_catalogue
    from edgeray.sports.features import feature_columns
    from edgeray.sports.games import declared_box_score_stats

    folder = shared_file("sports/nba_2007_2023.csv").parent
    games = read_sport("nba", folder).games
    games = games[games["season"] == 2021].reset_index(drop=True)
    rng = np.random.default_rng(0)
    box = pd.DataFrame({"date": games["date"].dt.strftime("%Y-%m-%d"), "home": games["home"], "away": games["away"],
                        "home_rebounds": rng.integers(30, 60, len(games)), "away_rebounds": rng.integers(30, 60, len(games))})
    box["home_rebounds"] = box["home_rebounds"].astype(object)
    box.iloc[:50, 3] = ""  # some games without the stat: left out of the means, not read as 0
    path = tmp_path / "nba_box.csv"
    box.to_csv(path, index=False)
    sources = [{"sport": "nba", "path": str(folder / "nba_2007_2023.csv")},
               {"sport": "nba", "path": str(path), "format": "box_scores"}]
    table = read_sport("nba", sources=sources)
    assert table.info["box_score_stats"] == ["rebounds"] and table.info["box_scores_joined"] == len(box)
    season = table.games[table.games["season"] == 2021].reset_index(drop=True)
    feats = build_features(season)
    assert {"f_home_rebounds_5", "f_away_rebounds_10", "f_diff_rebounds_5"} <= set(feature_columns(feats))

    # By hand for one team: the mean of its own rebounds over its previous 5 game days that have the stat.
    team = feats["home"].iloc[300]
    mine = pd.concat([season.loc[season["home"] == team, ["date", "box_home_rebounds"]].set_axis(["date", "reb"], axis=1),
                      season.loc[season["away"] == team, ["date", "box_away_rebounds"]].set_axis(["date", "reb"], axis=1)])
    mine = mine.sort_values("date")
    day = feats["date"].iloc[300]
    before = mine[mine["date"] < day].tail(5)["reb"].dropna()
    assert feats["f_home_rebounds_5"].iloc[300] == pytest.approx(before.mean())

    # No look-ahead: scrambling every later game's stats leaves this game's features as they were.
    later = season["date"] >= day
    scrambled = season.copy()
    scrambled.loc[later, ["box_home_rebounds", "box_away_rebounds"]] = 999.0
    again = build_features(scrambled)
    earlier_or_same = ~(season["date"] > day)
    np.testing.assert_array_equal(again.loc[earlier_or_same, "f_home_rebounds_5"].to_numpy(),
                                  feats.loc[earlier_or_same, "f_home_rebounds_5"].to_numpy())

    assert declared_box_score_stats(sources, "NBA") == ["rebounds"]
    named = {f["feature"]: f for f in sport_feature_catalogue("nba", feature_columns(feats), ["rebounds"])}
    assert named["rebounds"]["available"] and "f_home_rebounds_5" in named["rebounds"]["columns"]
    assert not named["field goal percentage"]["available"] and "home_fg_pct/away_fg_pct" in named["field goal percentage"]["reason"]
    assert named["pace"]["available"] and named["pace"]["columns"]
    mlb = {f["feature"]: f for f in sport_feature_catalogue("mlb", feature_columns(feats))}
    assert not mlb["ERA"]["available"] and not mlb["weather"]["available"] and mlb["runs per game"]["available"]


def test_mlb_starting_pitcher_and_park_features_by_hand_and_without_look_ahead():
    games = read_sport("mlb", shared_file("sports/mlb_sbro_2010_2013.csv").parent).games
    feats = build_features(games)
    i = 5000
    row = feats.iloc[i]
    pitcher, day = row["home_starter"], row["date"]
    starts = pd.concat([games.loc[games["home_starter"] == pitcher, ["date", "away_score"]].set_axis(["date", "ra"], axis=1),
                        games.loc[games["away_starter"] == pitcher, ["date", "home_score"]].set_axis(["date", "ra"], axis=1)])
    earlier = starts[starts["date"] < day].sort_values("date")
    assert row["f_home_sp_ra_5"] == pytest.approx(earlier["ra"].tail(5).mean())
    this_season = earlier[earlier["date"].dt.year == day.year]
    assert row["f_home_sp_starts_season"] == len(this_season)
    assert row["f_home_sp_rest_days"] == min((day - earlier["date"].iloc[-1]).days, 30)
    park = games[(games["home"] == row["home"]) & (games["date"] < day) & (games["date"] >= day - pd.Timedelta(days=365))]
    league = games[(games["date"] < day) & (games["date"] >= day - pd.Timedelta(days=365))]
    factor = (park["home_score"] + park["away_score"]).mean() / (league["home_score"] + league["away_score"]).mean()
    assert row["f_park_runs_factor"] == pytest.approx(factor)
    # Later results do not move these features.
    later = games["date"] > day
    changed = games.copy()
    changed.loc[later, ["home_score", "away_score"]] = 30.0
    again = build_features(changed)
    cols = [c for c in feats.columns if "_sp_" in c or c == "f_park_runs_factor"]
    np.testing.assert_array_equal(again.loc[~later, cols].to_numpy(float), feats.loc[~later, cols].to_numpy(float))
    ncaaf = build_features(read_sport("ncaaf", shared_file("sports/ncaaf_cfbd_2020_2022.csv").parent).games)
    known = ncaaf["home_division"].notna()
    assert set(ncaaf.loc[known, "f_home_fbs"].unique()) <= {0.0, 1.0} and ncaaf.loc[~known, "f_home_fbs"].isna().all()
    assert ncaaf["f_home_conf_strength"].between(0, 1).any()


@pytest.mark.parametrize("sport, train, test", [("mlb", [2011, 2012], [2013]), ("ncaaf", [2017, 2018], [2019])])
def test_every_model_family_trains_on_mlb_and_ncaaf(sport, train, test):
    from edgeray.sports.models import FAMILIES, train_and_evaluate

    frame = build_features(read_sport(sport, shared_file("sports/mlb_sbro_2010_2013.csv").parent).games)
    small = {"voting_soft": {"n_estimators": 20, "gb_max_iter": 20}, "mlp": {"epochs": 3, "hidden_layers": [8]},
             "lstm_weather": {"epochs": 2, "units": 8, "seq_len": 4, "head_units": 4},
             "logistic_l2": {"Cs": [1.0], "cv_splits": 3}}
    for family, names in FAMILIES.items():
        _, report = train_and_evaluate(sport, family, names[0], small[names[0]], frame, train, test)
        assert report["n"] > 400 and 0.3 < report["model"]["log_loss"] < 0.8, (family, report["model"])
        assert report["significance"]["p_value"] is not None and report["evaluation"] == "after training"


def test_unreadable_lines_of_a_sports_file_are_reported_and_the_rest_read(tmp_path):
    header = "date,home,away,home_score,away_score,home_ml,away_ml"
    rows = ["2012-05-01,NYY,BOS,3,2,-120,110",
            "2012-05-02,NYY,BOS,3,2",                  # line 3: too few fields
            "2012-05-03,NYY,BOS,3,2,-120,110",
            "2012-05-04,NYY,BOS,3,2,-40,110",          # line 5: impossible odds, a value problem
            "2012-05-05,NYY,B\xffS,3,2,-120,110"]      # line 6: a byte that is not UTF-8
    data = ("\n".join([header, *rows]) + "\n").encode("latin-1")
    path = tmp_path / "games.csv"
    path.write_bytes(data)
    table = read_games(path, sport="mlb", fmt="generic")
    assert len(table.games) == 2 and table.info["rows_read"] == 5 and table.info["rows_rejected"] == 3
    rej = {(r.row, r.field): r for r in table.rejected.itertuples()}
    assert rej[(1, "line 3")].reason == "unreadable line: 5 fields, the header has 7"
    offset = data.index(b"\xff")
    assert rej[(4, "line 6")].reason == f"unreadable line: byte 0xff at byte offset {offset} is not UTF-8"
    assert rej[(3, "home_ml")].value == "-40"  # the file's data row, though a line before it was left out
    odds, _ = load_sports_events(path, sport="mlb", fmt="generic")
    assert len(odds) == 3 and [b["line"] for b in odds.attrs["bad_lines"]] == [3, 6]
