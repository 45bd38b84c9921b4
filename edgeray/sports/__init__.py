"""Sports data: the game table, point-in-time features and the data pipeline (no Ray imports here)."""
from __future__ import annotations

from edgeray.sports.features import FEATURE_GROUPS, build_features, feature_columns
from edgeray.sports.games import GAME_COLUMNS, SPORTS, GameTable, load_games, load_sport, read_games, read_sport

__all__ = ["FEATURE_GROUPS", "GAME_COLUMNS", "SPORTS", "GameTable", "build_features", "feature_columns", "load_games",
           "load_sport", "read_games", "read_sport"]
