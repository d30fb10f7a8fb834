"""Deliveries to sinks and the ends of a document: delivered, failed, archived, superseded.

A delivery is marked done only after the sink returned; the archive destination is journaled
before the file moves. Semantics are the SQLite journal's
(`docutray_watch.journal.sqlite.steps` for deliveries, `journal` for the ends).
"""

from __future__ import annotations

import sqlalchemy as sa

from docutray_watch.journal.postgres.tables import deliveries
from docutray_watch.journal.postgres.tx import Tx
from docutray_watch.journal.rows import Completion, DocumentRow, JSONObject
from docutray_watch.journal.states import (
    DeliveryState,
    DocumentState,
    InvalidTransition,
    check_delivery,
)

__all__ = [
    "archive_intent",
    "completion",
    "deliver_and_finish",
    "delivery_attempt_failed",
    "delivery_done",
    "delivery_gave_up",
    "fail_changed",
    "finish",
    "mark_delivered",
    "mark_failed",
    "mark_unrouted",
    "supersede",
]

_D = DocumentState
_R = DeliveryState


async def completion(tx: Tx, doc_id: int) -> Completion:
    """A document with its steps and deliveries (one transaction: one consistent read)."""
    return Completion(
        await tx.document(doc_id), await tx.steps_of(doc_id), await tx.deliveries_of(doc_id)
    )


async def _move_delivery(tx: Tx, delivery_id: int, new: _R, **columns: object) -> None:
    current = await tx.lock_delivery(delivery_id)
    columns["state"] = check_delivery(delivery_id, current, new).value
    await tx.conn.execute(
        sa.update(deliveries).where(deliveries.c.id == delivery_id).values(**columns)
    )


async def delivery_done(tx: Tx, delivery_id: int, receipt: str | None) -> None:
    """The sink stored the record."""
    await _move_delivery(
        tx,
        delivery_id,
        _R.DELIVERED,
        receipt=receipt,
        delivered_at=tx.now,
        attempts=deliveries.c.attempts + 1,
        error=None,
    )


async def delivery_attempt_failed(tx: Tx, delivery_id: int, error: str, *, final: bool) -> None:
    """A delivery attempt failed; `final` when the engine gives up on it."""
    new = _R.FAILED if final else _R.PENDING
    await _move_delivery(tx, delivery_id, new, attempts=deliveries.c.attempts + 1, error=error)


async def delivery_gave_up(tx: Tx, delivery_id: int, error: str) -> None:
    """The engine gave up on a delivery; its failed attempts are already counted."""
    await _move_delivery(tx, delivery_id, _R.FAILED, error=error)


async def mark_delivered(tx: Tx, doc_id: int) -> DocumentRow:
    """Every result reached every sink."""
    return await tx.set_state(doc_id, _D.DELIVERED, outcome="success")


async def mark_failed(
    tx: Tx, doc_id: int, reason: str, *, stage: str, detail: JSONObject | None
) -> DocumentRow:
    """The document failed (an ERROR result, a timeout, a rejected submission, a sink)."""
    return await tx.set_state(
        doc_id,
        _D.FAILED,
        outcome="failed",
        error=reason,
        error_stage=stage,
        error_detail=dict(detail) if detail else None,
    )


async def mark_unrouted(
    tx: Tx, doc_id: int, reason: str, *, detail: JSONObject | None
) -> DocumentRow:
    """Identified as a type no route takes, with `otherwise: keep`: the document ends
    `unrouted` (left for a person; `retry` releases it once a route exists)."""
    return await tx.set_state(
        doc_id,
        _D.UNROUTED,
        outcome="unrouted",
        error=reason,
        error_stage="route",
        error_detail=dict(detail) if detail else None,
    )


async def archive_intent(tx: Tx, doc_id: int, destination: str | None) -> None:
    """Journal where the file is about to go, before moving it (an unknown document: nothing)."""
    try:
        await tx.lock_document(doc_id)
    except KeyError:
        return
    await tx.update_document(doc_id, archive_to=destination, updated_at=tx.now)


async def deliver_and_finish(tx: Tx, doc_id: int, archived_to: str | None) -> DocumentRow:
    """`mark_delivered` and `finish` in one transaction (a file kept where it was found)."""
    await tx.set_state(doc_id, _D.DELIVERED, outcome="success")
    return await tx.set_state(
        doc_id, _D.ARCHIVED, archived_to=archived_to, archive_to=None, finished_at=tx.now
    )


async def finish(tx: Tx, doc_id: int, archived_to: str | None) -> DocumentRow:
    """The final file action is done; a delivered or duplicate document becomes archived."""
    state = await tx.lock_document(doc_id)
    if state not in (_D.DELIVERED, _D.DUPLICATE, _D.FAILED, _D.REJECTED, _D.ARCHIVED, _D.UNROUTED):
        raise InvalidTransition(f"document {doc_id}: cannot finish in state {state}")
    new_state = _D.ARCHIVED if state in (_D.DELIVERED, _D.DUPLICATE) else state
    return await tx.set_state(
        doc_id, new_state, archived_to=archived_to, archive_to=None, finished_at=tx.now
    )


async def _mark_results_stale(tx: Tx, doc_id: int) -> int:
    superseded = await tx.move_deliveries(doc_id, (_R.DELIVERED,), _R.SUPERSEDED)
    await tx.move_deliveries(doc_id, (_R.PENDING, _R.FAILED), _R.DROPPED)
    return superseded


async def supersede(tx: Tx, doc_id: int, reason: str) -> tuple[DocumentRow, int]:
    """The file changed while this version was processed: end as `superseded` (nothing moved);
    delivered results become `superseded`, undelivered ones `dropped`. (document, superseded)"""
    await tx.lock_document(doc_id)
    superseded = await _mark_results_stale(tx, doc_id)
    doc = await tx.set_state(
        doc_id,
        _D.SUPERSEDED,
        outcome="superseded",
        error=reason,
        error_stage="changed",
        archive_to=None,
        archived_to=None,
        finished_at=tx.now,
    )
    return doc, superseded


async def fail_changed(tx: Tx, doc_id: int, reason: str) -> DocumentRow:
    """`on_change: fail`: the file changed while it was processed; the document fails."""
    await tx.lock_document(doc_id)
    await _mark_results_stale(tx, doc_id)
    return await tx.set_state(
        doc_id,
        _D.FAILED,
        outcome="failed",
        error=reason,
        error_stage="changed",
        error_detail=None,
    )
