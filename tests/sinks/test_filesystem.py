"""Tests of the `filesystem` sink: atomic JSON files that stay inside their root."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from docutray_watch._testkit import make_document, make_record
from docutray_watch.fsutil import is_within
from docutray_watch.records import ResultRecord
from docutray_watch.sinks.base import PermanentSinkError, Sink, SinkError
from docutray_watch.sinks.filesystem import (
    FilesystemConfig,
    FilesystemSink,
    register_sink_types,
)


def make_sink(root: Path, **options: Any) -> FilesystemSink:
    """A filesystem sink writing below `root`, opened."""
    config = FilesystemConfig.model_validate({"type": "filesystem", "path": str(root), **options})
    sink = FilesystemSink(config, pipeline="invoices", sink_id="files")
    sink.open()
    return sink


def files_below(root: Path) -> list[str]:
    """Every file below `root` (relative, sorted), hidden ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class TestDeliver:
    def test_writes_the_record_under_the_default_name(self, tmp_path: Path) -> None:
        """The record lands as JSON at {relative_dir}/{stem}.{short_sha}.{step_id}.json."""
        root = tmp_path / "results"
        sink = make_sink(root)
        record = make_record(name="inv.pdf", relative_dir="2026/jan")
        receipt = sink.deliver(record)
        expected = root / "2026" / "jan" / f"inv.{record.document.sha256[:12]}.stp_test.json"
        assert receipt == str(expected)
        assert json.loads(expected.read_text(encoding="utf-8")) == record.to_dict()
        assert files_below(root) == [str(expected.relative_to(root))]  # no temp file left

    def test_open_creates_the_root(self, tmp_path: Path) -> None:
        """open() creates a missing root folder with its parents."""
        make_sink(tmp_path / "a" / "b" / "results")
        assert (tmp_path / "a" / "b" / "results").is_dir()

    def test_redelivery_overwrites_the_same_file(self, tmp_path: Path) -> None:
        """Delivering the same record key again replaces the one file (idempotent)."""
        root = tmp_path / "results"
        sink = make_sink(root)
        first = sink.deliver(make_record(execution_id="exec-1"))
        second = sink.deliver(make_record(execution_id="exec-2"))
        assert first == second
        assert len(files_below(root)) == 1
        assert json.loads(Path(str(second)).read_text())["execution_id"] == "exec-2"

    def test_foreign_file_with_the_same_name_is_kept(self, tmp_path: Path) -> None:
        """A file of another document at the target name is not overwritten: full-hash name."""
        root = tmp_path / "results"
        sink = make_sink(root, name="{stem}.{step_id}.json")
        one = make_record(document=make_document("a.pdf", content=b"%PDF-1 first"))
        other = make_record(document=make_document("a.pdf", content=b"%PDF-1 second"))
        first = Path(str(sink.deliver(one)))
        second = Path(str(sink.deliver(other)))
        assert first == root / "a.stp_test.json"
        assert second == root / f"a.stp_test.{other.document.sha256}.json"
        assert json.loads(first.read_text())["document"]["sha256"] == one.document.sha256
        assert json.loads(second.read_text())["document"]["sha256"] == other.document.sha256
        # Redelivering either one still lands in its own file.
        assert Path(str(sink.deliver(other))) == second
        assert len(files_below(root)) == 2

    def test_file_we_did_not_write_is_kept(self, tmp_path: Path) -> None:
        """A non-JSON file at the target name is never overwritten."""
        root = tmp_path / "results"
        sink = make_sink(root, name="{stem}.json")
        (root / "a.json").write_text("operator notes")
        receipt = Path(str(sink.deliver(make_record(name="a.pdf"))))
        assert receipt != root / "a.json"
        assert (root / "a.json").read_text() == "operator notes"

    def test_hostile_names_stay_inside_the_root(self, tmp_path: Path) -> None:
        """Traversal, absolute, control and dot names all end up inside the root."""
        root = tmp_path / "out" / "results"
        sink = make_sink(root)
        hostile = [
            ("../../etc/passwd", "../../x"),
            ("/etc/shadow", "/abs/dir"),
            ("..", ".."),
            ("\u202efdp.exe", "a/./../b"),
            ("-rf .pdf", ".hidden/-dash"),
            ("x" * 300 + ".pdf", "y" * 300),
        ]
        for name, folder in hostile:
            record = make_record(document=make_document(name, relative_dir=folder))
            target = Path(str(sink.deliver(record)))
            assert target.is_file()
            assert is_within(target, root), (name, folder, target)
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results"]

    def test_symlinked_folder_pointing_outside_is_refused(self, tmp_path: Path) -> None:
        """A link inside the root to a folder outside makes the delivery fail permanently."""
        root = tmp_path / "results"
        outside = tmp_path / "outside"
        outside.mkdir()
        sink = make_sink(root)
        (root / "2026").symlink_to(outside, target_is_directory=True)
        record = make_record(relative_dir="2026/jan")
        with pytest.raises(PermanentSinkError, match="outside"):
            sink.deliver(record)
        assert list(outside.iterdir()) == []  # not even a folder was created through the link

    def test_disk_full_leaves_no_partial_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ENOSPC while writing is a retryable SinkError and leaves nothing behind."""
        root = tmp_path / "results"
        sink = make_sink(root)
        real_fdopen = os.fdopen

        class FullDisk(io.BufferedWriter):
            def write(self, data: Any) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            return FullDisk(real_fdopen(fd, "wb", buffering=0))

        monkeypatch.setattr("docutray_watch.fsutil.os.fdopen", fdopen)
        with pytest.raises(SinkError, match="No space") as info:
            sink.deliver(make_record())
        monkeypatch.undo()
        assert not isinstance(info.value, PermanentSinkError)
        assert files_below(root) == []

    def test_error_records_and_compact_json(self, tmp_path: Path) -> None:
        """An ERROR record is written too; indent null gives one line; fsync can be off."""
        root = tmp_path / "results"
        sink = make_sink(root, indent=None, fsync=False)
        record = make_record(status="ERROR")
        text = Path(str(sink.deliver(record))).read_text()
        assert text.count("\n") == 1
        assert ResultRecord.model_validate_json(text) == record

    def test_non_ascii_is_kept_readable(self, tmp_path: Path) -> None:
        """Extracted text keeps its characters (UTF-8, not \\u escapes)."""
        sink = make_sink(tmp_path / "results")
        record = make_record(data={"vendor": "Société Générale"})
        assert "Société Générale" in Path(str(sink.deliver(record))).read_text(encoding="utf-8")


class TestCheck:
    def test_writable_root_passes(self, tmp_path: Path) -> None:
        """check() succeeds on a usable root and leaves no probe file."""
        sink = make_sink(tmp_path / "results")
        sink.check()
        assert files_below(tmp_path / "results") == []

    def test_root_that_is_a_file(self, tmp_path: Path) -> None:
        """A root that is a regular file cannot be used: SinkError."""
        blocker = tmp_path / "results"
        blocker.write_text("not a folder")
        config = FilesystemConfig.model_validate({"type": "filesystem", "path": str(blocker)})
        sink = FilesystemSink(config, pipeline="invoices", sink_id="files")
        with pytest.raises(SinkError, match="cannot create"):
            sink.check()

    def test_root_below_a_file(self, tmp_path: Path) -> None:
        """A root whose parent is a file cannot be created: SinkError."""
        (tmp_path / "file").write_text("x")
        config = FilesystemConfig.model_validate(
            {"type": "filesystem", "path": str(tmp_path / "file" / "results")}
        )
        sink = FilesystemSink(config, pipeline="invoices", sink_id="files")
        with pytest.raises(SinkError):
            sink.check()

    def test_unwritable_root(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A root where no file can be created (permissions) fails check() with SinkError."""
        sink = make_sink(tmp_path / "results")

        def denied(*args: Any, **kwargs: Any) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied")

        # Root ignores file modes, so simulate the refusal where the file would be created.
        monkeypatch.setattr("docutray_watch.fsutil.tempfile.mkstemp", denied)
        with pytest.raises(SinkError, match="Permission denied"):
            sink.check()


class TestConfigAndRegistration:
    def test_bad_name_template_is_rejected(self) -> None:
        """An unknown placeholder in `name` fails validation."""
        with pytest.raises(ValidationError, match="unknown placeholder"):
            FilesystemConfig.model_validate({"type": "filesystem", "path": "/o", "name": "{x}"})

    def test_defaults(self) -> None:
        """Default name template, indentation and fsync."""
        config = FilesystemConfig.model_validate({"type": "filesystem", "path": "/o"})
        assert config.name == "{relative_dir}/{stem}.{short_sha}.{step_id}.json"
        assert (config.indent, config.fsync) == (2, True)

    def test_plugin_registers_the_sink(self) -> None:
        """The module's register_sink_types hook registers FilesystemSink."""
        registered: list[type[Sink[Any]]] = []
        register_sink_types(register=registered.append)
        assert registered == [FilesystemSink]
        assert FilesystemSink.type == "filesystem"
