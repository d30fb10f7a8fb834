"""The journal's schema as numbered migrations, run on open.

`PRAGMA user_version` holds the schema version. Opening a journal brings it to `SCHEMA_VERSION`:
an empty file gets every migration; an older journal is first copied next to itself as
`<name>.v<old version>.bak` (a consistent copy through SQLite's backup API, WAL content included),
then migrated in one transaction, so a failure leaves it as it was. A journal newer than this code
is refused untouched (`NewerJournalError`; the commands exit 78).

Versions:

1. documents, steps, deliveries, step_latency (the first release).
2. `meta` (small facts shared with other processes: the `requeued` counter `retry` bumps, the
   request rate and API pause the daemon records for `status`; `value` is untyped), documents'
   `ctime_ns` and `inode` (NULL for rows written before: the checks that use them fall back to
   size and mtime), `doc_counts` kept by triggers (counts for `status`, see `counts.py`, filled
   once from the rows already there), and partial indexes for `status` (failures, superseded
   results) and for start-up (files kept in place).
3. documents' `identified_type` (the type code the service answered for a pipeline that
   identifies) and `identification` (its whole answer, JSON text), both NULL for the others,
   and an index to count documents per identified type for `status`.
4. documents' `source_version` (a source document's ETag… at intake).
5. `type_counts` kept by triggers (identified documents per pipeline, type and word, for
   `status`'s table per type; see `counts.py`), filled once from the rows already there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import structlog

from docutray_watch.journal.sqlite.counts import install_counts, install_type_counts

__all__ = ["SCHEMA_VERSION", "NewerJournalError", "backup_path", "migrate"]

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 5


class NewerJournalError(RuntimeError):
    """The journal was written by a newer docutray-watch; this version does not touch it."""


_V1 = """
CREATE TABLE IF NOT EXISTS documents (
    id            INTEGER PRIMARY KEY,
    pipeline      TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    relative_path TEXT    NOT NULL,
    size          INTEGER,
    mtime_ns      INTEGER,
    sha256        TEXT,
    content_type  TEXT,
    state         TEXT    NOT NULL,
    outcome       TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    error_stage   TEXT,
    error_detail  TEXT,
    flags         TEXT    NOT NULL DEFAULT '',
    duplicate_of  INTEGER,
    archive_to    TEXT,
    archived_to   TEXT,
    created_at    REAL    NOT NULL,
    updated_at    REAL    NOT NULL,
    finished_at   REAL
);
CREATE INDEX IF NOT EXISTS documents_by_path ON documents (pipeline, path);
CREATE INDEX IF NOT EXISTS documents_by_sha ON documents (pipeline, sha256);
CREATE INDEX IF NOT EXISTS documents_unfinished ON documents (finished_at)
    WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS documents_finished ON documents (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS steps (
    id             INTEGER PRIMARY KEY,
    document_id    INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    step_id        TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    execution_id   TEXT,
    status         TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    uncertain      INTEGER NOT NULL DEFAULT 0,
    first_try_at   REAL,
    submitted_at   REAL,
    completed_at   REAL,
    result         TEXT,
    error          TEXT,
    http_status    INTEGER,
    UNIQUE (document_id, step_id)
);
CREATE INDEX IF NOT EXISTS steps_by_execution ON steps (execution_id);

CREATE TABLE IF NOT EXISTS deliveries (
    id            INTEGER PRIMARY KEY,
    step_row      INTEGER NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
    document_id   INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    sink          TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,
    error         TEXT,
    delivered_at  REAL,
    UNIQUE (step_row, sink)
);

CREATE TABLE IF NOT EXISTS step_latency (
    step_id     TEXT    NOT NULL,
    size_class  INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    mean        REAL    NOT NULL,
    variance    REAL    NOT NULL,
    PRIMARY KEY (step_id, size_class)
);
"""


def _to_v1(conn: sqlite3.Connection) -> None:
    _run_script(conn, _V1)


def _to_v2(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS meta (
            key         TEXT    PRIMARY KEY,
            value               NOT NULL,
            updated_at  REAL    NOT NULL
        );
        CREATE INDEX IF NOT EXISTS documents_failures ON documents (updated_at, id)
            WHERE state IN ('failed', 'rejected');
        CREATE INDEX IF NOT EXISTS documents_failures_by_pipeline
            ON documents (pipeline, updated_at, id) WHERE state IN ('failed', 'rejected');
        CREATE INDEX IF NOT EXISTS deliveries_superseded ON deliveries (document_id)
            WHERE state = 'superseded';
        CREATE INDEX IF NOT EXISTS documents_kept ON documents (pipeline, path, id, size, mtime_ns)
            WHERE archived_to = path
        """,
    )
    install_counts(conn)
    # Development builds of version 2 may have added the columns already: add what is missing.
    present = {row[1] for row in conn.execute("PRAGMA table_info(documents)")}
    for name in ("ctime_ns", "inode"):
        if name not in present:
            conn.execute(f"ALTER TABLE documents ADD COLUMN {name} INTEGER")


def _to_v3(conn: sqlite3.Connection) -> None:
    present = {row[1] for row in conn.execute("PRAGMA table_info(documents)")}
    for name in ("identified_type", "identification"):
        if name not in present:
            conn.execute(f"ALTER TABLE documents ADD COLUMN {name} TEXT")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS documents_by_type ON documents (pipeline, identified_type)"
        " WHERE identified_type IS NOT NULL"
    )


def _to_v4(conn: sqlite3.Connection) -> None:
    # Sources that are not folders: the version (ETag…) taken at intake, for the final action.
    present = {row[1] for row in conn.execute("PRAGMA table_info(documents)")}
    if "source_version" not in present:
        conn.execute("ALTER TABLE documents ADD COLUMN source_version TEXT")


def _to_v5(conn: sqlite3.Connection) -> None:
    install_type_counts(conn)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _to_v1,
    2: _to_v2,
    3: _to_v3,
    4: _to_v4,
    5: _to_v5,
}
"""Migration n brings a journal from version n - 1 to n."""

assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # Statement by statement: `executescript` would commit the open transaction.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def backup_path(path: Path, version: int) -> Path:
    """Where the copy of a journal of `version` goes before it is migrated."""
    return path.with_name(f"{path.name}.v{version}.bak")


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _refuse_newer(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise NewerJournalError(
            f"{path} was written by a newer docutray-watch (journal schema {version}; this "
            f"version reads up to {SCHEMA_VERSION}): run the newer release, or move the journal "
            "away to start afresh"
        )


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the journal open on `conn` (autocommit mode) to `SCHEMA_VERSION`; returns the
    version it had. Raises `NewerJournalError` for a journal newer than this code."""
    version = _version(conn)
    _refuse_newer(path, version)
    if version == SCHEMA_VERSION:
        return version
    backup: Path | None = None
    if version > 0:
        # Before any change: the copy is what to go back to with the previous release.
        backup = backup_path(path, version)
        target = sqlite3.connect(backup)
        try:
            conn.backup(target)
        finally:
            target.close()
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _version(conn)  # another process may have migrated it meanwhile
        _refuse_newer(path, found)
        for step in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[step](conn)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    if backup is not None:
        log.info(
            "journal_migrated",
            path=str(path),
            from_version=version,
            to_version=SCHEMA_VERSION,
            backup=str(backup),
        )
    return version
