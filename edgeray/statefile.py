"""Actor checkpoints: one JSON file per actor, replaced atomically so a crash mid-write leaves
the previous checkpoint intact."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"checkpoint value of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def save_state(path: str | Path, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(state, default=_default), encoding="utf-8")
    os.replace(tmp, path)


def load_state(path: str | Path) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
