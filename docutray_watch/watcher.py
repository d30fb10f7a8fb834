"""Watching inbox folders: a watchdog observer per pipeline that only *nominates* files.

Events never decide anything; they hand a path to the engine (`Engine.nominate`), which applies
the name rules, waits for the file to be complete and consults the journal. Because inotify drops
events silently when its queue overflows, the daemon also rescans every folder periodically; a
missed event therefore delays a file by at most one `rescan_interval`.

On Linux a close-after-write event (`IN_CLOSE_WRITE`) says the writer is done, so such a file is
taken without waiting `settle` seconds; and a write (`IN_MODIFY`) not yet followed by one says a
writer still has the file open, so it is not complete whatever its age (up to
`watch.max_open_wait`). A polling observer sees neither: there `settle` and the engine's checks
before delivery and before the final action are all there is.

Folders on network file systems (NFS, CIFS/SMB, SSHFS…), found in the mount table, are polled
(`PollingObserver`) because inotify does not see changes made by other machines; so are folders
with `watch.polling: true`, and any folder whose inotify watch cannot be created (the per-user
limit is reached) — with a warning saying so.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import (
    FileClosedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

__all__ = ["NETWORK_FILESYSTEMS", "FolderWatcher", "filesystem_type", "is_network_filesystem"]

log = structlog.get_logger(__name__)

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "fuse.sshfs",
        "sshfs",
        "9p",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "afs",
        "ncpfs",
        "fuse.rclone",
        "davfs",
        "fuse.davfs2",
        "lustre",
        "gpfs",
    }
)

Nominate = Callable[[Path, str], None]
"""Called (from the observer thread) with a path and what was seen: `"closed"` (a
close-after-write: the writer is done), `"writing"` (data written, no close-after-write yet; only
from inotify) or `"changed"` (anything else)."""


def _unescape_mount(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    return (
        field.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def filesystem_type(path: Path, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the file system holding `path` (from the mount table), if known."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as handle:
            lines = handle.readlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        mount_point = _unescape_mount(fields[4])
        fs_type = right.split()[0] if right.split() else ""
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) >= best[0]):
            best = (len(mount_point), fs_type)
    return best[1] if best else None


def is_network_filesystem(path: Path, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """True when `path` is on NFS, SMB, SSHFS or another file system other machines change."""
    fs_type = filesystem_type(path, mountinfo)
    return fs_type is not None and fs_type in NETWORK_FILESYSTEMS


class _Handler(FileSystemEventHandler):
    def __init__(self, nominate: Nominate, *, sees_writes: bool = True) -> None:
        self._nominate = nominate
        # inotify's IN_MODIFY is a write by a process that has the file open (its close follows
        # as IN_CLOSE_WRITE); a polling observer's "modified" is only a changed stat.
        self._sees_writes = sees_writes

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        # A rename (x.part → x.pdf) nominates the new name; everything else its own path.
        raw = event.dest_path if event.event_type == "moved" else event.src_path
        path = Path(os.fsdecode(raw))
        if isinstance(event, FileClosedEvent):
            signal = "closed"
        elif self._sees_writes and event.event_type == "modified":
            signal = "writing"
        else:
            signal = "changed"
        self._nominate(path, signal)


@dataclass
class FolderWatcher:
    """One pipeline's observer (inotify or polling)."""

    pipeline: str
    root: Path
    recursive: bool
    polling: bool | None
    nominate: Nominate
    poll_interval: float = 2.0
    observer: BaseObserver | None = None
    mode: str = "stopped"

    def start(self) -> None:
        """Start watching; falls back to polling when inotify cannot watch this folder."""
        use_polling = self.polling
        if use_polling is None and is_network_filesystem(self.root):
            log.info(
                "watch_polling_network_fs",
                pipeline=self.pipeline,
                path=str(self.root),
                fs_type=filesystem_type(self.root),
                reason="inotify does not see changes made by other machines",
            )
            use_polling = True
        if not use_polling:
            try:
                self._start(Observer(), sees_writes=True)
                self.mode = "inotify"
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE, errno.ENOMEM):
                    raise
                log.warning(
                    "watch_inotify_unavailable",
                    pipeline=self.pipeline,
                    path=str(self.root),
                    error=str(exc),
                    hint="raise fs.inotify.max_user_watches / max_user_instances; polling instead",
                )
        self._start(PollingObserver(timeout=self.poll_interval), sees_writes=False)
        self.mode = "polling"

    def _start(self, observer: BaseObserver, *, sees_writes: bool) -> None:
        handler = _Handler(self.nominate, sees_writes=sees_writes)
        observer.schedule(handler, str(self.root), recursive=self.recursive)
        observer.daemon = True
        observer.start()
        self.observer = observer

    @property
    def alive(self) -> bool:
        """True while the observer thread runs."""
        return self.observer is not None and self.observer.is_alive()

    def stop(self) -> None:
        """Stop the observer and wait for its thread."""
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None
        self.mode = "stopped"
