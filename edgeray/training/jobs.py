"""Training jobs without Ray: the task registry, submission validation and the durable job store.

The store is one table in a SQL database, through SQLAlchemy Core (one code path for both backends): a SQLite
file (`sports.queue_db`, the default) or the configured database (`storage.state_url`, PostgreSQL on a cluster),
so a restarted scheduler actor finds its queue where it left it, on any node. Rows carry the queue's name (the
pipeline's namespace), so several pipelines share one database. Times are unix seconds from an injectable clock
(tests move it to check retention without sleeping).

Ownership: a job belongs to the authenticated identity that submitted it (the HTTP layer passes it; callers
cannot name a user). Non-admins see and cancel only their own jobs; admins see and cancel all. Callers cannot
choose where a job reads or writes: path-like parameters are refused and the server adds its own
(`server_params`) after validation. Every number and size a submission carries is bounded.
"""
from __future__ import annotations

import json
import math
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from numbers import Integral, Real
from pathlib import Path

import sqlalchemy as sa

ProgressFn = Callable[[int, int, dict], None]
TaskFn = Callable[[dict, ProgressFn, str], dict]

JOB_STATES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED_STATES = ("completed", "failed", "cancelled")
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
DEFAULT_MAX_ATTEMPTS = 2
RESTART_REASON = "scheduler restarted"
_HISTORY_LIMIT = 500  # per-epoch metrics kept per job: enough for a loss curve, bounded for 10^5-epoch jobs


class JobCancelled(Exception):
    """Raised by a runner's progress callback when the scheduler asks the job to stop."""


TRAINING_TASKS: dict[str, TaskFn] = {}
TASK_PARAM_VALIDATORS: dict[str, Callable[[dict], dict]] = {}


