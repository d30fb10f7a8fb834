"""Discovery's handoff in a cluster: a journaled document's first job is deferred, with its file's
source identity, in one transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from docutray_watch.cluster.services import Jobs
from docutray_watch.journal import DocumentRow, StepRow
from docutray_watch.journal.postgres import claims

__all__ = ["ClusterHandoff", "DeferFailed"]

log = structlog.get_logger("docutray_watch.cluster")


class DeferFailed(RuntimeError):
    """A journaled document's next job could not be deferred (the database refused)."""


class ClusterHandoff:
    """Discovery's handoff in a cluster: a journaled document's next job is deferred (with its
    file's source identity, in one transaction) instead of run here."""

    def __init__(self, jobs: Callable[[], Jobs]) -> None:
        self._jobs = jobs
        self._pending: set[asyncio.Task[None]] = set()
        self._failed: set[int] = set()  # documents whose deferral failed (not yet reported)

    def queued(self, doc: DocumentRow, steps: list[StepRow] | None) -> None:
        self._track(self._first_jobs(doc, steps))

    def to_the_end(self, doc: DocumentRow) -> None:
        self._track(self._first_jobs(doc, None))

    async def flush(self) -> None:
        """Wait until every deferral asked for so far is committed (an intake job's end)."""
        while self._pending:
            await asyncio.gather(*list(self._pending))

    def raise_if_failed(self, doc_id: int) -> None:
        """Raise `DeferFailed` if deferring `doc_id`'s next job failed (after `flush`): an intake
        job then fails and is run again, and its run again defers the job."""
        if doc_id in self._failed:
            self._failed.discard(doc_id)
            raise DeferFailed(f"deferring the next job of document {doc_id} failed")

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _first_jobs(self, doc: DocumentRow, steps: list[StepRow] | None) -> None:
        jobs = self._jobs()
        store = jobs.svc.store
        holder = jobs.holder_of(doc.pipeline)
        try:
            async with store.transaction() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                await claims.record_source(
                    conn,
                    node=holder,
                    path=doc.path,
                    size=doc.size or 0,
                    mtime_ns=doc.mtime_ns or 0,
                    inode=doc.inode,
                    pipeline=doc.pipeline,
                    document_id=doc.id,
                    now=time.time(),
                )
                if steps is None:
                    await jobs.defer_finalize(doc, holder, connection=raw)
                    return
                for step in steps:
                    await jobs.defer_submit(doc, step, holder, connection=raw)
        except Exception as exc:  # noqa: BLE001 - the document stays queued in the journal
            # An intake job raises it (`raise_if_failed`) and is run again; a node's own folders'
            # documents are deferred again when the node starts.
            self._failed.add(doc.id)
            log.error("cluster_defer_failed", doc=doc.name, error=f"{type(exc).__name__}: {exc}")
