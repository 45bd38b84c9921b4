"""Model registry: a SQLite index (via SQLAlchemy) plus one artefact directory per registered model.

Each registration gets the next version of its model line (sport, family, name). The row stores the
model's hyper-parameters, metrics, tags, free-form data (e.g. train/test seasons), the artefact path
(relative to the registry root, so the whole directory can be moved) and the model class's import
path, so `load` rebuilds the model through that class's own `load` in any process.

Durability: the artefact is written first into a fresh directory and the row is inserted after it,
so a row never points at a half-written model; concurrent registrations of one line are kept apart
by a unique (sport, family, name, version) constraint and a retry.
"""
from __future__ import annotations

import importlib
import json
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import sqlalchemy as sa

from edgeray.audit import jsonable
from edgeray.sports.formats import SPORTS, canonical_sport

FAMILIES = ("statistical", "ensemble", "neural", "lstm")
LATEST = "latest"
_MAX_TAG_LEN = 100
_INSERT_RETRIES = 20

_metadata = sa.MetaData()
_models = sa.Table(
    "models", _metadata,
    sa.Column("model_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sport", sa.String(16), nullable=False),
    sa.Column("family", sa.String(32), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("class_path", sa.String(300), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("artefact_path", sa.String(500), nullable=False),
    # ISO-8601 UTC text with microseconds: sorts lexicographically in time order.
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.UniqueConstraint("sport", "family", "name", "version", name="uq_model_line_version"),
)
_tags = sa.Table(
    "model_tags", _metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.model_id"), primary_key=True),
    sa.Column("tag", sa.String(_MAX_TAG_LEN), primary_key=True),
)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def check_sport(sport: Any) -> str:
    return canonical_sport(sport)


def check_family(family: Any) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family: unknown model family {family!r}; expected one of {list(FAMILIES)}")
    return family


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag.strip() or len(tag) > _MAX_TAG_LEN:
        raise ValueError(f"tag: must be a non-empty string of at most {_MAX_TAG_LEN} characters, got {tag!r}")
    return tag.strip()


def _class_path(model: Any) -> str:
    cls = type(model)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise ValueError(f"model: class {cls.__qualname__!r} in module {cls.__module__!r} cannot be re-imported "
                         "by another process; define it in an importable module")
    if not callable(getattr(cls, "load", None)) or not callable(getattr(model, "save", None)):
        raise ValueError(f"model: class {cls.__qualname__!r} has no save/load methods")
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _dumps(value: Any, field: str) -> str:
    try:
        return json.dumps(jsonable(value), allow_nan=False, sort_keys=True)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from exc


class ModelRegistry:
    """Versioned store of trained SportModels. `clock` is injectable so tests can age records."""

    def __init__(self, root: str | Path, clock: Callable[[], datetime] | None = None):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.clock = clock or _utc_now
        # timeout: a second process registering at the same time waits for the write lock instead of failing.
        self.engine = sa.create_engine(f"sqlite:///{self.root / 'registry.sqlite'}",
                                       connect_args={"timeout": 30})
        _metadata.create_all(self.engine)

    # ------------------------------------------------------------------ writes
    def register(self, model: Any, metrics: dict, tags: Iterable[str] = (), data: dict | None = None) -> dict:
        """Save the model's artefact and index it as the next version of its line; returns the record."""
        for attr in ("sport", "family", "name", "params"):
            if not hasattr(model, attr):
                raise ValueError(f"model: missing attribute {attr!r} required by the registry")
        sport, family, name = check_sport(model.sport), check_family(model.family), model.name
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: model name must be a non-empty string, got {name!r}")
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics: expected a dict, got {type(metrics).__name__}")
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"data: expected a dict or None, got {type(data).__name__}")
        if isinstance(tags, str):
            raise ValueError(f"tags: expected a list of strings, got the string {tags!r}")
        clean_tags = sorted({_check_tag(t) for t in tags})
        class_path = _class_path(model)
        params_json = _dumps(dict(model.params or {}), "params")
        metrics_json = _dumps(metrics, "metrics")
        data_json = _dumps(data or {}, "data")

        created = self.clock().astimezone(timezone.utc)
        relative = Path("artefacts", sport, family, name, f"{created:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")
        artefact_dir = self.root / relative
        artefact_dir.mkdir(parents=True)
        try:
            model.save(artefact_dir)
            model_id = self._insert_next_version(sport, family, name, {
                "class_path": class_path, "params": params_json, "metrics": metrics_json, "data": data_json,
                "artefact_path": relative.as_posix(), "created_at": created.isoformat(timespec="microseconds"),
            }, clean_tags)
        except BaseException:
            shutil.rmtree(artefact_dir, ignore_errors=True)
            raise
        return self.get(model_id)

    def _insert_next_version(self, sport: str, family: str, name: str, values: dict, tags: list[str]) -> int:
        line = (_models.c.sport == sport) & (_models.c.family == family) & (_models.c.name == name)
        for _ in range(_INSERT_RETRIES):
            try:
                with self.engine.begin() as conn:
                    top = conn.execute(sa.select(sa.func.max(_models.c.version)).where(line)).scalar()
                    row = {"sport": sport, "family": family, "name": name, "version": (top or 0) + 1, **values}
                    model_id = conn.execute(_models.insert().values(**row)).inserted_primary_key[0]
                    if tags:
                        conn.execute(_tags.insert(), [{"model_id": model_id, "tag": t} for t in tags])
                return int(model_id)
            except sa.exc.IntegrityError:
                continue  # another process took this version number between our SELECT and INSERT
        raise RuntimeError(f"could not allocate a version for {sport}/{family}/{name} after {_INSERT_RETRIES} tries")

    def tag(self, model_id: int, tag: str) -> dict:
        tag = _check_tag(tag)
        self.get(model_id)  # KeyError for an unknown id
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(_tags.c.tag).where((_tags.c.model_id == model_id) & (_tags.c.tag == tag)))
            if exists.first() is None:
                conn.execute(_tags.insert().values(model_id=model_id, tag=tag))
        return self.get(model_id)

    def update_metrics(self, model_id: int, metrics: dict) -> dict:
        """Merge more metrics into a record (e.g. a later scoring on new data); the artefact never changes."""
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics: expected a dict, got {type(metrics).__name__}")
        merged = {**self.get(model_id)["metrics"], **metrics}
        with self.engine.begin() as conn:
            conn.execute(_models.update().where(_models.c.model_id == model_id)
                         .values(metrics=_dumps(merged, "metrics")))
        return self.get(model_id)

    # ------------------------------------------------------------------ reads
    def get(self, model_id: int) -> dict:
        if isinstance(model_id, bool) or not isinstance(model_id, int):
            raise ValueError(f"model_id: expected an integer, got {model_id!r}")
        records = self._select(_models.c.model_id == model_id)
        if not records:
            raise KeyError(f"model_id {model_id} is not in the registry at {self.root}")
        return records[0]

    def resolve(self, ref: int | str | tuple) -> dict:
        """A record from a model_id, a caller's model key (the newest model tagged with it; digits are an id)
        or a (sport, family, name, version | "latest") tuple."""
        if isinstance(ref, str):
            if ref.strip().isdigit():
                return self.get(int(ref))
            tagged = self.list(tag=ref)
            if not tagged:
                raise KeyError(f"model_id {ref!r}: no registered model has this id or tag")
            return max(tagged, key=lambda r: (r["created_at"], r["model_id"]))
        if isinstance(ref, tuple):
            if len(ref) != 4:
                raise ValueError(f"ref: expected (sport, family, name, version|'latest'), got {ref!r}")
            sport, family, name, version = ref
            cond = ((_models.c.sport == check_sport(sport)) & (_models.c.family == check_family(family))
                    & (_models.c.name == name))
            if version == LATEST:
                records = self._select(cond, order=_models.c.version.desc(), limit=1)
            elif isinstance(version, int) and not isinstance(version, bool) and version >= 1:
                records = self._select(cond & (_models.c.version == version))
            else:
                raise ValueError(f"version: expected a positive integer or 'latest', got {version!r}")
            if not records:
                raise KeyError(f"no registered model {sport}/{family}/{name} version {version}")
            return records[0]
        return self.get(ref)

    def load(self, ref: int | tuple) -> Any:
        record = self.resolve(ref)
        cls = _import_class(record["class_path"])
        model = cls.load(record["artefact_path"])
        got = (getattr(model, "sport", None), getattr(model, "family", None), getattr(model, "name", None))
        want = (record["sport"], record["family"], record["name"])
        if got != want:
            raise RuntimeError(f"artefact of model_id {record['model_id']} holds {got}, the index says {want}")
        return model

    def list(self, sport: str | None = None, family: str | None = None, tag: str | None = None) -> list[dict]:
        cond = sa.true()
        if sport is not None:
            cond = cond & (_models.c.sport == check_sport(sport))
        if family is not None:
            cond = cond & (_models.c.family == check_family(family))
        if tag is not None:
            cond = cond & _models.c.model_id.in_(sa.select(_tags.c.model_id).where(_tags.c.tag == _check_tag(tag)))
        return self._select(cond)

    def _select(self, cond, order=None, limit: int | None = None) -> list[dict]:
        query = sa.select(_models).where(cond).order_by(order if order is not None else _models.c.model_id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            ids = [r["model_id"] for r in rows]
            tag_rows = conn.execute(sa.select(_tags).where(_tags.c.model_id.in_(ids))).all() if ids else []
        tags: dict[int, list[str]] = {}
        for model_id, tag in tag_rows:
            tags.setdefault(model_id, []).append(tag)
        return [{
            "model_id": r["model_id"], "sport": r["sport"], "family": r["family"], "name": r["name"],
            "version": r["version"], "class_path": r["class_path"], "params": json.loads(r["params"]),
            "metrics": json.loads(r["metrics"]), "data": json.loads(r["data"]),
            "tags": sorted(tags.get(r["model_id"], [])),
            "artefact_path": str(self.root / r["artefact_path"]), "created_at": r["created_at"],
        } for r in rows]
