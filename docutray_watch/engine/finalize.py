"""The finalize phase: the source file is moved, deleted or kept, and the document ends.

Before the action, the file is checked once more against the version that was hashed (a file
that changed is never archived under results describing other bytes): one lstat when nothing
changed, a new hash when its size, mtime, ctime or inode differ. A change ends the document
`superseded` and takes the file again as a new document (or, `on_change: fail`, fails it).
"""

from __future__ import annotations

import os
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from docutray_watch import intake
from docutray_watch.delivery import describe
from docutray_watch.engine.archiving import file_action
from docutray_watch.engine.context import Context, document_of
from docutray_watch.engine.reading import Unreadable, exists, read
from docutray_watch.engine.source_actions import (
    source_document,
    source_final_action,
    source_of,
    source_version_check,
)
from docutray_watch.journal import DocumentRow, DocumentState, kept_stamp
from docutray_watch.plugins import call_observers, has_observers
from docutray_watch.sources.base import VersionChangedError

__all__ = ["changed_during_processing", "finalize", "version_check"]

_FAILED = (DocumentState.FAILED, DocumentState.REJECTED)


async def finalize(
    ctx: Context, doc: DocumentRow, log: FilteringBoundLogger, *, checked: bool = False
) -> DocumentRow | None:
    """Apply on_success / on_failure to the source file and journal the end; the document as
    it ended (None when it did not: the action failed, or the file changed and is taken again).

    `checked`: the file is known to have changed already (`on_change: fail`), so it is not
    checked again before the final action.
    """
    runtime = ctx.pipelines.get(doc.pipeline)
    if runtime is None:
        return None
    if doc.state == DocumentState.UNROUTED:
        return await _leave_unrouted(ctx, doc, log)
    config = runtime.config
    found = doc  # what hooks are told of the document (built only when a plugin listens)
    delivered_now = doc.state == DocumentState.COMPLETED  # all delivered, not journaled yet
    outcome = doc.outcome or (
        "success"
        if delivered_now or doc.state in (DocumentState.DELIVERED, DocumentState.ARCHIVED)
        else str(doc.state)
    )
    failed = doc.state in _FAILED
    # Last look before the file is moved, deleted or kept under these results: a failed
    # document's before its failure is announced (unless it goes to failed/ anyway), a
    # delivered one's once `delivered` is journaled, right before the action.
    check = not checked and not (failed and config.on_change == "fail")
    if check and failed and await _retaken_if_changed(ctx, doc, log):
        return None
    if failed:
        call_observers(
            ctx.pm,
            "on_document_error",
            pipeline=doc.pipeline,
            document=document_of(found) if found.sha256 else None,
            path=Path(doc.path),
            location=doc.path,
            stage=doc.error_stage or "intake",
            error=doc.error or "",
        )
        log.warning(
            "document_failed",
            doc_sha256=doc.sha256,
            outcome=outcome,
            stage=doc.error_stage,
            reason=doc.error,
        )
    action = config.on_failure if failed else config.on_success
    if delivered_now and action.action != "keep":
        # A move or delete is journaled (intent, then done) after `delivered`.
        doc = await ctx.store.mark_delivered(doc.id)
        delivered_now = False
    if check and not failed and await _retaken_if_changed(ctx, doc, log):
        return None
    source = source_of(ctx, doc)
    destination: Path | str | None
    try:
        if source is not None:  # not a folder: the source moves, deletes or keeps it
            destination = await source_final_action(ctx, source, doc, action, failed, log)
        else:
            destination = await file_action(ctx, doc, action.action, action.to, failed)
    except VersionChangedError as exc:  # nothing was moved or deleted: take it again
        await changed_during_processing(ctx, doc, str(exc), log, when="at the final action")
        return None
    except Exception as exc:  # noqa: BLE001 - a file action must never stop the daemon
        # The document stays unfinished in the journal and is retried at the next start.
        log.error("archive_failed", path=doc.path, error=describe(exc))
        return None
    if doc.state != DocumentState.ARCHIVED or doc.finished_at is None:
        # A kept file "is archived" where it was found: the journal then knows its path is
        # taken (see Journal.latest_by_path).
        kept = action.action == "keep" and destination is None
        archived_to = doc.path if kept else (str(destination) if destination else None)
        # A kept file has nothing to undo: `delivered` and `archived` share one commit (a
        # crash before it delivers nothing twice: every delivery is journaled as done).
        if delivered_now:
            doc = await ctx.store.deliver_and_finish(doc.id, archived_to)
        else:
            doc = await ctx.store.finish(doc.id, archived_to)
    ctx.summary.outcomes[outcome] += 1
    ctx.metrics.documents.labels(doc.pipeline, outcome).inc()
    if failed:
        # Where the file is now (the failed folder), not the inbox it was found in.
        where = f"{doc.path} (deleted)" if action.action == "delete" else doc.archived_to
        ctx.summary.failures.append((doc.pipeline, where or doc.path, doc.error or ""))
    documents = ctx.documents
    documents.known[doc.pipeline].pop(doc.path, None)
    if action.action != "keep":
        documents.kept[doc.pipeline].pop(doc.path, None)
    else:
        documents.kept[doc.pipeline][doc.path] = kept_stamp(doc.size, doc.mtime_ns)
    log.info(
        "document_archived",
        outcome=outcome,
        action=action.action,
        destination=str(destination) if destination else None,
    )
    _announce_archived(ctx, found, outcome, destination)
    return doc


