"""Reads for the engine's start-up and for `status`, and the small facts kept in `meta`.

Counts come from `doc_counts` and `type_counts` (kept by triggers, see `migrations.py`), never
from a scan of `documents`; the other reads use partial indexes on unfinished or kept documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from docutray_watch.journal.postgres import rows
from docutray_watch.journal.postgres.tables import (
    doc_counts,
    documents,
    meta,
    step_latency,
    type_counts,
)
from docutray_watch.journal.postgres.tx import Tx
from docutray_watch.journal.rows import DocumentRow, LatencyRow, kept_stamp
from docutray_watch.journal.sqlite.reports import API_PAUSE_KEY, REQUEUED_KEY

__all__ = [
    "counts",
    "counts_by_type",
    "documents_in",
    "get_meta",
    "kept_stamps",
    "latest_by_path",
    "load_latencies",
    "oldest_pending",
    "outcome_counts",
    "outcomes_by_type",
    "record_api_pause",
    "requeue_count",
    "save_latencies",
    "set_meta",
    "unfinished_by_path",
    "unfinished_documents",
]


async def unfinished_documents(tx: Tx) -> list[DocumentRow]:
    """Every document whose final file action is not done yet, oldest first."""
    found = await tx.conn.execute(
        sa.select(documents).where(documents.c.finished_at.is_(None)).order_by(documents.c.id)
    )
    return [rows.document(r) for r in found.mappings()]


async def documents_in(tx: Tx, states: Sequence[str], pipeline: str | None) -> list[DocumentRow]:
    """Documents in any of the given states."""
    query = sa.select(documents).where(documents.c.state.in_(list(states)))
    if pipeline is not None:
        query = query.where(documents.c.pipeline == pipeline)
    found = await tx.conn.execute(query.order_by(documents.c.id))
    return [rows.document(r) for r in found.mappings()]


async def latest_by_path(tx: Tx, pipeline: str) -> dict[str, DocumentRow]:
    """The most recent document for each path a folder scan must know about: unfinished ones,
    and finished ones whose file was kept where it was found."""
    newest = (
        sa.select(sa.func.max(documents.c.id))
        .where(
            documents.c.pipeline == pipeline,
            sa.or_(documents.c.finished_at.is_(None), documents.c.archived_to == documents.c.path),
        )
        .group_by(documents.c.path)
    )
    found = await tx.conn.execute(sa.select(documents).where(documents.c.id.in_(newest)))
    return {r["path"]: rows.document(r) for r in found.mappings()}


async def unfinished_by_path(tx: Tx, pipeline: str) -> dict[str, DocumentRow]:
    """The newest unfinished document for each path of a pipeline."""
    found = await tx.conn.execute(
        sa.select(documents)
        .where(documents.c.finished_at.is_(None), documents.c.pipeline == pipeline)
        .order_by(documents.c.id)
    )
    return {r["path"]: rows.document(r) for r in found.mappings()}


async def unfinished_of_node(tx: Tx, node: str) -> list[DocumentRow]:
    """The unfinished documents a node journaled (its own folders' and the ones it took in)."""
    found = await tx.conn.execute(
        sa.select(documents)
        .where(documents.c.finished_at.is_(None), documents.c.node == node)
        .order_by(documents.c.id)
    )
    return [rows.document(r) for r in found.mappings()]


async def kept_stamps(tx: Tx, pipeline: str) -> dict[str, int]:
    """Each path kept where it was found, with `kept_stamp(size, mtime_ns)` of its newest row."""
    found = await tx.conn.execute(
        sa.select(documents.c.path, documents.c.size, documents.c.mtime_ns)
        .where(documents.c.pipeline == pipeline, documents.c.archived_to == documents.c.path)
        .order_by(documents.c.path, documents.c.id)
    )
    # The newest row of a path comes last and stays.
    return {str(r.path): kept_stamp(r.size, r.mtime_ns) for r in found}


async def _count_by(tx: Tx, column: sa.Column[str]) -> dict[str, dict[str, int]]:
    total = sa.func.sum(doc_counts.c.n)
    found = await tx.conn.execute(
        sa.select(doc_counts.c.pipeline, column, total)
        .group_by(doc_counts.c.pipeline, column)
        .having(total > 0)
        .order_by(doc_counts.c.pipeline, column)
    )
    result: dict[str, dict[str, int]] = {}
    for pipeline, key, n in found:
        result.setdefault(str(pipeline), {})[str(key)] = int(n)
    return result


async def counts(tx: Tx) -> dict[str, dict[str, int]]:
    """Number of documents per pipeline and state."""
    return await _count_by(tx, doc_counts.c.state)


async def outcome_counts(tx: Tx) -> dict[str, dict[str, int]]:
    """Documents per pipeline: finished ones by outcome, unfinished ones by state."""
    return await _count_by(tx, doc_counts.c.word)


async def counts_by_type(tx: Tx) -> dict[str, dict[str, int]]:
    """Documents per pipeline and identified type code (pipelines that identify; a document
    counts once its identification succeeded, whatever happened next), from `type_counts`."""
    total = sa.func.sum(type_counts.c.n)
    found = await tx.conn.execute(
        sa.select(type_counts.c.pipeline, type_counts.c.identified_type, total)
        .group_by(type_counts.c.pipeline, type_counts.c.identified_type)
        .having(total > 0)
        .order_by(type_counts.c.pipeline, type_counts.c.identified_type)
    )
    result: dict[str, dict[str, int]] = {}
    for pipeline, code, n in found:
        result.setdefault(str(pipeline), {})[str(code)] = int(n)
    return result


async def outcomes_by_type(tx: Tx) -> dict[str, dict[str, dict[str, int]]]:
    """Identified documents per pipeline, type code and word (finished ones by outcome,
    `unrouted` included; unfinished ones by state), from `type_counts`."""
    found = await tx.conn.execute(
        sa.select(
            type_counts.c.pipeline,
            type_counts.c.identified_type,
            type_counts.c.word,
            type_counts.c.n,
        )
        .where(type_counts.c.n > 0)
        .order_by(type_counts.c.pipeline, type_counts.c.identified_type, type_counts.c.word)
    )
    result: dict[str, dict[str, dict[str, int]]] = {}
    for pipeline, code, key, n in found:
        result.setdefault(str(pipeline), {}).setdefault(str(code), {})[str(key)] = int(n)
    return result


async def oldest_pending(tx: Tx) -> dict[str, float]:
    """Creation time of the oldest unfinished document, per pipeline."""
    found = await tx.conn.execute(
        sa.select(documents.c.pipeline, sa.func.min(documents.c.created_at))
        .where(documents.c.finished_at.is_(None))
        .group_by(documents.c.pipeline)
    )
    return {str(pipeline): float(t) for pipeline, t in found}


async def requeue_count(tx: Tx) -> int:
    """How many documents `retry` has requeued over the journal's life."""
    value = await tx.conn.scalar(sa.select(meta.c.value).where(meta.c.key == REQUEUED_KEY))
    return int(value) if value is not None else 0


async def set_meta(tx: Tx, key: str, value: str) -> None:
    """Store `value` under `key`."""
    insert = postgresql.insert(meta).values(key=key, value=value, updated_at=tx.now)
    await tx.conn.execute(
        insert.on_conflict_do_update(
            index_elements=[meta.c.key],
            set_={"value": insert.excluded.value, "updated_at": insert.excluded.updated_at},
        )
    )


async def get_meta(tx: Tx, key: str) -> tuple[str, float] | None:
    """The value stored under `key` and when (epoch seconds), or None."""
    found = await tx.conn.execute(
        sa.select(meta.c.value, meta.c.updated_at).where(meta.c.key == key)
    )
    row = found.one_or_none()
    return None if row is None else (str(row.value), float(row.updated_at))


async def record_api_pause(tx: Tx, reasons: str | None) -> None:
    """Why API work is paused (None: it is not); the start time is kept while the reasons stay."""
    if reasons is None:
        await tx.conn.execute(sa.delete(meta).where(meta.c.key == API_PAUSE_KEY))
        return
    insert = postgresql.insert(meta).values(key=API_PAUSE_KEY, value=reasons, updated_at=tx.now)
    await tx.conn.execute(
        insert.on_conflict_do_update(
            index_elements=[meta.c.key],
            set_={
                "updated_at": sa.case(
                    (meta.c.value == insert.excluded.value, meta.c.updated_at),
                    else_=insert.excluded.updated_at,
                ),
                "value": insert.excluded.value,
            },
        )
    )


async def load_latencies(tx: Tx) -> list[LatencyRow]:
    """Saved (step_id, size_class, count, mean, variance) rows."""
    found = await tx.conn.execute(
        sa.select(
            step_latency.c.step_id,
            step_latency.c.size_class,
            step_latency.c.count,
            step_latency.c.mean,
            step_latency.c.variance,
        )
    )
    return [(str(a), int(b), int(c), float(d), float(e)) for a, b, c, d, e in found]


async def save_latencies(tx: Tx, latencies: Iterable[LatencyRow]) -> None:
    """Persist learned processing times."""
    values = [
        {"step_id": s, "size_class": k, "count": n, "mean": m, "variance": v}
        for s, k, n, m, v in latencies
    ]
    if not values:
        return
    insert = postgresql.insert(step_latency)
    await tx.conn.execute(
        insert.on_conflict_do_update(
            index_elements=[step_latency.c.step_id, step_latency.c.size_class],
            set_={
                "count": insert.excluded.count,
                "mean": insert.excluded.mean,
                "variance": insert.excluded.variance,
            },
        ),
        values,
    )
