"""Env configs arrive from RLlib as plain dicts; a typo must name itself, not vanish."""
from __future__ import annotations

from dataclasses import fields


def from_env_config(cls, env_config: dict | None):
    """Build the dataclass `cls` from an env_config dict, refusing keys it does not know."""
    env_config = dict(env_config or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(env_config) - known)
    if unknown:
        raise ValueError(f"env_config has unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**env_config)
