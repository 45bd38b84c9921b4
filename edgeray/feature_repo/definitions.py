"""Feast definitions: entities, offline file sources, push sources and feature views.

`feast apply` in this folder uses the module-level objects (paths from EDGERAY_FEAST_DIR);
edgeray itself calls `build_definitions` with the run's directory.
"""
from __future__ import annotations

import os
from datetime import timedelta

import edgeray.feature_repo.feast_import  # noqa: F401  (first: Feast imported fast, see there)
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64

from edgeray.features import books as book_features
from edgeray.features.market import MarketFeatureSpec

from edgeray.feature_repo.settings import (  # noqa: F401  (re-exported: the names are part of this module's API)
    ENTITY_KEYS,
    MARKET_PUSH,
    MARKET_VIEW,
    ODDS_PUSH,
    ODDS_VIEW,
    TIMESTAMP_FIELD,
    FeastSettings,
    offline_locations,
)


def build_definitions(offline: str | os.PathLike | FeastSettings, market_spec: MarketFeatureSpec | None = None) -> list:
    """`offline`: the local offline folder, or the store's settings (their `offline_uri` when set)."""
    location = offline_locations(offline)
    market_spec = market_spec or MarketFeatureSpec()
    symbol = Entity(name="symbol", join_keys=["symbol"], value_type=ValueType.STRING,
                    description="A traded instrument (BTCUSDT-PERP, GBPUSD, ...)")
    game = Entity(name="game", join_keys=["game_id"], value_type=ValueType.STRING,
                  description="One game's moneyline market, across books")
    objects: list = [symbol, game]
    for view, push, entity, names in (
        (MARKET_VIEW, MARKET_PUSH, symbol, market_spec.names),
        (ODDS_VIEW, ODDS_PUSH, game, book_features.NAMES),
    ):
        where = location(view)
        filesystem, path = where.filesystem()
        filesystem.create_dir(path, recursive=True)
        batch = FileSource(name=f"{view}_history", path=where.path, timestamp_field=TIMESTAMP_FIELD,
                           s3_endpoint_override=where.s3_endpoint_override)
        push_source = PushSource(name=push, batch_source=batch)
        objects += [batch, push_source, FeatureView(
            name=view, entities=[entity], ttl=timedelta(days=3650), online=True, source=push_source,
            schema=[Field(name=n, dtype=Float64) for n in names])]
    return objects


_objects = build_definitions(os.environ.get("EDGERAY_FEAST_DIR", "data") + "/offline")
symbol_entity, game_entity, market_history, market_push, market_view, odds_history, odds_push, odds_view = _objects
