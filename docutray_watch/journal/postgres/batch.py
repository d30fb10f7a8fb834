"""A backlog taken in at once: `add_queued_batch`, several nodes sharing content.

Content is processed once per (pipeline, sha256, generation) (the partial unique index of
`migrations.py`), so an item whose content another document claims cannot simply be inserted
`queued`, and one such item must not fail its whole batch. One lookup per batch says, for each
content, whether it was delivered, which document claims it now and its highest generation;
then each item is journaled:

- `duplicates: skip` (`skip_if_done`) and a delivered twin: not journaled (None), as in SQLite:
  the engine journals it on its own, as a duplicate of the delivered document.
- `duplicates: skip` and the content claimed by another document (being processed, or failed),
  or by an earlier item of this batch: journaled `duplicate` of it, with no steps.
- `duplicates: reprocess` and the content claimed: journaled `queued` in the content's next
  generation (what `retry --force` does), so it is processed again.
- Otherwise `queued`, as in SQLite.

A node inserting the same content between the lookup and the insert makes the insert fail
(`ContentClaimed`, nothing written): `PostgresStore.add_queued_batch` runs the batch again, whose
lookup then sees that document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from docutray_watch.journal.postgres import rows
from docutray_watch.journal.postgres.migrations import CLAIMING_STATES
from docutray_watch.journal.postgres.tables import documents, steps
from docutray_watch.journal.postgres.tx import Tx
from docutray_watch.journal.rows import DocumentRow, NewDocument, Queued, StepRow
from docutray_watch.journal.states import DocumentState

__all__ = ["add_queued_batch"]

_D = DocumentState
_Key = tuple[str, str]  # (pipeline, sha256)


@dataclass(frozen=True)
class _Content:
    done: bool  # a document of it was delivered
    holder: int | None  # the newest document claiming it
    highest: int  # its highest generation


@dataclass(frozen=True)
class _Plan:
    item: NewDocument
    generation: int = 0
    of: int | None = None  # a duplicate of this document…
    of_item: int | None = None  # …or of this earlier item of the batch (its index)


async def add_queued_batch(tx: Tx, items: Sequence[NewDocument]) -> list[Queued | None]:
    """Journal a batch (see the module docstring): queued items with their pending steps,
    duplicates without; None for an item whose `skip_if_done` found a delivered twin."""
    known = await _contents(tx, items)
    claimed: dict[_Key, int] = {}  # contents an item of this batch claims: its index
    highest: dict[_Key, int] = {key: c.highest for key, c in known.items()}
    plans: list[_Plan | None] = []
    for n, item in enumerate(items):
        key = (item.pipeline, item.sha256)
        content = known.get(key)
        holder = content.holder if content is not None else None
        if item.skip_if_done and content is not None and content.done:
            plans.append(None)
        elif holder is None and key not in claimed:
            claimed[key] = n
            highest[key] = max(0, highest.get(key, 0))
            plans.append(_Plan(item))
        elif item.skip_if_done:
            plans.append(_Plan(item, of=holder, of_item=claimed.get(key)))
        else:
            claimed.setdefault(key, n)
            highest[key] += 1
            plans.append(_Plan(item, generation=highest[key]))
    to_queue = {n: p for n, p in enumerate(plans) if p is not None and p.of is p.of_item is None}
    queued = await _insert_queued(tx, to_queue)
    out: list[Queued | None] = [queued.get(n) for n in range(len(items))]
    duplicates = {n: p for n, p in enumerate(plans) if p is not None and n not in to_queue}
    if duplicates:
        values = [
            _values(p.item, tx)
            | {
                "state": _D.DUPLICATE.value,
                "outcome": "duplicate",
                "duplicate_of": p.of if p.of_item is None else queued[p.of_item].document.id,
            }
            for p in duplicates.values()
        ]
        inserted = await tx.conn.execute(
            sa.insert(documents).returning(documents, sort_by_parameter_order=True), values
        )
        for n, row in zip(duplicates, inserted.mappings(), strict=True):
            out[n] = Queued(rows.document(row), [])
    return out


async def _contents(tx: Tx, items: Sequence[NewDocument]) -> dict[_Key, _Content]:
    """What the journal knows of each content of the batch, in one statement."""
    wanted = sorted({(i.pipeline, i.sha256) for i in items})
    if not wanted:
        return {}
    not_duplicate = documents.c.outcome.is_distinct_from("duplicate")
    delivered = sa.and_(
        documents.c.state.in_((_D.DELIVERED.value, _D.ARCHIVED.value)), not_duplicate
    )
    claiming = sa.and_(documents.c.state.in_(CLAIMING_STATES), not_duplicate)
    found = await tx.conn.execute(
        sa.select(
            documents.c.pipeline,
            documents.c.sha256,
            sa.func.bool_or(delivered).label("done"),
            sa.func.max(documents.c.id).filter(claiming).label("holder"),
            sa.func.max(documents.c.generation).label("highest"),
        )
        .where(sa.tuple_(documents.c.pipeline, documents.c.sha256).in_(wanted))
        .group_by(documents.c.pipeline, documents.c.sha256)
    )
    return {
        (r.pipeline, r.sha256): _Content(
            bool(r.done), None if r.holder is None else int(r.holder), int(r.highest)
        )
        for r in found
    }


async def _insert_queued(tx: Tx, plans: dict[int, _Plan]) -> dict[int, Queued]:
    """Insert the items to queue (by their index in the batch) with their pending steps."""
    if not plans:
        return {}
    inserted = await tx.conn.execute(
        sa.insert(documents).returning(documents, sort_by_parameter_order=True),
        [
            _values(p.item, tx)
            | {"state": _D.QUEUED.value, "attempts": 1, "generation": p.generation}
            for p in plans.values()
        ],
    )
    doc_rows: list[DocumentRow] = [rows.document(r) for r in inserted.mappings()]
    step_values = [
        {"document_id": doc.id, "step_id": step_id, "state": "pending"}
        for doc, p in zip(doc_rows, plans.values(), strict=True)
        for step_id in dict.fromkeys(p.item.steps)
    ]
    step_rows: dict[int, list[StepRow]] = {doc.id: [] for doc in doc_rows}
    if step_values:
        made = await tx.conn.execute(
            sa.insert(steps).returning(steps, sort_by_parameter_order=True), step_values
        )
        for r in made.mappings():
            step_rows[r["document_id"]].append(rows.step(r))
    return {n: Queued(doc, step_rows[doc.id]) for n, doc in zip(plans, doc_rows, strict=True)}


def _values(item: NewDocument, tx: Tx) -> dict[str, object]:
    return {
        "pipeline": item.pipeline,
        "path": item.path,
        "relative_path": item.relative_path,
        "size": item.size,
        "mtime_ns": item.mtime_ns,
        "ctime_ns": item.ctime_ns,
        "inode": item.inode,
        "sha256": item.sha256,
        "content_type": item.content_type,
        "source_version": item.source_version,
        "node": tx.node,
        "created_at": tx.now,
        "updated_at": tx.now,
    }
