"""One store call's transaction, and the checked writes every part of the journal goes through.

`Tx` carries the connection, the call's clock reading and its fencing lease. Each write locks the
row of the document it concerns first (`FOR UPDATE`: steps and deliveries are reached through
their document, so locks are always taken document first), then checks the state move against
`docutray_watch.journal.states`. With a lease (a `PostgresStore.fenced` view), the lock also
checks `lease = :mine`, and document updates carry it in their `WHERE`: a node that lost the
document writes nothing and gets `LeaseLost`. Since the row stays locked until commit, a
`take_lease` by another node waits for this transaction and cannot slip in between check and write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from docutray_watch.journal.postgres import rows
from docutray_watch.journal.postgres.connection import LeaseLost
from docutray_watch.journal.postgres.tables import deliveries, documents, steps
from docutray_watch.journal.rows import DeliveryRow, DocumentRow, StepRow
from docutray_watch.journal.states import check_delivery, check_document, check_step

__all__ = ["Tx"]


@dataclass(frozen=True)
class Tx:
    """A transaction of one store call: connection, time of the call, fencing lease, and the
    node that new documents belong to (None: a shared source, or single-node use)."""

    conn: AsyncConnection
    now: float
    lease: int | None = None
    node: str | None = None

    # -- reading ------------------------------------------------------------------------------

    async def document(self, doc_id: int) -> DocumentRow:
        """One document (KeyError when unknown)."""
        found = await self.conn.execute(sa.select(documents).where(documents.c.id == doc_id))
        row = found.mappings().one_or_none()
        if row is None:
            raise KeyError(f"document {doc_id} is not in the journal")
        return rows.document(row)

    async def step(self, step_row: int) -> StepRow:
        """One step row (KeyError when unknown)."""
        found = await self.conn.execute(sa.select(steps).where(steps.c.id == step_row))
        row = found.mappings().one_or_none()
        if row is None:
            raise KeyError(f"step {step_row} is not in the journal")
        return rows.step(row)

    async def steps_of(self, doc_id: int) -> list[StepRow]:
        """The step rows of a document, in id order."""
        found = await self.conn.execute(
            sa.select(steps).where(steps.c.document_id == doc_id).order_by(steps.c.id)
        )
        return [rows.step(r) for r in found.mappings()]

    async def deliveries_of(self, doc_id: int) -> list[DeliveryRow]:
        """The delivery rows of a document, in id order."""
        found = await self.conn.execute(
            sa.select(deliveries)
            .where(deliveries.c.document_id == doc_id)
            .order_by(deliveries.c.id)
        )
        return [rows.delivery(r) for r in found.mappings()]

    # -- locking (and fencing) ----------------------------------------------------------------

    async def lock_document(self, doc_id: int) -> str:
        """Lock a document's row for this transaction; its state. Raises KeyError when unknown,
        `LeaseLost` when this write is fenced by a lease the document no longer has."""
        found = await self.conn.execute(
            sa.select(documents.c.state, documents.c.lease)
            .where(documents.c.id == doc_id)
            .with_for_update()
        )
        row = found.one_or_none()
        if row is None:
            raise KeyError(f"document {doc_id} is not in the journal")
        if self.lease is not None and row.lease != self.lease:
            raise LeaseLost(doc_id, self.lease)
        return str(row.state)

    async def lock_step(self, step_row: int) -> StepRow:
        """Lock the document of a step (see `lock_document`); the step row."""
        doc_id = await self.conn.scalar(
            sa.select(steps.c.document_id).where(steps.c.id == step_row)
        )
        if doc_id is None:
            raise KeyError(f"step {step_row} is not in the journal")
        await self.lock_document(int(doc_id))
        return await self.step(step_row)

    async def lock_delivery(self, delivery_id: int) -> str:
        """Lock the document of a delivery (see `lock_document`); the delivery's state."""
        found = await self.conn.execute(
            sa.select(deliveries.c.document_id).where(deliveries.c.id == delivery_id)
        )
        row = found.one_or_none()
        if row is None:
            raise KeyError(f"deliveries row {delivery_id} is not in the journal")
        await self.lock_document(int(row.document_id))
        state = await self.conn.scalar(
            sa.select(deliveries.c.state).where(deliveries.c.id == delivery_id)
        )
        return str(state)

    # -- checked writes: every state change goes through one of these -----------------------

    async def update_document(self, doc_id: int, **columns: object) -> DocumentRow:
        """Update columns of a document whose row this transaction locked."""
        query = sa.update(documents).where(documents.c.id == doc_id)
        if self.lease is not None:
            query = query.where(documents.c.lease == self.lease)
        found = await self.conn.execute(query.values(**columns).returning(documents))
        row = found.mappings().one_or_none()
        if row is None:
            raise LeaseLost(doc_id, self.lease if self.lease is not None else -1)
        return rows.document(row)

    async def set_state(self, doc_id: int, new: str, **columns: object) -> DocumentRow:
        """Move a document to `new` (checked) and update other columns with it."""
        current = await self.lock_document(doc_id)
        columns["state"] = check_document(doc_id, current, new).value
        columns["updated_at"] = self.now
        return await self.update_document(doc_id, **columns)

    async def update_step(
        self, step_row: int, new: str | None = None, **columns: object
    ) -> StepRow:
        """Update a step row; with `new`, move it to that state (checked)."""
        step = await self.lock_step(step_row)
        if new is not None:
            columns["state"] = check_step(step_row, step.state, new).value
        if not columns:
            return step
        found = await self.conn.execute(
            sa.update(steps).where(steps.c.id == step_row).values(**columns).returning(steps)
        )
        return rows.step(found.mappings().one())

    async def move_deliveries(self, doc_id: int, before: Iterable[str], new: str) -> int:
        """Move a document's deliveries in any of `before` to `new`; how many moved."""
        before = tuple(before)
        for current in before:
            check_delivery(0, current, new)  # the whole set moves: check the move, not each row
        found = await self.conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.document_id == doc_id, deliveries.c.state.in_(before))
            .values(state=new)
        )
        return int(found.rowcount)

    async def add_flag(self, doc_id: int, flag: str) -> None:
        """Attach a marker (e.g. `resubmitted`) to a document, once."""
        query = (
            sa.update(documents)
            .where(documents.c.id == doc_id, sa.not_(documents.c.flags.contains([flag])))
            .values(flags=sa.func.array_append(documents.c.flags, flag))
        )
        await self.conn.execute(query)
