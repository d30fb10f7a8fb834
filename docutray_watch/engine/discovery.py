"""Discovery: from a file in a watched folder to a journaled document (queued, or at its end).

A file is nominated by a scan or a file-system event, waits until it is complete (closed after
writing, or unchanged for `settle` seconds, or its ready marker arrived), is hashed and sniffed
in a worker thread with the rest of its batch, and is journaled in one transaction with them:
`queued` (handed to the dispatcher), or `rejected` / `duplicate` (handed straight to its end).
Until it is journaled, a candidate is only a nomination: a crash leaves nothing to resume, and
the next scan finds the file again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from pathlib import Path
from typing import Protocol

import structlog

from docutray_watch import intake
from docutray_watch.delivery import describe
from docutray_watch.engine.context import Context, document_of
from docutray_watch.engine.kept import Held, KeptStamps, Offer
from docutray_watch.engine.reading import Ready, Unreadable, by_volume, read, read_all
from docutray_watch.engine.scanning import walk_in_chunks
from docutray_watch.journal import (
    DocumentRow,
    DocumentState,
    NewDocument,
    Queued,
    StepRow,
    kept_stamp,
)
from docutray_watch.plugins import call_first, call_observers

__all__ = ["INTAKE_BATCH", "Discovery", "Handoff"]

log = structlog.get_logger("docutray_watch.engine")

INTAKE_BATCH = 64  # files an intake worker takes from the queue at once (hashed, journaled)


class Handoff(Protocol):
    """Where a journaled document goes next."""

    def queued(self, doc: DocumentRow, steps: list[StepRow] | None) -> None:
        """A document to submit (waits for its turn)."""
        ...

    def to_the_end(self, doc: DocumentRow) -> None:
        """A document with nothing left but its final action (rejected, duplicate)."""
        ...


class Discovery:
    """Nominates files, waits until they are complete, journals them (see the module docstring)."""

    def __init__(self, ctx: Context, handoff: Handoff) -> None:
        self.ctx = ctx
        self.handoff = handoff
        self.accepting = False
        self._candidates: asyncio.Queue[tuple[str, intake.Candidate]] = asyncio.Queue()
        # Close-after-write seen for (pipeline, path): the file's mtime_ns then.
        self._closed: dict[tuple[str, str], int] = {}
        # Files an inotify watcher saw written to and not closed yet: (pipeline, path) → since
        # (monotonic). Not complete, whatever their age, for up to `watch.max_open_wait`.
        self._writing: dict[tuple[str, str], float] = {}
        self._settle_wake: dict[tuple[str, str], asyncio.Event] = {}
        self._scanned: set[str] = set()  # pipelines scanned once: later scans take one pass
        self._held = Held(self._release_held)  # offers made before the kept stamps are read

    # -- nominating --------------------------------------------------------------------------

    async def scan(self, pipeline: str | None = None) -> int:
        """Nominate every file in the watched folder(s); returns how many were nominated."""
        count = 0
        for runtime in list(self.ctx.pipelines.values()):
            if runtime.retired or (pipeline is not None and runtime.config.name != pipeline):
                continue
            if runtime.config.folder_watch is None:
                continue  # not a folder: its source looks (engine.source_intake)
            queue: asyncio.Queue[list[tuple[intake.Candidate, os.stat_result]] | None]
            queue = asyncio.Queue(maxsize=4)
            loop = asyncio.get_running_loop()
            # New files first, kept ones after (`scanning.py`), once the kept stamps are read
            # (the listing does not wait for them). Kept stamps are read while the event loop
            # may update them: `nominate` checks them again.
            kept = self.ctx.documents.kept.get(runtime.config.name, KeptStamps())
            new_first = runtime.config.name not in self._scanned  # the start-up scan
            self._scanned.add(runtime.config.name)

            def hand_over(
                items: list[tuple[intake.Candidate, os.stat_result]] | None,
                q: asyncio.Queue[list[tuple[intake.Candidate, os.stat_result]] | None] = queue,
                loop: asyncio.AbstractEventLoop = loop,
            ) -> None:
                asyncio.run_coroutine_threadsafe(q.put(items), loop).result()

            walk = functools.partial(
                walk_in_chunks,
                runtime.root,
                hand_over,
                recursive=runtime.config.folder.recursive,
                kept=kept,
                new_first=new_first,
                ready=kept.filled_event,
            )
            walker = asyncio.ensure_future(asyncio.to_thread(walk))
            while (batch := await queue.get()) is not None:
                for candidate, st in batch:
                    if self.nominate(
                        runtime.config.name,
                        candidate.path,
                        st=st,
                        relative_path=candidate.relative_path,
                    ):
                        count += 1
            await walker
        return count

    def nominate(
        self,
        pipeline: str,
        path: Path,
        *,
        st: os.stat_result | None = None,
        relative_path: str | None = None,
        closed: bool = False,
        writing: bool = False,
    ) -> bool:
        """Offer a file to a pipeline (from a scan or a file-system event); True if taken up.

        `closed` says a close-after-write event was seen for it: the writer is done, so the file
        need not sit unchanged for `settle` seconds first. `writing` says data was written to it
        and no close-after-write followed yet: a writer has it open, so it is not complete.
        Before the pipeline's kept stamps are read the offer is held, made again later: True.
        """
        runtime = self.ctx.pipelines.get(pipeline)
        if not self.accepting or runtime is None or runtime.retired:
            return False
        documents = self.ctx.documents
        if not documents.kept[pipeline].filled:  # whether it is a file kept in place: not yet
            if documents.kept[pipeline].abandoned:
                return False  # the engine stops before the stamps were read
            self._held.hold(pipeline, Offer(Path(path), relative_path, closed, writing), documents)
            return True  # offered again once the kept stamps are read (`engine/kept.py`)
        absolute = os.path.abspath(path)
        if not isinstance(path, Path) or str(path) != absolute:  # a scan's paths already are
            path = Path(absolute)
        marker = runtime.config.folder.ready_marker
        if marker and path.name.endswith(marker) and len(path.name) > len(marker):
            # The marker arrived: its document is ready now.
            path = path.with_name(path.name[: -len(marker)])
            relative_path = relative_path[: -len(marker)] if relative_path else None
            st = None
        if relative_path is None:
            try:
                relative_path = path.relative_to(runtime.root).as_posix()
            except ValueError:
                return False
            if "/" in relative_path and not runtime.config.folder.recursive:
                return False
        key = (pipeline, str(path))
        if intake.rule_for_name(runtime.config, relative_path) is not None:
            return False
        if writing:
            self._writing.setdefault(key, time.monotonic())
        elif closed:
            self._writing.pop(key, None)
        if key in documents.nominated:
            if closed:
                self._closed_while_waiting(key, path)
            return False
        if st is None:
            try:
                st = path.lstat()
            except OSError:
                return False
        if key[1] in documents.known[pipeline]:
            return False  # in progress
        if documents.kept[pipeline].get(key[1]) == kept_stamp(st.st_size, st.st_mtime_ns):
            return False  # this very file was already handled (kept in place)
        kind = intake.rule_for_kind(st.st_mode)
        if kind is not None:
            self._note_ignored(pipeline, path, st, kind)
            return False
        if closed:
            self._closed[key] = st.st_mtime_ns
        documents.nominate(key)
        self._candidates.put_nowait((pipeline, intake.Candidate(path, relative_path)))
        return True

    def _release_held(self, pipeline: str) -> None:
        documents = self.ctx.documents
        again = self._held.release(pipeline, documents.kept[pipeline], self._offer, documents)
        self.ctx.spawn(again, f"kept-wait:{pipeline}", None)

    def _offer(self, pipeline: str, offer: Offer) -> None:
        self.nominate(
            pipeline,
            offer.path,
            relative_path=offer.relative_path,
            closed=offer.closed,
            writing=offer.writing,
        )

    def _closed_while_waiting(self, key: tuple[str, str], path: Path) -> None:
        """A file waiting to be complete was closed after writing: take it now."""
        try:
            self._closed[key] = path.lstat().st_mtime_ns
        except OSError:
            return
        wake = self._settle_wake.get(key)
        if wake is not None:
            wake.set()

    def _note_ignored(self, pipeline: str, path: Path, st: os.stat_result, rule: str) -> None:
        if self.ctx.documents.note_ignored((pipeline, str(path)), (st.st_mtime_ns, st.st_ino)):
            self.ctx.summary.ignored.append((pipeline, str(path), rule))
            log.info("file_ignored", pipeline=pipeline, doc=path.name, path=str(path), rule=rule)

    def _release(self, pipeline: str, path: Path) -> None:
        self.ctx.documents.release((pipeline, str(path)))

    # -- waiting until complete --------------------------------------------------------------

    async def worker(self) -> None:
        """Take candidates a batch at a time until cancelled.

        Hashed in one worker-thread trip and journaled in one transaction (a backlog of 20,000
        files would otherwise cost two thread trips and a commit each). A lone file is a batch
        of one: no waiting for more.
        """
        while True:
            batch = [await self._candidates.get()]
            while len(batch) < INTAKE_BATCH and not self._candidates.empty():
                batch.append(self._candidates.get_nowait())
            ready: list[Ready] = []
            for pipeline, candidate in batch:
                try:
                    st = await self._ready_to_read(pipeline, candidate)
                except Exception as exc:  # noqa: BLE001 - one file never stops intake
                    self._intake_failed(pipeline, candidate, exc)
                    continue
                if st is not None:
                    ready.append((pipeline, candidate, st))
            for part in by_volume(ready):
                try:
                    await self._take(part)
                except Exception as exc:  # noqa: BLE001 - one batch never stops intake
                    for pipeline, candidate, _st in part:
                        self._intake_failed(pipeline, candidate, exc)

    def _intake_failed(self, pipeline: str, candidate: intake.Candidate, exc: Exception) -> None:
        log.error(
            "intake_failed",
            pipeline=pipeline,
            path=str(candidate.path),
            error=describe(exc),
            exc_info=exc,
        )
        self._release(pipeline, candidate.path)  # a no-op once it was journaled

    async def _ready_to_read(
        self, pipeline: str, candidate: intake.Candidate
    ) -> os.stat_result | None:
        """The file's lstat when it is complete and no rule or plugin leaves it alone; None
        when it is not taken now (released, or waiting to settle)."""
        runtime = self.ctx.pipelines.get(pipeline)
        if runtime is None or not self.accepting:
            self._release(pipeline, candidate.path)
            return None
        path = candidate.path
        key = (pipeline, str(path))
        try:
            st = path.lstat()
        except FileNotFoundError:
            self._writing.pop(key, None)
            self._release(pipeline, path)
            return None
        watch = runtime.config.folder
        marker = watch.ready_marker
        if marker and not await asyncio.to_thread(os.path.lexists, f"{path}{marker}"):
            self._release(pipeline, path)  # the marker's arrival nominates it again
            return None
        closed = self._closed.pop(key, None) == st.st_mtime_ns
        since = None if closed else self._writing.get(key)
        if since is not None and watch.max_open_wait == 0:
            self._writing.pop(key, None)  # the wait is turned off: `settle` alone decides
        elif since is not None:
            waited = time.monotonic() - since
            if waited < watch.max_open_wait:
                # Written to and not closed yet: a writer has it open. Its close wakes the wait;
                # the periodic look only notices a file deleted or renamed meanwhile.
                wait = min(max(1.0, watch.settle), watch.max_open_wait - waited)
                self._recheck_later(pipeline, candidate, wait)
                return None
            self._writing.pop(key, None)
            log.warning(
                "document_open_too_long",
                pipeline=pipeline,
                doc=path.name,
                path=str(path),
                open_s=round(waited, 1),
                note="written to and still not closed after watch.max_open_wait; taken as it is",
            )
        if not closed and not intake.is_settled(st, time.time_ns(), watch.settle):
            # Still being written (or just touched): look again once it could have settled.
            wait = max(0.05, watch.settle - (time.time_ns() - st.st_mtime_ns) / 1e9)
            self._recheck_later(pipeline, candidate, wait)
            return None
        reason = call_first(
            self.ctx.pm, "ignore_document", pipeline=pipeline, path=path, location=str(path)
        )
        if reason:
            self._note_ignored(pipeline, path, st, f"plugin: {reason}")
            self._release(pipeline, path)
            return None
        return st

    def _recheck_later(self, pipeline: str, candidate: intake.Candidate, wait: float) -> None:
        self.ctx.spawn(
            self._recheck(pipeline, candidate, wait), f"settle:{candidate.path.name}", None
        )

    async def _recheck(self, pipeline: str, candidate: intake.Candidate, wait: float) -> None:
        key = (pipeline, str(candidate.path))
        wake = self._settle_wake.setdefault(key, asyncio.Event())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)
        finally:
            if self._settle_wake.get(key) is wake:
                del self._settle_wake[key]
        if self.accepting:
            await self._candidates.put((pipeline, candidate))
        else:
            self._release(pipeline, candidate.path)

    # -- journaling --------------------------------------------------------------------------

    async def _take(self, batch: list[Ready]) -> None:
        """Hash a batch of complete files, then journal them.

        The usual file is found and queued in one commit, shared with the rest of its batch.
        A file that is rejected, a duplicate or unreadable is journaled on its own in two steps
        (it needs a row to explain itself).
        """
        ctx = self.ctx
        reads = await asyncio.to_thread(read_all, [candidate.path for _, candidate, _ in batch])
        plain: list[NewDocument] = []
        for (pipeline, candidate, _st), facts in zip(batch, reads, strict=True):
            if isinstance(facts, intake.FileFacts) and intake.rejection_for(facts) is None:
                assert facts.content_type is not None
                config = ctx.pipelines[pipeline].config
                plain.append(
                    NewDocument(
                        pipeline=pipeline,
                        path=str(candidate.path),
                        relative_path=candidate.relative_path,
                        sha256=facts.sha256,
                        content_type=facts.content_type,
                        size=facts.size,
                        mtime_ns=facts.mtime_ns,
                        ctime_ns=facts.ctime_ns,
                        inode=facts.inode,
                        steps=config.initial_steps,
                        skip_if_done=config.duplicates == "skip",
                    )
                )
        queued = iter(await ctx.store.add_queued_batch(plain) if plain else [])
        for (pipeline, candidate, st), facts in zip(batch, reads, strict=True):
            path = candidate.path
            if isinstance(facts, intake.FileFacts) and intake.rejection_for(facts) is None:
                done = next(queued)
                if done is not None:
                    ctx.documents.remember(done.document)  # the document holds the work now
                    self._release(pipeline, path)
                    await self.announce_taken(done)
                    continue
            doc = await ctx.store.add_document(
                pipeline,
                str(path),
                candidate.relative_path,
                st.st_size,
                st.st_mtime_ns,
                ctime_ns=st.st_ctime_ns,
                inode=st.st_ino,
            )
            ctx.documents.remember(doc)
            self._release(pipeline, path)
            await self.classify(doc, facts)

    async def inspect(self, doc: DocumentRow) -> None:
        """Hash and check a journaled document again (resumed, or changed while queued)."""
        await self.classify(doc, await read(Path(doc.path)))

    async def classify(self, doc: DocumentRow, facts: intake.FileFacts | Unreadable) -> None:
        """Queue, reject or mark duplicate a journaled document, from what reading it found."""
        ctx = self.ctx
        config = ctx.pipelines[doc.pipeline].config
        if isinstance(facts, Unreadable):
            await self.reject(doc, facts.reason, forget=facts.forget)
            return
        rejection = intake.rejection_for(facts)
        if rejection is not None:
            doc = await ctx.store.reject(
                doc.id,
                rejection,
                stage="intake",
                sha256=facts.sha256,
                content_type=facts.content_type,
            )
            ctx.documents.update(doc)
            self.handoff.to_the_end(doc)
            return
        assert facts.content_type is not None
        if config.duplicates == "skip":
            original = await ctx.store.find_done_by_sha(doc.pipeline, facts.sha256, exclude=doc.id)
            if original is not None:
                doc = await ctx.store.mark_duplicate(
                    doc.id, sha256=facts.sha256, content_type=facts.content_type, of=original.id
                )
                ctx.documents.update(doc)
                self.announce_duplicate(doc, original.path)
                return
        doc, steps = await ctx.store.mark_queued(
            doc.id,
            sha256=facts.sha256,
            content_type=facts.content_type,
            size=facts.size,
            mtime_ns=facts.mtime_ns,
            steps=config.initial_steps,
            ctime_ns=facts.ctime_ns,
            inode=facts.inode,
        )
        ctx.documents.remember(doc)
        self.announce_queued(doc, steps)

    async def announce_taken(self, taken: Queued) -> None:
        """Hand on a document `add_queued_batch` journaled: `queued`, or (a journal shared by
        several nodes: PostgreSQL) a `duplicate` of the document that claims its content."""
        doc = taken.document
        if doc.state != DocumentState.DUPLICATE or doc.duplicate_of is None:
            self.announce_queued(doc, taken.steps)
            return
        original = await self.ctx.store.document(doc.duplicate_of)
        self.announce_duplicate(doc, original.path)

    def announce_duplicate(self, doc: DocumentRow, original: str) -> None:
        """A document was journaled `duplicate` of the one at `original`: announce it and hand
        it on to its final action."""
        call_observers(
            self.ctx.pm, "document_discovered", pipeline=doc.pipeline, document=document_of(doc)
        )
        log.info(
            "document_duplicate",
            pipeline=doc.pipeline,
            doc=doc.name,
            doc_sha256=doc.sha256,
            duplicate_of=original,
        )
        self.handoff.to_the_end(doc)

    def announce_queued(self, doc: DocumentRow, steps: list[StepRow]) -> None:
        """A document was journaled `queued` (its row holds what hashing found): announce it
        and hand it on."""
        pm = self.ctx.pm
        if pm.hook.document_discovered.get_hookimpls():  # the model only for a listener
            call_observers(
                pm, "document_discovered", pipeline=doc.pipeline, document=document_of(doc)
            )
        log.info(
            "document_discovered",
            pipeline=doc.pipeline,
            doc=doc.name,
            doc_sha256=doc.sha256,
            size=doc.size,
            content_type=doc.content_type,
        )
        self.handoff.queued(doc, steps)

    async def reject(self, doc: DocumentRow, reason: str, *, forget: bool = False) -> None:
        """Journal why a document cannot be processed; `forget`: it is gone or still changing,
        so nothing is moved and a later scan takes the path afresh."""
        ctx = self.ctx
        doc = await ctx.store.reject(doc.id, reason, stage="intake")
        if forget:
            doc = await ctx.store.finish(doc.id, None)
            log.info("document_dropped", pipeline=doc.pipeline, doc=doc.name, reason=reason)
            ctx.documents.known[doc.pipeline].pop(doc.path, None)
            ctx.documents.forget(doc)
            return
        ctx.documents.update(doc)
        self.handoff.to_the_end(doc)
