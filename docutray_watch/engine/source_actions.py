"""The phases' side of a pipeline whose `source` is not a folder (an S3 bucket…).

A journaled document of such a pipeline is a `SourceDocument` again (`source_document`): its path
is the source's identity (`s3://bucket/key`), its `source_version` the version taken at intake.
Its submission streams it from the source (or passes a presigned URL, `submit_as: url`), the
check before delivery and the final action ask the source for its version now, and the final
action is the source's: every read and action is conditional on that version, so an object
overwritten meanwhile raises `VersionChangedError` and is taken again, never archived or deleted
under results describing other bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from docutray_watch.config import ActionConfig
from docutray_watch.engine.archiving import failure_details
from docutray_watch.engine.context import Context
from docutray_watch.journal import DocumentRow, DocumentState
from docutray_watch.sources.base import DocumentGoneError, Source, SourceConfig, SourceDocument
from docutray_watch.sources.s3.client import redact_url
from docutray_watch.sources.upload import SourceUpload

__all__ = [
    "SubmissionInput",
    "source_document",
    "source_final_action",
    "source_of",
    "source_version_check",
    "submission_input",
]

_CHECKED = (
    DocumentState.COMPLETED,
    DocumentState.DELIVERED,
    DocumentState.DUPLICATE,
    DocumentState.FAILED,
    DocumentState.REJECTED,
)


def source_of(ctx: Context, doc: DocumentRow) -> Source[SourceConfig] | None:
    """The source a document came from, or None for a file of a watched folder."""
    runtime = ctx.pipelines.get(doc.pipeline)
    if runtime is None or runtime.config.folder_watch is not None:
        return None
    assert runtime.source is not None, f"pipeline {doc.pipeline}: its source is not started"
    return runtime.source


def source_document(doc: DocumentRow) -> SourceDocument:
    """The journaled document as its source knows it (the version taken at intake)."""
    assert doc.source_version is not None, f"{doc.path}: no source version journaled"
    return SourceDocument(
        identity=doc.path,
        name=doc.name,
        relative_path=doc.relative_path,
        size=doc.size or 0,
        version=doc.source_version,
    )


@dataclass(frozen=True)
class SubmissionInput:
    """The document input of `steps.run_async`: exactly one of `file` and `url`."""

    file: Path | SourceUpload | None = None
    url: str | None = None


async def submission_input(
    ctx: Context, doc: DocumentRow, log: FilteringBoundLogger
) -> SubmissionInput:
    """What `steps.run_async` sends: a file of a watched folder by its path; a source's
    document as a `SourceUpload` (streamed from the source for each attempt, conditional on
    the version) or, `submit_as: url`, a presigned GET URL (logged redacted only)."""
    source = source_of(ctx, doc)
    if source is None:
        return SubmissionInput(file=Path(doc.path))
    document = source_document(doc)
    presign = getattr(source, "presigned_url", None)
    if getattr(source.config, "submit_as", "upload") == "url" and presign is not None:
        url: str = await presign(document)
        log.debug("document_submitted_by_url", url=redact_url(url))
        return SubmissionInput(url=url)
    content_type = doc.content_type or "application/octet-stream"
    return SubmissionInput(file=SourceUpload(source, document, content_type=content_type))


async def source_version_check(
    ctx: Context, doc: DocumentRow
) -> tuple[DocumentRow, str | None] | None:
    """`finalize.version_check` for a source's document: how it differs from the version taken
    at intake (one HEAD), or None; None as a whole for a file of a watched folder. A document
    that is gone is not a new version: the final action reports it."""
    source = source_of(ctx, doc)
    if source is None:
        return None
    if doc.source_version is None or doc.state not in _CHECKED:
        return doc, None
    now = await source.current_version(source_document(doc))
    if now is None or now == doc.source_version:
        return doc, None
    return doc, f"the object changed: version {doc.source_version} when it was taken, {now} now"


async def source_final_action(
    ctx: Context,
    source: Source[SourceConfig],
    doc: DocumentRow,
    action: ActionConfig,
    failed: bool,
    log: FilteringBoundLogger,
) -> str | None:
    """Move, delete or keep the document at its source; where it went (None: deleted, kept or
    gone). A move journals its destination before moving (a restart moves it there again and
    the source completes it); a failed document's sidecar is written first. Raises
    `VersionChangedError` when the document changed (nothing was moved or deleted)."""
    document = source_document(doc)
    details = await failure_details(ctx, doc) if failed else None
    destination: str | None = None
    try:
        if action.action == "move":
            destination = doc.archive_to
            if destination is None:
                target = action.target
                assert target is not None, "a move has a destination (checked by the config)"
                destination = await source.plan_move(document, target)
                await ctx.store.archive_intent(doc.id, destination)
            if details is not None:
                details["moved_to"] = destination
                await source.write_sidecar(document, details, at=destination)
            destination = await source.move(document, destination)
        elif action.action == "delete":
            await source.delete(document)
        else:
            if details is not None:
                await source.write_sidecar(document, details)
            await source.keep(document)
    except DocumentGoneError:
        log.warning(
            "document_vanished",
            path=doc.path,
            note="the document was gone from its source before its final action",
        )
        return None
    if not failed:
        # A retried document succeeded: its old sidecar no longer tells the truth.
        await source.remove_sidecar(document)
    return destination
