"""Documents found and taken in: `discovered`, `queued`, rejected, duplicate (a backlog at once:
`batch.py`).

Each function is the body of one store call, run inside its transaction (`Tx`); the semantics are
the SQLite journal's (`docutray_watch.journal.sqlite.journal` and `backlog`), statement for
statement where the SQL allows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from docutray_watch.journal.postgres import rows
from docutray_watch.journal.postgres.tables import documents, steps
from docutray_watch.journal.postgres.tx import Tx
from docutray_watch.journal.rows import DocumentRow, JSONObject, StepRow
from docutray_watch.journal.states import DocumentState

__all__ = [
    "add_document",
    "add_pending_steps",
    "add_queued",
    "find_done_by_sha",
    "mark_duplicate",
    "mark_queued",
    "mark_rediscovered",
    "refresh_identity",
    "reject",
    "set_identification",
]

_D = DocumentState


def _done_twin(pipeline: str, sha256: str) -> sa.ColumnElement[bool]:
    """A document of this content whose results were delivered (a duplicate is no original)."""
    return sa.and_(
        documents.c.pipeline == pipeline,
        documents.c.sha256 == sha256,
        documents.c.state.in_((_D.DELIVERED.value, _D.ARCHIVED.value)),
        documents.c.outcome.is_distinct_from("duplicate"),
    )


async def find_done_by_sha(tx: Tx, pipeline: str, sha256: str, exclude: int) -> DocumentRow | None:
    """The oldest delivered document of this content, other than `exclude`."""
    found = await tx.conn.execute(
        sa.select(documents)
        .where(_done_twin(pipeline, sha256), documents.c.id != exclude)
        .order_by(documents.c.id)
        .limit(1)
    )
    row = found.mappings().one_or_none()
    return rows.document(row) if row is not None else None


async def add_pending_steps(tx: Tx, doc_id: int, step_ids: Sequence[str]) -> None:
    """A pending row for each step ID the document has no row for."""
    wanted = list(dict.fromkeys(step_ids))
    if not wanted:
        return
    await tx.conn.execute(
        postgresql.insert(steps)
        .values([{"document_id": doc_id, "step_id": s, "state": "pending"} for s in wanted])
        .on_conflict_do_nothing(index_elements=[steps.c.document_id, steps.c.step_id])
    )


async def add_document(
    tx: Tx,
    pipeline: str,
    path: str,
    relative_path: str,
    size: int,
    mtime_ns: int,
    *,
    ctime_ns: int | None,
    inode: int | None,
    source_version: str | None = None,
) -> DocumentRow:
    """Record a newly found file as `discovered`."""
    found = await tx.conn.execute(
        sa.insert(documents)
        .values(
            pipeline=pipeline,
            path=path,
            relative_path=relative_path,
            size=size,
            mtime_ns=mtime_ns,
            ctime_ns=ctime_ns,
            inode=inode,
            source_version=source_version,
            state=_D.DISCOVERED.value,
            node=tx.node,
            created_at=tx.now,
            updated_at=tx.now,
        )
        .returning(documents)
    )
    return rows.document(found.mappings().one())


async def mark_queued(
    tx: Tx,
    doc_id: int,
    *,
    sha256: str,
    content_type: str,
    size: int,
    mtime_ns: int,
    steps: Sequence[str],
    ctime_ns: int | None,
    inode: int | None,
) -> tuple[DocumentRow, list[StepRow]]:
    """A hashed, checked document waits for submission; one pending row per step."""
    row = await tx.set_state(
        doc_id,
        _D.QUEUED,
        sha256=sha256,
        content_type=content_type,
        size=size,
        mtime_ns=mtime_ns,
        ctime_ns=ctime_ns,
        inode=inode,
        attempts=1,
    )
    await add_pending_steps(tx, doc_id, steps)
    return row, await tx.steps_of(doc_id)


async def add_queued(
    tx: Tx,
    pipeline: str,
    path: str,
    relative_path: str,
    *,
    sha256: str,
    content_type: str,
    size: int,
    mtime_ns: int,
    steps: Sequence[str],
    ctime_ns: int | None,
    inode: int | None,
) -> tuple[DocumentRow, list[StepRow]]:
    """`add_document` and `mark_queued` in one transaction."""
    doc = await add_document(
        tx, pipeline, path, relative_path, size, mtime_ns, ctime_ns=None, inode=None
    )
    return await mark_queued(
        tx,
        doc.id,
        sha256=sha256,
        content_type=content_type,
        size=size,
        mtime_ns=mtime_ns,
        steps=steps,
        ctime_ns=ctime_ns,
        inode=inode,
    )


async def mark_rediscovered(tx: Tx, doc_id: int) -> DocumentRow:
    """The file changed before submission: hash it again."""
    await tx.lock_document(doc_id)
    await tx.conn.execute(
        sa.delete(steps).where(steps.c.document_id == doc_id, steps.c.state == "pending")
    )
    return await tx.set_state(doc_id, _D.DISCOVERED)


async def reject(
    tx: Tx,
    doc_id: int,
    reason: str,
    *,
    stage: str,
    detail: JSONObject | None,
    sha256: str | None,
    content_type: str | None,
) -> DocumentRow:
    """The document will not be submitted (unsupported, empty, too large, vanished…)."""
    columns: dict[str, object] = {}
    if sha256 is not None:
        columns.update(sha256=sha256, content_type=content_type)
    return await tx.set_state(
        doc_id,
        _D.REJECTED,
        outcome="rejected",
        error=reason,
        error_stage=stage,
        error_detail=dict(detail) if detail else None,
        **columns,
    )


async def mark_duplicate(
    tx: Tx, doc_id: int, *, sha256: str, content_type: str, of: int
) -> DocumentRow:
    """Same content as a document already processed: no submission."""
    return await tx.set_state(
        doc_id,
        _D.DUPLICATE,
        sha256=sha256,
        content_type=content_type,
        duplicate_of=of,
        outcome="duplicate",
    )


async def refresh_identity(
    tx: Tx, doc_id: int, *, mtime_ns: int, ctime_ns: int, inode: int
) -> None:
    """The file's metadata changed but not its bytes: remember the new facts (an unknown
    document is left alone, as in SQLite)."""
    try:
        await tx.lock_document(doc_id)
    except KeyError:
        return
    await tx.update_document(doc_id, mtime_ns=mtime_ns, ctime_ns=ctime_ns, inode=inode)


async def set_identification(
    tx: Tx, doc_id: int, identification_json: str, code: str
) -> DocumentRow:
    """Remember the type the service identified (`code`) and its whole answer (JSON text of a
    `docutray_watch.records.Identification`), once its `@identify` step succeeded."""
    answer = json.loads(identification_json)  # refuse what could not be read back
    await tx.lock_document(doc_id)
    return await tx.update_document(
        doc_id, identified_type=code, identification=answer, updated_at=tx.now
    )
