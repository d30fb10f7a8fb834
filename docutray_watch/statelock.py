"""One engine per state directory: an exclusive lock next to the journal.

Two engines on one journal would resume the same documents and submit them twice, so `run` and
`process` take an exclusive `flock` on `<state_dir>/lock` for as long as they run. The kernel
drops the lock when the process dies (even by SIGKILL), so a crash never leaves a stale lock.
`status` and `retry` do not take it: they only read or make single, short journal writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["AlreadyRunningError", "StateLock"]


class AlreadyRunningError(Exception):
    """Another docutray-watch process holds the state directory."""


class StateLock:
    """An exclusive, non-blocking lock on a state directory."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `AlreadyRunningError` naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunningError(
                f"another docutray-watch process (pid {holder}) is using {self.path.parent}; "
                "run one `run` or `process` per state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (the file stays; it is harmless)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
