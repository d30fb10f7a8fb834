"""The cluster's intake: what the shared scan found becomes a journaled document on any node.

- `defer_source_intakes`: the documents a source's listing nominated (an S3 bucket: shared by
  nature) get their source identity recorded — path, size, when written, a number of their
  version — and, for those recorded now, an intake job on the shared queue, in one transaction:
  the same object version listed again (by any node, in any period) does nothing.
- `take` (the `dtw.intake` job): a file of a shared folder is read from disk; a source's
  document (`version` given) is streamed from its source, conditional on that version, then
  journaled and classified; the handoff defers what comes next. A source's document that
  changed or went meanwhile is dropped (the next listing finds the new version); one whose
  older version is still in progress waits for it to end.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from pathlib import Path
from typing import Any

import structlog

from docutray_watch import intake
from docutray_watch.cluster import claiming
from docutray_watch.cluster.handoff import ClusterHandoff
from docutray_watch.cluster.services import PRIORITY_DRAIN, SHARED_QUEUE, Jobs
from docutray_watch.engine.reading import Unreadable, read
from docutray_watch.journal import DocumentRow, DocumentState
from docutray_watch.journal.postgres import claims
from docutray_watch.sources.base import DocumentGoneError, SourceDocument, VersionChangedError
from docutray_watch.sources.reading import inspect_document

__all__ = ["IN_PROGRESS_RETRY_S", "defer_source_intakes", "identity_key", "take"]

log = structlog.get_logger("docutray_watch.cluster")

IN_PROGRESS_RETRY_S = 5.0  # a new version waits this long for the older one to end


def identity_key(doc: SourceDocument) -> claims.SourceKey:
    """The source identity of one version of a source's document: (identity, size, when it
    was written, a 63-bit number of its version token)."""
    digest = hashlib.blake2b(doc.version.encode(), digest_size=8).digest()
    return (doc.identity, doc.size, doc.modified_ns or 0, int.from_bytes(digest, signed=True))


def _intake_key(pipeline: str, doc: SourceDocument) -> str:
    return f"intake:{pipeline}:{doc.identity}:{doc.version}"


async def _defer_intake(
    jobs: Jobs,
    pipeline: str,
    doc: SourceDocument,
    *,
    connection: Any = None,
    schedule_in: float = 0.0,
) -> None:
    """The intake job of one version of a source's document, on the shared queue."""
    await jobs.defer_job(
        jobs.intake,
        queue=SHARED_QUEUE,
        priority=PRIORITY_DRAIN,
        key=_intake_key(pipeline, doc),
        connection=connection,
        schedule_in=schedule_in,
        pipeline=pipeline,
        path=doc.identity,
        relative_path=doc.relative_path,
        version=doc.version,
        size=doc.size,
    )


async def defer_source_intakes(jobs: Jobs, pipeline: str, found: list[SourceDocument]) -> int:
    """Record the identities of what a listing found and defer the intake of each one new;
    how many were new."""
    svc = jobs.svc
    by_key = {identity_key(doc): doc for doc in found}
    async with svc.store.transaction() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        fresh = await claims.record_sources(conn, list(by_key), pipeline=pipeline, now=time.time())
        for key, doc in by_key.items():
            if key not in fresh:
                continue  # taken already (by this or another node)
            await _defer_intake(jobs, pipeline, doc, connection=raw)
    return len(fresh)


async def take(
    jobs: Jobs,
    pipeline: str,
    path: str,
    relative_path: str,
    *,
    version: str | None = None,
    size: int | None = None,
) -> None:
    """Read (or stream) a document the shared scan found and journal it (queued, rejected
    or duplicate); the handoff defers what comes next."""
    svc = jobs.svc
    if pipeline not in svc.ctx.pipelines:
        log.warning("intake_pipeline_missing", pipeline=pipeline, path=path)
        return
    known = (await svc.store.unfinished_by_path(pipeline)).get(path)
    if version is not None:
        await _take_source_document(jobs, pipeline, path, relative_path, version, size, known)
        return
    if known is None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return  # gone before it was taken: nothing to journal
        # One document per path even when two runs of this job overlap (a live node's job
        # judged stalled and run elsewhere): the path's advisory lock serialises them.
        known = await svc.store.add_document_once(
            pipeline,
            path,
            relative_path,
            st.st_size,
            st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
            inode=st.st_ino,
        )
    if known.state != DocumentState.DISCOVERED:
        # Journaled by an earlier (or a concurrent) run of this job, which may have died
        # before deferring what comes next: defer it (again; a waiting one is kept).
        await jobs.hand_on(known)
        return
    svc.ctx.documents.remember(known)
    await _classify(jobs, known, await read(Path(path)))


async def _take_source_document(
    jobs: Jobs,
    pipeline: str,
    identity: str,
    relative_path: str,
    version: str,
    size: int | None,
    known: DocumentRow | None,
) -> None:
    svc = jobs.svc
    runtime = svc.ctx.pipelines[pipeline]
    if runtime.source is None:  # the pipeline takes no documents from a source (any more)
        log.warning("intake_source_missing", pipeline=pipeline, path=identity)
        return
    doc = SourceDocument(
        identity=identity,
        name=posixpath.basename(identity),
        relative_path=relative_path,
        size=size or 0,
        version=version,
    )
    if known is not None and known.source_version != version:
        if known.state != DocumentState.DISCOVERED:
            # An older version is in progress: this one is taken once it ends.
            await _defer_intake(jobs, pipeline, doc, schedule_in=IN_PROGRESS_RETRY_S)
            return
        # An older version's intake was cut short: it is not the object there now.
        await svc.discovery.reject(known, f"a newer version ({version}) was listed", forget=True)
        known = None
    elif known is not None and known.state != DocumentState.DISCOVERED:
        return  # journaled by an earlier run of this job
    if known is None:
        known = await svc.store.add_document(
            pipeline, identity, relative_path, doc.size, 0, source_version=version
        )
    svc.ctx.documents.remember(known)
    try:
        facts = await inspect_document(runtime.source, doc)
    except (VersionChangedError, DocumentGoneError) as exc:
        # Not this version any more: the next listing finds what is there now.
        await svc.discovery.reject(known, str(exc), forget=True)
        return
    await _classify(jobs, known, facts)


async def _classify(jobs: Jobs, known: DocumentRow, facts: intake.FileFacts | Unreadable) -> None:
    svc = jobs.svc
    handoff = svc.discovery.handoff
    assert isinstance(handoff, ClusterHandoff)
    try:
        # Content another document claims: a duplicate of it, or its next generation.
        await claiming.classify(svc, known, facts)
        await handoff.flush()
        handoff.raise_if_failed(known.id)  # no next job deferred: fail, so the job runs again
    finally:
        _let_go(jobs, known)


def _let_go(jobs: Jobs, doc: DocumentRow) -> None:
    """The intake job ends: its document's next job is deferred (or this job failed and runs
    again), so the jobs hold it now, not this node's memory, which must not grow with every
    document over months. A local folder's path stays known until its finalize, which runs on
    this node, lets go of it: a rescan meanwhile must not take the file again."""
    documents = jobs.svc.ctx.documents
    documents.forget(doc)
    if jobs.holder_of(doc.pipeline) is None:
        documents.known.get(doc.pipeline, {}).pop(doc.path, None)
