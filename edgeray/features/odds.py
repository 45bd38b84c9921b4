"""Odds features per game: margin-free implied probabilities and line movement since the open."""
from __future__ import annotations

import numpy as np
import pandas as pd

from edgeray.odds import implied_probability, remove_margin_multiplicative

NAMES = ["prob_a_fair", "prob_b_fair", "overround", "line_move_a"]


class OddsFeatureState:
    def __init__(self) -> None:
        # The opening fair probability per (game, bookmaker, market): the first quote flagged
        # `is_open`, else the first quote seen; later quotes measure movement against it.
        self._open: dict[tuple[str, str, str], float] = {}

    def update(self, frame: pd.DataFrame) -> pd.DataFrame:
        pa_, pb_, over = remove_margin_multiplicative(
            implied_probability(frame["odds_a_decimal"].to_numpy(float)),
            implied_probability(frame["odds_b_decimal"].to_numpy(float)))
        keys = list(zip(frame["symbol"], frame["bookmaker"], frame["market_type"]))
        is_open = frame["is_open"].to_numpy(bool)
        move = np.empty(len(frame))
        for i, key in enumerate(keys):  # sequential by construction: each row may set the open for later ones
            if is_open[i] or key not in self._open:
                self._open[key] = pa_[i]
            move[i] = pa_[i] - self._open[key]
        return pd.DataFrame({"symbol": frame["symbol"].to_numpy(), "event_ts": frame["event_ts"].to_numpy(),
                             "prob_a_fair": pa_, "prob_b_fair": pb_, "overround": over, "line_move_a": move})
