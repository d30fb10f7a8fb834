"""The built-in `folder` source: the inbox folder a pipeline's `watch:` names, as a source.

It wraps what the engine already uses — `watcher.FolderWatcher` (inotify or polling events),
`intake.scan_folder` (rescans), `archive` (crash-safe move, delete, sidecar) and `inbox` (the
folder's checks) — behind the `Source` interface, so a folder and a bucket are driven the same
way. `watch: {...}` and `source: {type: folder, ...}` are the same configuration.

Readiness stays with the engine (settle time, close-after-write, `max_open_wait`): events carry
the watcher's signal in `SourceDocument.hint` (`closed`, `writing`, `changed`). A document's
version is `size:mtime_ns:inode` from lstat; reads and final actions check it first.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from docutray_watch import archive
from docutray_watch.config import FolderSourceConfig
from docutray_watch.hookspecs import hookimpl
from docutray_watch.inbox import inbox_check
from docutray_watch.sources.base import (
    DocumentGoneError,
    DryRunEntry,
    NameRule,
    Nominate,
    Source,
    SourceDocument,
    SourceError,
    VersionChangedError,
)

if TYPE_CHECKING:
    from docutray_watch.intake import Candidate
    from docutray_watch.watcher import FolderWatcher

__all__ = ["FolderSource", "FolderSourceConfig", "version_of"]

# `intake` and `watcher` are imported where they are used: loading the plugins (which every
# command does, `status` too) must not pull in the HTTP client or watchdog.

_CHUNK = 1024 * 1024


def version_of(st: os.stat_result) -> str:
    """`size:mtime_ns:inode`: what says, without reading it, that a file is unchanged."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


