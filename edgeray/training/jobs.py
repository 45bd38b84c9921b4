"""Training jobs without Ray: the task registry, submission validation and the durable job store.

The store is SQLite so a restarted scheduler actor finds its queue where it left it. Times are unix seconds
from an injectable clock (tests move it to check retention without sleeping).

Ownership: a job belongs to the authenticated identity that submitted it (the HTTP layer passes it; callers
cannot name a user). Non-admins see and cancel only their own jobs; admins see and cancel all. Callers cannot
choose where a job reads or writes: path-like parameters are refused and the server adds its own
(`server_params`) after validation. Every number and size a submission carries is bounded.
"""
from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from numbers import Integral, Real
from pathlib import Path

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
        encoded = json.dumps(params, allow_nan=False)  # stored in SQLite, so must be plain JSON
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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT UNIQUE NOT NULL,
    user TEXT NOT NULL,
    task TEXT NOT NULL,
    params TEXT NOT NULL,
    priority INTEGER NOT NULL,
    num_gpus REAL NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    cancel_requested_at REAL,
    error TEXT,
    result TEXT,
    progress TEXT,
    placement TEXT
);
CREATE INDEX IF NOT EXISTS jobs_dispatch ON jobs (state, priority DESC, seq);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user, seq);
"""
_COLUMNS = ("seq", "job_id", "user", "task", "params", "priority", "num_gpus", "state", "attempts", "max_attempts",
            "submitted_at", "started_at", "finished_at", "cancel_requested_at", "error", "result", "progress",
            "placement")
_JSON_COLUMNS = ("params", "result", "progress", "placement")
# running first, then queued in dispatch order (priority high first, FIFO within one), then newest finished
_LIST_ORDER = ("ORDER BY CASE state WHEN 'running' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END, "
               "CASE WHEN state IN ('completed', 'failed', 'cancelled') THEN -seq ELSE -priority END, seq")


def _unknown_job(job_id: str) -> KeyError:
    return KeyError(f"unknown job_id {job_id!r} (never submitted, or purged after the retention period)")


class JobStore:
    """Durable training queue in one SQLite file. Thread-safe (the scheduler actor is threaded)."""

    def __init__(self, path: str | Path, *, retention_s: float = DEFAULT_RETENTION_S,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, clock: Callable[[], float] = time.time):
        if not isinstance(retention_s, Real) or isinstance(retention_s, bool) or not retention_s > 0:
            raise ValueError(f"retention_s must be a number > 0, got {retention_s!r}")
        if not _is_int(max_attempts) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = float(retention_s)
        self.max_attempts = int(max_attempts)
        self.clock = clock
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers (HTTP polling) never block the writer
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ----------------------------------------------------------------- reads
    def _row_to_job(self, row) -> dict:
        job = dict(zip(_COLUMNS, row))
        for col in _JSON_COLUMNS:
            job[col] = json.loads(job[col]) if job[col] is not None else None
        job["cancel_requested"] = job["cancel_requested_at"] is not None
        job["eta_s"] = self._eta(job)
        job.pop("seq")
        return job

    @staticmethod
    def _eta(job: dict) -> float | None:
        if job["state"] == "completed":
            return 0.0
        progress = job["progress"]
        if job["state"] != "running" or not progress or progress["epoch"] < 1:
            return None
        return progress["mean_epoch_s"] * max(progress["total_epochs"] - progress["epoch"], 0)

    def _select(self, where: str = "", args: tuple = (), order: str = _LIST_ORDER) -> list[dict]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs {where} {order}", args).fetchall()
        return [self._row_to_job(r) for r in rows]

    def get(self, job_id: str) -> dict:
        jobs = self._select("WHERE job_id = ?", (job_id,), "")
        if not jobs:
            raise _unknown_job(job_id)
        return jobs[0]

    def list_jobs(self, states: Iterable[str] | None = None, user: str | None = None) -> list[dict]:
        clauses, args = [], []
        if states is not None:
            states = list(states)
            bad = [s for s in states if s not in JOB_STATES]
            if bad:
                raise ValueError(f"states: unknown job state(s) {bad}; known: {list(JOB_STATES)}")
            clauses.append(f"state IN ({', '.join('?' * len(states))})")
            args.extend(states)
        if user is not None:
            clauses.append("user = ?")
            args.append(user)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._select(where, tuple(args))

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

    def running_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0]

    # ---------------------------------------------------------------- writes
    def submit(self, user: str, task: str, params: dict | None = None, priority: int = 0,
               num_gpus: float = 0.0, max_attempts: int | None = None, server_params: dict | None = None) -> dict:
        params = validate_submission(user, task, params, priority, num_gpus, server_params)
        attempts_cap = self.max_attempts if max_attempts is None else max_attempts
        if not _is_int(attempts_cap) or attempts_cap < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        job_id = uuid.uuid4().hex[:12]
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (job_id, user, task, params, priority, num_gpus, state, attempts, max_attempts, "
                "submitted_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?)",
                (job_id, user.strip(), task, json.dumps(params), int(priority), float(num_gpus), int(attempts_cap),
                 float(self.clock())))
        return self.get(job_id)

    def claim_next(self, max_concurrent: int) -> list[dict]:
        """Move queued jobs to running (highest priority first, FIFO within a priority) until
        `max_concurrent` run; return the claimed jobs with their new attempt number."""
        claimed = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                free = max_concurrent - self._db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0]
                if free > 0:
                    ids = [r[0] for r in self._db.execute(
                        "SELECT job_id FROM jobs WHERE state = 'queued' ORDER BY priority DESC, seq LIMIT ?",
                        (free,))]
                    now = float(self.clock())
                    for job_id in ids:
                        self._db.execute(
                            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, "
                            "finished_at = NULL, progress = NULL, placement = NULL, error = NULL WHERE job_id = ?",
                            (now, job_id))
                    claimed = ids
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [self.get(job_id) for job_id in claimed]

    def _is_current(self, job_id: str, attempt: int) -> bool:
        row = self._db.execute("SELECT state, attempts FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row is not None and row[0] == "running" and row[1] == attempt

    def record_placement(self, job_id: str, attempt: int, placement: dict) -> bool:
        """Merge where the runner landed (node, Ray GPU ids, device) into the job. False if this attempt is stale."""
        with self._lock:
            if not self._is_current(job_id, attempt):
                return False
            row = self._db.execute("SELECT placement FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            merged = {**(json.loads(row[0]) if row[0] else {}), **placement}
            self._db.execute("UPDATE jobs SET placement = ? WHERE job_id = ?", (json.dumps(merged), job_id))
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
        with self._lock:
            row = self._db.execute("SELECT state, attempts, cancel_requested_at, progress FROM jobs WHERE job_id = ?",
                                   (job_id,)).fetchone()
            if row is None or row[0] != "running" or row[1] != attempt:
                return True
            previous = json.loads(row[3]) if row[3] else {}
            history = (previous.get("history") or []) + [{"epoch": int(epoch), **metrics}]
            progress = {"epoch": int(epoch), "total_epochs": int(total_epochs), "metrics": metrics,
                        "elapsed_s": float(elapsed_s),
                        # ETA from the mean epoch time so far: simple and unbiased once epochs are alike
                        "mean_epoch_s": float(elapsed_s) / epoch if epoch else None,
                        "history": history[-_HISTORY_LIMIT:]}
            self._db.execute("UPDATE jobs SET progress = ? WHERE job_id = ?",
                             (json.dumps(progress), job_id))
            return row[2] is not None

    def finish(self, job_id: str, attempt: int, state: str, result: dict | None = None,
               error: str | None = None) -> bool:
        """Record how an attempt ended. Ignored (False) for a superseded attempt."""
        if state not in FINISHED_STATES:
            raise ValueError(f"state must be one of {list(FINISHED_STATES)}, got {state!r}")
        with self._lock:
            if not self._is_current(job_id, attempt):
                return False
            self._db.execute("UPDATE jobs SET state = ?, finished_at = ?, result = ?, error = ? WHERE job_id = ?",
                             (state, float(self.clock()), json.dumps(result) if result is not None else None, error,
                              job_id))
            return True

    def cancel(self, job_id: str, user: str | None = None, is_admin: bool = False) -> dict:
        """A queued job is cancelled at once and never runs; a running one gets a cancel request its
        runner sees at the next epoch (the job stays 'running' until the runner stops).

        With `user` (the HTTP path always passes it): only the job's owner or an admin may cancel; anyone else
        gets a PermissionError that does not name the owner. `user=None` is the scheduler's own call."""
        with self._lock:
            job = self.get(job_id)
            if user is not None:
                user = check_identity(user, is_admin)
                if not is_admin and job["user"] != user:
                    raise PermissionError(f"job_id {job_id!r} belongs to another user; only its owner or an "
                                          f"admin can cancel it")
            now = float(self.clock())
            if job["state"] == "queued":
                self._db.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested_at = ?, "
                                 "error = 'cancelled while queued' WHERE job_id = ?", (now, now, job_id))
            elif job["state"] == "running":
                if job["cancel_requested_at"] is None:
                    self._db.execute("UPDATE jobs SET cancel_requested_at = ? WHERE job_id = ?", (now, job_id))
            else:
                raise ValueError(f"job_id {job_id!r} is already {job['state']}; only queued or running jobs can be "
                                 f"cancelled")
        return self.get(job_id)

    def cancel_overdue(self, grace_s: float) -> list[dict]:
        """Running jobs whose cancel request is older than `grace_s` (their runner missed the flag)."""
        cutoff = float(self.clock()) - grace_s
        return self._select("WHERE state = 'running' AND cancel_requested_at IS NOT NULL "
                            "AND cancel_requested_at <= ?", (cutoff,))

    def recover(self) -> dict:
        """After a scheduler restart: running jobs lost their runner. Re-queue those with attempts left,
        fail the rest with the reason. Returns {"requeued": [...], "failed": [...]} job ids."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute("SELECT job_id, attempts, max_attempts, cancel_requested_at FROM jobs "
                                        "WHERE state = 'running' ORDER BY seq").fetchall()
                requeued, failed = [], []
                now = float(self.clock())
                for job_id, attempts, max_attempts, cancel_at in rows:
                    if cancel_at is not None:  # the user already asked it to stop: do not run it again
                        self._db.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, error = ? "
                                         "WHERE job_id = ?", (now, f"cancelled; {RESTART_REASON}", job_id))
                        failed.append(job_id)
                    elif attempts < max_attempts:
                        self._db.execute("UPDATE jobs SET state = 'queued', started_at = NULL, placement = NULL, "
                                         "error = ? WHERE job_id = ?",
                                         (f"re-queued: {RESTART_REASON} during attempt {attempts}", job_id))
                        requeued.append(job_id)
                    else:
                        self._db.execute("UPDATE jobs SET state = 'failed', finished_at = ?, error = ? "
                                         "WHERE job_id = ?", (now, RESTART_REASON, job_id))
                        failed.append(job_id)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return {"requeued": requeued, "failed": failed}

    def purge(self) -> list[str]:
        """Delete finished jobs whose finish is older than the retention period."""
        cutoff = float(self.clock()) - self.retention_s
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT job_id FROM jobs WHERE state IN ('completed', 'failed', 'cancelled') AND finished_at < ?",
                (cutoff,))]
            self._db.executemany("DELETE FROM jobs WHERE job_id = ?", [(i,) for i in ids])
        return ids

    # ------------------------------------------------------------ snapshots
    def state_dict(self) -> dict:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY seq").fetchall()
        return {"retention_s": self.retention_s, "max_attempts": self.max_attempts,
                "jobs": [dict(zip(_COLUMNS, r)) for r in rows]}

    def load_state(self, state: dict) -> None:
        """Replace this store's contents with a `state_dict()` snapshot (seq kept, so FIFO order survives)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM jobs")
                self._db.executemany(
                    f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    [tuple(job[c] for c in _COLUMNS) for job in state["jobs"]])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.retention_s = float(state["retention_s"])
            self.max_attempts = int(state["max_attempts"])

    @classmethod
    def from_state(cls, state: dict, path: str | Path, clock: Callable[[], float] = time.time) -> JobStore:
        store = cls(path, retention_s=state["retention_s"], max_attempts=state["max_attempts"], clock=clock)
        store.load_state(state)
        return store
