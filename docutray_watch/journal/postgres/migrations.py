"""The PostgreSQL journal's schema as numbered migrations, applied by `migrate(url)`.

The version lives in one row of `schema_version`. `migrate` brings a database to
`SCHEMA_VERSION` in ONE transaction whose first statement is `pg_advisory_xact_lock`: every node
may run it at once (`cluster init` on each host, or every daemon starting); the first one migrates,
the others wait for its commit, then find the work done. A schema newer than this code is refused
untouched (`NewerSchemaError`); a store opened without migrating refuses an older or missing one
(`SchemaNotReady`).

Versions:

1. documents (with `node`, `lease`, `generation` for multi-node), steps, deliveries,
   step_latency, meta, doc_counts (kept by a trigger), source_identity ("once ever").
2. documents' `identified_type` (the type code the service answered for a pipeline that
   identifies) and `identification` (its whole answer, JSON), both NULL for the others; a
   partial index to count documents per identified type; `unrouted` claims its content.
3. documents' `source_version` (a source document's ETag… at intake).
4. `type_counts` (identified documents per pipeline, type code and word, for `status`'s table
   per type), kept by triggers as `doc_counts` is and filled once from the rows already there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from docutray_watch.journal.postgres.connection import make_engine
from docutray_watch.journal.sqlite.schema import NewerJournalError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "NewerSchemaError",
    "SchemaNotReady",
    "migrate",
    "schema_version_of",
]

SCHEMA_VERSION = 4

# The advisory lock's two keys: a constant naming "migrating docutray-watch's journal", and the
# schema's hash (two journals in one database do not wait for each other).
_LOCK_CLASS = 0x44575701


class NewerSchemaError(NewerJournalError):
    """The journal was written by a newer docutray-watch; this version does not touch it (a
    `NewerJournalError`, so the commands that exit 78 for a newer SQLite journal do here too)."""


class SchemaNotReady(RuntimeError):
    """The journal's schema is missing or older than this code: `docutray-watch cluster init`."""


# Content is processed once per (pipeline, sha256, generation). A document "claims" its content
# from the moment it is queued until it is superseded; rows that do not claim it are left out of
# the unique index: `discovered` (not hashed yet, or to be hashed again), `duplicate` (and an
# archived duplicate, outcome 'duplicate': the same content found in another file, which keeps its
# own row), `rejected` (never submitted) and `superseded` (the file changed: these bytes are no
# longer what it holds). A failed document keeps its claim: the content was paid for, and only
# `retry` (the same row) or a new generation (`duplicates: reprocess`, `retry --force`) runs it
# again. An `unrouted` document (schema 2) keeps it for the same reason: its identification was
# paid for and `retry` routes the same row again, keeping it; were the claim released, another
# file of these bytes could take generation 0 meanwhile and that retry would collide with it.
CLAIMING_STATES = (
    "queued",
    "submitting",
    "polling",
    "completed",
    "delivered",
    "archived",
    "failed",
    "unrouted",
)

# Schema 1's claiming states, as its migration created the index (a migration never changes).
_V1_CLAIMING_STATES = CLAIMING_STATES[:-1]


def _content_once(states: Sequence[str]) -> str:
    return f"""
    CREATE UNIQUE INDEX documents_content_once ON documents (pipeline, sha256, generation)
        WHERE sha256 IS NOT NULL
          AND state IN ({", ".join(f"'{s}'" for s in states)})
          AND outcome IS DISTINCT FROM 'duplicate'
    """


def _counts_track(table: str) -> str:
    """The trigger function keeping `table`'s counters (`doc_counts`, `type_counts`): the
    document's key before and after a change, each counter moved once. The two counter rows are
    touched in key order, so two transactions moving documents in opposite directions wait for
    each other instead of deadlocking. The text is what the migrations ran, byte for byte."""
    return f"""
    CREATE FUNCTION {table}_track() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
    DECLARE
        before_key TEXT[];
        after_key TEXT[];
    BEGIN
        IF TG_OP <> 'INSERT' THEN before_key := {table}_key(OLD); END IF;
        IF TG_OP <> 'DELETE' THEN after_key := {table}_key(NEW); END IF;
        IF before_key IS NOT DISTINCT FROM after_key THEN RETURN NULL; END IF;
        IF after_key IS NULL OR (before_key IS NOT NULL AND before_key < after_key) THEN
            PERFORM {table}_add(before_key, -1);
            IF after_key IS NOT NULL THEN PERFORM {table}_add(after_key, 1); END IF;
        ELSE
            PERFORM {table}_add(after_key, 1);
            IF before_key IS NOT NULL THEN PERFORM {table}_add(before_key, -1); END IF;
        END IF;
        RETURN NULL;
    END $$
    """


