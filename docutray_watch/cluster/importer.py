"""`docutray-watch cluster import`: move a single-node SQLite journal's documents into the
cluster's PostgreSQL journal.

Each document is copied with its state, steps and deliveries as they are, so:

- an unfinished document keeps its execution ids: a node polls them, it never POSTs again;
- a finished one keeps its sha256: the cluster's duplicate check finds it;
- a delivery keeps its state: a delivered result is not delivered a second time.

A document of a pipeline whose folder is the node's own (not `shared: true`) belongs to this
config's `cluster.node` (its file is on this machine); one of a shared folder to no node. Its
source identity is recorded too, so no node takes the same file again.

Re-runnable: the import runs in one transaction that also records, per source journal (its
identity is a hash of its first document, so a copied file is the same source), which of its
document ids were imported (`import_origins`) and a summary in the journal's `meta`
(`import:<source>`). A second run imports only documents it has not seen (e.g. ones the
single-node daemon took after the first run); it never updates or duplicates one imported
before. `dry_run` reads both sides and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from docutray_watch.config import Config
from docutray_watch.journal import Journal
from docutray_watch.journal.postgres import PostgresStore
from docutray_watch.journal.postgres.migrations import CLAIMING_STATES
from docutray_watch.journal.postgres.tables import (
    deliveries,
    documents,
    meta,
    source_identity,
    step_latency,
    steps,
)
from docutray_watch.journal.rows import DeliveryRow, DocumentRow, LatencyRow, StepRow
from docutray_watch.journal.states import DocumentState
from docutray_watch.statelock import StateLock

_is_file = Path.is_file  # a one-shot command: a stat before anything runs

__all__ = ["ImportReport", "import_journal", "source_id"]

# Bookkeeping of imports, beside the journal's tables (created by the first import): which
# document of which source journal became which document here.
_ORIGINS_DDL = """
CREATE TABLE IF NOT EXISTS import_origins (
    source       TEXT             NOT NULL,
    origin_id    BIGINT           NOT NULL,
    document_id  BIGINT           NOT NULL,
    imported_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (source, origin_id)
)
"""
# One import at a time per database: two at once would both find a document not imported yet.
_IMPORT_LOCK = "SELECT pg_advisory_xact_lock(hashtext('docutray-watch cluster import'))"
_META_PREFIX = "import:"
_BATCH = 500


@dataclass
class ImportReport:
    """What an import did (or, dry, would do)."""

    source: str
    journal: str
    dry_run: bool
    imported: Counter[str] = field(default_factory=Counter)
    """Documents imported (would be) by state."""
    already: int = 0
    """Documents of this source imported by an earlier run (left as they are)."""
    polling_executions: int = 0
    """Execution ids of unfinished documents that the nodes will poll (never re-POST)."""
    uncertain_steps: int = 0
    """Steps caught mid-submission (`submitting`): the cluster handles them as a restarted
    single node would (the uncertain-submission rule)."""
    node: str | None = None

    @property
    def total(self) -> int:
        """Documents imported (would be) in this run."""
        return sum(self.imported.values())

    def lines(self) -> list[str]:
        """What an operator reads."""
        verb = "would import" if self.dry_run else "imported"
        states = ", ".join(f"{state} {n}" for state, n in sorted(self.imported.items()))
        lines = [
            f"source journal {self.journal} (source id {self.source})",
            f"{verb} {self.total} document(s){': ' + states if states else ''}",
        ]
        if self.already:
            lines.append(f"{self.already} document(s) imported by an earlier run: left as they are")
        unfinished = sum(n for state, n in self.imported.items() if state in _UNFINISHED_STATES)
        if unfinished:
            lines.append(
                f"{unfinished} unfinished document(s) resume in the cluster; "
                f"{self.polling_executions} execution(s) are polled, never submitted again"
            )
        if self.uncertain_steps:
            lines.append(
                f"{self.uncertain_steps} step(s) were being submitted when the journal was last "
                "written: they follow the uncertain-submission rule (resubmitted once at most)"
            )
        if self.node:
            lines.append(f"documents of local folders belong to node {self.node}")
        return lines


_UNFINISHED_STATES = {
    s.value
    for s in DocumentState
    if s
    not in (
        DocumentState.ARCHIVED,
        DocumentState.SUPERSEDED,
        DocumentState.UNROUTED,
    )
}


@dataclass(frozen=True)
class _Source:
    """The SQLite journal, read once."""

    documents: list[DocumentRow]
    steps: dict[int, list[StepRow]]
    deliveries: dict[int, list[DeliveryRow]]
    latencies: list[LatencyRow]


def source_id(first: DocumentRow) -> str:
    """A journal's identity: a hash of its first document, the same wherever the file is."""
    seed = f"{first.id}\0{first.pipeline}\0{first.path}\0{first.created_at!r}"
    return "sqlite-" + hashlib.sha256(seed.encode()).hexdigest()[:16]


