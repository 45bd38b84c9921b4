"""Confine caller-supplied paths to configured roots (no Ray, no torch: the HTTP layer can use it too)."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def _roots(roots: Iterable[str | os.PathLike], field: str) -> tuple[list[Path], list[Path]]:
    """(resolved roots, roots as spelled made absolute)."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]  # one root given bare: a str is iterable and would otherwise become one root per character
    roots = list(roots)
    for root in roots:
        if not isinstance(root, (str, os.PathLike)) or not str(root).strip():
            raise ValueError(f"{field} roots must be non-empty paths, got {root!r}")
    if not roots:
        raise ValueError(f"{field}: no roots configured, so no path can be accepted")
    # non-strict resolve: a root nobody has written to yet is still a root
    return [Path(r).resolve() for r in roots], [Path(os.path.abspath(r)) for r in roots]


def resolve_within(path: str | os.PathLike, roots: Iterable[str | os.PathLike], *, field: str = "path",
                   kind: str = "dir") -> Path:
    """`path` resolved (symlinks followed, must exist) and inside one of `roots`; ValueError otherwise.

    The message names the field, the value, the reason and the roots. The lexical check comes before any
    filesystem access, so a caller cannot learn whether a path outside the roots exists."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ValueError(f"{field} must be a non-empty path, got {path!r}")
    allowed, spelled = _roots(roots, field)
    shown = [str(r) for r in allowed]

    def refuse(reason: str) -> ValueError:
        return ValueError(f"{field} {str(path)!r} {reason}; allowed roots: {shown}")

    raw = Path(path)
    if ".." in raw.parts:
        raise refuse("contains a '..' component (path traversal)")
    lexical = Path(os.path.abspath(raw))
    # A root may itself be reached through a symlink (runs -> /data/runs): accept the spelling under the
    # configured root as well as under its resolved target; the resolved check below is what decides.
    if not any(lexical.is_relative_to(r) for r in (*allowed, *spelled)):
        raise refuse("is outside the allowed roots")
    try:
        resolved = lexical.resolve(strict=True)
    except FileNotFoundError:
        raise refuse("does not exist") from None
    except (OSError, RuntimeError) as exc:  # symlink loop, permission denied
        raise refuse(f"cannot be resolved ({type(exc).__name__}: {exc})") from None
    if not any(resolved.is_relative_to(r) for r in allowed):
        raise refuse(f"is a symlink that escapes the allowed roots (it resolves to {str(resolved)!r})")
    if kind == "dir" and not resolved.is_dir():
        raise refuse("is not a directory")
    if kind == "file" and not resolved.is_file():
        raise refuse("is not a regular file")
    return resolved


def resolve_checkpoint(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Path:
    """An RL checkpoint directory, resolved and confined to the configured checkpoint roots
    (`decisions.sizer.checkpoint_roots`). ValueError names the field `checkpoint`."""
    return resolve_within(path, roots, field="checkpoint", kind="dir")


def member(directory: Path, name: str, *, field: str = "checkpoint") -> Path:
    """File `name` inside an already-resolved `directory`, refusing a symlink that points out of it (a
    checkpoint dir inside a root must not read files from elsewhere)."""
    candidate = directory / name
    resolved = candidate.resolve()
    if not resolved.is_relative_to(directory):
        raise ValueError(f"{field} {str(directory)!r}: {name} is a symlink that escapes the checkpoint "
                         f"(it resolves to {str(resolved)!r})")
    return resolved
