"""Tests of `docutray_watch.intake`: name rules, entry kinds, folder scans, hashing and checks."""

from __future__ import annotations

import hashlib
import inspect
import os
import socket
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from docutray_watch import intake
from docutray_watch.client import MAX_FILE_SIZE
from docutray_watch.config import PipelineConfig, parse_config
from docutray_watch.intake import (
    FileChangedError,
    inspect_file,
    is_settled,
    rejection_for,
    rule_for_kind,
    rule_for_name,
    scan_folder,
)

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 64


def pipeline(**options: Any) -> PipelineConfig:
    """A pipeline config with the default name rules, plus `options`."""
    block: dict[str, Any] = {
        "name": "p",
        "watch": {"path": "/srv/in"},
        "steps": ["s"],
        "sinks": [{"type": "filesystem", "path": "/srv/out"}],
    }
    block.update(options)
    config = parse_config(
        {"state_dir": "/var/lib/x", "pipelines": [block]},
        environ={},
    )
    return config.pipelines[0]


class TestRuleForName:
    @pytest.mark.parametrize(
        "name",
        ["a.pdf", "A.PDF", "scan.Jpeg", "x.png", "x.webp", "x.gif", "x.bmp", "sub/dir/a.pdf"],
    )
    def test_takes_included_names_case_insensitively(self, name: str) -> None:
        """Names matching an include pattern, in any case, are taken."""
        assert rule_for_name(pipeline(), name) is None

    @pytest.mark.parametrize(
        "name", [".a.pdf", "a.pdf.part", "a.pdf.tmp", "~$a.pdf", "a.pdf.crdownload", "A.PDF.PART"]
    )
    def test_default_ignore_patterns(self, name: str) -> None:
        """Temporary names of files in transfer are left alone by default."""
        rule = rule_for_name(pipeline(), name)
        assert rule is not None
        assert rule.startswith("matches ignore pattern")

    def test_names_outside_include(self) -> None:
        """A name no include pattern matches is left alone with a reason."""
        assert rule_for_name(pipeline(), "notes.txt") == "matches no include pattern"

    def test_ignored_folder_components(self) -> None:
        """A file below an ignored folder (e.g. `.git`) is left alone, naming the folder."""
        rule = rule_for_name(pipeline(), "a/.git/b.pdf")
        assert rule == "folder '.git' matches ignore pattern '.*'"

    def test_custom_patterns(self) -> None:
        """Configured include/ignore lists replace the defaults."""
        custom = pipeline(include=["*.PDF"], ignore=["draft-*"])
        assert rule_for_name(custom, "final.pdf") is None
        assert rule_for_name(custom, ".hidden.pdf") is None  # `.*` is no longer ignored
        assert rule_for_name(custom, "Draft-1.pdf") == "matches ignore pattern 'draft-*'"

    def test_sidecars_are_never_taken(self) -> None:
        """Our own `.error.json` sidecars are ignored even if include would match them."""
        rule = rule_for_name(pipeline(include=["*"]), "a.pdf.error.json")
        assert rule == "error sidecar written by docutray-watch"

    def test_ready_markers_are_not_documents(self) -> None:
        """With a ready marker, the marker files themselves are left alone."""
        marked = pipeline(watch={"path": "/srv/in", "ready_marker": ".done"}, include=["*"])
        assert rule_for_name(marked, "a.pdf.done") == "ready marker (.done)"
        assert rule_for_name(marked, "a.pdf") is None

    def test_names_that_are_not_utf8(self) -> None:
        """A name whose bytes are not UTF-8 (surrogate-escaped) is left alone with a reason."""
        name = os.fsdecode(b"caf\xe9.pdf")
        rule = rule_for_name(pipeline(), name)
        assert rule is not None
        assert "not valid UTF-8" in rule


