"""Tests of `docutray_watch.archive` (crash-safe moves, sidecars) and `docutray_watch.fsutil`."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.archive import (
    move_file,
    remove_file,
    sidecar_path,
    unique_destination,
    write_sidecar,
)
from docutray_watch.fsutil import atomic_write_bytes, fsync_dir, is_within

CONTENT = b"%PDF-1.4 the document\n"


def sha(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def hidden_files(folder: Path) -> list[str]:
    """Names starting with a dot in `folder` (where temporary files would be)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(name="source")
def source_fixture(tmp_path: Path) -> Path:
    """A document in an inbox folder."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "a.pdf"
    path.write_bytes(CONTENT)
    return path


def cross_device_link(src: Any, dst: Any, **_: Any) -> None:
    """os.link between two file systems: EXDEV."""
    raise OSError(errno.EXDEV, "Invalid cross-device link")


class CrossDeviceRename:
    """os.rename that fails with EXDEV for the first `failures` calls (another file system)."""

    def __init__(self, failures: int = 1) -> None:
        self.real = os.rename
        self.failures = failures
        self.calls: list[tuple[str, str]] = []

    def __call__(self, src: Any, dst: Any) -> None:
        self.calls.append((str(src), str(dst)))
        if len(self.calls) <= self.failures:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        self.real(src, dst)


class TestUniqueDestination:
    def test_free_name_is_kept(self, tmp_path: Path) -> None:
        """When nothing is in the way the name is used as is."""
        assert unique_destination(tmp_path, "a.pdf") == tmp_path / "a.pdf"

    def test_counter_before_the_extension(self, tmp_path: Path) -> None:
        """Taken names get .1, .2… before the extension."""
        (tmp_path / "a.pdf").touch()
        (tmp_path / "a.1.pdf").touch()
        assert unique_destination(tmp_path, "a.pdf") == tmp_path / "a.2.pdf"

    def test_a_sidecar_also_takes_the_name(self, tmp_path: Path) -> None:
        """A leftover `a.pdf.error.json` makes `a.pdf` taken (the sidecar would be overwritten)."""
        (tmp_path / "a.pdf.error.json").touch()
        assert unique_destination(tmp_path, "a.pdf") == tmp_path / "a.1.pdf"

    def test_dangling_symlink_takes_the_name(self, tmp_path: Path) -> None:
        """A broken link occupies its name too."""
        (tmp_path / "a.pdf").symlink_to(tmp_path / "nowhere")
        assert unique_destination(tmp_path, "a.pdf") == tmp_path / "a.1.pdf"

    @pytest.mark.parametrize(("name", "expected"), [("README", "README.1"), (".pdf", ".pdf.1")])
    def test_names_without_extension(self, tmp_path: Path, name: str, expected: str) -> None:
        """A name without extension (or a dot-file) gets the counter at the end."""
        (tmp_path / name).touch()
        assert unique_destination(tmp_path, name) == tmp_path / expected

    def test_never_clashes(self, tmp_path: Path) -> None:
        """Taking each returned name in turn always yields a new, free name."""
        seen = set()
        for _ in range(25):
            path = unique_destination(tmp_path, "scan.pdf")
            assert path not in seen
            assert not path.exists()
            assert not sidecar_path(path).exists()
            seen.add(path)
            if len(seen) % 2:
                path.touch()
            else:
                sidecar_path(path).touch()


class TestLongNames:
    """Names at the 255-byte limit still get a sidecar and a free archive name of their own."""

    def test_sidecar_of_a_long_name_fits_and_can_be_written(self, tmp_path: Path) -> None:
        """`<250 bytes>.error.json` would be too long: the sidecar name is cut and tagged."""
        document = tmp_path / ("é" * 123 + ".pdf")  # 250 bytes in UTF-8
        sidecar = sidecar_path(document)
        assert len(os.fsencode(sidecar.name)) <= 255
        assert sidecar.name.endswith(".error.json")
        assert sidecar.name.startswith("é" * 100)  # cut between characters, not inside one
        write_sidecar(document, {"reason": "unsupported"})
        assert json.loads(sidecar.read_text())["reason"] == "unsupported"

    def test_long_names_sharing_a_start_get_different_sidecars(self, tmp_path: Path) -> None:
        """The hash tag keeps two long names that differ only at the end apart."""
        first = sidecar_path(tmp_path / ("x" * 245 + "1.pdf"))
        second = sidecar_path(tmp_path / ("x" * 245 + "2.pdf"))
        assert first != second

    def test_short_names_keep_the_plain_suffix(self, tmp_path: Path) -> None:
        """Up to the limit nothing changes: `<name>.error.json`."""
        name = "a" * (255 - len(".error.json"))
        assert sidecar_path(tmp_path / name).name == name + ".error.json"

    def test_a_taken_name_at_the_limit_gets_a_counter_that_fits(self, tmp_path: Path) -> None:
        """A clash on a 255-byte name shortens the stem to make room for `.1`."""
        name = "y" * 251 + ".pdf"
        (tmp_path / name).touch()
        destination = unique_destination(tmp_path, name)
        assert len(os.fsencode(destination.name)) == 255
        assert destination.name.endswith(".1.pdf")
        destination.touch()  # the file system accepts it


class TestMoveFile:
    def test_same_file_system(self, source: Path, tmp_path: Path) -> None:
        """A move on one file system renames; the destination folder is created."""
        destination = tmp_path / "done" / "2026" / "a.pdf"
        assert move_file(source, destination, sha256=sha(CONTENT)) == destination
        assert destination.read_bytes() == CONTENT
        assert not source.exists()

    def test_across_file_systems(
        self, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On EXDEV the file is copied, synced and renamed; no temp file; source removed."""
        rename = CrossDeviceRename(failures=0)
        monkeypatch.setattr("docutray_watch.archive.os.rename", rename)
        monkeypatch.setattr("docutray_watch.archive.os.link", cross_device_link)
        os.utime(source, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
        destination = tmp_path / "done" / "a.pdf"
        assert move_file(source, destination, sha256=sha(CONTENT)) == destination
        assert destination.read_bytes() == CONTENT
        assert destination.stat().st_mtime_ns == 1_600_000_000_000_000_000
        assert not source.exists()
        assert hidden_files(destination.parent) == []
        assert len(rename.calls) == 1  # temp → destination (the direct link failed: EXDEV)

    def test_failed_copy_leaves_no_temp_and_keeps_the_source(
        self, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A copy that fails (disk full) removes its temp file and leaves the source alone."""
        monkeypatch.setattr("docutray_watch.archive.os.link", cross_device_link)

        def full_disk(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr("docutray_watch.archive.shutil.copyfileobj", full_disk)
        destination = tmp_path / "done" / "a.pdf"
        with pytest.raises(OSError, match="No space"):
            move_file(source, destination, sha256=sha(CONTENT))
        assert source.read_bytes() == CONTENT
        assert list(destination.parent.iterdir()) == []

    def test_rerun_after_a_crash_completes_the_move(self, source: Path, tmp_path: Path) -> None:
        """Destination already written (same content), source still there: the source goes."""
        destination = tmp_path / "done" / "a.pdf"
        destination.parent.mkdir()
        shutil.copyfile(source, destination)
        assert move_file(source, destination, sha256=sha(CONTENT)) == destination
        assert destination.read_bytes() == CONTENT
        assert not source.exists()
        assert sorted(p.name for p in destination.parent.iterdir()) == ["a.pdf"]

    def test_rerun_after_the_move_finished(self, source: Path, tmp_path: Path) -> None:
        """Running the same move again once it is done returns the destination."""
        destination = tmp_path / "done" / "a.pdf"
        move_file(source, destination, sha256=sha(CONTENT))
        assert move_file(source, destination, sha256=sha(CONTENT)) == destination
        assert destination.read_bytes() == CONTENT

    def test_both_gone_is_an_error(self, tmp_path: Path) -> None:
        """With neither source nor destination there, the move reports the lost file."""
        with pytest.raises(FileNotFoundError):
            move_file(tmp_path / "gone.pdf", tmp_path / "done" / "gone.pdf")

    @pytest.mark.parametrize("with_hash", [True, False])
    def test_different_file_at_destination_is_never_overwritten(
        self, source: Path, tmp_path: Path, with_hash: bool
    ) -> None:
        """Another file at the destination stays; the document gets a fresh name."""
        destination = tmp_path / "done" / "a.pdf"
        destination.parent.mkdir()
        destination.write_bytes(b"someone else's file")
        moved = move_file(source, destination, sha256=sha(CONTENT) if with_hash else None)
        assert moved == tmp_path / "done" / "a.1.pdf"
        assert moved.read_bytes() == CONTENT
        assert destination.read_bytes() == b"someone else's file"
        assert not source.exists()

    def test_same_content_without_hash_is_not_assumed_done(
        self, source: Path, tmp_path: Path
    ) -> None:
        """Without the document's hash an existing file is never taken for the finished copy."""
        destination = tmp_path / "done" / "a.pdf"
        destination.parent.mkdir()
        shutil.copyfile(source, destination)
        assert move_file(source, destination) == tmp_path / "done" / "a.1.pdf"

    def test_symlink_at_destination_is_not_followed(self, source: Path, tmp_path: Path) -> None:
        """A link at the destination (even to identical content) is left alone."""
        twin = tmp_path / "twin.pdf"
        twin.write_bytes(CONTENT)
        destination = tmp_path / "done" / "a.pdf"
        destination.parent.mkdir()
        destination.symlink_to(twin)
        moved = move_file(source, destination, sha256=sha(CONTENT))
        assert moved == tmp_path / "done" / "a.1.pdf"
        assert destination.is_symlink()
        assert source.exists() is False


class TestRemoveAndSidecar:
    def test_remove_file(self, source: Path) -> None:
        """remove_file deletes and reports whether there was something to delete."""
        assert remove_file(source) is True
        assert not source.exists()
        assert remove_file(source) is False

    def test_sidecar_path(self) -> None:
        """The sidecar of `x.pdf` is `x.pdf.error.json` in the same folder."""
        assert sidecar_path(Path("/f/x.pdf")) == Path("/f/x.pdf.error.json")

    def test_write_sidecar_content(self, source: Path) -> None:
        """The sidecar is indented UTF-8 JSON of the details, non-JSON values as strings."""
        details = {
            "reason": "unsupported file type: « texte »",
            "stage": "intake",
            "path": source,
            "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        }
        path = write_sidecar(source, details)
        assert path == source.with_name("a.pdf.error.json")
        text = path.read_text(encoding="utf-8")
        assert "« texte »" in text
        assert text.endswith("}\n")
        assert json.loads(text) == {
            "reason": "unsupported file type: « texte »",
            "stage": "intake",
            "path": str(source),
            "at": "2026-01-02 03:04:05+00:00",
        }
        assert hidden_files(source.parent) == []

    def test_write_sidecar_replaces_an_old_one(self, source: Path) -> None:
        """Writing the sidecar again replaces it entirely."""
        write_sidecar(source, {"reason": "first, a much longer reason than the second"})
        path = write_sidecar(source, {"reason": "second"})
        assert json.loads(path.read_text()) == {"reason": "second"}


class FailingWrites(io.BufferedWriter):
    """A file object whose writes fail as on a full disk."""

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


class TestAtomicWriteBytes:
    def test_writes_content_and_mode(self, tmp_path: Path) -> None:
        """The file appears with the data and the requested mode, no temp file left."""
        target = tmp_path / "out.json"
        atomic_write_bytes(target, b"{}", mode=0o640)
        assert target.read_bytes() == b"{}"
        assert target.stat().st_mode & 0o777 == 0o640
        assert hidden_files(tmp_path) == []

    def test_replaces_the_old_file(self, tmp_path: Path) -> None:
        """An existing file is replaced whole (also without fsync)."""
        target = tmp_path / "out.json"
        target.write_bytes(b"old and longer")
        atomic_write_bytes(target, b"new", fsync=False)
        assert target.read_bytes() == b"new"

    def test_failed_write_leaves_no_temp_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write failing with ENOSPC re-raises, removes the temp file, keeps the old file."""
        target = tmp_path / "out.json"
        target.write_bytes(b"previous")
        real_fdopen = os.fdopen

        def failing_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            return FailingWrites(real_fdopen(fd, "wb", buffering=0))

        monkeypatch.setattr("docutray_watch.fsutil.os.fdopen", failing_fdopen)
        with pytest.raises(OSError, match="No space") as info:
            atomic_write_bytes(target, b"new content")
        assert info.value.errno == errno.ENOSPC
        monkeypatch.undo()
        assert target.read_bytes() == b"previous"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]

    def test_failed_rename_leaves_no_temp_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failure at the final rename also cleans up."""

        def no_replace(*args: Any) -> None:
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr("docutray_watch.fsutil.os.replace", no_replace)
        with pytest.raises(OSError, match="I/O error"):
            atomic_write_bytes(tmp_path / "out.json", b"x")
        monkeypatch.undo()
        assert list(tmp_path.iterdir()) == []

    def test_missing_folder(self, tmp_path: Path) -> None:
        """Writing into a folder that does not exist fails without creating anything."""
        with pytest.raises(FileNotFoundError):
            atomic_write_bytes(tmp_path / "missing" / "out.json", b"x")
        assert list(tmp_path.iterdir()) == []


class TestIsWithin:
    def test_plain_paths(self, tmp_path: Path) -> None:
        """A path below the root is within; a sibling sharing a name prefix is not."""
        root = tmp_path / "out"
        (root / "sub").mkdir(parents=True)
        (tmp_path / "outside").mkdir()
        assert is_within(root / "sub" / "x.json", root)
        assert is_within(root, root)
        assert not is_within(tmp_path / "outside" / "x.json", root)
        assert not is_within(tmp_path / "out-2" / "x.json", root)
        assert not is_within(root / ".." / "outside", root)

    def test_symlink_inside_pointing_out(self, tmp_path: Path) -> None:
        """A link inside the root to a folder outside is not within the root."""
        root = tmp_path / "out"
        root.mkdir()
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        (root / "link").symlink_to(outside, target_is_directory=True)
        assert not is_within(root / "link", root)
        assert not is_within(root / "link" / "new" / "x.json", root)

    def test_symlinked_root(self, tmp_path: Path) -> None:
        """A root reached through a link still contains its own files."""
        real = tmp_path / "real"
        (real / "sub").mkdir(parents=True)
        alias = tmp_path / "alias"
        alias.symlink_to(real, target_is_directory=True)
        assert is_within(alias / "sub", real)
        assert is_within(real / "sub", alias)

    def test_fsync_dir(self, tmp_path: Path) -> None:
        """fsync_dir works on a folder and raises for a missing one."""
        fsync_dir(tmp_path)
        with pytest.raises(FileNotFoundError):
            fsync_dir(tmp_path / "missing")


class TestNoOverwriteRace:
    def test_a_file_appearing_at_the_destination_is_never_overwritten(
        self, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file created at the destination after the check survives; the move picks a new name."""
        destination = tmp_path / "done" / "a.pdf"
        real_link = os.link

        def racing_link(src: Any, dst: Any, **kwargs: Any) -> None:
            if Path(dst) == destination and not destination.exists():
                destination.write_bytes(b"someone else's file")  # appears just in time
            real_link(src, dst, **kwargs)

        monkeypatch.setattr("docutray_watch.archive.os.link", racing_link)
        moved = move_file(source, destination, sha256=sha(CONTENT))
        assert moved != destination
        assert destination.read_bytes() == b"someone else's file"
        assert moved.read_bytes() == CONTENT
        assert not source.exists()

    def test_without_hard_links_a_plain_rename_is_used(
        self, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a file system without hard links (EPERM), the move falls back to a rename."""

        def no_links(src: Any, dst: Any, **_: Any) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr("docutray_watch.archive.os.link", no_links)
        destination = tmp_path / "done" / "a.pdf"
        assert move_file(source, destination, sha256=sha(CONTENT)) == destination
        assert destination.read_bytes() == CONTENT
        assert not source.exists()
