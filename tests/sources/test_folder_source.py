"""The built-in folder source wraps the watcher, the scan and the archive functions behind the
Source interface: same nominations, same conditional and crash-safe final actions."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from docutray_watch.sources.base import DocumentGoneError, SourceDocument, VersionChangedError
from docutray_watch.sources.folder import FolderSource, FolderSourceConfig, version_of
from tests.sources.conftest import Nominations, pdf


@pytest.fixture(name="inbox")
def inbox_fixture(tmp_path: Path) -> Path:
    """An empty inbox folder."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def _source(inbox: Path, **options: object) -> FolderSource:
    config = FolderSourceConfig.model_validate({"type": "folder", "path": inbox, **options})
    return FolderSource(config, pipeline="files")


@pytest.fixture(name="started")
async def started_fixture(inbox: Path) -> AsyncIterator[tuple[FolderSource, Nominations]]:
    """A folder source on the inbox, started without its watcher (tests call `discover`)."""
    source = _source(inbox)
    nominations = Nominations()
    source._nominate = nominations
    yield source, nominations
    await source.stop()


async def _only(source: FolderSource, nominated: Nominations) -> SourceDocument:
    await source.discover()
    return nominated.docs[-1]


class TestDiscovery:
    async def test_discover_nominates_each_file_with_its_version(
        self, inbox: Path, started: tuple[FolderSource, Nominations]
    ) -> None:
        """Identity is the absolute path, the version `size:mtime_ns:inode`."""
        source, nominated = started
        (inbox / "a.pdf").write_bytes(pdf())
        (inbox / "sub").mkdir()
        (inbox / "sub" / "b.pdf").write_bytes(pdf())
        assert await source.discover() == 1  # not recursive
        (doc,) = nominated.docs
        assert (doc.identity, doc.name, doc.relative_path) == (
            str(inbox / "a.pdf"),
            "a.pdf",
            "a.pdf",
        )
        assert doc.version == version_of((inbox / "a.pdf").lstat())

    async def test_recursive_takes_sub_folders(self, inbox: Path) -> None:
        """With recursive, a file below a sub-folder has its relative path."""
        source = _source(inbox, recursive=True)
        nominated = Nominations()
        source._nominate = nominated
        (inbox / "sub").mkdir()
        (inbox / "sub" / "b.pdf").write_bytes(pdf())
        await source.discover()
        assert [d.relative_path for d in nominated.docs] == ["sub/b.pdf"]

    async def test_a_kept_version_is_not_nominated_until_it_changes(
        self, inbox: Path, started: tuple[FolderSource, Nominations]
    ) -> None:
        """keep() hides this version; a rewrite is a new one."""
        source, nominated = started
        path = inbox / "a.pdf"
        path.write_bytes(pdf())
        await source.keep(await _only(source, nominated))
        assert await source.discover() == 0
        path.write_bytes(pdf("longer now"))
        assert await source.discover() == 1

    async def test_watcher_events_nominate_with_their_signal(self, inbox: Path) -> None:
        """Started, the source turns the watcher's events into nominations on the loop."""
        source = _source(inbox)
        arrived = asyncio.Event()
        seen: list[SourceDocument] = []

        def nominate(doc: SourceDocument) -> bool:
            seen.append(doc)
            arrived.set()
            return True

        await source.start(nominate)
        try:
            (inbox / "new.pdf").write_bytes(pdf())
            await asyncio.wait_for(arrived.wait(), timeout=10)
        finally:
            await source.stop()
        assert seen[0].identity == str(inbox / "new.pdf")
        assert seen[0].hint in ("closed", "writing", "changed")

    async def test_a_ready_marker_nominates_its_document(self, inbox: Path) -> None:
        """The marker's event or scan entry offers the document it belongs to."""
        source = _source(inbox, ready_marker=".done")
        nominated = Nominations()
        source._nominate = nominated
        (inbox / "a.pdf").write_bytes(pdf())
        source._offer(inbox / "a.pdf.done", None, "closed")
        assert nominated.identities == [str(inbox / "a.pdf")]


