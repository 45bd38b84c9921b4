"""Where state lives: one place for it.

- `edgeray.storage.results`: where a run's results go (a local folder or a pyarrow.fs URI) and where a job
  submitted to Ray keeps them; its names are re-exported here, so `from edgeray.storage import publish` works.
- `edgeray.storage.state`: the actors' checkpoints, in files under run_dir/state or in a SQL database
  (`storage.state_url`). Imported from its module, so reading a config does not import SQLAlchemy.
"""
from edgeray.storage.results import (RAY_JOB_ENV, filesystem, is_uri, job_home, outside_job_copy, publish,
                                     staging_dir, submitted_job, where)

__all__ = ["RAY_JOB_ENV", "filesystem", "is_uri", "job_home", "outside_job_copy", "publish", "staging_dir",
           "submitted_job", "where"]
