"""Where a run's results go, and where a job submitted to Ray keeps them.

`run_dir` is a local folder or a storage URI (file://, s3://, gs://, hdfs://: whatever pyarrow.fs reads).
For a URI the run works in a local staging folder (actors checkpoint and append there, which object
stores cannot do) and `publish` copies that folder to the URI when the run ends, through pyarrow.fs.

A job started with `ray job submit --working-dir .` runs in Ray's temporary copy of that folder, which Ray
deletes; outputs configured inside it are moved to EDGERAY_HOME/jobs/<submission id>/ instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path

RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for the entrypoint it runs


def is_uri(path: str | os.PathLike | None) -> bool:
    return isinstance(path, str) and "://" in path


def staging_dir(uri: str) -> Path:
    """A local folder private to this results URI (EDGERAY_STAGING, else the temp folder)."""
    root = Path(os.environ.get("EDGERAY_STAGING") or Path(tempfile.gettempdir()) / "edgeray-staging")
    return root / hashlib.sha256(uri.encode()).hexdigest()[:16]


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for a URI; ValueError naming the URI when pyarrow cannot open it."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError, NotImplementedError) as exc:  # pyarrow's errors derive from these
        raise ValueError(f"run_dir: cannot open storage URI {uri!r}: {exc}") from None


def publish(local_dir: str | Path, uri: str) -> list[str]:
    """Copy every file under local_dir to uri (same relative paths); returns the paths written."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    local_dir = Path(local_dir)
    fs.create_dir(root, recursive=True)
    if not local_dir.is_dir():
        return []
    pafs.copy_files(str(local_dir.resolve()), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    selector = pafs.FileSelector(root, recursive=True)
    return sorted(info.path for info in fs.get_file_info(selector) if info.type == pafs.FileType.File)


def submitted_job() -> dict | None:
    """{submission_id, working_dir} when this process is the entrypoint of a `ray job submit`, else None."""
    raw = os.environ.get(RAY_JOB_ENV)
    if not raw:
        return None
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError:
        return None
    metadata = conf.get("metadata") or {}
    submission = metadata.get("job_submission_id")
    if not submission:
        return None
    return {"submission_id": str(submission), "working_dir": (conf.get("runtime_env") or {}).get("working_dir")}


def job_home(submission_id: str) -> Path:
    return Path(os.environ.get("EDGERAY_HOME") or "~/edgeray").expanduser() / "jobs" / submission_id


def outside_job_copy(path: str, job_copy: Path, home: Path) -> str:
    """A local output path inside the job's temporary working-dir copy, moved to the same place under home."""
    if is_uri(path):
        return path
    p = Path(path)
    try:
        relative = p.resolve().relative_to(job_copy.resolve())
    except ValueError:
        return path
    return str(home / relative)


def where(path: str | Path) -> str:
    """A location as someone on another machine would need it: host and absolute path."""
    return str(path) if is_uri(str(path)) else f"{Path(path).resolve()} on host {socket.gethostname()}"