def register_task(name: str, fn: TaskFn, validate: Callable[[dict], dict] | None = None) -> None:
    """Make `name` submittable. `validate(params) -> params` raises ValueError naming the bad field."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"task name must be a non-empty string, got {name!r}")
    TRAINING_TASKS[name] = fn
    if validate is not None:
        TASK_PARAM_VALIDATORS[name] = validate
    else:
        TASK_PARAM_VALIDATORS.pop(name, None)


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# Submission bounds: a submission is stored, shown in every listing and run on shared GPUs, so none of its
# sizes is left open.
MAX_USER_CHARS = 200
MAX_STRING_CHARS = 200      # any string in params (model name, tags, feature names) and any key
MAX_PARAMS_BYTES = 16_384   # params as JSON
MAX_PARAMS_KEYS = 64        # keys in any one dict of params
MAX_LIST_ITEMS = 1_000
MAX_PARAMS_DEPTH = 4        # params -> model_params -> list -> value
PRIORITY_RANGE = (-1_000, 1_000)
MAX_NUM_GPUS = 16           # per job; the actor also refuses more than the largest node has
MAX_EPOCHS = 100_000
MAX_SEED = 2**32 - 1        # torch and numpy seeds
# Caller params never name a filesystem location: the server's config does (`server_params`).
PATH_KEYS = frozenset({"data_dir", "registry_dir", "out_dir", "db_path", "sources"})  # sources: files to read
PATH_SUFFIXES = ("_dir", "_path", "_file")


def is_path_key(key: str) -> bool:
    return key in PATH_KEYS or key.endswith(PATH_SUFFIXES)


def check_identity(user, is_admin) -> str:
    """The authenticated caller, stripped. ValueError names the field (the HTTP layer supplies both)."""
    if not isinstance(user, str) or not user.strip():
        raise ValueError(f"user must be a non-empty string, got {user!r}")
    if len(user) > MAX_USER_CHARS:
        raise ValueError(f"user must be at most {MAX_USER_CHARS} characters, got {len(user)}")
    if not isinstance(is_admin, bool):
        raise ValueError(f"is_admin must be a bool, got {is_admin!r}")
    return user.strip()


def _check_shape(value, where: str, depth: int = 0) -> None:
    """Bound the structure of caller params and refuse path-like keys at any depth."""
    if depth > MAX_PARAMS_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_PARAMS_DEPTH} levels")
    if isinstance(value, dict):
        if len(value) > MAX_PARAMS_KEYS:
            raise ValueError(f"{where} must have at most {MAX_PARAMS_KEYS} keys, got {len(value)}")
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_STRING_CHARS:
                raise ValueError(f"{where}: keys must be strings of at most {MAX_STRING_CHARS} characters, "
                                 f"got {str(key)[:MAX_STRING_CHARS]!r}...")
            if is_path_key(key):
                raise ValueError(f"{where}.{key}: paths cannot be chosen by the caller; the server's config sets "
                                 f"where training reads and writes (refused keys: {sorted(PATH_KEYS)} and any key "
                                 f"ending in {list(PATH_SUFFIXES)})")
            _check_shape(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            raise ValueError(f"{where} must have at most {MAX_LIST_ITEMS} items, got {len(value)}")
        for i, item in enumerate(value):
            _check_shape(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        raise ValueError(f"{where} must be at most {MAX_STRING_CHARS} characters, got {len(value)}")


def check_bounds(params: dict, bounds: dict[str, tuple], where: str) -> None:
    """`bounds`: key -> (low, high, max_items), inclusive; None where not bounded. A number, or each number of a
    list, must lie in [low, high]; other types are left to the task's own validator (which names them)."""
    for key, (low, high, max_items) in bounds.items():
        if key not in params:
            continue
        value = params[key]
        if isinstance(value, list):
            if max_items is not None and len(value) > max_items:
                raise ValueError(f"{where}.{key} must have at most {max_items} items, got {len(value)}")
            items = [(f"{where}.{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(f"{where}.{key}", value)]
        for name, v in items:
            if low is not None and _is_number(v) and not (math.isfinite(v) and low <= v <= high):
                raise ValueError(f"{name} must be between {low:g} and {high:g}, got {v!r}")


def validate_submission(user, task, params, priority, num_gpus, server_params: dict | None = None) -> dict:
    """Check a submission; return the normalised params. ValueError names the field and value.

    `params` come from the caller and may hold no path-like key; `server_params` (the server's data_dir,
    registry_dir) are merged over them after that check, then the task's validator sees the merged dict."""
    check_identity(user, False)
    if not isinstance(task, str) or task not in TRAINING_TASKS:
        raise ValueError(f"task: unknown training task {str(task)[:MAX_STRING_CHARS]!r}; "
                         f"known tasks: {sorted(TRAINING_TASKS)}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict, got {type(params).__name__}: {str(params)[:MAX_STRING_CHARS]!r}")
    try:
        encoded = json.dumps(params, allow_nan=False)  # stored as JSON text, so must be plain JSON
    except (TypeError, ValueError) as exc:
        raise ValueError(f"params must be JSON-serialisable without NaN/inf: {exc}") from exc
    if len(encoded) > MAX_PARAMS_BYTES:
        raise ValueError(f"params must be at most {MAX_PARAMS_BYTES} bytes as JSON, got {len(encoded)}")
    params = json.loads(encoded)
    _check_shape(params, "params")
    if server_params is not None:
        if not isinstance(server_params, dict):
            raise ValueError(f"server_params must be a dict, got {type(server_params).__name__}")
        params = {**params, **json.loads(json.dumps(server_params))}
    if "epochs" in params and (not _is_int(params["epochs"]) or not 1 <= params["epochs"] <= MAX_EPOCHS):
        raise ValueError(f"params.epochs must be an integer between 1 and {MAX_EPOCHS}, got {params['epochs']!r}")
    if not _is_int(priority) or not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise ValueError(f"priority must be an integer between {PRIORITY_RANGE[0]} and {PRIORITY_RANGE[1]}, "
                         f"got {priority!r}")
    if not _is_number(num_gpus) or not math.isfinite(num_gpus) or not 0 <= num_gpus <= MAX_NUM_GPUS:
        raise ValueError(f"num_gpus must be a finite number between 0 and {MAX_NUM_GPUS}, got {num_gpus!r}")
    if num_gpus > 1 and float(num_gpus) != int(num_gpus):  # Ray only shares a GPU for fractions below one
        raise ValueError(f"num_gpus above 1 must be a whole number, got {num_gpus!r}")
    validator = TASK_PARAM_VALIDATORS.get(task)
    return validator(params) if validator is not None else params


JOBS_TABLE = "edgeray_training_jobs"
_LEGACY_TABLE = "jobs"  # the SQLite store's table before the queue column (moved over on first open)
_COLUMNS = ("seq", "job_id", "user", "task", "params", "priority", "num_gpus", "state", "attempts", "max_attempts",
            "submitted_at", "started_at", "finished_at", "cancel_requested_at", "error", "result", "progress",
            "placement")
_JSON_COLUMNS = ("params", "result", "progress", "placement")
# pg_advisory_xact_lock(class, key): serialises claim_next and recover of one queue across processes on
# PostgreSQL (SQLite: BEGIN IMMEDIATE does). Any fixed 32-bit number unique to this store.
_QUEUE_LOCK_CLASS = 0x6A6F_6273

_metadata = sa.MetaData()
_jobs = sa.Table(
    JOBS_TABLE, _metadata,
    # BIGINT on PostgreSQL; SQLite's AUTOINCREMENT needs INTEGER (and never reuses a number: FIFO by seq holds).
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("queue", sa.String(), nullable=False),
    sa.Column("job_id", sa.String(), unique=True, nullable=False),
    sa.Column("user", sa.String(), nullable=False),
    sa.Column("task", sa.String(), nullable=False),
    sa.Column("params", sa.Text(), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False),
    sa.Column("num_gpus", sa.Float(), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("submitted_at", sa.Float(), nullable=False),
    sa.Column("started_at", sa.Float()),
    sa.Column("finished_at", sa.Float()),
    sa.Column("cancel_requested_at", sa.Float()),
    sa.Column("error", sa.Text()),
    sa.Column("result", sa.Text()),
    sa.Column("progress", sa.Text()),
    sa.Column("placement", sa.Text()),
    sa.Index("edgeray_training_jobs_dispatch", "queue", "state", "priority", "seq"),
    sa.Index("edgeray_training_jobs_user", "queue", "user", "seq"),
    sqlite_autoincrement=True,
)
_c = _jobs.c
# running first, then queued in dispatch order (priority high first, FIFO within one), then newest finished
_LIST_ORDER = (sa.case((_c.state == "running", 0), (_c.state == "queued", 1), else_=2),
               sa.case((_c.state.in_(FINISHED_STATES), -_c.seq), else_=-_c.priority), _c.seq)
_DISPATCH_ORDER = (_c.priority.desc(), _c.seq)


def _unknown_job(job_id: str) -> KeyError:
    return KeyError(f"unknown job_id {job_id!r} (never submitted, or purged after the retention period)")


def _database_url(location: str | Path) -> str:
    """A SQLAlchemy URL from a database URL (kept) or a file path (a SQLite file there, made absolute)."""
    if isinstance(location, str) and "://" in location:
        return location
    path = Path(location).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class JobStore:
    """Durable training queue: the rows of `queue` in one table of a SQLite file or a PostgreSQL database.
    Thread-safe (the scheduler actor is threaded) and safe across processes: a job is claimed by one store
    only, whichever process or node it runs in."""

    def __init__(self, location: str | Path, *, queue: str = "default", retention_s: float = DEFAULT_RETENTION_S,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, clock: Callable[[], float] = time.time):
        from edgeray.storage.sql import create_tables, open_engine

        if not isinstance(retention_s, Real) or isinstance(retention_s, bool) or not retention_s > 0:
            raise ValueError(f"retention_s must be a number > 0, got {retention_s!r}")
        if not _is_int(max_attempts) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        if not isinstance(queue, str) or not queue or len(queue) > MAX_STRING_CHARS:
            raise ValueError(f"queue must be a non-empty string of at most {MAX_STRING_CHARS} characters, "
                             f"got {queue!r}")
        self.queue = queue
        self.retention_s = float(retention_s)
        self.max_attempts = int(max_attempts)
        self.clock = clock
        self._lock = threading.RLock()  # one writer at a time in this process; the database orders the others
        self.engine = open_engine(_database_url(location), "db_path", immediate=True)
        self.dialect = self.engine.dialect.name
        create_tables(self.engine, _metadata)
        if self.dialect == "sqlite":
            self._adopt_legacy_table()
        self._mine = _c.queue == queue

    def _adopt_legacy_table(self) -> None:
        """A queue file written before the shared table: move its jobs (seq kept) into this queue, once."""
        with self._lock, self.engine.begin() as conn:
            if not sa.inspect(conn).has_table(_LEGACY_TABLE):
                return
            columns = ", ".join(f'"{c}"' for c in _COLUMNS)
            conn.exec_driver_sql(f"INSERT INTO {JOBS_TABLE} (queue, {columns}) "
                                 f"SELECT ?, {columns} FROM {_LEGACY_TABLE}", (self.queue,))
            conn.exec_driver_sql(f"DROP TABLE {_LEGACY_TABLE}")

    def close(self) -> None:
        with self._lock:
            self.engine.dispose()

    def __repr__(self) -> str:
        from edgeray.storage.sql import shown

        return f"JobStore({shown(self.engine)!r}, queue={self.queue!r})"

    @contextmanager
    def _write(self):
        """A write transaction: this process's lock, then the database's (SQLite: BEGIN IMMEDIATE)."""
        with self._lock, self.engine.begin() as conn:
            yield conn

    def _lock_queue(self, conn) -> None:
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:cls, :key)"),
                         {"cls": _QUEUE_LOCK_CLASS, "key": _signed32(zlib.crc32(self.queue.encode()))})

    # ----------------------------------------------------------------- reads
    def _row_to_job(self, row) -> dict:
        job = {col: row[col] for col in _COLUMNS if col != "seq"}
        for col in _JSON_COLUMNS:
            job[col] = json.loads(job[col]) if job[col] is not None else None
        job["cancel_requested"] = job["cancel_requested_at"] is not None
        job["eta_s"] = self._eta(job)
        return job

    @staticmethod
    def _eta(job: dict) -> float | None:
        if job["state"] == "completed":
            return 0.0
        progress = job["progress"]
        if job["state"] != "running" or not progress or progress["epoch"] < 1:
            return None
        return progress["mean_epoch_s"] * max(progress["total_epochs"] - progress["epoch"], 0)

    def _select(self, cond=sa.true(), order=_LIST_ORDER, conn=None) -> list[dict]:
        query = sa.select(_jobs).where(self._mine, cond).order_by(*order)
        if conn is not None:
            return [self._row_to_job(r) for r in conn.execute(query).mappings()]
        with self.engine.connect() as conn:
            return [self._row_to_job(r) for r in conn.execute(query).mappings()]

    def get(self, job_id: str) -> dict:
        jobs = self._select(_c.job_id == job_id, ())
        if not jobs:
            raise _unknown_job(job_id)
        return jobs[0]

    def list_jobs(self, states: Iterable[str] | None = None, user: str | None = None) -> list[dict]:
        cond = sa.true()
        if states is not None:
            states = list(states)
            bad = [s for s in states if s not in JOB_STATES]
            if bad:
                raise ValueError(f"states: unknown job state(s) {bad}; known: {list(JOB_STATES)}")
            cond = sa.and_(cond, _c.state.in_(states))
        if user is not None:
            cond = sa.and_(cond, _c.user == user)
        return self._select(cond)

    def visible_job(self, job_id: str, user: str, is_admin: bool) -> dict:
        """The job if the caller may see it. For a non-admin, another user's job answers exactly like an
        unknown id (KeyError, same message): job ids cannot be probed for existence or owner."""
        user = check_identity(user, is_admin)
        job = self.get(job_id)
        if not is_admin and job["user"] != user:
            raise _unknown_job(job_id)
        return job

    def visible_jobs(self, user: str, is_admin: bool, states: Iterable[str] | None = None,
                     of_user: str | None = None) -> list[dict]:
        """Jobs the caller may see: a non-admin only their own (asking for another user's is a
        PermissionError); an admin everyone's, or `of_user`'s when given."""
        user = check_identity(user, is_admin)
        if of_user is not None:
            if not isinstance(of_user, str) or not of_user.strip() or len(of_user) > MAX_USER_CHARS:
                raise ValueError(f"user must be a non-empty string of at most {MAX_USER_CHARS} characters, "
                                 f"got {str(of_user)[:MAX_USER_CHARS]!r}")
            of_user = of_user.strip()
            if not is_admin and of_user != user:
                raise PermissionError("only an admin can list another user's training jobs")
        elif not is_admin:
            of_user = user
        return self.list_jobs(states=states, user=of_user)

    def _count_running(self, conn) -> int:
        query = sa.select(sa.func.count()).select_from(_jobs).where(self._mine, _c.state == "running")
        return conn.execute(query).scalar_one()

    def running_count(self) -> int:
        with self.engine.connect() as conn:
            return self._count_running(conn)

    # ---------------------------------------------------------------- writes
    def submit(self, user: str, task: str, params: dict | None = None, priority: int = 0,
               num_gpus: float = 0.0, max_attempts: int | None = None, server_params: dict | None = None) -> dict:
        params = validate_submission(user, task, params, priority, num_gpus, server_params)
        attempts_cap = self.max_attempts if max_attempts is None else max_attempts
        if not _is_int(attempts_cap) or attempts_cap < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        job_id = uuid.uuid4().hex[:12]
        with self._write() as conn:
            conn.execute(_jobs.insert().values(
                queue=self.queue, job_id=job_id, user=user.strip(), task=task, params=json.dumps(params),
                priority=int(priority), num_gpus=float(num_gpus), state="queued", attempts=0,
                max_attempts=int(attempts_cap), submitted_at=float(self.clock())))
        return self.get(job_id)

    def claim_next(self, max_concurrent: int) -> list[dict]:
        """Move queued jobs to running (highest priority first, FIFO within a priority) until
        `max_concurrent` run; return the claimed jobs with their new attempt number. One transaction that
        holds the queue's lock, so two schedulers (two processes, two nodes) never claim the same job and
        never run more than `max_concurrent` between them."""
        with self._write() as conn:
            self._lock_queue(conn)
            free = max_concurrent - self._count_running(conn)
            if free <= 0:
                return []
            ids = conn.execute(sa.select(_c.job_id).where(self._mine, _c.state == "queued")
                               .order_by(*_DISPATCH_ORDER).limit(free)).scalars().all()
            if ids:
                conn.execute(_jobs.update().where(self._mine, _c.job_id.in_(ids), _c.state == "queued").values(
                    state="running", attempts=_c.attempts + 1, started_at=float(self.clock()), finished_at=None,
                    progress=None, placement=None, error=None))
            claimed = {job["job_id"]: job for job in self._select(_c.job_id.in_(ids), (), conn)} if ids else {}
        return [claimed[job_id] for job_id in ids]

    def _current(self, conn, job_id: str, attempt: int, *columns):
        """The job's row (locked until the transaction ends) when `attempt` is its running attempt, else None."""
        row = conn.execute(sa.select(_c.state, _c.attempts, *columns).where(self._mine, _c.job_id == job_id)
                           .with_for_update()).first()
        return row if row is not None and row.state == "running" and row.attempts == attempt else None

    def record_placement(self, job_id: str, attempt: int, placement: dict) -> bool:
        """Merge where the runner landed (node, Ray GPU ids, device) into the job. False if this attempt is stale."""
        with self._write() as conn:
            row = self._current(conn, job_id, attempt, _c.placement)
            if row is None:
                return False
            merged = {**(json.loads(row.placement) if row.placement else {}), **placement}
            conn.execute(_jobs.update().where(self._mine, _c.job_id == job_id).values(placement=json.dumps(merged)))
            return True

    def report_progress(self, job_id: str, attempt: int, epoch: int, total_epochs: int, metrics: dict,
                        elapsed_s: float) -> bool:
        """Store one epoch's progress; return True when the runner must stop (cancel requested, or this
        attempt was superseded, e.g. re-queued by a scheduler restart)."""
        if not _is_int(epoch) or not _is_int(total_epochs) or not 0 <= epoch <= total_epochs or total_epochs < 1:
            raise ValueError(f"epoch/total_epochs must be integers with 0 <= epoch <= total_epochs >= 1, "
                             f"got epoch={epoch!r}, total_epochs={total_epochs!r}")
        if not isinstance(elapsed_s, Real) or not math.isfinite(elapsed_s) or elapsed_s < 0:
            raise ValueError(f"elapsed_s must be a finite number >= 0, got {elapsed_s!r}")
        # a diverged loss (NaN/inf) is stored as None so job dicts stay valid JSON for the HTTP API
        metrics = {str(k): ((float(v) if math.isfinite(v) else None) if isinstance(v, Real) else v)
                   for k, v in (metrics or {}).items()}
        with self._write() as conn:
            row = self._current(conn, job_id, attempt, _c.cancel_requested_at, _c.progress)
            if row is None:
                return True
            previous = json.loads(row.progress) if row.progress else {}
            history = (previous.get("history") or []) + [{"epoch": int(epoch), **metrics}]
            progress = {"epoch": int(epoch), "total_epochs": int(total_epochs), "metrics": metrics,
                        "elapsed_s": float(elapsed_s),
                        # ETA from the mean epoch time so far: simple and unbiased once epochs are alike
                        "mean_epoch_s": float(elapsed_s) / epoch if epoch else None,
                        "history": history[-_HISTORY_LIMIT:]}
            conn.execute(_jobs.update().where(self._mine, _c.job_id == job_id).values(progress=json.dumps(progress)))
            return row.cancel_requested_at is not None

    def finish(self, job_id: str, attempt: int, state: str, result: dict | None = None,
               error: str | None = None) -> bool:
        """Record how an attempt ended. Ignored (False) for a superseded attempt."""
        if state not in FINISHED_STATES:
            raise ValueError(f"state must be one of {list(FINISHED_STATES)}, got {state!r}")
        with self._write() as conn:
            if self._current(conn, job_id, attempt) is None:
                return False
            conn.execute(_jobs.update().where(self._mine, _c.job_id == job_id).values(
                state=state, finished_at=float(self.clock()), result=json.dumps(result) if result is not None else None,
                error=error))
            return True

    def cancel(self, job_id: str, user: str | None = None, is_admin: bool = False) -> dict:
        """A queued job is cancelled at once and never runs; a running one gets a cancel request its
        runner sees at the next epoch (the job stays 'running' until the runner stops).

        With `user` (the HTTP path always passes it): only the job's owner or an admin may cancel; anyone else
        gets a PermissionError that does not name the owner. `user=None` is the scheduler's own call."""
        with self._write() as conn:
            row = conn.execute(sa.select(_c.user, _c.state, _c.cancel_requested_at)
                               .where(self._mine, _c.job_id == job_id).with_for_update()).first()
            if row is None:
                raise _unknown_job(job_id)
            if user is not None:
                user = check_identity(user, is_admin)
            if user is not None and not is_admin and row.user != user:
                raise PermissionError(f"job_id {job_id!r} belongs to another user; only its owner or an "
                                      f"admin can cancel it")
            now = float(self.clock())
            this_job = sa.and_(self._mine, _c.job_id == job_id)
            if row.state == "queued":
                conn.execute(_jobs.update().where(this_job).values(
                    state="cancelled", finished_at=now, cancel_requested_at=now, error="cancelled while queued"))
            elif row.state == "running":
                if row.cancel_requested_at is None:
                    conn.execute(_jobs.update().where(this_job).values(cancel_requested_at=now))
            else:
                raise ValueError(f"job_id {job_id!r} is already {row.state}; only queued or running jobs can be "
                                 f"cancelled")
        return self.get(job_id)

    def cancel_overdue(self, grace_s: float) -> list[dict]:
        """Running jobs whose cancel request is older than `grace_s` (their runner missed the flag)."""
        cutoff = float(self.clock()) - grace_s
        return self._select(sa.and_(_c.state == "running", _c.cancel_requested_at.is_not(None),
                                    _c.cancel_requested_at <= cutoff))

    def recover(self) -> dict:
        """After a scheduler restart: running jobs lost their runner. Re-queue those with attempts left,
        fail the rest with the reason. Returns {"requeued": [...], "failed": [...]} job ids."""
        requeued, failed = [], []
        with self._write() as conn:
            self._lock_queue(conn)
            rows = conn.execute(sa.select(_c.job_id, _c.attempts, _c.max_attempts, _c.cancel_requested_at)
                                .where(self._mine, _c.state == "running").order_by(_c.seq)).all()
            now = float(self.clock())
            for job_id, attempts, max_attempts, cancel_at in rows:
                this_job = sa.and_(self._mine, _c.job_id == job_id)
                if cancel_at is not None:  # the user already asked it to stop: do not run it again
                    conn.execute(_jobs.update().where(this_job).values(
                        state="cancelled", finished_at=now, error=f"cancelled; {RESTART_REASON}"))
                    failed.append(job_id)
                elif attempts < max_attempts:
                    conn.execute(_jobs.update().where(this_job).values(
                        state="queued", started_at=None, placement=None,
                        error=f"re-queued: {RESTART_REASON} during attempt {attempts}"))
                    requeued.append(job_id)
                else:
                    conn.execute(_jobs.update().where(this_job).values(
                        state="failed", finished_at=now, error=RESTART_REASON))
                    failed.append(job_id)
        return {"requeued": requeued, "failed": failed}

    def purge(self) -> list[str]:
        """Delete finished jobs whose finish is older than the retention period."""
        cutoff = float(self.clock()) - self.retention_s
        old = sa.and_(self._mine, _c.state.in_(FINISHED_STATES), _c.finished_at < cutoff)
        with self._write() as conn:
            ids = conn.execute(sa.select(_c.job_id).where(old)).scalars().all()
            if ids:
                conn.execute(_jobs.delete().where(self._mine, _c.job_id.in_(ids)))
        return list(ids)

    # ------------------------------------------------------------ snapshots
    def state_dict(self) -> dict:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*(_c[col] for col in _COLUMNS)).where(self._mine)
                                .order_by(_c.seq)).mappings().all()
        return {"retention_s": self.retention_s, "max_attempts": self.max_attempts,
                "jobs": [dict(r) for r in rows]}

    def load_state(self, state: dict) -> None:
        """Replace this queue's jobs with a `state_dict()` snapshot. Rows are inserted in their seq order and
        numbered afresh (other queues may share the table), so the FIFO order survives."""
        jobs = sorted(state["jobs"], key=lambda job: job["seq"])
        with self._write() as conn:
            conn.execute(_jobs.delete().where(self._mine))
            for job in jobs:  # one at a time: the database numbers them in this order
                conn.execute(_jobs.insert().values(queue=self.queue, **{c: job[c] for c in _COLUMNS if c != "seq"}))
        self.retention_s = float(state["retention_s"])
        self.max_attempts = int(state["max_attempts"])

    @classmethod
    def from_state(cls, state: dict, location: str | Path, clock: Callable[[], float] = time.time,
                   queue: str = "default") -> JobStore:
        store = cls(location, queue=queue, retention_s=state["retention_s"], max_attempts=state["max_attempts"],
                    clock=clock)
        store.load_state(state)
        return store


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value
