"""Watchers: network file-system detection, polling fallbacks, what events nominate."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
)

from docutray_watch import watcher as watcher_module
from docutray_watch.watcher import FolderWatcher, _Handler, filesystem_type, is_network_filesystem

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /mnt/share rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2
41 40 8:2 / /mnt/share/local rw,relatime shared:21 - ext4 /dev/sdb1 rw
42 22 0:41 / /srv/scans\\040in rw,relatime shared:22 - cifs //nas/scans rw
43 22 0:42 / /home/u/remote rw,nosuid shared:23 - fuse.sshfs u@host:/ rw
"""


@pytest.fixture(name="mountinfo")
def mountinfo_fixture(tmp_path: Path) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return str(path)


class TestNetworkFilesystems:
    def test_the_longest_matching_mount_point_decides(self, mountinfo: str) -> None:
        """A path's file system is that of its deepest mount point."""
        assert filesystem_type(Path("/mnt/share/inbox"), mountinfo) == "nfs4"
        assert filesystem_type(Path("/mnt/share/local/inbox"), mountinfo) == "ext4"
        assert filesystem_type(Path("/var/lib/x"), mountinfo) == "ext4"

    def test_nfs_cifs_and_sshfs_are_network_file_systems(self, mountinfo: str) -> None:
        """NFS, CIFS (with an escaped space in its mount point) and SSHFS count as network."""
        assert is_network_filesystem(Path("/mnt/share/inbox"), mountinfo)
        assert is_network_filesystem(Path("/srv/scans in/invoices"), mountinfo)
        assert is_network_filesystem(Path("/home/u/remote/docs"), mountinfo)
        assert not is_network_filesystem(Path("/mnt/share/local/x"), mountinfo)
        assert not is_network_filesystem(Path("/mnt/sharex"), mountinfo)

    def test_an_unreadable_mount_table_means_unknown(self, tmp_path: Path) -> None:
        """Without a mount table the type is unknown and the folder is not treated as network."""
        assert filesystem_type(tmp_path, str(tmp_path / "missing")) is None
        assert not is_network_filesystem(tmp_path, str(tmp_path / "missing"))


class TestFolderWatcher:
    def test_a_network_folder_is_polled_and_says_so(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With polling unset, a folder on a network file system gets the polling observer."""
        monkeypatch.setattr(watcher_module, "is_network_filesystem", lambda _p: True)
        monkeypatch.setattr(watcher_module, "filesystem_type", lambda _p: "nfs4")
        watcher = FolderWatcher("p", tmp_path, False, None, lambda _path, _closed: None)
        with capture_logs() as logs:
            watcher.start()
        try:
            assert watcher.mode == "polling"
            assert any(e["event"] == "watch_polling_network_fs" for e in logs)
        finally:
            watcher.stop()

    def test_inotify_limits_fall_back_to_polling_with_a_warning(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When inotify cannot add a watch (ENOSPC), the folder is polled instead."""

        class FullInotify(watcher_module.Observer):  # type: ignore[misc,name-defined]
            def start(self) -> None:
                raise OSError(errno.ENOSPC, "inotify watch limit reached")

        monkeypatch.setattr(watcher_module, "Observer", FullInotify)
        watcher = FolderWatcher("p", tmp_path, False, False, lambda _path, _closed: None)
        with capture_logs() as logs:
            watcher.start()
        try:
            assert watcher.mode == "polling"
            assert watcher.alive
            assert any(e["event"] == "watch_inotify_unavailable" for e in logs)
        finally:
            watcher.stop()

    def test_polling_true_forces_the_polling_observer_and_sees_files(self, tmp_path: Path) -> None:
        """watch.polling: true uses the polling observer, which still nominates new files."""
        seen: list[Path] = []
        event = threading.Event()

        def nominate(path: Path, _closed: bool) -> None:
            seen.append(path)
            event.set()

        watcher = FolderWatcher("p", tmp_path, False, True, nominate, poll_interval=0.1)
        watcher.start()
        try:
            assert watcher.mode == "polling"
            time.sleep(0.2)
            (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4")
            assert event.wait(5)
            assert tmp_path / "a.pdf" in seen
        finally:
            watcher.stop()
        assert not watcher.alive


class TestHandler:
    def test_events_nominate_paths_and_a_close_write_says_so(self) -> None:
        """created nominates the path, moved the destination, a write says `writing` (inotify),
        a close-after-write `closed`."""
        calls: list[tuple[str, str]] = []
        handler = _Handler(lambda path, signal: calls.append((str(path), signal)))
        handler.dispatch(FileCreatedEvent("/in/a.pdf"))
        handler.dispatch(FileModifiedEvent("/in/a.pdf"))
        handler.dispatch(FileMovedEvent("/in/b.pdf.part", "/in/b.pdf"))
        handler.dispatch(FileClosedEvent("/in/a.pdf"))
        handler.dispatch(FileDeletedEvent("/in/a.pdf"))
        handler.dispatch(DirCreatedEvent("/in/sub"))
        assert calls == [
            ("/in/a.pdf", "changed"),
            ("/in/a.pdf", "writing"),
            ("/in/b.pdf", "changed"),
            ("/in/a.pdf", "closed"),
        ]

    def test_a_polling_observers_modified_event_is_no_write_in_progress(self) -> None:
        """Polling sees a changed stat, not a writer: its `modified` is only `changed`."""
        calls: list[tuple[str, str]] = []
        handler = _Handler(
            lambda path, signal: calls.append((str(path), signal)), sees_writes=False
        )
        handler.dispatch(FileModifiedEvent("/in/a.pdf"))
        assert calls == [("/in/a.pdf", "changed")]

    def test_inotify_reports_a_file_open_for_writing_then_its_close(self, tmp_path: Path) -> None:
        """Through real inotify: a write to a file still open gives `writing`, no `closed`,
        until the writer closes it."""
        seen: list[str] = []
        closed = threading.Event()
        wrote = threading.Event()

        def nominate(path: Path, signal: str) -> None:
            if path.name == "w.pdf":
                seen.append(signal)
                if signal == "writing":
                    wrote.set()
                if signal == "closed":
                    closed.set()

        watcher = FolderWatcher("p", tmp_path, False, False, nominate)
        watcher.start()
        try:
            assert watcher.mode == "inotify"
            with open(tmp_path / "w.pdf", "wb") as handle:
                handle.write(b"%PDF-1.4 half")
                handle.flush()
                assert wrote.wait(5)
                assert "closed" not in seen
            assert closed.wait(5)
        finally:
            watcher.stop()
