"""Where a sweep keeps its results and checkpoints: a local folder on one machine, object storage on a cluster.

On a multi-node cluster Ray Tune has no head-node syncing: every trial writes to the run's storage itself, so
the storage must be reachable from every node (Ray docs, "Configuring Persistent Storage"). A URI such as
`s3://bucket/tune?endpoint_override=host:port&scheme=http` (or `gs://`, `file://`) is opened with pyarrow.fs,
the same way as the registry's artefacts and the offline features (edgeray/storage); anything else is a local path.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from edgeray.storage.results import is_uri

DEFAULT_LOCAL = Path(tempfile.gettempdir()) / "edgeray_tune"


def run_storage(storage_path: str | Path | None) -> dict:
    """RunConfig keyword arguments for `storage_path`: {"storage_path", "storage_filesystem"}."""
    if is_uri(storage_path):
        import pyarrow.fs as pafs

        filesystem, path = pafs.FileSystem.from_uri(str(storage_path))
        return {"storage_path": path, "storage_filesystem": filesystem}
    return {"storage_path": str(Path(storage_path or DEFAULT_LOCAL).expanduser().resolve()), "storage_filesystem": None}


def experiment_location(storage_path: str | Path | None, experiment: str) -> str:
    """Where the experiment's folder is, as the user named the storage (a URI stays a URI, without its query)."""
    if is_uri(storage_path):
        return f"{str(storage_path).split('?', 1)[0].rstrip('/')}/{experiment}"
    return str(Path(run_storage(storage_path)["storage_path"]) / experiment)
