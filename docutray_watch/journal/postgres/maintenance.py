"""What the operator's commands do to the journal: `retry` (requeue), `prune` (forget old
documents), and the reads `status` adds to the counts (recent failures, superseded results,
today's counts, the API pause). Semantics are the SQLite `Journal`'s methods of the same names.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from docutray_watch.journal.postgres import rows
from docutray_watch.journal.postgres.claims import next_generation
from docutray_watch.journal.postgres.reports import get_meta
from docutray_watch.journal.postgres.tables import deliveries, doc_counts, documents, meta, steps
from docutray_watch.journal.postgres.tx import Tx
from docutray_watch.journal.rows import DocumentRow, PruneCandidate
from docutray_watch.journal.sqlite.reports import API_PAUSE_KEY, REQUEUED_KEY
from docutray_watch.journal.states import DeliveryState, DocumentState, InvalidTransition

__all__ = [
    "api_pause",
    "forget_documents",
    "prune_candidates",
    "recent_failures",
    "requeue",
    "superseded_results",
    "today_counts",
]

_D = DocumentState


async def requeue(tx: Tx, doc_id: int, *, force: bool) -> DocumentRow:
    """Make a finished document run again (see `Journal.requeue`): a failed (or unrouted) one
    keeps its successful steps and delivered results, and its identification (it is routed
    again, not identified again); `force` re-runs an archived one from scratch, identification
    included, in the next generation of its content (the unique index lets the new run claim
    it)."""
    doc = await tx.document(doc_id)
    await tx.lock_document(doc_id)
    if doc.state == _D.ARCHIVED and not force:
        raise InvalidTransition(f"document {doc_id} succeeded; use --force to run it again")
    if doc.state not in (_D.ARCHIVED, _D.FAILED, _D.REJECTED, _D.UNROUTED):
        raise InvalidTransition(f"document {doc_id} is still in progress ({doc.state})")
    columns: dict[str, object] = {}
    if doc.state in (_D.REJECTED, _D.ARCHIVED) or doc.sha256 is None:
        await tx.conn.execute(sa.delete(steps).where(steps.c.document_id == doc_id))
        columns.update(identified_type=None, identification=None)
    else:
        await tx.conn.execute(
            sa.delete(steps).where(
                steps.c.document_id == doc_id, steps.c.state.in_(("error", "failed"))
            )
        )
        await tx.conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.document_id == doc_id, deliveries.c.state == "failed")
            .values(error=None)
        )
        await tx.move_deliveries(doc_id, (DeliveryState.FAILED,), DeliveryState.PENDING)
    new_state = _D.QUEUED
    if doc.state == _D.REJECTED or (doc.sha256 is None and doc.state != _D.ARCHIVED):
        new_state = _D.DISCOVERED
    if doc.state == _D.ARCHIVED and doc.sha256 is not None:
        columns["generation"] = await next_generation(tx.conn, doc.pipeline, doc.sha256)
    # In the same transaction: a daemon that sees the new count also sees the document.
    insert = postgresql.insert(meta).values(key=REQUEUED_KEY, value="1", updated_at=tx.now)
    await tx.conn.execute(
        insert.on_conflict_do_update(
            index_elements=[meta.c.key],
            set_={
                "value": sa.cast(sa.cast(meta.c.value, sa.BigInteger) + 1, sa.Text),
                "updated_at": insert.excluded.updated_at,
            },
        )
    )
    return await tx.set_state(
        doc_id,
        new_state,
        outcome=None,
        error=None,
        error_stage=None,
        error_detail=None,
        finished_at=None,
        archive_to=None,
        archived_to=None,
        attempts=doc.attempts + 1,
        flags=[],
        duplicate_of=None,
        **columns,
    )


async def prune_candidates(
    tx: Tx, finished_before: float, *, after_id: int, limit: int
) -> list[PruneCandidate]:
    """Documents that finished before `finished_before`, in id order from `after_id` on."""
    later = documents.alias("later")
    newest = (
        sa.select(sa.func.max(later.c.id))
        .where(later.c.pipeline == documents.c.pipeline, later.c.path == documents.c.path)
        .scalar_subquery()
    )
    found = await tx.conn.execute(
        sa.select(
            documents.c.id,
            documents.c.pipeline,
            documents.c.path,
            (documents.c.archived_to == documents.c.path).label("kept"),
            (documents.c.id == newest).label("latest"),
        )
        .where(
            documents.c.finished_at.is_not(None),
            documents.c.finished_at < finished_before,
            documents.c.id > after_id,
        )
        .order_by(documents.c.id)
        .limit(limit)
    )
    return [
        PruneCandidate(
            id=int(r.id),
            pipeline=str(r.pipeline),
            path=str(r.path),
            kept_latest=bool(r.kept and r.latest),
        )
        for r in found
    ]


async def forget_documents(tx: Tx, ids: Sequence[int], finished_before: float) -> int:
    """Delete these documents (their steps and deliveries go with them) if still finished before
    `finished_before` (one requeued meanwhile stays); how many went."""
    if not ids:
        return 0
    found = await tx.conn.execute(
        sa.delete(documents).where(
            documents.c.id.in_(list(ids)),
            documents.c.finished_at.is_not(None),
            documents.c.finished_at < finished_before,
        )
    )
    return int(found.rowcount)


async def recent_failures(tx: Tx, limit: int, pipeline: str | None) -> list[DocumentRow]:
    """The last failed or rejected documents, newest first."""
    query = sa.select(documents).where(documents.c.state.in_(("failed", "rejected")))
    if pipeline is not None:
        query = query.where(documents.c.pipeline == pipeline)
    found = await tx.conn.execute(
        query.order_by(documents.c.updated_at.desc(), documents.c.id.desc()).limit(limit)
    )
    return [rows.document(r) for r in found.mappings()]


async def superseded_results(tx: Tx) -> dict[str, int]:
    """Delivered results later found to describe an older version of their file, per pipeline."""
    found = await tx.conn.execute(
        sa.select(documents.c.pipeline, sa.func.count())
        .select_from(deliveries.join(documents, documents.c.id == deliveries.c.document_id))
        .where(deliveries.c.state == "superseded")
        .group_by(documents.c.pipeline)
    )
    return {str(pipeline): int(n) for pipeline, n in found}


async def today_counts(tx: Tx, day: str) -> dict[str, dict[str, int]]:
    """Documents per pipeline and outcome word whose final action was done on `day` (UTC)."""
    total = sa.func.sum(doc_counts.c.n)
    found = await tx.conn.execute(
        sa.select(doc_counts.c.pipeline, doc_counts.c.word, total)
        .where(doc_counts.c.day == day)
        .group_by(doc_counts.c.pipeline, doc_counts.c.word)
        .having(total > 0)
    )
    result: dict[str, dict[str, int]] = {}
    for pipeline, word, n in found:
        result.setdefault(str(pipeline), {})[str(word)] = int(n)
    return result


async def api_pause(tx: Tx) -> tuple[str, float] | None:
    """Why API work is paused (its reasons) and since when; None when it is not."""
    return await get_meta(tx, API_PAUSE_KEY)
