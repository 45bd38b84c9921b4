"""Training-queue core (no Ray): job model, durable SQLite store, task registry; `tasks` registers the tasks."""
from __future__ import annotations

from edgeray.training.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETENTION_S,
    FINISHED_STATES,
    JOB_STATES,
    TRAINING_TASKS,
    JobCancelled,
    JobStore,
    check_identity,
    is_path_key,
    register_task,
    validate_submission,
)
from edgeray.training import tasks  # noqa: F401  (registers the built-in tasks)

__all__ = ["DEFAULT_MAX_ATTEMPTS", "DEFAULT_RETENTION_S", "FINISHED_STATES", "JOB_STATES", "TRAINING_TASKS",
           "JobCancelled", "JobStore", "check_identity", "is_path_key", "register_task", "validate_submission"]
