"""Atomic writes: a file (or folder) is written beside its final name, flushed and renamed into place,
so a crash at any moment leaves the old version or the new one, never a torn one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a power cut (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)`, fsync the file, then rename it over `path`. Temporary files an earlier
    writer left when it was killed mid-write are removed first (one writer per path: rank 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically. The rename replaces a symbolic link at `path` instead of writing
    where it points, so a downloaded run folder cannot aim resnets' writes at another file."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def open_append(path: Path) -> Any:
    """Open a text file for appending without following a symbolic link at `path` (O_NOFOLLOW)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o644), "a", encoding="utf-8")


def symlinks_in(folder: Path) -> list[Path]:
    """Symbolic links anywhere inside `folder` (not followed), in walk order; [] if it does not exist."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in [*dirs, *files]:
            if os.path.islink(os.path.join(root, name)):
                found.append(Path(root, name))
    return found
