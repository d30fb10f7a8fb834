"""Durable file operations: atomic writes and fsync of directories.

A result or a moved document is only "done" once a crash can no longer lose it: data is written to
a temporary file in the destination folder, flushed and fsynced, renamed over the final name (an
atomic step on POSIX), and the folder itself is fsynced so the new directory entry is on disk.

A crash (`kill -9`, power loss) between creating the temporary file and the rename leaves it
behind. The first write into a folder by a process therefore removes the temporary files that an
earlier process left there (names of our pattern, modified before this process started): the
interrupted write is done again anyway, since it was never journaled as done.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["atomic_write_bytes", "fsync_dir", "is_within", "remove_stale_temp_files", "temp_prefix"]

# Temporary files are `.<name, 40 chars at most>.<8 random chars from mkstemp>.tmp`.
_TEMP_NAME = re.compile(r"^\..{1,40}\.[a-z0-9_]{8}\.tmp$", re.DOTALL)
_STARTED_NS = time.time_ns()
_swept: set[str] = set()
_swept_lock = threading.Lock()


def temp_prefix(target: Path) -> str:
    """The `mkstemp` prefix of temporary files for `target` (use with `suffix=".tmp"`)."""
    return f".{target.name[:40]}."


def remove_stale_temp_files(directory: Path) -> int:
    """Remove temporary files an earlier, interrupted process left in `directory`; how many.

    Runs once per folder and process. Only files of our naming pattern last modified before this
    process started are removed, so a write in progress in this process is never touched.
    """
    key = os.path.abspath(directory)
    with _swept_lock:
        if key in _swept:
            return 0
        _swept.add(key)
    removed = 0
    try:
        entries = os.scandir(directory)
    except OSError:
        return 0
    with entries:
        for entry in entries:
            if not _TEMP_NAME.match(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_mtime_ns < _STARTED_NS:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
    return removed


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
    partial output is ever left behind (a crash's leftovers: see `remove_stale_temp_files`).
    """
    directory = target.parent
    remove_stale_temp_files(directory)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=temp_prefix(target), suffix=".tmp")
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
    if os.fspath(path) == os.fspath(root):
        return True  # a folder lies inside itself, whatever it resolves to: nothing to resolve
    real_root = os.path.realpath(root)
    real_path = os.path.realpath(path)
    return os.path.commonpath([real_root, real_path]) == real_root