def _read_source(path: Path) -> _Source:
    with Journal(path) as journal:
        docs = sorted(journal.documents_in(*DocumentState), key=lambda d: d.id)
        return _Source(
            documents=docs,
            steps={d.id: journal.steps_of(d.id) for d in docs},
            deliveries={d.id: journal.deliveries_of(d.id) for d in docs},
            latencies=journal.load_latencies(),
        )


async def import_journal(
    config: Config, journal_path: Path | None = None, *, dry_run: bool = False
) -> ImportReport:
    """Import the SQLite journal at `journal_path` (default: the config's) into the cluster.

    Raises `FileNotFoundError` for a missing journal, `AlreadyRunningError` while a
    single-node daemon holds its state directory, `SchemaNotReady` for a database that
    `cluster init` has not prepared.
    """
    assert config.cluster is not None
    path = Path(journal_path or config.journal_path)
    if not _is_file(path):
        raise FileNotFoundError(f"no journal at {path}")
    # A single-node daemon still writing it would go on after the import: refuse while it runs,
    # and keep it from starting until the import is committed. (A dry run only reads.)
    lock = None if dry_run else StateLock(path.parent)
    if lock is not None:
        lock.acquire()
    try:
        source = _read_source(path)
        node = config.cluster.node_name
        report = ImportReport(source="", journal=str(path), dry_run=dry_run, node=node)
        if not source.documents:
            report.source = "(empty journal)"
            return report
        report.source = source_id(source.documents[0])
        store = PostgresStore(config.cluster.database.get_secret_value(), node=node, migrate=False)
        await store.open()
        try:
            async with store.transaction() as conn:
                await _import(conn, config, source, report)
                if dry_run:
                    raise _DryRunDone
        except _DryRunDone:
            pass  # everything it wrote was rolled back with its transaction
        finally:
            await store.close()
        return report
    finally:
        if lock is not None:
            lock.release()


class _DryRunDone(Exception):
    """Leaves the import's transaction by rolling it back."""


def _node_of(config: Config, pipeline: str) -> str | None:
    assert config.cluster is not None
    try:
        shared = config.pipeline(pipeline).shared
    except KeyError:
        shared = False  # a pipeline no longer configured: its files were on this machine
    return None if shared else config.cluster.node_name