_V1: Sequence[str] = (
    """
    CREATE TABLE documents (
        id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        pipeline      TEXT             NOT NULL,
        path          TEXT             NOT NULL,
        relative_path TEXT             NOT NULL,
        size          BIGINT,
        mtime_ns      BIGINT,
        ctime_ns      BIGINT,
        inode         BIGINT,
        sha256        TEXT,
        content_type  TEXT,
        state         TEXT             NOT NULL,
        outcome       TEXT,
        attempts      INTEGER          NOT NULL DEFAULT 0,
        error         TEXT,
        error_stage   TEXT,
        error_detail  JSON,
        flags         TEXT[]           NOT NULL DEFAULT '{}',
        duplicate_of  BIGINT,
        archive_to    TEXT,
        archived_to   TEXT,
        created_at    DOUBLE PRECISION NOT NULL,
        updated_at    DOUBLE PRECISION NOT NULL,
        finished_at   DOUBLE PRECISION,
        node          TEXT,
        lease         BIGINT           NOT NULL DEFAULT 0,
        generation    INTEGER          NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX documents_by_path ON documents (pipeline, path, id)",
    "CREATE INDEX documents_by_sha ON documents (pipeline, sha256)",
    "CREATE INDEX documents_unfinished ON documents (pipeline, created_at)"
    " WHERE finished_at IS NULL",
    "CREATE INDEX documents_failures ON documents (updated_at, id)"
    " WHERE state IN ('failed', 'rejected')",
    "CREATE INDEX documents_kept ON documents (pipeline, path, id) WHERE archived_to = path",
    "CREATE INDEX documents_by_node ON documents (node) WHERE finished_at IS NULL",
    _content_once(_V1_CLAIMING_STATES),
    """
    CREATE TABLE steps (
        id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        document_id   BIGINT  NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
        step_id       TEXT    NOT NULL,
        state         TEXT    NOT NULL,
        execution_id  TEXT,
        status        TEXT,
        attempts      INTEGER NOT NULL DEFAULT 0,
        uncertain     INTEGER NOT NULL DEFAULT 0,
        first_try_at  DOUBLE PRECISION,
        submitted_at  DOUBLE PRECISION,
        completed_at  DOUBLE PRECISION,
        result        JSON,
        error         TEXT,
        http_status   INTEGER,
        UNIQUE (document_id, step_id)
    )
    """,
    "CREATE INDEX steps_by_execution ON steps (execution_id)",
    "CREATE INDEX steps_by_state ON steps (state) WHERE state IN ('submitting', 'polling')",
    """
    CREATE TABLE deliveries (
        id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        step_row      BIGINT  NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
        document_id   BIGINT  NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
        sink          TEXT    NOT NULL,
        state         TEXT    NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        receipt       TEXT,
        error         TEXT,
        delivered_at  DOUBLE PRECISION,
        UNIQUE (step_row, sink)
    )
    """,
    "CREATE INDEX deliveries_by_document ON deliveries (document_id)",
    "CREATE INDEX deliveries_superseded ON deliveries (document_id) WHERE state = 'superseded'",
    """
    CREATE TABLE step_latency (
        step_id     TEXT             NOT NULL,
        size_class  INTEGER          NOT NULL,
        count       BIGINT           NOT NULL,
        mean        DOUBLE PRECISION NOT NULL,
        variance    DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (step_id, size_class)
    )
    """,
    """
    CREATE TABLE meta (
        key         TEXT             PRIMARY KEY,
        value       TEXT             NOT NULL,
        updated_at  DOUBLE PRECISION NOT NULL
    )
    """,
    # "Once ever": a file's source identity, recorded in the transaction that defers its first
    # job. `node` is '' for a shared folder (the same path everywhere), `inode` 0 where the source
    # has none (object stores): NOT NULL, so the primary key compares every column.
    """
    CREATE TABLE source_identity (
        node         TEXT             NOT NULL,
        path         TEXT             NOT NULL,
        size         BIGINT           NOT NULL,
        mtime_ns     BIGINT           NOT NULL,
        inode        BIGINT           NOT NULL,
        pipeline     TEXT             NOT NULL,
        document_id  BIGINT           REFERENCES documents (id) ON DELETE SET NULL,
        created_at   DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (node, path, size, mtime_ns, inode)
    )
    """,
    # Counts for `status` without reading `documents`: one row per pipeline, state, word (a
    # finished document's outcome, as `process` prints it) and day (UTC date of the final action,
    # '' while unfinished), kept by a trigger in the transaction of every insert, move and delete.
    """
    CREATE TABLE doc_counts (
        pipeline  TEXT   NOT NULL,
        state     TEXT   NOT NULL,
        word      TEXT   NOT NULL,
        day       TEXT   NOT NULL,
        n         BIGINT NOT NULL,
        PRIMARY KEY (pipeline, state, word, day)
    )
    """,
    """
    CREATE FUNCTION doc_counts_key(d documents) RETURNS TEXT[] LANGUAGE sql STABLE
    AS $$ SELECT ARRAY[
        d.pipeline,
        d.state,
        CASE WHEN d.state = 'archived' THEN COALESCE(d.outcome, 'success') ELSE d.state END,
        CASE WHEN d.finished_at IS NULL THEN ''
             ELSE to_char(to_timestamp(d.finished_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') END
    ] $$
    """,
    """
    CREATE FUNCTION doc_counts_add(k TEXT[], delta INTEGER) RETURNS void LANGUAGE sql
    SET search_path FROM CURRENT
    AS $$ INSERT INTO doc_counts (pipeline, state, word, day, n)
          VALUES (k[1], k[2], k[3], k[4], delta)
          ON CONFLICT (pipeline, state, word, day) DO UPDATE SET n = doc_counts.n + delta $$
    """,
    _counts_track("doc_counts"),  # counters touched in key order: no deadlock
    """
    CREATE TRIGGER doc_counts_track
        AFTER INSERT OR DELETE OR UPDATE OF pipeline, state, outcome, finished_at ON documents
        FOR EACH ROW EXECUTE FUNCTION doc_counts_track()
    """,
)

# Routing by document type. The counters need nothing new: `doc_counts_key` counts any state
# (an `unrouted` document under the word `unrouted`, on the day `finish` recorded its file kept).
_V2: Sequence[str] = (
    "ALTER TABLE documents ADD COLUMN identified_type TEXT",
    "ALTER TABLE documents ADD COLUMN identification JSON",
    "CREATE INDEX documents_by_type ON documents (pipeline, identified_type)"
    " WHERE identified_type IS NOT NULL",
    "DROP INDEX documents_content_once",
    _content_once(CLAIMING_STATES),
)

# Sources that are not folders: the version (ETag…) taken at intake, for the final action.
_V3: Sequence[str] = ("ALTER TABLE documents ADD COLUMN source_version TEXT",)

# `status`'s table per type without reading `documents`: identified documents per pipeline, type
# code and word (as `doc_counts`'s), kept by triggers in the transaction of every insert, move,
# (re-)identification and delete. A document counts under its current type; a row without one
# has no key and counts nowhere. The WHEN clauses keep documents of pipelines that do not
# identify from calling the function at all.
_V4: Sequence[str] = (
    """
    CREATE TABLE type_counts (
        pipeline         TEXT   NOT NULL,
        identified_type  TEXT   NOT NULL,
        word             TEXT   NOT NULL,
        n                BIGINT NOT NULL,
        PRIMARY KEY (pipeline, identified_type, word)
    )
    """,
    """
    CREATE FUNCTION type_counts_key(d documents) RETURNS TEXT[] LANGUAGE sql STABLE
    AS $$ SELECT CASE WHEN d.identified_type IS NULL THEN NULL ELSE ARRAY[
        d.pipeline,
        d.identified_type,
        CASE WHEN d.state = 'archived' THEN COALESCE(d.outcome, 'success') ELSE d.state END
    ] END $$
    """,
    """
    CREATE FUNCTION type_counts_add(k TEXT[], delta INTEGER) RETURNS void LANGUAGE sql
    SET search_path FROM CURRENT
    AS $$ INSERT INTO type_counts (pipeline, identified_type, word, n)
          VALUES (k[1], k[2], k[3], delta)
          ON CONFLICT (pipeline, identified_type, word) DO UPDATE SET n = type_counts.n + delta $$
    """,
    # In key order, as doc_counts_track (no deadlock between opposite moves); the triggers fire
    # after doc_counts_track (by name), so every transaction locks the counters in one order.
    _counts_track("type_counts"),
    """
    CREATE TRIGGER type_counts_insert AFTER INSERT ON documents
        FOR EACH ROW WHEN (NEW.identified_type IS NOT NULL)
        EXECUTE FUNCTION type_counts_track()
    """,
    """
    CREATE TRIGGER type_counts_delete AFTER DELETE ON documents
        FOR EACH ROW WHEN (OLD.identified_type IS NOT NULL)
        EXECUTE FUNCTION type_counts_track()
    """,
    """
    CREATE TRIGGER type_counts_update
        AFTER UPDATE OF pipeline, state, outcome, identified_type ON documents
        FOR EACH ROW WHEN (OLD.identified_type IS NOT NULL OR NEW.identified_type IS NOT NULL)
        EXECUTE FUNCTION type_counts_track()
    """,
    # After the triggers: CREATE TRIGGER holds a lock that keeps every writer (an older node
    # still running) out until this transaction commits, and this statement's snapshot, taken
    # later (READ COMMITTED), holds every change committed before. Counted once, nothing twice.
    """
    INSERT INTO type_counts (pipeline, identified_type, word, n)
    SELECT pipeline, identified_type,
           CASE WHEN state = 'archived' THEN COALESCE(outcome, 'success') ELSE state END,
           count(*)
    FROM documents WHERE identified_type IS NOT NULL GROUP BY 1, 2, 3
    """,
)

MIGRATIONS: dict[int, Sequence[str]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4}
"""Migration n brings a journal from version n - 1 to n (its statements, in order)."""

assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


def _quoted(conn: AsyncConnection, schema: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(schema)


async def schema_version_of(conn: AsyncConnection, schema: str) -> int:
    """The version recorded in `schema`, 0 when it has no journal yet."""
    table = f"{_quoted(conn, schema)}.schema_version"
    present = await conn.scalar(sa.text("SELECT to_regclass(:t)"), {"t": table})
    if present is None:
        return 0
    found = await conn.scalar(sa.text(f"SELECT version FROM {table} WHERE id = 1"))  # noqa: S608
    return int(found) if found is not None else 0


def refuse_newer(schema: str, version: int) -> None:
    """Raise `NewerSchemaError` for a schema this code does not know."""
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"PostgreSQL schema {schema!r} was written by a newer docutray-watch (journal schema "
            f"{version}; this version reads up to {SCHEMA_VERSION}): run the newer release on "
            "every node"
        )


async def migrate_on(conn: AsyncConnection, schema: str) -> int:
    """Bring `schema` to `SCHEMA_VERSION` inside the caller's (fresh) transaction; returns the
    version found. The advisory lock must be the transaction's first statement: taken later, the
    snapshot of an earlier statement could miss a migration committed meanwhile."""
    await conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(:class, hashtext(:schema))"),
        {"class": _LOCK_CLASS, "schema": schema},
    )
    found = await schema_version_of(conn, schema)
    refuse_newer(schema, found)
    if found == SCHEMA_VERSION:
        return found
    quoted = _quoted(conn, schema)
    await conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
    # Unqualified names in the DDL (and in the trigger functions, `SET search_path FROM CURRENT`)
    # are the schema's; LOCAL: only until this transaction ends.
    await conn.execute(sa.text(f"SET LOCAL search_path TO {quoted}"))
    if found == 0:
        await conn.execute(
            sa.text(
                "CREATE TABLE schema_version (id SMALLINT PRIMARY KEY CHECK (id = 1),"
                " version INTEGER NOT NULL, updated_at DOUBLE PRECISION NOT NULL)"
            )
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version]:
            # exec_driver_sql: the function bodies hold `:=`, which text() would read as binds.
            await conn.exec_driver_sql(statement)
    await conn.execute(
        sa.text(
            "INSERT INTO schema_version (id, version, updated_at) VALUES (1, :v, :t)"
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version,"
            " updated_at = excluded.updated_at"
        ),
        {"v": SCHEMA_VERSION, "t": time.time()},
    )
    return found


async def migrate(url: str, *, schema: str = "docutray") -> int:
    """Create or upgrade the journal's schema in the database at `url`; returns the version it
    had (0: none). Idempotent, and safe from several processes at once (see the module
    docstring). Raises `NewerSchemaError` for a schema newer than this code."""
    engine = make_engine(url, pooled=False)
    try:
        async with engine.begin() as conn:
            return await migrate_on(conn, schema)
    finally:
        await engine.dispose()
