"""Intake from sources that are not folders (an S3 bucket…): built, started, looked at, taken in.

Each pipeline whose `source` is not a folder gets its source object (`build_source`), kept on its
`PipelineRuntime` so the phases reach it. The source nominates documents (`nominate`, on the
event loop); a nominated document is streamed once through `inspect_document` (hashed, sized,
sniffed: the same `FileFacts` as a file's), and journaled like a file (path = its identity,
`source_version` = the version it was taken at), then its notification is acknowledged. A
document overwritten meanwhile (`VersionChangedError`) is dropped, and the source is looked at
again at once: the new version is taken as a document of its own.

Nominated documents are taken a batch at a time (up to `INTAKE_BATCH`, streamed a few at once)
and journaled in one transaction with the rest of their batch, as a folder's files are: a
listing of thousands of objects costs a commit per batch, not per object.

Until it is journaled a document is only a nomination (as for files): a crash leaves nothing to
resume, and the next look finds it again.

In multi-node mode (`looks_itself` False) no node looks on its own: the cluster's periodic job
(one node per period) asks for a `listing` and defers each new document's intake to any node.
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from functools import partial
from pathlib import Path

import structlog

from docutray_watch import intake
from docutray_watch.config import same_settings
from docutray_watch.delivery import describe
from docutray_watch.engine.context import Context, PipelineRuntime
from docutray_watch.engine.discovery import INTAKE_BATCH, Discovery
from docutray_watch.engine.source_actions import source_document
from docutray_watch.journal import DocumentRow, NewDocument
from docutray_watch.plugins import call_first
from docutray_watch.sources.base import (
    DocumentGoneError,
    Source,
    SourceConfig,
    SourceDocument,
    VersionChangedError,
)
from docutray_watch.sources.reading import inspect_document
from docutray_watch.sources.registry import SourceType, build_source

__all__ = ["SourceIntake"]

log = structlog.get_logger("docutray_watch.engine")

_WORKERS = 2
_STREAMS = 4  # documents of a batch streamed (hashed) at once by one worker


class SourceIntake:
    """The sources of an engine's pipelines and their intake (see the module docstring)."""

    def __init__(self, ctx: Context, discovery: Discovery) -> None:
        self.ctx = ctx
        self.discovery = discovery
        self.source_types: dict[str, SourceType] = {}
        self.accepting = False
        self._queue: asyncio.Queue[tuple[str, SourceDocument]] = asyncio.Queue()
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._looks = itertools.count()
        # False in multi-node mode: only `listing` (the periodic job) looks, nothing is queued.
        self._listing_locks: dict[str, asyncio.Lock] = {}
        self.looks_itself = True
        self._collected: dict[str, list[SourceDocument]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def handles(self, pipeline: str) -> bool:
        """True when the pipeline's documents come from a source that is not a folder."""
        runtime = self.ctx.pipelines.get(pipeline)
        return runtime is not None and runtime.config.folder_watch is None

    async def open(self, source_types: dict[str, SourceType]) -> list[asyncio.Task[None]]:
        """Build and start the source of every such pipeline; the intake workers to run."""
        self.source_types = source_types
        self.accepting = True
        await self.sync()
        return [
            asyncio.create_task(self._worker(), name=f"source-intake-{i}") for i in range(_WORKERS)
        ]

    async def sync(self) -> None:
        """After a start or a reload: each active pipeline with a source has one, started, and
        looked at every `rescan_interval`; a source whose settings changed is replaced."""
        for name, runtime in self.ctx.pipelines.items():
            if runtime.config.folder_watch is not None:
                continue
            config = runtime.config.source_config()
            current = runtime.source
            unchanged = current is not None and same_settings(current.config, config)
            if unchanged and name in self._loops:
                continue
            if current is not None and not unchanged:
                await self._stop_loop(name)
                await current.stop()  # its documents in flight finish with the new instance
                current = None
            if current is None:
                current = await self._start_source(name, runtime)
            runtime.source = current
            if not runtime.retired and name not in self._loops and self.looks_itself:
                self._loops[name] = asyncio.create_task(
                    self._look_every(name, config.rescan_interval), name=f"source-look:{name}"
                )
        for name in [n for n, r in self.ctx.pipelines.items() if r.retired]:
            await self._stop_loop(name)

    async def _start_source(self, name: str, runtime: PipelineRuntime) -> Source[SourceConfig]:
        config = runtime.config.source_config()
        source = build_source(name, config, self.source_types)
        for row in (await self.ctx.store.latest_by_path(name)).values():
            if row.source_version is not None and row.archived_to == row.path:
                source.remember_kept(row.path, row.source_version)  # kept in place
        await source.start(partial(self.nominate, name))
        log.info("source_started", pipeline=name, source=config.type)
        return source

    def stop_looking(self) -> None:
        """Stop taking documents (the engine stops): in-flight ones still finish."""
        self.accepting = False
        for task in self._loops.values():
            task.cancel()
        self._loops.clear()

    async def _stop_loop(self, name: str) -> None:
        task = self._loops.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        """Stop every source (after the in-flight documents were drained)."""
        self.stop_looking()
        for runtime in self.ctx.pipelines.values():
            if runtime.source is not None:
                try:
                    await runtime.source.stop()
                except Exception as exc:  # noqa: BLE001 - one source must not stop the others
                    log.warning("source_stop_failed", pipeline=runtime.config.name, error=str(exc))

    # -- looking -----------------------------------------------------------------------------

    async def discover(self, pipeline: str | None = None) -> int:
        """Look at every source (or one pipeline's) now; how many documents it nominated."""
        count = 0
        for name, runtime in list(self.ctx.pipelines.items()):
            if runtime.source is None or runtime.retired or pipeline not in (None, name):
                continue
            count += await self._look(name, runtime.source)
        return count

    async def listing(self, pipeline: str) -> list[SourceDocument]:
        """Multi-node mode: look at a pipeline's source now and return what it nominates
        (what passes the rules and plugins), without taking anything."""
        runtime = self.ctx.pipelines.get(pipeline)
        if runtime is None or runtime.source is None or runtime.retired:
            return []
        # One listing of a pipeline at a time: two overlapping ones (a periodic scan and an
        # extra one) would share `_collected`, and a version offered to one would be lost.
        async with self._listing_locks.setdefault(pipeline, asyncio.Lock()):
            found: list[SourceDocument] = []
            self._collected[pipeline] = found
            try:
                await self._look(pipeline, runtime.source)
            finally:
                del self._collected[pipeline]
            return found

    async def _look(self, name: str, source: Source[SourceConfig]) -> int:
        try:
            return await source.discover()
        except Exception as exc:  # noqa: BLE001 - an outage: the next look tries again
            log.error("source_look_failed", pipeline=name, error=describe(exc))
            return 0

    async def _look_every(self, name: str, interval: float) -> None:
        while True:
            runtime = self.ctx.pipelines.get(name)
            if runtime is not None and runtime.source is not None and self.accepting:
                await self._look(name, runtime.source)
            await asyncio.sleep(interval)

    def look_again(self, pipeline: str) -> bool:
        """Look at a pipeline's source again soon (a document changed: its new version is taken
        as a new document). The engine is not idle until that look is done."""
        runtime = self.ctx.pipelines.get(pipeline)
        if runtime is None or runtime.source is None or not self.accepting:
            return False
        if not self.looks_itself:
            return False  # a cluster: the next periodic listing finds the new version
        key = (pipeline, f"\0look-again-{next(self._looks)}")  # never a document's identity
        self.ctx.documents.nominate(key)

        async def look(source: Source[SourceConfig] = runtime.source) -> None:
            try:
                await self._look(pipeline, source)
            finally:
                self.ctx.documents.release(key)

        self.ctx.spawn(look(), f"source-look-again:{pipeline}", None)
        return True

    # -- nominating --------------------------------------------------------------------------

    def nominate(self, pipeline: str, doc: SourceDocument) -> bool:
        """A source offers a document (on the event loop); True when it is taken up now."""
        runtime = self.ctx.pipelines.get(pipeline)
        if not self.accepting or runtime is None or runtime.retired:
            return False
        documents = self.ctx.documents
        key = (pipeline, doc.identity)
        busy = key in documents.nominated or doc.identity in documents.known.get(pipeline, {})
        if busy and self.looks_itself:
            # In progress: its new version is offered again once it ends. (A cluster's listing
            # records every version; its intake job waits for an older one in progress.)
            return False
        rule = intake.rule_for_name(runtime.config, doc.relative_path)
        if rule is None:
            reason = call_first(
                self.ctx.pm,
                "ignore_document",
                pipeline=pipeline,
                path=Path(doc.identity),
                location=doc.identity,
            )
            rule = f"plugin: {reason}" if reason else None
        if rule is not None:
            stamp = (doc.size, zlib.crc32(doc.version.encode()))
            if documents.note_ignored(key, stamp):
                self.ctx.summary.ignored.append((pipeline, doc.identity, rule))
                log.info(
                    "file_ignored", pipeline=pipeline, doc=doc.name, path=doc.identity, rule=rule
                )
            return False
        if not self.looks_itself:
            found = self._collected.get(pipeline)
            if found is None:
                return False  # a cluster takes what its periodic listing finds, only
            found.append(doc)
            return True
        documents.nominate(key)
        self._queue.put_nowait((pipeline, doc))
        return True

    def _let_go(self, pipeline: str, doc: SourceDocument) -> None:
        """Not taken now: released, and offered again at the source's next look."""
        self.ctx.documents.release((pipeline, doc.identity))
        runtime = self.ctx.pipelines.get(pipeline)
        if runtime is not None and runtime.source is not None:
            runtime.source.forget(doc.identity)

    # -- taking in ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < INTAKE_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._take(batch)
            except Exception as exc:  # noqa: BLE001 - one batch never stops intake
                for pipeline, doc in batch:
                    self._intake_failed(pipeline, doc, exc)  # a no-op once journaled

    def _intake_failed(self, pipeline: str, doc: SourceDocument, exc: Exception) -> None:
        """Logged with its trace; offered again at the source's next look."""
        log.error(
            "intake_failed", pipeline=pipeline, path=doc.identity, error=describe(exc), exc_info=exc
        )
        self._let_go(pipeline, doc)

    async def _inspect(
        self, pipeline: str, doc: SourceDocument, streams: asyncio.Semaphore
    ) -> intake.FileFacts | None:
        """Stream it once (hash, size, type); None when it is not taken now."""
        runtime = self.ctx.pipelines.get(pipeline)
        if runtime is None or runtime.source is None or not self.accepting:
            self._let_go(pipeline, doc)
            return None
        try:
            async with streams:
                return await inspect_document(runtime.source, doc)
        except (VersionChangedError, DocumentGoneError) as exc:
            log.info("document_dropped", pipeline=pipeline, doc=doc.name, reason=str(exc))
            self._let_go(pipeline, doc)
            if isinstance(exc, VersionChangedError):
                self.look_again(pipeline)
            return None
        except Exception as exc:  # noqa: BLE001 - one document never stops its batch
            self._intake_failed(pipeline, doc, exc)
            return None

    async def _take(self, batch: list[tuple[str, SourceDocument]]) -> None:
        """Stream each (a few at once), journal the batch in one transaction, acknowledge
        each notification. A rejected document is journaled on its own (as a file is)."""
        ctx = self.ctx
        streams = asyncio.Semaphore(_STREAMS)
        read = await asyncio.gather(*(self._inspect(p, d, streams) for p, d in batch))
        taken = [(p, d, f) for (p, d), f in zip(batch, read, strict=True) if f is not None]
        plain: list[NewDocument] = []
        for pipeline, doc, facts in taken:
            if intake.rejection_for(facts) is None:
                assert facts.content_type is not None
                config = ctx.pipelines[pipeline].config
                plain.append(
                    NewDocument(
                        pipeline=pipeline,
                        path=doc.identity,
                        relative_path=doc.relative_path,
                        sha256=facts.sha256,
                        content_type=facts.content_type,
                        size=facts.size,
                        mtime_ns=facts.mtime_ns,
                        ctime_ns=None,
                        inode=None,
                        steps=config.initial_steps,
                        skip_if_done=config.duplicates == "skip",
                        source_version=doc.version,
                    )
                )
        queued = iter(await ctx.store.add_queued_batch(plain) if plain else [])
        for pipeline, doc, facts in taken:
            if intake.rejection_for(facts) is None:
                done = next(queued)
                if done is not None:
                    ctx.documents.remember(done.document)  # the document holds the work now
                    ctx.documents.release((pipeline, doc.identity))
                    await self._ack(pipeline, doc)
                    await self.discovery.announce_taken(done)
                    continue
            row = await ctx.store.add_document(
                pipeline, doc.identity, doc.relative_path, facts.size, 0, source_version=doc.version
            )
            ctx.documents.remember(row)
            ctx.documents.release((pipeline, doc.identity))
            await self._ack(pipeline, doc)
            await self.discovery.classify(row, facts)

    async def _ack(self, pipeline: str, doc: SourceDocument) -> None:
        if doc.ack is None:
            return
        try:
            await doc.ack()
        except Exception as exc:  # noqa: BLE001 - a notification seen again is only a hint
            log.warning("source_ack_failed", pipeline=pipeline, doc=doc.name, error=describe(exc))

    async def inspect(self, row: DocumentRow) -> None:
        """Hash a journaled, not yet classified document again (resumed after a crash)."""
        runtime = self.ctx.pipelines[row.pipeline]
        assert runtime.source is not None
        try:
            facts = await inspect_document(runtime.source, source_document(row))
        except (VersionChangedError, DocumentGoneError) as exc:
            await self.discovery.reject(row, str(exc), forget=True)
            self.look_again(row.pipeline)
            return
        await self.discovery.classify(row, facts)
