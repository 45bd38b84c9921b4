"""The features the specification names for each sport, and whether edgeray can build them here.

The archives hold dates, teams, scores and lines (and NFL weather), not box scores: rebounds, yards or
ERA cannot be computed from them. Each named feature is either built from what the archives hold (its
f_ columns listed), available from a plugged-in box-score source (`sports.sources` entry with
`format: box_scores` and columns home_<stat>/away_<stat>), or unavailable, with the reason.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgeray.sports.formats import canonical_sport


@dataclass(frozen=True)
class SpecFeature:
    name: str
    built: tuple[str, ...] = ()      # day-feature names it is built from (f_home_<name>...)
    box_stats: tuple[str, ...] = ()  # box-score stats that make it available
    reason: str = ""                 # why it is unavailable otherwise


_NO_BOX = "the archives have scores and lines, not box scores; plug in a box-score file with {stats}"
_BASKETBALL = (
    SpecFeature("points per game", built=("pf_", "pa_")),
    SpecFeature("pace", built=("pace_",)),
    SpecFeature("offensive/defensive ratings", built=("ortg_", "drtg_")),
    SpecFeature("rebounds", box_stats=("rebounds",)),
    SpecFeature("field goal percentage", box_stats=("fg_pct",)),
)
_FOOTBALL = (
    SpecFeature("points for/against", built=("pf_", "pa_")),
    SpecFeature("offensive/defensive yards", box_stats=("yards", "yards_allowed")),
    SpecFeature("turnover differential", box_stats=("turnovers",)),
    SpecFeature("sacks", box_stats=("sacks",)),
    SpecFeature("strength of schedule", built=("sos_",)),
)
SPEC_FEATURES: dict[str, tuple[SpecFeature, ...]] = {
    "nba": _BASKETBALL,
    "ncaam": _BASKETBALL + (SpecFeature("conference strength", reason="the NCAAB archive names no conferences"),),
    "nfl": _FOOTBALL + (SpecFeature("weather", built=("temperature_f", "wind_mph", "humidity_pct", "dome",
                                                        "precipitation")),),
    "ncaaf": _FOOTBALL + (
        SpecFeature("conference strength", reason="not built yet: only the CFBD archive (2020-2022) names "
                                                  "conferences, the SBRO one (2014-2019) does not"),
        SpecFeature("weather", reason="no weather source for college football")),
    "mlb": (
        SpecFeature("runs per game", built=("pf_", "pa_")),
        SpecFeature("team statistics (form, rest, home/away)", built=("win_rate_", "rest_days", "streak")),
        SpecFeature("ERA", box_stats=("era",)), SpecFeature("WHIP", box_stats=("whip",)),
        SpecFeature("OPS", box_stats=("ops",)), SpecFeature("batting average", box_stats=("batting_avg",)),
        SpecFeature("weather", reason="no weather source for baseball")),
}


def sport_feature_catalogue(sport: str, feature_names: Iterable[str], box_stats: Iterable[str] = ()) -> list[dict]:
    """Every feature the specification names for `sport`: {feature, available, columns | reason}.
    `feature_names` are the f_ columns the feature builder makes; `box_stats` the stats a box-score source has."""
    sport = canonical_sport(sport)
    names, stats = list(feature_names), set(box_stats)
    out = []
    for spec in SPEC_FEATURES[sport]:
        if spec.built:
            cols = [c for c in names if any(c.startswith((f"f_home_{b}", f"f_away_{b}", f"f_diff_{b}", f"f_{b}"))
                                            for b in spec.built)]
            out.append({"feature": spec.name, "available": bool(cols), "columns": cols,
                        **({} if cols else {"reason": "not built for this sport's archives"})})
        elif spec.box_stats:
            have = [s for s in spec.box_stats if s in stats]
            if have:
                cols = [c for c in names if any(f"_{s}_" in c for s in have)]
                out.append({"feature": spec.name, "available": True, "columns": cols, "box_score_stats": have})
            else:
                wanted = ", ".join(f"home_{s}/away_{s}" for s in spec.box_stats)
                out.append({"feature": spec.name, "available": False, "reason": _NO_BOX.format(stats=wanted)})
        else:
            out.append({"feature": spec.name, "available": False, "reason": spec.reason})
    return out
