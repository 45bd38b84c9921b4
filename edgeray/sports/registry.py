"""Model registry: an index (SQLAlchemy) plus one artefact directory per registered model.

Where they live is configuration: by default the index is a SQLite file and the artefacts are folders, both
under the registry root (`sports.registry_dir`); on a cluster the index is tables in `storage.state_url`'s
database and the artefacts are under `storage.artifact_uri` (s3://, gs://, file://, through pyarrow.fs), so a
model trained on one node loads on any other. Artefacts in object storage are written from, and read into, a
temporary local folder (the models save and load folders). The registry loads only artefacts it indexed itself,
by id: callers never name a file, and an index row's path must stay inside the artefact root.

Each registration gets the next version of its model line (sport, family, name). The row stores the
model's hyper-parameters, metrics, tags, free-form data (e.g. train/test seasons), the artefact path
(relative to the registry root, so the whole directory can be moved) and the model class's import
path, so `load` rebuilds the model through that class's own `load` in any process.

Durability: the artefact is written first into a fresh directory and the row is inserted after it,
so a row never points at a half-written model; concurrent registrations of one line are kept apart
by a unique (sport, family, name, version) constraint and a retry.
"""
from __future__ import annotations

import contextvars
import importlib
import json
import shutil
import tempfile
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import urlsplit

import sqlalchemy as sa

from edgeray.audit import jsonable
from edgeray.sports.formats import SPORTS, canonical_sport

if TYPE_CHECKING:
    from edgeray.config import PipelineConfig

FAMILIES = ("statistical", "ensemble", "neural", "lstm")
LATEST = "latest"
_MAX_TAG_LEN = 100
_INSERT_RETRIES = 20

ARTIFACT_FIELD = "storage.artifact_uri"
ARTIFACT_SCHEMES = ("s3", "gs", "gcs", "file", "hdfs")  # what pyarrow.fs.FileSystem.from_uri opens
INDEX_PREFIX = "edgeray_"  # table names in a shared database; the registry's own SQLite file keeps the plain ones


def _tables(prefix: str) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    models = sa.Table(
        f"{prefix}models", metadata,
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
        sa.UniqueConstraint("sport", "family", "name", "version", name=f"uq_{prefix}model_line_version"),
    )
    tags = sa.Table(
        f"{prefix}model_tags", metadata,
        sa.Column("model_id", sa.Integer, sa.ForeignKey(f"{prefix}models.model_id"), primary_key=True),
        sa.Column("tag", sa.String(_MAX_TAG_LEN), primary_key=True),
    )
    return metadata, models, tags


_LOCAL_TABLES = _tables("")
_INDEX_TABLES = _tables(INDEX_PREFIX)
# One engine per index database and process: the API opens the registry per request, and each would otherwise
# hold its own connection pool and re-check the tables.
_index_engines: dict[str, sa.Engine] = {}
_index_lock = threading.Lock()


def _index_engine(url: str) -> sa.Engine:
    from edgeray.storage.sql import create_tables, open_engine

    with _index_lock:
        if url not in _index_engines:
            engine = open_engine(url)
            create_tables(engine, _INDEX_TABLES[0])
            _index_engines[url] = engine
        return _index_engines[url]