class FolderSource(Source[FolderSourceConfig]):
    """Documents are the files in a folder (and its sub-folders with `recursive`)."""

    type: ClassVar[str] = "folder"
    description: ClassVar[str] = "Files dropped into a local (or mounted) folder."
    config_model = FolderSourceConfig

    def __init__(self, config: FolderSourceConfig, *, pipeline: str) -> None:
        super().__init__(config, pipeline=pipeline)
        self.root = Path(os.path.abspath(config.path))
        self._kept: dict[str, str] = {}  # path -> version kept in place
        # path -> version offered and taken up: a rescan does not offer it again while it is
        # unchanged (events always go through: the engine's readiness logic needs them).
        self._offered: dict[str, str] = {}
        self._watcher: FolderWatcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- discovery ----------------------------------------------------------------------------

    def document(self, path: Path, st: os.stat_result, hint: str = "listed") -> SourceDocument:
        """The nominated document for a file and its lstat."""
        relative = path.relative_to(self.root).as_posix()
        return SourceDocument(str(path), path.name, relative, st.st_size, version_of(st), hint)

    def _offer(self, path: Path, st: os.stat_result | None, hint: str) -> bool:
        marker = self.config.ready_marker
        if marker and path.name.endswith(marker) and len(path.name) > len(marker):
            path, st = path.with_name(path.name[: -len(marker)]), None  # its document is ready
        if path.name.endswith(archive.SIDECAR_SUFFIX):
            return False  # our own error sidecar
        try:
            st = st or path.lstat()
            relative = path.relative_to(self.root).as_posix()
        except (OSError, ValueError):
            return False
        if "/" in relative and not self.config.recursive:
            return False
        version = version_of(st)
        if self._kept.get(str(path)) == version:
            return False
        if hint == "listed" and self._offered.get(str(path)) == version:
            return False
        taken = self._nominate(self.document(path, st, hint))
        if taken:
            self._offered[str(path)] = version
        return taken

    async def start(self, nominate: Nominate) -> None:
        """Start the folder's watcher; its events are offered on the event loop."""
        from docutray_watch.watcher import FolderWatcher

        await super().start(nominate)
        self._loop = asyncio.get_running_loop()
        self._watcher = FolderWatcher(
            self.pipeline, self.root, self.config.recursive, self.config.polling, self._event
        )
        await asyncio.to_thread(self._watcher.start)

    def _event(self, path: Path, signal: str) -> None:
        # Called from the observer thread.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._offer, path, None, signal)

    async def stop(self) -> None:
        """Stop the watcher."""
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop)
            self._watcher = None

    @property
    def mode(self) -> str:
        """`inotify`, `polling` or `stopped`."""
        return self._watcher.mode if self._watcher is not None else "stopped"

    def _scan(self) -> list[tuple[Candidate, os.stat_result]]:
        from docutray_watch import intake

        def kept(path: str, st: os.stat_result) -> bool:
            return self._kept.get(path) == version_of(st)

        return list(intake.scan_folder(self.root, recursive=self.config.recursive, skip=kept))

    async def discover(self) -> int:
        """Walk the folder and offer every file not offered before in this version."""
        from docutray_watch import intake

        count = 0
        found = await asyncio.to_thread(self._scan)
        present = {str(candidate.path) for candidate, _st in found}
        for path in [p for p in self._offered if p not in present]:
            del self._offered[path]
        for candidate, st in found:
            if intake.rule_for_kind(st.st_mode) is None and self._offer(
                candidate.path, st, "listed"
            ):
                count += 1
        return count

    def forget(self, identity: str) -> None:
        """Offer it again at the next scan."""
        self._offered.pop(identity, None)

    def remember_kept(self, identity: str, version: str) -> None:
        """This version was kept in place: not offered again while unchanged."""
        self._kept[identity] = version

    # -- reading ------------------------------------------------------------------------------

    def _require(self, doc: SourceDocument) -> os.stat_result:
        try:
            st = os.lstat(doc.identity)
        except FileNotFoundError:
            raise DocumentGoneError(f"{doc.identity} is gone") from None
        if version_of(st) != doc.version:
            raise VersionChangedError(f"{doc.identity} changed since it was taken")
        return st

    async def open(self, doc: SourceDocument) -> AsyncIterator[bytes]:
        """The file's bytes in 1 MiB chunks; `VersionChangedError` when it changed."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = await asyncio.to_thread(os.open, doc.identity, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DocumentGoneError(f"{doc.identity} is gone") from None
        with os.fdopen(fd, "rb", buffering=0) as handle:
            if version_of(os.fstat(fd)) != doc.version:
                raise VersionChangedError(f"{doc.identity} changed since it was taken")
            while chunk := await asyncio.to_thread(handle.read, _CHUNK):
                yield chunk

    # -- final actions ------------------------------------------------------------------------

    async def plan_move(self, doc: SourceDocument, to: str) -> str:
        """`to`/<relative folder>/<name>, or `name.1.pdf`… when that is taken."""
        folder = Path(to) / Path(doc.relative_path).parent
        destination = await asyncio.to_thread(archive.unique_destination, folder, doc.name)
        return str(destination)

    def _move(self, doc: SourceDocument, destination: Path) -> Path:
        from docutray_watch import intake

        source = Path(doc.identity)
        sha256 = None
        if os.path.lexists(source):
            self._require(doc)
            if os.path.lexists(destination):
                # A move cut short: `move_file` recognises a finished copy by its content.
                sha256 = intake.inspect_file(source).sha256
        return archive.move_file(source, destination, sha256=sha256)

    async def move(self, doc: SourceDocument, destination: str) -> str:
        """`archive.move_file`: crash-safe, completes a move a crash cut short."""
        try:
            moved = await asyncio.to_thread(self._move, doc, Path(destination))
        except FileNotFoundError:
            raise DocumentGoneError(f"{doc.identity} was gone before its move") from None
        await self._remove_marker(doc)
        return str(moved)

    async def delete(self, doc: SourceDocument) -> None:
        """Remove the file if it is still this version."""
        try:
            await asyncio.to_thread(self._require, doc)
        except DocumentGoneError:
            pass
        else:
            await asyncio.to_thread(archive.remove_file, Path(doc.identity))
        await self._remove_marker(doc)

    async def _remove_marker(self, doc: SourceDocument) -> None:
        if self.config.ready_marker:
            marker = Path(doc.identity + self.config.ready_marker)
            await asyncio.to_thread(archive.remove_file, marker)

    async def keep(self, doc: SourceDocument) -> None:
        """Leave it; this version is not offered again."""
        self._kept[doc.identity] = doc.version

    async def write_sidecar(
        self, doc: SourceDocument, details: dict[str, Any], at: str | None = None
    ) -> str:
        """`<name>.error.json` beside the file (or beside `at`, where it is moved to)."""
        target = Path(at or doc.identity)
        written = await asyncio.to_thread(archive.write_sidecar, target, details)
        return str(written)

    async def remove_sidecar(self, doc: SourceDocument) -> None:
        """Remove `<name>.error.json` left by a previous attempt."""
        await asyncio.to_thread(archive.remove_file, archive.sidecar_path(Path(doc.identity)))

    async def current_version(self, doc: SourceDocument) -> str | None:
        """`size:mtime_ns:inode` from lstat now, or None when the file is gone."""
        try:
            st = await asyncio.to_thread(os.lstat, doc.identity)
        except FileNotFoundError:
            return None
        return version_of(st)

    # -- validate and dry run -----------------------------------------------------------------

    async def check(self) -> list[str]:
        """The folder is there and readable (or can be created)."""
        problem, note = await asyncio.to_thread(inbox_check, self.root)
        if problem is not None:
            raise SourceError(f"folder {self.root}: {problem}")
        return [f"folder {self.root}: " + (note or "readable")]

    async def dry_run_listing(self, rule: NameRule | None = None) -> list[DryRunEntry]:
        """Each entry of the folder: taken, or ignored and why."""
        from docutray_watch import intake

        entries: list[DryRunEntry] = []
        marker = self.config.ready_marker
        found = sorted(await asyncio.to_thread(self._scan), key=_by_path)
        present = {str(candidate.path) for candidate, _st in found}
        for candidate, st in found:
            path = str(candidate.path)
            why = intake.rule_for_kind(st.st_mode)
            waiting = marker and not path.endswith(marker) and path + marker not in present
            if why is None and waiting:
                why = f"waiting for its ready marker {candidate.path.name}{marker}"
            if why is None and rule is not None:
                why = rule(candidate.relative_path)
            entries.append(
                DryRunEntry(path, "ignored", why) if why else DryRunEntry(path, "taken", "new file")
            )
        return entries


def _by_path(item: tuple[Candidate, os.stat_result]) -> str:
    return str(item[0].path)


@hookimpl
def register_source_types(register: Callable[[type[Source[Any]]], None]) -> None:
    """Register the folder source."""
    register(FolderSource)