class TestReadingAndActions:
    async def test_open_streams_and_refuses_a_changed_file(
        self, inbox: Path, started: tuple[FolderSource, Nominations]
    ) -> None:
        """The bytes of the version nominated; after a rewrite, VersionChangedError."""
        source, nominated = started
        path = inbox / "a.pdf"
        path.write_bytes(pdf("one"))
        doc = await _only(source, nominated)
        assert b"".join([c async for c in source.open(doc)]) == pdf("one")
        path.write_bytes(pdf("two, longer"))
        with pytest.raises(VersionChangedError):
            _ = [c async for c in source.open(doc)]

    async def test_move_goes_to_a_free_name(
        self, inbox: Path, tmp_path: Path, started: tuple[FolderSource, Nominations]
    ) -> None:
        """plan_move picks `a.1.pdf` when `a.pdf` is taken; move puts it there."""
        source, nominated = started
        done = tmp_path / "done"
        done.mkdir()
        (done / "a.pdf").write_bytes(b"other")
        (inbox / "a.pdf").write_bytes(pdf())
        doc = await _only(source, nominated)
        destination = await source.plan_move(doc, str(done))
        assert destination == str(done / "a.1.pdf")
        assert await source.move(doc, destination) == destination
        assert sorted(os.listdir(done)) == ["a.1.pdf", "a.pdf"]
        assert os.listdir(inbox) == []

    async def test_a_move_cut_short_is_completed_without_a_double(
        self, inbox: Path, tmp_path: Path, started: tuple[FolderSource, Nominations]
    ) -> None:
        """A crash between link and unlink leaves both names: move again removes the source."""
        source, nominated = started
        done = tmp_path / "done"
        done.mkdir()
        (inbox / "a.pdf").write_bytes(pdf())
        doc = await _only(source, nominated)
        destination = await source.plan_move(doc, str(done))
        os.link(inbox / "a.pdf", destination)  # what the crash left
        assert await source.move(doc, destination) == destination
        assert os.listdir(done) == ["a.pdf"]
        assert os.listdir(inbox) == []

    async def test_delete_keeps_a_changed_file(
        self, inbox: Path, started: tuple[FolderSource, Nominations]
    ) -> None:
        """A file rewritten since intake is not deleted; an unchanged one is, with its marker."""
        source, nominated = started
        path = inbox / "a.pdf"
        path.write_bytes(pdf())
        doc = await _only(source, nominated)
        path.write_bytes(pdf("rewritten"))
        with pytest.raises(VersionChangedError):
            await source.delete(doc)
        assert path.exists()
        await source.delete(await _only(source, nominated))
        assert not path.exists()

    async def test_move_of_a_vanished_file_says_gone(
        self, inbox: Path, tmp_path: Path, started: tuple[FolderSource, Nominations]
    ) -> None:
        """No source and no destination: DocumentGoneError."""
        source, nominated = started
        (inbox / "a.pdf").write_bytes(pdf())
        doc = await _only(source, nominated)
        (inbox / "a.pdf").unlink()
        with pytest.raises(DocumentGoneError):
            await source.move(doc, str(tmp_path / "done" / "a.pdf"))

    async def test_sidecar_beside_the_file(
        self, inbox: Path, started: tuple[FolderSource, Nominations]
    ) -> None:
        """`a.pdf.error.json` holds the details."""
        source, nominated = started
        (inbox / "a.pdf").write_bytes(pdf())
        doc = await _only(source, nominated)
        where = await source.write_sidecar(doc, {"reason": "too large"})
        assert where == str(inbox / "a.pdf.error.json")
        assert json.loads(Path(where).read_text()) == {"reason": "too large"}


class TestValidateAndDryRun:
    async def test_check_and_dry_run(self, inbox: Path) -> None:
        """`validate` gets a line for the folder; the dry run says taken or why not."""
        source = _source(inbox, ready_marker=".ok")
        (inbox / "a.pdf").write_bytes(pdf())
        (inbox / "a.pdf.ok").write_bytes(b"")
        (inbox / "b.pdf").write_bytes(pdf())
        assert await source.check() == [f"folder {inbox}: readable"]
        listing = {
            Path(e.identity).name: (e.decision, e.why)
            for e in await source.dry_run_listing(
                lambda relative: "ready marker (.ok)" if relative.endswith(".ok") else None
            )
        }
        assert listing == {
            "a.pdf": ("taken", "new file"),
            "a.pdf.ok": ("ignored", "ready marker (.ok)"),
            "b.pdf": ("ignored", "waiting for its ready marker b.pdf.ok"),
        }

    async def test_check_names_a_folder_that_is_a_file(self, tmp_path: Path) -> None:
        """A path that is not a folder is a SourceError naming it."""
        from docutray_watch.sources.base import SourceError

        (tmp_path / "file").write_text("x")
        with pytest.raises(SourceError, match="not a folder"):
            await _source(tmp_path / "file").check()