async def _import(
    conn: AsyncConnection, config: Config, source: _Source, report: ImportReport
) -> None:
    await conn.execute(sa.text(_IMPORT_LOCK))
    await conn.execute(sa.text(_ORIGINS_DDL))
    done = await conn.execute(
        sa.text("SELECT origin_id, document_id FROM import_origins WHERE source = :source"),
        {"source": report.source},
    )
    id_map: dict[int, int] = {int(o): int(d) for o, d in done}
    todo = [d for d in source.documents if d.id not in id_map]
    report.already = len(source.documents) - len(todo)
    now = time.time()
    generations = await _generations(conn, todo)
    for start in range(0, len(todo), _BATCH):
        batch = todo[start : start + _BATCH]
        inserted = await conn.execute(
            sa.insert(documents).returning(documents.c.id, sort_by_parameter_order=True),
            [_document_values(config, d, generations.get(d.id, 0)) for d in batch],
        )
        for doc, new_id in zip(batch, inserted.scalars(), strict=True):
            id_map[doc.id] = int(new_id)
    await _link_duplicates(conn, todo, id_map)
    for start in range(0, len(todo), _BATCH):
        await _copy_steps(conn, source, todo[start : start + _BATCH], id_map, report)
    report.imported.update(doc.state.value for doc in todo)
    await _record_sources(conn, config, todo, id_map, now)
    await _record_origins(conn, report, todo, id_map, now)
    if source.latencies:
        await conn.execute(
            postgresql.insert(step_latency).on_conflict_do_nothing(),
            [
                {"step_id": s, "size_class": k, "count": n, "mean": m, "variance": v}
                for s, k, n, m, v in source.latencies
            ],
        )


async def _generations(conn: AsyncConnection, docs: Sequence[DocumentRow]) -> dict[int, int]:
    """A generation for each imported document that claims its content: one machine may have
    run the same content more than once (`retry --force`, `duplicates: reprocess`), and the
    cluster processes content once per generation, so each claim gets a generation of its own
    after those the cluster already holds."""
    claiming = [
        doc
        for doc in docs
        if doc.sha256 is not None
        and doc.state.value in CLAIMING_STATES
        and doc.outcome != "duplicate"
    ]
    following = await _next_generations(conn, {doc.sha256 for doc in claiming if doc.sha256})
    result: dict[int, int] = {}
    for doc in claiming:
        assert doc.sha256 is not None
        key = (doc.pipeline, doc.sha256)
        result[doc.id] = following.get(key, 0)
        following[key] = result[doc.id] + 1
    return result


async def _next_generations(conn: AsyncConnection, shas: set[str]) -> dict[tuple[str, str], int]:
    """(pipeline, sha256) → the next generation of that content in the cluster (absent: 0), as
    `claims.next_generation` says, in one query per batch of contents."""
    found: dict[tuple[str, str], int] = {}
    wanted = sorted(shas)
    for start in range(0, len(wanted), 5000):
        rows = await conn.execute(
            sa.select(documents.c.pipeline, documents.c.sha256, sa.func.max(documents.c.generation))
            .where(documents.c.sha256.in_(wanted[start : start + 5000]))
            .group_by(documents.c.pipeline, documents.c.sha256)
        )
        for pipeline, sha256, highest in rows:
            found[(str(pipeline), str(sha256))] = int(highest) + 1
    return found


def _document_values(config: Config, doc: DocumentRow, generation: int) -> dict[str, Any]:
    return {
        "pipeline": doc.pipeline,
        "path": doc.path,
        "relative_path": doc.relative_path,
        "size": doc.size,
        "mtime_ns": doc.mtime_ns,
        "ctime_ns": doc.ctime_ns,
        "inode": doc.inode,
        "sha256": doc.sha256,
        "content_type": doc.content_type,
        "state": doc.state.value,
        "outcome": doc.outcome,
        "attempts": doc.attempts,
        "error": doc.error,
        "error_stage": doc.error_stage,
        "error_detail": doc.error_detail,
        "flags": sorted(doc.flags),
        "duplicate_of": None,  # linked once every document has its new id
        "archive_to": doc.archive_to,
        "archived_to": doc.archived_to,
        "created_at": doc.created_at,
        "updated_at": doc.updated_at,
        "finished_at": doc.finished_at,
        "node": _node_of(config, doc.pipeline),
        "generation": generation,
        "identified_type": doc.identified_type,
        "identification": doc.identification,
    }


async def _link_duplicates(
    conn: AsyncConnection, docs: Sequence[DocumentRow], id_map: dict[int, int]
) -> None:
    links = [
        {"new_id": id_map[d.id], "of": id_map[d.duplicate_of]}
        for d in docs
        if d.duplicate_of is not None and d.duplicate_of in id_map
    ]
    if links:
        await conn.execute(
            sa.update(documents)
            .where(documents.c.id == sa.bindparam("new_id"))
            .values(duplicate_of=sa.bindparam("of")),
            links,
        )