class TestRuleForKind:
    def test_regular_file(self, tmp_path: Path) -> None:
        """A regular file has no rule against it."""
        path = tmp_path / "a.pdf"
        path.write_bytes(PDF)
        assert rule_for_kind(path.lstat().st_mode) is None

    def test_symlink(self, tmp_path: Path) -> None:
        """A symbolic link (even to a regular file) is never followed."""
        target = tmp_path / "a.pdf"
        target.write_bytes(PDF)
        link = tmp_path / "link.pdf"
        link.symlink_to(target)
        assert rule_for_kind(link.lstat().st_mode) == "symbolic link (links are never followed)"

    def test_fifo(self, tmp_path: Path) -> None:
        """A FIFO is never opened."""
        fifo = tmp_path / "pipe.pdf"
        os.mkfifo(fifo)
        assert rule_for_kind(fifo.lstat().st_mode) == "FIFO (not a regular file)"

    def test_socket(self, tmp_path: Path) -> None:
        """A UNIX socket is never opened."""
        path = tmp_path / "s.pdf"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            assert rule_for_kind(path.lstat().st_mode) == "socket (not a regular file)"

    def test_device_and_directory(self, tmp_path: Path) -> None:
        """Devices and directories are not regular files."""
        assert rule_for_kind(os.lstat("/dev/null").st_mode) == "device (not a regular file)"
        assert rule_for_kind(tmp_path.lstat().st_mode) == "not a regular file"


class CountingScandir:
    """Wraps os.scandir to count the entries handed out (to observe laziness)."""

    def __init__(self, real: Any, fail_for: Path | None = None) -> None:
        self.real = real
        self.fail_for = fail_for
        self.entries = 0

    def __call__(self, path: Any) -> Any:
        if self.fail_for is not None and Path(path) == self.fail_for:
            raise PermissionError(13, "Permission denied", str(path))
        counter = self

        class Wrapped:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __enter__(self) -> Wrapped:
                return self

            def __exit__(self, *exc: object) -> None:
                self.inner.close()

            def __iter__(self) -> Iterator[Any]:
                for entry in self.inner:
                    counter.entries += 1
                    yield entry

        return Wrapped(self.real(path))