def _announce_archived(
    ctx: Context, doc: DocumentRow, outcome: str, destination: Path | str | None
) -> None:
    """`after_document_archived`, its arguments built only when a plugin listens."""
    if has_observers(ctx.pm, "after_document_archived"):
        call_observers(
            ctx.pm,
            "after_document_archived",
            pipeline=doc.pipeline,
            document=document_of(doc) if doc.sha256 else None,
            path=Path(doc.path),
            location=doc.path,
            outcome=outcome,
            destination=destination,
        )


async def _leave_unrouted(ctx: Context, doc: DocumentRow, log: FilteringBoundLogger) -> DocumentRow:
    """No route takes the identified document (`otherwise: keep`): the file stays where it was
    found, for a person, remembered as kept so no scan takes it again until `retry` releases
    it. Not a failure: no `on_document_error`."""
    source = source_of(ctx, doc)
    if source is not None:  # not a folder: the source must not offer this version again
        await source.keep(source_document(doc))
    if doc.finished_at is None:
        doc = await ctx.store.finish(doc.id, doc.path)
    outcome = str(DocumentState.UNROUTED)
    ctx.summary.outcomes[outcome] += 1
    ctx.metrics.documents.labels(doc.pipeline, outcome).inc()
    documents = ctx.documents
    documents.known[doc.pipeline].pop(doc.path, None)
    documents.kept[doc.pipeline][doc.path] = kept_stamp(doc.size, doc.mtime_ns)
    log.info("document_unrouted", reason=doc.error, identified_type=doc.identified_type)
    _announce_archived(ctx, doc, outcome, None)
    return doc


async def _retaken_if_changed(ctx: Context, doc: DocumentRow, log: FilteringBoundLogger) -> bool:
    """The check before the final action: True when the file changed (and was dealt with)."""
    doc, changed = await version_check(ctx, doc)
    if changed is None:
        return False
    await changed_during_processing(ctx, doc, changed, log, when="before the final action")
    return True


