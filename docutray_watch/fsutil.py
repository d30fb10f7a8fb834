"""Durable file operations: atomic writes and fsync of directories.

A result or a moved document is only "done" once a crash can no longer lose it: data is written to
a temporary file in the destination folder, flushed and fsynced, renamed over the final name (an
atomic step on POSIX), and the folder itself is fsynced so the new directory entry is on disk.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "fsync_dir", "is_within"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(target: Path, data: bytes, *, fsync: bool = True, mode: int = 0o644) -> None:
    """Write `data` to `target` so that readers see the old file or the whole new one, never half.

    On any error (a full disk, say) the temporary file is removed and the error re-raised, so no
    partial output is ever left behind.
    """
    directory = target.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name[:40]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    if fsync:
        fsync_dir(directory)


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """True when `path` (after resolving symlinks) lies inside `root` (also resolved)."""
    real_root = os.path.realpath(root)
    real_path = os.path.realpath(path)
    return os.path.commonpath([real_root, real_path]) == real_root