class TestScanFolder:
    @pytest.fixture(name="tree")
    def tree_fixture(self, tmp_path: Path) -> Path:
        """inbox/a.pdf, inbox/sub/b.pdf, inbox/sub/deeper/c.pdf."""
        root = tmp_path / "inbox"
        (root / "sub" / "deeper").mkdir(parents=True)
        for relative in ("a.pdf", "sub/b.pdf", "sub/deeper/c.pdf"):
            (root / relative).write_bytes(PDF)
        return root

    def test_recursive_scan_finds_nested_files(self, tree: Path) -> None:
        """recursive=True yields files of every sub-folder with `/`-separated relative paths."""
        found = {c.relative_path for c, _ in scan_folder(tree, recursive=True)}
        assert found == {"a.pdf", "sub/b.pdf", "sub/deeper/c.pdf"}

    def test_flat_scan_stays_at_the_top(self, tree: Path) -> None:
        """recursive=False yields only the top folder's files (never folders)."""
        found = [(c.relative_path, c.path) for c, _ in scan_folder(tree, recursive=False)]
        assert found == [("a.pdf", tree / "a.pdf")]

    def test_skip_leaves_out_known_files_but_not_folders(self, tree: Path) -> None:
        """skip(path, lstat) is asked about files only; what it answers True for is left out."""
        asked: list[str] = []

        def skip(path: str, st: os.stat_result) -> bool:
            asked.append(os.path.relpath(path, tree))
            return path == str(tree / "sub" / "b.pdf") and stat.S_ISREG(st.st_mode)

        found = {c.relative_path for c, _ in scan_folder(tree, recursive=True, skip=skip)}
        assert found == {"a.pdf", "sub/deeper/c.pdf"}
        assert sorted(asked) == ["a.pdf", "sub/b.pdf", "sub/deeper/c.pdf"]

    def test_stat_is_lstat(self, tree: Path) -> None:
        """Each candidate comes with its own lstat result."""
        for candidate, st in scan_folder(tree, recursive=True):
            assert st.st_ino == candidate.path.lstat().st_ino

    def test_symlinked_folder_is_not_followed(self, tree: Path, tmp_path: Path) -> None:
        """A link to a folder is yielded as a link; the folder behind it is not listed."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.pdf").write_bytes(PDF)
        (tree / "link").symlink_to(outside, target_is_directory=True)
        found = {c.relative_path: st for c, st in scan_folder(tree, recursive=True)}
        assert "link/secret.pdf" not in found
        assert stat.S_ISLNK(found["link"].st_mode)

    def test_missing_root_yields_nothing(self, tmp_path: Path) -> None:
        """A missing inbox is an empty scan, not an error."""
        assert list(scan_folder(tmp_path / "missing", recursive=True)) == []

    def test_unreadable_sub_folder_is_skipped(
        self, tree: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A sub-folder that cannot be listed is skipped; the rest of the scan goes on."""
        monkeypatch.setattr(os, "scandir", CountingScandir(os.scandir, fail_for=tree / "sub"))
        found = {c.relative_path for c, _ in scan_folder(tree, recursive=True)}
        assert found == {"a.pdf"}

    def test_scan_is_lazy(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """In a folder of 5,000 files the first candidate arrives before the listing ends."""
        root = tmp_path / "big"
        root.mkdir()
        for index in range(5000):
            (root / f"{index:05d}.pdf").touch()
        counter = CountingScandir(os.scandir)
        monkeypatch.setattr(os, "scandir", counter)
        scan = scan_folder(root, recursive=False)
        is_generator = inspect.isgenerator(scan)
        assert is_generator
        first, _ = next(scan)
        assert first.path.parent == root
        assert counter.entries < 100
        assert sum(1 for _ in scan) == 4999
        assert counter.entries == 5000


class TestInspectFile:
    @pytest.mark.parametrize(
        ("content", "content_type"),
        [(PDF, "application/pdf"), (PNG, "image/png"), (JPEG, "image/jpeg")],
    )
    def test_hash_size_and_type(self, tmp_path: Path, content: bytes, content_type: str) -> None:
        """inspect_file returns the SHA-256, size, mtime and the sniffed type."""
        path = tmp_path / "doc"
        path.write_bytes(content)
        facts = inspect_file(path)
        assert facts.sha256 == hashlib.sha256(content).hexdigest()
        assert facts.size == len(content)
        assert facts.mtime_ns == path.stat().st_mtime_ns
        assert facts.content_type == content_type
        assert facts.head == content[:1024]

    def test_hash_of_a_multi_chunk_file(self, tmp_path: Path) -> None:
        """A file of several 1 MiB chunks hashes like hashlib over all its bytes."""
        content = PDF + os.urandom(3 * 1024 * 1024 + 17)
        path = tmp_path / "big.pdf"
        path.write_bytes(content)
        facts = inspect_file(path)
        assert facts.sha256 == hashlib.sha256(content).hexdigest()
        assert len(facts.head) == 1024

    def test_type_comes_from_content_not_name(self, tmp_path: Path) -> None:
        """An ELF binary named .png is not sniffed as PNG."""
        path = tmp_path / "evil.png"
        path.write_bytes(ELF)
        assert inspect_file(path).content_type is None

    def test_fifo_raises_without_blocking(self, tmp_path: Path) -> None:
        """Opening a FIFO that has no writer neither blocks nor hashes: it raises at once."""
        fifo = tmp_path / "pipe.pdf"
        os.mkfifo(fifo)
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(inspect_file, fifo)
            try:
                with pytest.raises(OSError, match="FIFO"):
                    future.result(timeout=10)
            finally:
                if not future.done():  # unblock the worker so the test can end
                    with open(fifo, "wb"):
                        pass

    def test_symlink_is_refused(self, tmp_path: Path) -> None:
        """A symbolic link is not followed (O_NOFOLLOW), even to a valid document."""
        target = tmp_path / "a.pdf"
        target.write_bytes(PDF)
        link = tmp_path / "link.pdf"
        link.symlink_to(target)
        with pytest.raises(OSError):  # noqa: PT011 - ELOOP, spelled differently per platform
            inspect_file(link)

    def test_directory_is_refused(self, tmp_path: Path) -> None:
        """A directory is not a document."""
        with pytest.raises(OSError):  # noqa: PT011 - EISDIR or our own IsADirectoryError
            inspect_file(tmp_path)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A file that vanished raises FileNotFoundError (the engine drops the document)."""
        with pytest.raises(FileNotFoundError):
            inspect_file(tmp_path / "gone.pdf")

    def test_file_changing_while_read(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file that grows while it is hashed raises FileChangedError."""
        path = tmp_path / "growing.pdf"
        path.write_bytes(PDF)
        real_fstat = os.fstat
        calls: list[int] = []

        def fstat_then_append(fd: int) -> os.stat_result:
            result = real_fstat(fd)
            if not calls:
                with open(path, "ab") as handle:
                    handle.write(b"more bytes")
            calls.append(fd)
            return result

        monkeypatch.setattr("docutray_watch.intake.os.fstat", fstat_then_append)
        with pytest.raises(FileChangedError):
            inspect_file(path)


class TestRejectionFor:
    def test_valid_document_passes(self, tmp_path: Path) -> None:
        """A non-empty PDF under the limit is not rejected."""
        path = tmp_path / "a.pdf"
        path.write_bytes(PDF)
        assert rejection_for(inspect_file(path)) is None

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty file is rejected as such."""
        path = tmp_path / "empty.pdf"
        path.touch()
        assert rejection_for(inspect_file(path)) == "empty file (0 bytes)"

    def test_too_large(self, tmp_path: Path) -> None:
        """A (sparse) 101 MiB file is rejected as too large, naming both sizes."""
        path = tmp_path / "huge.pdf"
        with open(path, "wb") as handle:
            handle.write(PDF)
            handle.truncate(101 * 1024 * 1024)
        reason = rejection_for(inspect_file(path))
        assert reason is not None
        assert reason.startswith("too large: 105906176 bytes")
        assert str(MAX_FILE_SIZE) in reason

    def test_exactly_at_the_limit_is_allowed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The limit itself is allowed; one byte more is not."""
        monkeypatch.setattr(intake, "MAX_FILE_SIZE", 100)
        facts = intake.FileFacts(100, 0, "0" * 64, "application/pdf", PDF)
        assert rejection_for(facts) is None
        facts = intake.FileFacts(101, 0, "0" * 64, "application/pdf", PDF)
        reason = rejection_for(facts)
        assert reason is not None
        assert reason.startswith("too large")

    @pytest.mark.parametrize(("name", "content"), [("notes.pdf", b"just text\n"), ("x.png", ELF)])
    def test_unsupported_content(self, tmp_path: Path, name: str, content: bytes) -> None:
        """Text, or an executable renamed .png, is rejected as unsupported, quoting its start."""
        path = tmp_path / name
        path.write_bytes(content)
        reason = rejection_for(inspect_file(path))
        assert reason is not None
        assert reason.startswith("unsupported file type")
        assert repr(content[:8]) in reason


class TestIsSettled:
    def test_settled_after_the_quiet_period(self, tmp_path: Path) -> None:
        """A file is settled once `settle` seconds passed since its mtime, not before."""
        path = tmp_path / "a.pdf"
        path.write_bytes(PDF)
        st = path.stat()
        assert not is_settled(st, st.st_mtime_ns + 500_000_000, 1.0)
        assert is_settled(st, st.st_mtime_ns + 1_000_000_000, 1.0)
        assert is_settled(st, st.st_mtime_ns, 0.0)