async def version_check(ctx: Context, doc: DocumentRow) -> tuple[DocumentRow, str | None]:
    """How the file differs from the version hashed at intake, or None (with the document,
    its identity refreshed when only metadata changed).

    One lstat when nothing changed; the file is hashed again only when its size, mtime, ctime
    or inode differ (ctime and inode are unknown for documents journaled by an older
    version: size and mtime decide alone then). A file that is gone is not a new version.
    """
    if doc.sha256 is None or doc.size is None or doc.mtime_ns is None:
        return doc, None
    if doc.state not in (
        DocumentState.COMPLETED,
        DocumentState.DELIVERED,
        DocumentState.DUPLICATE,
        *_FAILED,
    ):
        return doc, None
    checked = await source_version_check(ctx, doc)
    if checked is not None:  # not a file: its source says which version it holds now
        return checked
    try:
        st = os.lstat(doc.path)
    except OSError:
        return doc, None  # gone (or unreadable): the final action reports it
    size, mtime_ns, ctime_ns, inode = intake.identity(st)
    if (
        size == doc.size
        and mtime_ns == doc.mtime_ns
        and doc.ctime_ns in (None, ctime_ns)
        and doc.inode in (None, inode)
    ):
        return doc, None
    if intake.rule_for_kind(st.st_mode) is not None:
        return doc, "the file was replaced by something that is not a regular file"
    facts = await read(Path(doc.path))
    if isinstance(facts, Unreadable):
        if facts.forget and exists(doc.path):  # changed while read
            return doc, "the file is still being written"
        return doc, None
    if facts.sha256 != doc.sha256:
        return doc, (
            f"the file changed: {doc.size} bytes (sha256 {doc.sha256[:12]}…) when it was "
            f"taken, {facts.size} bytes (sha256 {facts.sha256[:12]}…) now"
        )
    # Same bytes (touched, chmod-ed, or the same content renamed over it).
    assert facts.ctime_ns is not None
    assert facts.inode is not None
    await ctx.store.refresh_identity(
        doc.id, mtime_ns=facts.mtime_ns, ctime_ns=facts.ctime_ns, inode=facts.inode
    )
    doc = await ctx.store.document(doc.id)
    ctx.documents.update(doc)
    return doc, None


async def changed_during_processing(
    ctx: Context, doc: DocumentRow, reason: str, log: FilteringBoundLogger, *, when: str
) -> None:
    """The file is no longer the version these results describe: deliver nothing more and
    take it again as a new document (or fail it, `on_change: fail`)."""
    config = ctx.pipelines[doc.pipeline].config
    # Only a version with results fails; a duplicate or an already failed one is simply
    # taken again (its new content is a document of its own).
    fail = config.on_change == "fail" and doc.state in (
        DocumentState.COMPLETED,
        DocumentState.DELIVERED,
    )
    deliveries = await ctx.store.deliveries_of(doc.id)
    delivered = sum(1 for d in deliveries if d.state == "delivered")
    log.warning(
        "document_changed_during_processing",
        path=doc.path,
        doc_sha256=doc.sha256,
        found=when,
        reason=reason,
        superseded_results=delivered,
        then="failed" if fail else "taken again",
    )
    if fail:
        doc = await ctx.store.fail_changed(
            doc.id, f"the file changed while it was processed ({when}): {reason}"
        )
        ctx.documents.update(doc)
        await finalize(ctx, doc, log, checked=True)
        return
    doc, _superseded = await ctx.store.supersede(doc.id, reason)
    ctx.documents.known[doc.pipeline].pop(doc.path, None)
    ctx.documents.kept[doc.pipeline].pop(doc.path, None)
    ctx.summary.outcomes["superseded"] += 1
    ctx.metrics.documents.labels(doc.pipeline, "superseded").inc()
    call_observers(
        ctx.pm,
        "after_document_archived",
        pipeline=doc.pipeline,
        document=document_of(doc),
        path=Path(doc.path),
        location=doc.path,
        outcome="superseded",
        destination=None,
    )
    # The new version: offered before this one lets go (the caller forgets it), so a caller
    # waiting for the engine to be idle waits for it too.
    ctx.renominate(doc.pipeline, Path(doc.path))
