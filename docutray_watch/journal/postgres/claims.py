"""What several nodes need beyond the protocol: leases, source identities, content generations.

- **Lease** (fencing): taking a document increments `documents.lease` and returns the new value;
  every write made under it (`PostgresStore.fenced(lease)`) carries `lease = :mine`, so a node
  that lost the document (declared dead, then woke) writes nothing and gets `LeaseLost`.
- **Source identity** ("once ever"): (node, path, size, mtime_ns, inode) of a file, inserted in
  the transaction that defers its first job; the same file found again inserts nothing.
- **Generation**: content is processed once per (pipeline, sha256, generation) (a partial unique
  index, see `migrations.py`); `duplicates: reprocess` and `retry --force` move a document to the
  next generation of its content before it is queued again.

These take a connection, so the cluster code can run them in its own transaction (with the defer
of a procrastinate job); `PostgresStore` also offers each as one call of its own.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from docutray_watch.journal.postgres import documents as _documents
from docutray_watch.journal.postgres import rows
from docutray_watch.journal.postgres.migrations import CLAIMING_STATES
from docutray_watch.journal.postgres.tables import documents, source_identity
from docutray_watch.journal.postgres.tx import Tx
from docutray_watch.journal.rows import DocumentRow

__all__ = [
    "PATH_LOCK_NAMESPACE",
    "add_document_once",
    "content_holder",
    "known_sources",
    "next_generation",
    "record_source",
    "record_sources",
    "set_generation",
    "take_lease",
]


async def take_lease(conn: AsyncConnection, doc_id: int) -> int:
    """Take a document: its lease, incremented (KeyError when unknown). Writes fenced by an
    older lease fail from now on."""
    lease = await conn.scalar(
        sa.update(documents)
        .where(documents.c.id == doc_id)
        .values(lease=documents.c.lease + 1)
        .returning(documents.c.lease)
    )
    if lease is None:
        raise KeyError(f"document {doc_id} is not in the journal")
    return int(lease)


async def record_source(
    conn: AsyncConnection,
    *,
    node: str | None,
    path: str,
    size: int,
    mtime_ns: int,
    inode: int | None,
    pipeline: str,
    document_id: int | None,
    now: float,
) -> bool:
    """Record a file's source identity; False when it was recorded before (the file was taken
    already: do nothing). `node` None: a shared folder; `inode` None: the source has none."""
    inserted = await conn.scalar(
        postgresql.insert(source_identity)
        .values(
            node=node or "",
            path=path,
            size=size,
            mtime_ns=mtime_ns,
            inode=inode or 0,
            pipeline=pipeline,
            document_id=document_id,
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(sa.literal(True))
    )
    return bool(inserted)


_ROWS_AT_ONCE = 1000
SourceKey = tuple[str, int, int, int]
"""(path, size, mtime_ns, inode) of one source identity."""


async def record_sources(
    conn: AsyncConnection, keys: list[SourceKey], *, pipeline: str, now: float
) -> set[SourceKey]:
    """`record_source` for many documents of a shared source (no node, no document yet), in
    one statement: the keys recorded now (the others were taken before)."""
    if not keys:
        return set()
    rows = [
        {
            "node": "",
            "path": path,
            "size": size,
            "mtime_ns": mtime_ns,
            "inode": inode,
            "pipeline": pipeline,
            "document_id": None,
            "created_at": now,
        }
        for path, size, mtime_ns, inode in dict.fromkeys(keys)
    ]
    t = source_identity.c
    recorded: set[SourceKey] = set()
    for start in range(0, len(rows), _ROWS_AT_ONCE):  # under PostgreSQL's 65,535 parameters
        inserted = await conn.execute(
            postgresql.insert(source_identity)
            .values(rows[start : start + _ROWS_AT_ONCE])
            .on_conflict_do_nothing()
            .returning(t.path, t.size, t.mtime_ns, t.inode)
        )
        recorded.update((str(p), int(s), int(m), int(i)) for p, s, m, i in inserted)
    return recorded


async def known_sources(
    conn: AsyncConnection, *, node: str | None, paths: list[str]
) -> set[tuple[str, int, int, int]]:
    """The source identities already recorded for these paths, as (path, size, mtime_ns, inode)
    (inode 0 for none): one query for a whole folder listing, so a periodic scan of a folder
    of many files taken before costs one round trip, not one per file."""
    if not paths:
        return set()
    rows = await conn.execute(
        sa.select(
            source_identity.c.path,
            source_identity.c.size,
            source_identity.c.mtime_ns,
            source_identity.c.inode,
        ).where(source_identity.c.node == (node or ""), source_identity.c.path.in_(paths))
    )
    return {(str(p), int(s), int(m), int(i)) for p, s, m, i in rows}


PATH_LOCK_NAMESPACE = 0x44545722
"""`pg_advisory_xact_lock(namespace, hashtext(path))`: serialises the intakes of one path."""


async def add_document_once(
    tx: Tx,
    pipeline: str,
    path: str,
    relative_path: str,
    size: int,
    mtime_ns: int,
    *,
    ctime_ns: int | None,
    inode: int | None,
) -> DocumentRow:
    """Record a found file as `discovered`, unless the path has an unfinished document already:
    that one is returned. Two intakes of one file at once (a job judged stalled and run again
    while its first run goes on) journal one document, not two. The path's advisory lock is
    the transaction's first statement."""
    await tx.conn.execute(
        sa.select(sa.func.pg_advisory_xact_lock(PATH_LOCK_NAMESPACE, sa.func.hashtext(path)))
    )
    found = await tx.conn.execute(
        sa.select(documents)
        .where(
            documents.c.pipeline == pipeline,
            documents.c.path == path,
            documents.c.finished_at.is_(None),
        )
        .order_by(documents.c.id.desc())
        .limit(1)
    )
    row = found.mappings().first()
    if row is not None:
        return rows.document(row)
    return await _documents.add_document(
        tx, pipeline, path, relative_path, size, mtime_ns, ctime_ns=ctime_ns, inode=inode
    )


async def next_generation(conn: AsyncConnection, pipeline: str, sha256: str) -> int:
    """One more than the highest generation of this content (0 when it was never seen)."""
    highest = await conn.scalar(
        sa.select(sa.func.max(documents.c.generation)).where(
            documents.c.pipeline == pipeline, documents.c.sha256 == sha256
        )
    )
    return 0 if highest is None else int(highest) + 1


async def content_holder(conn: AsyncConnection, pipeline: str, sha256: str) -> int | None:
    """The id of the document that claims this content in its newest generation (what a
    `ContentClaimed` collided with), or None when no document claims it."""
    found = await conn.scalar(
        sa.select(documents.c.id)
        .where(
            documents.c.pipeline == pipeline,
            documents.c.sha256 == sha256,
            documents.c.state.in_(CLAIMING_STATES),
            documents.c.outcome.is_distinct_from("duplicate"),
        )
        .order_by(documents.c.generation.desc())
        .limit(1)
    )
    return None if found is None else int(found)


async def set_generation(conn: AsyncConnection, doc_id: int, generation: int) -> None:
    """Put a document in a generation of its content (before it is queued again)."""
    found = await conn.execute(
        sa.update(documents).where(documents.c.id == doc_id).values(generation=generation)
    )
    if found.rowcount == 0:
        raise KeyError(f"document {doc_id} is not in the journal")
