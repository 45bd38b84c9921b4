"""Model inference as its own Serve deployment: `ModelServer` replicas, each keeping up to `api.models_per_replica`
registered sport models loaded (`serve.multiplexed`, least recently used unloaded first). This is what the
specification calls model sharding: many sport models spread over `api.model_replicas` replicas, and the ingress
sends each request with `multiplexed_model_id` so Serve routes it to a replica that has that model loaded.

Replicas are spread over nodes: Serve's default replica scheduling is SPREAD (soft); `api.model_max_replicas_per_node`
makes it a hard limit (a replica that finds no node stays pending). The loader takes a registry id only: the
registry decides which artefact is read (an index row, inside its artefact root); no caller names a file.

Inputs are either games (looked up in the server's configured sports data, whose features are point-in-time: a
game's features use only games on earlier dates) or feature rows given by the caller. Bad input raises
`InputError` (the ingress answers 422 with its loc); an unknown model `UnknownModel` (404).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from ray import serve

from edgeray.config import ApiConfig, PipelineConfig

DEPLOYMENT_NAME = "ModelServer"


class InputError(ValueError):
    """A request's input the model cannot take; `loc` names the field as the API's error items do."""

    def __init__(self, loc: list, msg: str, value: Any = None):
        super().__init__(msg)
        self.loc, self.msg, self.value = list(loc), msg, value

    def __reduce__(self):  # raised inside a replica, re-raised at the ingress: keep loc and value
        return (InputError, (self.loc, self.msg, self.value))


class UnknownModel(KeyError):
    """The multiplexed model id names no registered model (the ingress answers 404)."""


def _day(value: str, loc: list) -> pd.Timestamp:
    try:
        day = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InputError(loc, f"expected a date (YYYY-MM-DD), got {value!r}", value) from None
    if pd.isna(day):
        raise InputError(loc, f"expected a date (YYYY-MM-DD), got {value!r}", value)
    day = day.tz_localize("UTC") if day.tzinfo is None else day.tz_convert("UTC")
    return day.normalize()


def game_rows(frame: pd.DataFrame, sport: str, games: list[dict]) -> pd.DataFrame:
    """The feature rows of `games` ({date, home, away, sport?}) in `frame` (build_features of the sport's data:
    point-in-time, no look-ahead), in request order. A game missing from the data is an InputError naming it."""
    from edgeray.sports.formats import canonical_sport

    days = frame["date"].dt.tz_convert("UTC").dt.normalize() if frame["date"].dt.tz is not None \
        else frame["date"].dt.tz_localize("UTC").dt.normalize()
    home = frame["home"].astype(str).str.upper()
    away = frame["away"].astype(str).str.upper()
    picked = []
    for i, game in enumerate(games):
        loc = ["body", "games", i]
        if game.get("sport") is not None:
            try:
                asked = canonical_sport(game["sport"])
            except ValueError as exc:
                raise InputError([*loc, "sport"], str(exc), game["sport"]) from None
            if asked != sport:
                raise InputError([*loc, "sport"], f"this model predicts {sport} games, not {asked}", game["sport"])
        day = _day(game["date"], [*loc, "date"])
        hit = np.flatnonzero((days == day).to_numpy() & (home == game["home"].strip().upper()).to_numpy()
                             & (away == game["away"].strip().upper()).to_numpy())
        if not len(hit):
            raise InputError(loc, f"no {sport} game on {day.date()} with {game['home']!r} at home to {game['away']!r} "
                                  "in the server's sports data", game)
        picked.append(int(hit[-1]))
    return frame.iloc[picked].reset_index(drop=True)


def feature_rows(model, sport: str, rows: list[dict]) -> pd.DataFrame:
    """A frame from caller-given rows ({date, features: {column: value | null}, home?, away?}). Every feature
    column the model uses must be named (null: missing, imputed as in training); an unknown name is refused."""
    columns = list(model.feature_columns)
    known = set(columns)
    needs_teams = "home" in getattr(model, "required_columns", ())
    records = []
    for i, row in enumerate(rows):
        loc = ["body", "rows", i]
        features = row["features"]
        unknown = sorted(set(features) - known)
        if unknown:
            raise InputError([*loc, "features", unknown[0]], f"model has no feature {unknown[0]!r}", unknown[0])
        missing = [c for c in columns if c not in features]
        if missing:
            raise InputError([*loc, "features", missing[0]], f"feature {missing[0]!r} is missing ({len(missing)} of "
                                                              f"the model's {len(columns)} features are); send null "
                                                              "for an unknown value", None)
        for name, value in features.items():
            if value is not None and not np.isfinite(value):
                raise InputError([*loc, "features", name], "features must be finite numbers or null", str(value))
        if needs_teams and not (row.get("home") and row.get("away")):
            raise InputError([*loc, "home"], f"a {model.name} model needs the home and away teams of each row", None)
        record = {"sport": sport, "date": _day(row["date"], [*loc, "date"]),
                  **{c: np.nan if features[c] is None else float(features[c]) for c in columns}}
        if row.get("home"):
            record["home"], record["away"] = row["home"], row.get("away")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _model_ref(model_id: str) -> int:
    if not model_id.isdigit() or len(model_id) > 10:
        raise UnknownModel(f"model_id {model_id!r}: the model server loads registry ids only")
    return int(model_id)


class ModelServerBase:
    """The deployment's body; `model_server(api)` wraps it with the configured multiplexing and replicas."""

    def __init__(self, config: dict):
        self.cfg = PipelineConfig.model_validate(config)
        self._frames: dict[str, pd.DataFrame] = {}

    async def _load(self, model_id: str):
        """Multiplexed loader: the registry's model for this id (KeyError for an unknown id). Runs in a thread:
        a load reads the index and the artefact and must not stall the replica's other requests."""
        import asyncio

        from edgeray.sports.registry import open_registry

        ref = _model_ref(model_id)

        def load():
            registry = open_registry(self.cfg)
            try:
                record = registry.get(ref)
            except KeyError as exc:
                raise UnknownModel(str(exc.args[0])) from None
            return record, registry.load(ref)

        return await asyncio.to_thread(load)

    def _sport_frame(self, sport: str) -> pd.DataFrame:
        from edgeray.sports.features import build_features
        from edgeray.sports.games import load_sport

        if sport not in self._frames:
            self._frames[sport] = build_features(load_sport(sport, self.cfg.sports.data()))
        return self._frames[sport]

    @staticmethod
    def _replica() -> str:
        return serve.get_replica_context().replica_id.unique_id

    def _loaded(self) -> list[str]:
        """Model ids loaded on this replica, least recently used first (the multiplexer's own LRU order: Serve
        keeps its wrapper on the instance once the loader has run)."""
        wrapper = getattr(self, "__serve_multiplex_wrapper", None)
        return list(wrapper.models) if wrapper is not None else []

    async def predict(self, payload: dict) -> dict:
        """`payload`: {games: [...]} or {rows: [...]}; the model is the request's multiplexed model id."""
        import asyncio

        model_id = serve.get_multiplexed_model_id()
        record, model = await self.load_model(model_id)
        sport = record["sport"]
        if payload.get("games") is not None:
            frame = await asyncio.to_thread(self._sport_frame, sport)
            rows = game_rows(frame, sport, payload["games"])
        else:
            rows = feature_rows(model, sport, payload["rows"])
        probs = await asyncio.to_thread(model.predict_proba, rows)
        if payload.get("games") is not None:
            predictions = [{"game_id": g["game_id"], "sport": sport, "date": str(g["date"].date()), "home": g["home"],
                            "away": g["away"], "p_home_win": float(p)} for (_, g), p in zip(rows.iterrows(), probs)]
        else:
            predictions = [{"date": str(d.date()), "p_home_win": float(p)} for d, p in zip(rows["date"], probs)]
        return {"model_id": record["model_id"], "sport": sport, "family": record["family"], "name": record["name"],
                "version": record["version"], "replica": self._replica(), "loaded_models": self._loaded(),
                "predictions": predictions}

    async def status(self) -> dict:
        """This replica's id and the model ids it holds loaded, least recently used first."""
        return {"replica": self._replica(), "loaded_models": self._loaded()}


def _replicas_options(api: ApiConfig) -> dict:
    options = {"num_replicas": api.model_replicas, "ray_actor_options": {"num_cpus": api.model_replica_cpus}}
    if api.model_max_replicas_per_node is not None:
        options["max_replicas_per_node"] = api.model_max_replicas_per_node
    return options


def model_server(api: ApiConfig):
    """The ModelServer deployment for this config: `api.model_replicas` replicas, each multiplexing up to
    `api.models_per_replica` models. (Built per config: the multiplexing limit is fixed when the loader is
    decorated, and Serve detects multiplexing on the class.)"""

    class ModelServer(ModelServerBase):
        @serve.multiplexed(max_num_models_per_replica=api.models_per_replica)
        async def load_model(self, model_id: str):
            return await self._load(model_id)

    return serve.deployment(name=DEPLOYMENT_NAME, **_replicas_options(api))(ModelServer)