async def _copy_steps(
    conn: AsyncConnection,
    source: _Source,
    docs: Sequence[DocumentRow],
    id_map: dict[int, int],
    report: ImportReport,
) -> None:
    """The steps and deliveries of `docs`, in two statements (steps first: deliveries name
    their step row by its new id)."""
    step_rows = [s for doc in docs for s in source.steps[doc.id]]
    if not step_rows:
        return
    made = await conn.execute(
        sa.insert(steps).returning(steps.c.id, sort_by_parameter_order=True),
        [
            {
                "document_id": id_map[s.document_id],
                "step_id": s.step_id,
                "state": s.state.value,
                "execution_id": s.execution_id,
                "status": s.status,
                "attempts": s.attempts,
                "uncertain": s.uncertain,
                "first_try_at": s.first_try_at,
                "submitted_at": s.submitted_at,
                "completed_at": s.completed_at,
                "result": s.result,
                "error": s.error,
                "http_status": s.http_status,
            }
            for s in step_rows
        ],
    )
    step_map = {s.id: int(i) for s, i in zip(step_rows, made.scalars(), strict=True)}
    for doc in docs:
        if not doc.finished:
            doc_steps = source.steps[doc.id]
            report.polling_executions += sum(
                1 for s in doc_steps if s.state.value == "polling" and s.execution_id
            )
            report.uncertain_steps += sum(1 for s in doc_steps if s.state.value == "submitting")
    rows = [r for doc in docs for r in source.deliveries[doc.id]]
    if rows:
        await conn.execute(
            sa.insert(deliveries),
            [
                {
                    "step_row": step_map[r.step_row],
                    "document_id": id_map[r.document_id],
                    "sink": r.sink,
                    "state": r.state.value,
                    "attempts": r.attempts,
                    "receipt": r.receipt,
                    "error": r.error,
                    "delivered_at": r.delivered_at,
                }
                for r in rows
            ],
        )


async def _record_sources(
    conn: AsyncConnection,
    config: Config,
    docs: Sequence[DocumentRow],
    id_map: dict[int, int],
    now: float,
) -> None:
    """The files these documents were taken from were taken: no node takes them again (the
    newest document of a file version is the one its identity names)."""
    values = [
        {
            "node": _node_of(config, d.pipeline) or "",
            "path": d.path,
            "size": d.size,
            "mtime_ns": d.mtime_ns,
            "inode": d.inode or 0,
            "pipeline": d.pipeline,
            "document_id": id_map[d.id],
            "created_at": now,
        }
        for d in sorted(docs, key=lambda d: d.id, reverse=True)
        if d.size is not None and d.mtime_ns is not None
    ]
    for start in range(0, len(values), _BATCH):
        await conn.execute(
            postgresql.insert(source_identity).on_conflict_do_nothing(),
            values[start : start + _BATCH],
        )


async def _record_origins(
    conn: AsyncConnection,
    report: ImportReport,
    docs: Sequence[DocumentRow],
    id_map: dict[int, int],
    now: float,
) -> None:
    if docs:
        await conn.execute(
            sa.text(
                "INSERT INTO import_origins (source, origin_id, document_id, imported_at)"
                " VALUES (:source, :origin, :document, :now)"
            ),
            [
                {"source": report.source, "origin": d.id, "document": id_map[d.id], "now": now}
                for d in docs
            ],
        )
    summary = json.dumps(
        {
            "journal": report.journal,
            "documents": report.already + len(docs),
            "last_run_imported": len(docs),
            "node": report.node,
        }
    )
    insert = postgresql.insert(meta).values(
        key=_META_PREFIX + report.source, value=summary, updated_at=now
    )
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=[meta.c.key],
            set_={"value": insert.excluded.value, "updated_at": insert.excluded.updated_at},
        )
    )