def shown_uri(uri: str) -> str:
    """A storage URI for messages: no user info (pyarrow takes s3://KEY:SECRET@bucket) and no query."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"


def check_artifact_uri(uri: Any, field: str = ARTIFACT_FIELD) -> str:
    """`uri` when it is a storage URI the registry can keep artefacts under; a ValueError naming `field`
    (without credentials) otherwise. Syntax only: nothing is contacted here."""
    if not isinstance(uri, str) or "://" not in uri:
        # Not a URI, so shown as given, short of anything before an '@' (a mistyped KEY:SECRET@bucket).
        shown = uri.rsplit("@", 1)[-1][:200] if isinstance(uri, str) else uri
        raise ValueError(f"{field}: expected a storage URI (s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or "
                         f"file:///ABSOLUTE/PATH), got {shown!r}")
    parts = urlsplit(uri)
    if parts.scheme not in ARTIFACT_SCHEMES:
        raise ValueError(f"{field}: unsupported scheme {parts.scheme!r} in {shown_uri(uri)!r}; "
                         f"expected one of {list(ARTIFACT_SCHEMES)}")
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        raise ValueError(f"{field}: a file URI needs an absolute path (file:///ABSOLUTE/PATH), got {shown_uri(uri)!r}")
    if parts.scheme != "file" and not parts.hostname:
        raise ValueError(f"{field}: {shown_uri(uri)!r} names no bucket")
    return uri


def _artifact_filesystem(uri: str):
    """(pyarrow filesystem, base path in it) for an artefact root; ValueError naming the field otherwise."""
    import pyarrow.fs as pafs

    check_artifact_uri(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError, NotImplementedError) as exc:  # pyarrow's errors derive from these
        raise ValueError(f"{ARTIFACT_FIELD}: cannot open {shown_uri(uri)!r}: {exc}") from None


def _check_relative(path: str) -> PurePosixPath:
    """An index row's artefact path: relative and inside the artefact root, or the row is refused."""
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or "://" in path or relative.parts[:1] != ("artefacts",):
        raise RuntimeError(f"artefact_path: index row points outside the registry's artefacts ({path!r})")
    return relative


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

    def __init__(self, root: str | Path, clock: Callable[[], datetime] | None = None, *,
                 index_url: str | None = None, artifact_uri: str | None = None):
        """`root`: the registry folder (sports.registry_dir). `index_url`: a database for the index instead of
        root/registry.sqlite (storage.state_url); `artifact_uri`: where artefacts go instead of root/artefacts
        (storage.artifact_uri). Left out, both come from `use_storage` when a training job runs inside it."""
        storage = _storage.get()
        index_url = storage.get("index_url") if index_url is None else index_url
        artifact_uri = storage.get("artifact_uri") if artifact_uri is None else artifact_uri
        self.root = Path(root).expanduser().resolve()
        self.clock = clock or _utc_now
        if index_url:
            _, self._models, self._tags = _INDEX_TABLES
            self.engine = _index_engine(index_url)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            metadata, self._models, self._tags = _LOCAL_TABLES
            # timeout: a second process registering at the same time waits for the write lock instead of failing.
            self.engine = sa.create_engine(f"sqlite:///{self.root / 'registry.sqlite'}", connect_args={"timeout": 30})
            metadata.create_all(self.engine)
        self.artifact_uri = artifact_uri
        self._fs, self._base = _artifact_filesystem(artifact_uri) if artifact_uri else (None, None)

    @property
    def where(self) -> str:
        """Index and artefact locations for messages (no password, no credentials)."""
        from edgeray.storage.sql import shown

        return (f"index {shown(self.engine)}, artefacts "
                f"{shown_uri(self.artifact_uri) if self.artifact_uri else self.root / 'artefacts'}")

    def _artefact_location(self, relative: PurePosixPath) -> str:
        if self._fs is None:
            return str(self.root / relative)
        return f"{shown_uri(self.artifact_uri).rstrip('/')}/{relative.as_posix()}"

    def _save_artefact(self, model: Any, relative: PurePosixPath) -> None:
        if self._fs is None:
            artefact_dir = self.root / relative
            artefact_dir.mkdir(parents=True)
            model.save(artefact_dir)
            return
        import pyarrow.fs as pafs

        with tempfile.TemporaryDirectory(prefix="edgeray-artefact-") as tmp:
            model.save(tmp)
            target = f"{self._base.rstrip('/')}/{relative.as_posix()}"
            self._fs.create_dir(target, recursive=True)
            pafs.copy_files(tmp, target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self._fs)

    def _drop_artefact(self, relative: PurePosixPath) -> None:
        if self._fs is None:
            shutil.rmtree(self.root / relative, ignore_errors=True)
            return
        try:
            self._fs.delete_dir(f"{self._base.rstrip('/')}/{relative.as_posix()}")
        except (OSError, FileNotFoundError):  # nothing was uploaded, or it is gone already
            pass

    @contextmanager
    def _local_artefact(self, relative: PurePosixPath):
        """The artefact as a local folder: in place, or downloaded to a temporary one deleted afterwards."""
        if self._fs is None:
            yield self.root / relative
            return
        import pyarrow.fs as pafs

        with tempfile.TemporaryDirectory(prefix="edgeray-artefact-") as tmp:
            pafs.copy_files(f"{self._base.rstrip('/')}/{relative.as_posix()}", tmp, source_filesystem=self._fs,
                            destination_filesystem=pafs.LocalFileSystem())
            yield Path(tmp)

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
        relative = PurePosixPath("artefacts", sport, family, name, f"{created:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")
        try:
            self._save_artefact(model, relative)
            model_id = self._insert_next_version(sport, family, name, {
                "class_path": class_path, "params": params_json, "metrics": metrics_json, "data": data_json,
                "artefact_path": relative.as_posix(), "created_at": created.isoformat(timespec="microseconds"),
            }, clean_tags)
        except BaseException:
            self._drop_artefact(relative)
            raise
        return self.get(model_id)

    def _insert_next_version(self, sport: str, family: str, name: str, values: dict, tags: list[str]) -> int:
        line = (self._models.c.sport == sport) & (self._models.c.family == family) & (self._models.c.name == name)
        for _ in range(_INSERT_RETRIES):
            try:
                with self.engine.begin() as conn:
                    top = conn.execute(sa.select(sa.func.max(self._models.c.version)).where(line)).scalar()
                    row = {"sport": sport, "family": family, "name": name, "version": (top or 0) + 1, **values}
                    model_id = conn.execute(self._models.insert().values(**row)).inserted_primary_key[0]
                    if tags:
                        conn.execute(self._tags.insert(), [{"model_id": model_id, "tag": t} for t in tags])
                return int(model_id)
            except sa.exc.IntegrityError:
                continue  # another process took this version number between our SELECT and INSERT
        raise RuntimeError(f"could not allocate a version for {sport}/{family}/{name} after {_INSERT_RETRIES} tries")

    def tag(self, model_id: int, tag: str) -> dict:
        tag = _check_tag(tag)
        self.get(model_id)  # KeyError for an unknown id
        with self.engine.begin() as conn:
            t = self._tags.c
            exists = conn.execute(sa.select(t.tag).where((t.model_id == model_id) & (t.tag == tag)))
            if exists.first() is None:
                conn.execute(self._tags.insert().values(model_id=model_id, tag=tag))
        return self.get(model_id)

    def update_metrics(self, model_id: int, metrics: dict) -> dict:
        """Merge more metrics into a record (e.g. a later scoring on new data); the artefact never changes."""
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics: expected a dict, got {type(metrics).__name__}")
        merged = {**self.get(model_id)["metrics"], **metrics}
        with self.engine.begin() as conn:
            conn.execute(self._models.update().where(self._models.c.model_id == model_id)
                         .values(metrics=_dumps(merged, "metrics")))
        return self.get(model_id)

    # ------------------------------------------------------------------ reads
    def get(self, model_id: int) -> dict:
        if isinstance(model_id, bool) or not isinstance(model_id, int):
            raise ValueError(f"model_id: expected an integer, got {model_id!r}")
        records = self._select(self._models.c.model_id == model_id)
        if not records:
            raise KeyError(f"model_id {model_id} is not in the registry ({self.where})")
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
            cond = ((self._models.c.sport == check_sport(sport)) & (self._models.c.family == check_family(family))
                    & (self._models.c.name == name))
            if version == LATEST:
                records = self._select(cond, order=self._models.c.version.desc(), limit=1)
            elif isinstance(version, int) and not isinstance(version, bool) and version >= 1:
                records = self._select(cond & (self._models.c.version == version))
            else:
                raise ValueError(f"version: expected a positive integer or 'latest', got {version!r}")
            if not records:
                raise KeyError(f"no registered model {sport}/{family}/{name} version {version}")
            return records[0]
        return self.get(ref)

    def load(self, ref: int | tuple) -> Any:
        record = self.resolve(ref)
        cls = _import_class(record["class_path"])
        with self.engine.connect() as conn:
            stored = conn.execute(sa.select(self._models.c.artefact_path)
                                  .where(self._models.c.model_id == record["model_id"])).scalar_one()
        with self._local_artefact(_check_relative(stored)) as directory:
            model = cls.load(directory)
        got = (getattr(model, "sport", None), getattr(model, "family", None), getattr(model, "name", None))
        want = (record["sport"], record["family"], record["name"])
        if got != want:
            raise RuntimeError(f"artefact of model_id {record['model_id']} holds {got}, the index says {want}")
        return model

    def list(self, sport: str | None = None, family: str | None = None, tag: str | None = None) -> list[dict]:
        cond = sa.true()
        if sport is not None:
            cond = cond & (self._models.c.sport == check_sport(sport))
        if family is not None:
            cond = cond & (self._models.c.family == check_family(family))
        if tag is not None:
            tagged = sa.select(self._tags.c.model_id).where(self._tags.c.tag == _check_tag(tag))
            cond = cond & self._models.c.model_id.in_(tagged)
        return self._select(cond)

    def _select(self, cond, order=None, limit: int | None = None) -> list[dict]:
        query = sa.select(self._models).where(cond).order_by(order if order is not None else self._models.c.model_id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            ids = [r["model_id"] for r in rows]
            tag_rows = conn.execute(sa.select(self._tags).where(self._tags.c.model_id.in_(ids))).all() if ids else []
        tags: dict[int, list[str]] = {}
        for model_id, tag in tag_rows:
            tags.setdefault(model_id, []).append(tag)
        return [{
            "model_id": r["model_id"], "sport": r["sport"], "family": r["family"], "name": r["name"],
            "version": r["version"], "class_path": r["class_path"], "params": json.loads(r["params"]),
            "metrics": json.loads(r["metrics"]), "data": json.loads(r["data"]),
            "tags": sorted(tags.get(r["model_id"], [])),
            "artefact_path": self._artefact_location(PurePosixPath(r["artefact_path"])),
            "created_at": r["created_at"],
        } for r in rows]


# What a training job's registry uses when its code names only the folder (edgeray.sports.train): the
# scheduler sets it from the server's config around each job, so the database URL never enters job params.
_storage: contextvars.ContextVar[dict] = contextvars.ContextVar("edgeray_registry_storage", default={})


def storage_settings(cfg: "PipelineConfig") -> dict:
    """The registry's storage settings in `cfg` (for `use_storage` and ModelRegistry's keywords)."""
    return {"index_url": cfg.storage.state_url, "artifact_uri": cfg.storage.artifact_uri}


def set_storage(settings: dict | None) -> None:
    """From now on in this thread (a Ray task: until the next task sets it), a ModelRegistry given only its folder
    uses `settings` (storage_settings' keys; None or {}: the folder alone). Each training job sets it first."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - {"index_url", "artifact_uri"})
    if unknown:
        raise ValueError(f"registry storage: unknown setting {unknown[0]!r}; known: ['artifact_uri', 'index_url']")
    _storage.set(settings)


@contextmanager
def use_storage(index_url: str | None = None, artifact_uri: str | None = None):
    """Within this block, a ModelRegistry given only its folder uses this index database and artefact root."""
    token = _storage.set({"index_url": index_url, "artifact_uri": artifact_uri})
    try:
        yield
    finally:
        _storage.reset(token)


def open_registry(cfg: "PipelineConfig", clock: Callable[[], datetime] | None = None) -> ModelRegistry:
    """The registry `cfg` configures: sports.registry_dir, with storage.state_url's database as the index and
    storage.artifact_uri as the artefact root when they are set."""
    return ModelRegistry(cfg.sports.registry_dir, clock, **storage_settings(cfg))
