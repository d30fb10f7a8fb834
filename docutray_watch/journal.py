"""The journal: a SQLite database that is the single source of truth about every document.

Durability: WAL mode with `synchronous=FULL` (a committed transaction survives power loss once
`COMMIT` returns), every write in `BEGIN IMMEDIATE` (the write lock is taken up front, so a
transaction never fails half-way on a lock upgrade), and one writer thread (`AsyncJournal`). Every
state change is committed *before* the side effect that depends on it can be seen as done: the
intent to submit is journaled before the POST, the execution id in the same transaction that moves
the step to `polling`, a delivery is marked done only after the sink returned.

Document states (`TRANSITIONS` is the whole machine; anything else raises `InvalidTransition`)::

    discovered ─► queued ─► submitting ─► polling ─► completed ─► delivered ─► archived
        │            │            └──────────────────────┘   └──► failed ─┐      ▲
        │            └─► rejected (vanished / changed / unreadable)        │      │
        ├─► rejected (unsupported, empty, too large, unreadable)           │      │
        └─► duplicate ────────────────────────────────────────────────────┼──────┘
                                         failed / rejected / archived ───► queued  (retry)

A document whose file changed while it was processed (found by the checks before delivery and
before the final action) ends `superseded` (from completed, delivered, duplicate, failed or
rejected; nothing is moved, its delivered results are marked `superseded`) and the file is taken
again as a new document; with `on_change: fail` it goes to `failed` instead (also from delivered).

`failed` and `rejected` documents get their on_failure action; `finished_at` records that the
final file action (move/delete/keep + sidecar) is done, for every end state.

Step states (one row per document and step ID): pending → submitting → polling →
success | error | failed; a submission that provably never reached the service goes back to
pending. `uncertain` counts submissions whose outcome is unknown (a crash or an ambiguous network
failure while submitting): one such submission may be repeated, never two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "DOCUMENT_STATES",
    "END_STATES",
    "TRANSITIONS",
    "AsyncJournal",
    "DeliveryRow",
    "DocumentRow",
    "InvalidTransition",
    "Journal",
    "NewDocument",
    "PruneCandidate",
    "StepRow",
]

T = TypeVar("T")

# 2 added `meta` (the `requeued` counter, the request rate) and the documents' `ctime_ns`
# and `inode`; opening a version-1 journal adds them.
SCHEMA_VERSION = 2
REQUEUED_KEY = "requeued"

TRANSITIONS: dict[str, frozenset[str]] = {
    "discovered": frozenset({"queued", "rejected", "duplicate"}),
    "queued": frozenset({"submitting", "rejected", "discovered"}),
    "submitting": frozenset({"polling", "completed", "queued"}),
    "polling": frozenset({"completed"}),
    "completed": frozenset({"delivered", "failed", "superseded"}),
    "delivered": frozenset({"archived", "failed", "superseded"}),
    "duplicate": frozenset({"archived", "superseded"}),
    "archived": frozenset({"queued"}),
    "failed": frozenset({"queued", "superseded"}),
    "rejected": frozenset({"queued", "discovered", "superseded"}),
    # The file changed while it was processed: this version's results are not (or no longer)
    # what the file holds, and the file was taken again as a new document.
    "superseded": frozenset(),
}
DOCUMENT_STATES = tuple(TRANSITIONS)
END_STATES = frozenset({"archived", "failed", "rejected", "superseded"})
STEP_END_STATES = frozenset({"success", "error", "failed"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id            INTEGER PRIMARY KEY,
    pipeline      TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    relative_path TEXT    NOT NULL,
    size          INTEGER,
    mtime_ns      INTEGER,
    ctime_ns      INTEGER,
    inode         INTEGER,
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

-- Small facts shared with other processes: `requeued`, a counter `retry` bumps for the daemon to
-- notice, and the request rate the daemon last used (JSON, for `status`). `value` has no type:
-- a counter stays an integer, the rate is text. (No semicolons here: the schema is split on them.)
CREATE TABLE IF NOT EXISTS meta (
    key         TEXT    PRIMARY KEY,
    value               NOT NULL,
    updated_at  REAL    NOT NULL
);
"""


# Objects that keep reports and start-up fast however long the history is: per-(pipeline,
# state, outcome) document counts kept by triggers (every writer keeps them right: the daemon,
# `retry`, `prune`), and partial indexes for the queries `status` and start-up make. Created, and
# the counts filled from the rows already there, by `ensure_history_objects` (idempotent).
# `outcome` is '' for NULL (a primary key column). A tuple: trigger bodies contain semicolons.
_HISTORY_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS document_counts (
        pipeline TEXT    NOT NULL,
        state    TEXT    NOT NULL,
        outcome  TEXT    NOT NULL,
        n        INTEGER NOT NULL,
        PRIMARY KEY (pipeline, state, outcome)
    ) WITHOUT ROWID""",
    """CREATE TRIGGER IF NOT EXISTS document_counts_insert AFTER INSERT ON documents BEGIN
        INSERT INTO document_counts (pipeline, state, outcome, n)
        VALUES (NEW.pipeline, NEW.state, COALESCE(NEW.outcome, ''), 1)
        ON CONFLICT (pipeline, state, outcome) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS document_counts_update
    AFTER UPDATE OF pipeline, state, outcome ON documents
    WHEN OLD.pipeline IS NOT NEW.pipeline OR OLD.state IS NOT NEW.state
        OR OLD.outcome IS NOT NEW.outcome
    BEGIN
        UPDATE document_counts SET n = n - 1 WHERE pipeline = OLD.pipeline
            AND state = OLD.state AND outcome = COALESCE(OLD.outcome, '');
        INSERT INTO document_counts (pipeline, state, outcome, n)
        VALUES (NEW.pipeline, NEW.state, COALESCE(NEW.outcome, ''), 1)
        ON CONFLICT (pipeline, state, outcome) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS document_counts_delete AFTER DELETE ON documents BEGIN
        UPDATE document_counts SET n = n - 1 WHERE pipeline = OLD.pipeline
            AND state = OLD.state AND outcome = COALESCE(OLD.outcome, '');
    END""",
    # `recent_failures`: the newest failed/rejected rows without reading the others.
    """CREATE INDEX IF NOT EXISTS documents_failures ON documents (updated_at, id)
        WHERE state IN ('failed', 'rejected')""",
    """CREATE INDEX IF NOT EXISTS documents_failures_by_pipeline
        ON documents (pipeline, updated_at, id) WHERE state IN ('failed', 'rejected')""",
    # `superseded_results`: only the (rare) superseded deliveries.
    """CREATE INDEX IF NOT EXISTS deliveries_superseded ON deliveries (document_id)
        WHERE state = 'superseded'""",
    # `kept_stamps`: only the rows of files kept where they were found (few among many).
    """CREATE INDEX IF NOT EXISTS documents_kept ON documents (pipeline, path, id, size, mtime_ns)
        WHERE archived_to = path""",
)


def ensure_history_objects(conn: sqlite3.Connection) -> None:
    """Create the `_HISTORY_SCHEMA` objects; fill `document_counts` when it is new. Idempotent.

    Run inside a write transaction, so no document can change between the fill and the
    triggers taking over.
    """
    new = (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'document_counts'"
        ).fetchone()
        is None
    )
    for statement in _HISTORY_SCHEMA:
        conn.execute(statement)
    if new:
        conn.execute(
            "INSERT INTO document_counts (pipeline, state, outcome, n)"
            " SELECT pipeline, state, COALESCE(outcome, ''), COUNT(*) FROM documents"
            " GROUP BY pipeline, state, COALESCE(outcome, '')"
        )


# Columns added after schema 1, with their types: an older journal gets them on open (its rows
# keep NULL there, and the checks that use them fall back to size and mtime).
_ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "documents": {"ctime_ns": "INTEGER", "inode": "INTEGER"},
}

_INSERT_PENDING_STEP = (
    "INSERT OR IGNORE INTO steps (document_id, step_id, state) VALUES (?, ?, 'pending')"
)


class InvalidTransition(RuntimeError):
    """A state change that the state machine does not allow (a bug, never a user error)."""


@dataclass(frozen=True)
class DocumentRow:
    """A row of `documents`."""

    id: int
    pipeline: str
    path: str
    relative_path: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    content_type: str | None
    state: str
    outcome: str | None
    attempts: int
    error: str | None
    error_stage: str | None
    error_detail: dict[str, Any] | None
    flags: frozenset[str]
    duplicate_of: int | None
    archive_to: str | None
    archived_to: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    ctime_ns: int | None = None
    inode: int | None = None

    @property
    def name(self) -> str:
        """The file name."""
        return self.relative_path.rsplit("/", 1)[-1]

    @property
    def finished(self) -> bool:
        """True once the final file action is done."""
        return self.finished_at is not None


@dataclass(frozen=True)
class StepRow:
    """A row of `steps`: one step ID on one document."""

    id: int
    document_id: int
    step_id: str
    state: str
    execution_id: str | None
    status: str | None
    attempts: int
    uncertain: int
    first_try_at: float | None
    submitted_at: float | None
    completed_at: float | None
    result: dict[str, Any] | None
    error: str | None
    http_status: int | None

    @property
    def finished(self) -> bool:
        """True in success, error or failed."""
        return self.state in STEP_END_STATES


@dataclass(frozen=True)
class DeliveryRow:
    """A row of `deliveries`: one result to one sink."""

    id: int
    step_row: int
    document_id: int
    sink: str
    state: str
    attempts: int
    receipt: str | None
    error: str | None
    delivered_at: float | None


def _json_or_none(text: str | None) -> Any:
    return json.loads(text) if text else None


def _document(row: sqlite3.Row) -> DocumentRow:
    return DocumentRow(
        id=row["id"],
        pipeline=row["pipeline"],
        path=row["path"],
        relative_path=row["relative_path"],
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        sha256=row["sha256"],
        content_type=row["content_type"],
        state=row["state"],
        outcome=row["outcome"],
        attempts=row["attempts"],
        error=row["error"],
        error_stage=row["error_stage"],
        error_detail=_json_or_none(row["error_detail"]),
        flags=frozenset(f for f in row["flags"].split(",") if f),
        duplicate_of=row["duplicate_of"],
        archive_to=row["archive_to"],
        archived_to=row["archived_to"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        ctime_ns=row["ctime_ns"],
        inode=row["inode"],
    )


def _step(row: sqlite3.Row) -> StepRow:
    return StepRow(
        id=row["id"],
        document_id=row["document_id"],
        step_id=row["step_id"],
        state=row["state"],
        execution_id=row["execution_id"],
        status=row["status"],
        attempts=row["attempts"],
        uncertain=row["uncertain"],
        first_try_at=row["first_try_at"],
        submitted_at=row["submitted_at"],
        completed_at=row["completed_at"],
        result=_json_or_none(row["result"]),
        error=row["error"],
        http_status=row["http_status"],
    )


def _delivery(row: sqlite3.Row) -> DeliveryRow:
    return DeliveryRow(
        id=row["id"],
        step_row=row["step_row"],
        document_id=row["document_id"],
        sink=row["sink"],
        state=row["state"],
        attempts=row["attempts"],
        receipt=row["receipt"],
        error=row["error"],
        delivered_at=row["delivered_at"],
    )


@dataclass(frozen=True)
class Completion:
    """What delivering a document needs: the document, its step rows and its delivery rows."""

    document: DocumentRow
    steps: list[StepRow]
    deliveries: list[DeliveryRow]


@dataclass(frozen=True)
class PruneCandidate:
    """A finished document old enough to be forgotten (see `docutray_watch.retention`)."""

    id: int
    pipeline: str
    path: str
    kept_latest: bool  # the newest row of a file kept where it was found


class Journal:
    """Synchronous access to the journal; each public method is one transaction.

    Use it directly from command-line tools (`status`, `retry`); the daemon goes through
    `AsyncJournal`, which runs these methods on one writer thread.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._conn: sqlite3.Connection | None = None

    # -- connection ------------------------------------------------------------------------

    def open(self) -> Journal:
        """Open (creating if needed) the database and its schema."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        self._conn = conn
        with self._write() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer docutray-watch (schema {version})"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            _add_missing_columns(c)
            ensure_history_objects(c)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return self

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Journal:
        return self.open() if self._conn is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection."""
        if self._conn is None:
            raise RuntimeError("the journal is not open")
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        if conn.in_transaction:
            # Nested inside AsyncJournal's group transaction: a savepoint keeps ops separate.
            conn.execute("SAVEPOINT op")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                # else: SQLite already rolled back the whole transaction (disk full, I/O error);
                # the batch sees that and fails every call in it.
                raise
            conn.execute("RELEASE op")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def integrity_check(self) -> str:
        """`PRAGMA integrity_check` — "ok" when the database is sound."""
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    # -- documents ---------------------------------------------------------------------------

    def _set_state(
        self, conn: sqlite3.Connection, doc_id: int, new: str, **columns: Any
    ) -> DocumentRow:
        row = conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            raise KeyError(f"document {doc_id} is not in the journal")
        current = row["state"]
        if new != current and new not in TRANSITIONS[current]:
            raise InvalidTransition(f"document {doc_id}: {current} → {new} is not allowed")
        columns["state"] = new
        columns["updated_at"] = self._clock()
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(
            f"UPDATE documents SET {assignments} WHERE id = ?",  # noqa: S608 - fixed column names
            (*columns.values(), doc_id),
        )
        return _document(conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone())

    def add_document(
        self,
        pipeline: str,
        path: str,
        relative_path: str,
        size: int,
        mtime_ns: int,
        *,
        ctime_ns: int | None = None,
        inode: int | None = None,
    ) -> DocumentRow:
        """Record a newly found file as `discovered`."""
        now = self._clock()
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO documents (pipeline, path, relative_path, size, mtime_ns, ctime_ns,"
                " inode, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'discovered', ?, ?)",
                (pipeline, path, relative_path, size, mtime_ns, ctime_ns, inode, now, now),
            )
            doc_id = cursor.lastrowid
            assert doc_id is not None
            return _document(
                conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
            )

    def mark_queued(
        self,
        doc_id: int,
        *,
        sha256: str,
        content_type: str,
        size: int,
        mtime_ns: int,
        steps: Sequence[str],
        ctime_ns: int | None = None,
        inode: int | None = None,
    ) -> tuple[DocumentRow, list[StepRow]]:
        """A hashed, checked document waits for submission; one pending row per step.

        Returns the document and all its step rows (the engine submits them without asking).
        """
        with self._write() as conn:
            row = self._set_state(
                conn,
                doc_id,
                "queued",
                sha256=sha256,
                content_type=content_type,
                size=size,
                mtime_ns=mtime_ns,
                ctime_ns=ctime_ns,
                inode=inode,
                attempts=1,
            )
            conn.executemany(
                _INSERT_PENDING_STEP,
                [(doc_id, step) for step in steps],
            )
            return row, self.steps_of(doc_id)

    def add_queued(
        self,
        pipeline: str,
        path: str,
        relative_path: str,
        *,
        sha256: str,
        content_type: str,
        size: int,
        mtime_ns: int,
        steps: Sequence[str],
        ctime_ns: int | None = None,
        inode: int | None = None,
    ) -> tuple[DocumentRow, list[StepRow]]:
        """`add_document` and `mark_queued` in one transaction: a file hashed and checked before
        it was journaled (the engine's usual path: one commit instead of two)."""
        with self._write():
            doc = self.add_document(pipeline, path, relative_path, size, mtime_ns)
            return self.mark_queued(
                doc.id,
                sha256=sha256,
                content_type=content_type,
                size=size,
                mtime_ns=mtime_ns,
                steps=steps,
                ctime_ns=ctime_ns,
                inode=inode,
            )

    def ensure_steps(self, doc_id: int, steps: Sequence[str]) -> list[StepRow]:
        """Add a pending row for each configured step the document has no row for (after a
        retry, or when a step was added to the pipeline); returns all its step rows."""
        with self._write() as conn:
            conn.executemany(
                _INSERT_PENDING_STEP,
                [(doc_id, step) for step in steps],
            )
            # A retried document whose steps all ended (it failed only in delivery) goes on to
            # `completed`, so its deliveries can run and it can become `delivered`.
            state = conn.execute("SELECT state FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if state is not None and state[0] in ("queued", "submitting", "polling"):
                self._advance_document(conn, doc_id)
            return self.steps_of(doc_id)

    def mark_rediscovered(self, doc_id: int) -> DocumentRow:
        """The file changed before submission: hash it again."""
        with self._write() as conn:
            conn.execute("DELETE FROM steps WHERE document_id = ? AND state = 'pending'", (doc_id,))
            return self._set_state(conn, doc_id, "discovered")

    def reject(
        self,
        doc_id: int,
        reason: str,
        *,
        stage: str = "intake",
        detail: dict[str, Any] | None = None,
        sha256: str | None = None,
        content_type: str | None = None,
    ) -> DocumentRow:
        """The document will not be submitted (unsupported, empty, too large, vanished…)."""
        columns: dict[str, Any] = {}
        if sha256 is not None:
            columns.update(sha256=sha256, content_type=content_type)
        with self._write() as conn:
            return self._set_state(
                conn,
                doc_id,
                "rejected",
                outcome="rejected",
                error=reason,
                error_stage=stage,
                error_detail=json.dumps(detail) if detail else None,
                **columns,
            )

    def mark_duplicate(
        self, doc_id: int, *, sha256: str, content_type: str, of: int
    ) -> DocumentRow:
        """Same content as a document already processed: no submission."""
        with self._write() as conn:
            return self._set_state(
                conn,
                doc_id,
                "duplicate",
                sha256=sha256,
                content_type=content_type,
                duplicate_of=of,
                outcome="duplicate",
            )

    def add_flag(self, doc_id: int, flag: str) -> None:
        """Attach a marker (e.g. `resubmitted`) to a document."""
        with self._write() as conn:
            row = conn.execute("SELECT flags FROM documents WHERE id = ?", (doc_id,)).fetchone()
            flags = {f for f in row["flags"].split(",") if f} | {flag}
            conn.execute(
                "UPDATE documents SET flags = ? WHERE id = ?", (",".join(sorted(flags)), doc_id)
            )

    def document(self, doc_id: int) -> DocumentRow:
        """One document by id."""
        row = self.conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            raise KeyError(doc_id)
        return _document(row)

    def unfinished_documents(self) -> list[DocumentRow]:
        """Every document whose final file action is not done yet, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM documents WHERE finished_at IS NULL ORDER BY id"
        ).fetchall()
        return [_document(r) for r in rows]

    def latest_by_path(self, pipeline: str) -> dict[str, DocumentRow]:
        """The most recent document for each path a folder scan must know about.

        That is unfinished documents, and finished ones whose file was kept where it was found
        (`archived_to` is its own path): a moved or deleted file left its path free, so months of
        history do not have to sit in memory.
        """
        rows = self.conn.execute(
            "SELECT * FROM documents WHERE id IN"
            " (SELECT MAX(id) FROM documents WHERE pipeline = ?"
            "  AND (finished_at IS NULL OR archived_to = path) GROUP BY path)",
            (pipeline,),
        ).fetchall()
        return {r["path"]: _document(r) for r in rows}

    def find_done_by_sha(self, pipeline: str, sha256: str, *, exclude: int) -> DocumentRow | None:
        """A document of this pipeline with the same content whose results were delivered."""
        row = self.conn.execute(
            "SELECT * FROM documents WHERE pipeline = ? AND sha256 = ? AND id != ?"
            " AND state IN ('delivered', 'archived') AND outcome IS NOT 'duplicate'"
            " ORDER BY id LIMIT 1",
            (pipeline, sha256, exclude),
        ).fetchone()
        return _document(row) if row else None

    # -- steps -------------------------------------------------------------------------------

    def steps_of(self, doc_id: int) -> list[StepRow]:
        """The step rows of a document."""
        rows = self.conn.execute(
            "SELECT * FROM steps WHERE document_id = ? ORDER BY id", (doc_id,)
        ).fetchall()
        return [_step(r) for r in rows]

    def step(self, step_row: int) -> StepRow:
        """One step row."""
        return _step(self.conn.execute("SELECT * FROM steps WHERE id = ?", (step_row,)).fetchone())

    def _update_step(self, conn: sqlite3.Connection, step_row: int, **columns: Any) -> StepRow:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(
            f"UPDATE steps SET {assignments} WHERE id = ?",  # noqa: S608 - fixed column names
            (*columns.values(), step_row),
        )
        return _step(conn.execute("SELECT * FROM steps WHERE id = ?", (step_row,)).fetchone())

    def step_submitting(self, step_row: int) -> StepRow:
        """Journal the intent to submit *before* the POST (so a crash is noticed on restart)."""
        now = self._clock()
        with self._write() as conn:
            step = _step(conn.execute("SELECT * FROM steps WHERE id = ?", (step_row,)).fetchone())
            if step.state not in ("pending", "submitting"):
                raise InvalidTransition(f"step {step_row}: {step.state} → submitting")
            doc = _document(
                conn.execute("SELECT * FROM documents WHERE id = ?", (step.document_id,)).fetchone()
            )
            if doc.state == "queued":
                self._set_state(conn, doc.id, "submitting")
            return self._update_step(
                conn,
                step_row,
                state="submitting",
                attempts=step.attempts + 1,
                first_try_at=step.first_try_at or now,
            )

    def step_accepted(self, step_row: int, execution_id: str, status: str) -> StepRow:
        """The service accepted the submission: store its execution id and start polling."""
        with self._write() as conn:
            step = self._update_step(
                conn,
                step_row,
                state="polling",
                execution_id=execution_id,
                status=status,
                submitted_at=self._clock(),
            )
            self._advance_document(conn, step.document_id)
            return step

    def step_not_accepted(self, step_row: int, error: str) -> StepRow:
        """The submission provably never reached the service: it can be tried again freely."""
        with self._write() as conn:
            return self._update_step(conn, step_row, state="pending", error=error)

    def step_uncertain(self, step_row: int, error: str) -> StepRow:
        """A submission may or may not have started an execution; count it."""
        with self._write() as conn:
            step = _step(conn.execute("SELECT * FROM steps WHERE id = ?", (step_row,)).fetchone())
            step = self._update_step(
                conn, step_row, state="submitting", uncertain=step.uncertain + 1, error=error
            )
            row = conn.execute(
                "SELECT flags FROM documents WHERE id = ?", (step.document_id,)
            ).fetchone()
            flags = {f for f in row["flags"].split(",") if f} | {"resubmitted"}
            conn.execute(
                "UPDATE documents SET flags = ? WHERE id = ?",
                (",".join(sorted(flags)), step.document_id),
            )
            return step

    def step_status(self, step_row: int, status: str) -> None:
        """Remember the last non-final status seen while polling (no transition)."""
        with self._write() as conn:
            conn.execute("UPDATE steps SET status = ? WHERE id = ?", (status, step_row))

    def step_finished(
        self,
        step_row: int,
        *,
        state: str,
        status: str | None = None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        http_status: int | None = None,
        sinks: Iterable[str] = (),
    ) -> tuple[StepRow, bool]:
        """A step reached its end; create its delivery rows. Returns (step, document completed?)."""
        if state not in STEP_END_STATES:
            raise InvalidTransition(f"step {step_row}: {state} is not an end state")
        with self._write() as conn:
            step = self._update_step(
                conn,
                step_row,
                state=state,
                status=status,
                completed_at=self._clock(),
                result=json.dumps(result) if result is not None else None,
                error=error,
                http_status=http_status,
            )
            conn.executemany(
                "INSERT OR IGNORE INTO deliveries (step_row, document_id, sink, state)"
                " VALUES (?, ?, ?, 'pending')",
                [(step_row, step.document_id, sink) for sink in sinks],
            )
            completed = self._advance_document(conn, step.document_id)
            return step, completed

    def _advance_document(self, conn: sqlite3.Connection, doc_id: int) -> bool:
        """Move the document along with its steps; True when it just became `completed`."""
        states = [
            r["state"]
            for r in conn.execute("SELECT state FROM steps WHERE document_id = ?", (doc_id,))
        ]
        doc_state = conn.execute("SELECT state FROM documents WHERE id = ?", (doc_id,)).fetchone()[
            0
        ]
        if states and all(s in STEP_END_STATES for s in states):
            if doc_state == "queued":
                self._set_state(conn, doc_id, "submitting")
            if doc_state != "completed":
                self._set_state(conn, doc_id, "completed")
                return True
            return False
        all_submitted = all(s in STEP_END_STATES or s == "polling" for s in states)
        if states and all_submitted and doc_state in ("queued", "submitting"):
            if doc_state == "queued":
                self._set_state(conn, doc_id, "submitting")
            self._set_state(conn, doc_id, "polling")
        return False

    def steps_in(self, *states: str) -> list[StepRow]:
        """Step rows in any of the given states, of unfinished documents."""
        marks = ",".join("?" for _ in states)
        rows = self.conn.execute(
            f"SELECT s.* FROM steps s JOIN documents d ON d.id = s.document_id"  # noqa: S608
            f" WHERE s.state IN ({marks}) AND d.finished_at IS NULL ORDER BY s.id",
            states,
        ).fetchall()
        return [_step(r) for r in rows]

    # -- deliveries --------------------------------------------------------------------------

    def completion(self, doc_id: int) -> Completion:
        """A document whose steps have ended, with its steps and deliveries: one read."""
        return Completion(self.document(doc_id), self.steps_of(doc_id), self.deliveries_of(doc_id))

    def deliveries_of(self, doc_id: int) -> list[DeliveryRow]:
        """The delivery rows of a document."""
        rows = self.conn.execute(
            "SELECT * FROM deliveries WHERE document_id = ? ORDER BY id", (doc_id,)
        ).fetchall()
        return [_delivery(r) for r in rows]

    def delivery_done(self, delivery_id: int, receipt: str | None) -> None:
        """The sink stored the record."""
        with self._write() as conn:
            conn.execute(
                "UPDATE deliveries SET state = 'delivered', receipt = ?, delivered_at = ?,"
                " attempts = attempts + 1, error = NULL WHERE id = ?",
                (receipt, self._clock(), delivery_id),
            )

    def delivery_attempt_failed(self, delivery_id: int, error: str, *, final: bool) -> None:
        """A delivery attempt failed; `final` when the engine gives up on it."""
        with self._write() as conn:
            conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, error = ?, state = ? WHERE id = ?",
                (error, "failed" if final else "pending", delivery_id),
            )

    def delivery_gave_up(self, delivery_id: int, error: str) -> None:
        """The engine gave up on a delivery; its failed attempts are already counted."""
        with self._write() as conn:
            conn.execute(
                "UPDATE deliveries SET error = ?, state = 'failed' WHERE id = ?",
                (error, delivery_id),
            )

    # -- ends --------------------------------------------------------------------------------

    def mark_delivered(self, doc_id: int) -> DocumentRow:
        """Every result reached every sink."""
        with self._write() as conn:
            return self._set_state(conn, doc_id, "delivered", outcome="success")

    def mark_failed(
        self, doc_id: int, reason: str, *, stage: str, detail: dict[str, Any] | None = None
    ) -> DocumentRow:
        """The document failed (an ERROR result, a timeout, a rejected submission, a sink)."""
        with self._write() as conn:
            return self._set_state(
                conn,
                doc_id,
                "failed",
                outcome="failed",
                error=reason,
                error_stage=stage,
                error_detail=json.dumps(detail) if detail else None,
            )

    def archive_intent(self, doc_id: int, destination: str | None) -> None:
        """Journal where the file is about to go, before moving it (crash-safe moves)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE documents SET archive_to = ?, updated_at = ? WHERE id = ?",
                (destination, self._clock(), doc_id),
            )

    def deliver_and_finish(self, doc_id: int, archived_to: str | None) -> DocumentRow:
        """`mark_delivered` and `finish` in one transaction, for a file with no action left
        between them (it is kept where it was found)."""
        with self._write() as conn:
            self._set_state(conn, doc_id, "delivered", outcome="success")
            return self._set_state(
                conn,
                doc_id,
                "archived",
                archived_to=archived_to,
                archive_to=None,
                finished_at=self._clock(),
            )

    def finish(self, doc_id: int, archived_to: str | None) -> DocumentRow:
        """The final file action is done; a delivered or duplicate document becomes archived."""
        with self._write() as conn:
            state = conn.execute("SELECT state FROM documents WHERE id = ?", (doc_id,)).fetchone()[
                0
            ]
            new_state = "archived" if state in ("delivered", "duplicate") else state
            if state not in ("delivered", "duplicate", "failed", "rejected", "archived"):
                raise InvalidTransition(f"document {doc_id}: cannot finish in state {state}")
            return self._set_state(
                conn,
                doc_id,
                new_state,
                archived_to=archived_to,
                archive_to=None,
                finished_at=self._clock(),
            )

    # -- a file that changed while it was processed ------------------------------------------

    def refresh_identity(self, doc_id: int, *, mtime_ns: int, ctime_ns: int, inode: int) -> None:
        """The file's metadata changed but its bytes are the ones hashed (e.g. a chmod, or the
        same content renamed over it): remember the new facts so the next check is one lstat."""
        with self._write() as conn:
            conn.execute(
                "UPDATE documents SET mtime_ns = ?, ctime_ns = ?, inode = ? WHERE id = ?",
                (mtime_ns, ctime_ns, inode, doc_id),
            )

    def supersede(self, doc_id: int, reason: str) -> tuple[DocumentRow, int]:
        """The file changed while this version was processed and is taken again as a new
        document: finish this one as `superseded` (nothing moved) and mark its results.

        Results already delivered become `superseded` (they describe bytes the file no longer
        holds), undelivered ones `dropped` (never delivered). Returns the document and how many
        delivered results were superseded.
        """
        with self._write() as conn:
            superseded = conn.execute(
                "UPDATE deliveries SET state = 'superseded' WHERE document_id = ?"
                " AND state = 'delivered'",
                (doc_id,),
            ).rowcount
            conn.execute(
                "UPDATE deliveries SET state = 'dropped' WHERE document_id = ?"
                " AND state IN ('pending', 'failed')",
                (doc_id,),
            )
            doc = self._set_state(
                conn,
                doc_id,
                "superseded",
                outcome="superseded",
                error=reason,
                error_stage="changed",
                archive_to=None,
                archived_to=None,
                finished_at=self._clock(),
            )
            return doc, superseded

    def fail_changed(self, doc_id: int, reason: str) -> DocumentRow:
        """`on_change: fail`: the file changed while it was processed; results already
        delivered are marked `superseded`, undelivered ones `dropped`, the document fails."""
        with self._write() as conn:
            conn.execute(
                "UPDATE deliveries SET state = 'superseded' WHERE document_id = ?"
                " AND state = 'delivered'",
                (doc_id,),
            )
            conn.execute(
                "UPDATE deliveries SET state = 'dropped' WHERE document_id = ?"
                " AND state IN ('pending', 'failed')",
                (doc_id,),
            )
            return self._set_state(
                conn,
                doc_id,
                "failed",
                outcome="failed",
                error=reason,
                error_stage="changed",
                error_detail=None,
            )

    # -- retry -------------------------------------------------------------------------------

    def requeue(self, doc_id: int, *, force: bool = False) -> DocumentRow:
        """Make a finished document run again.

        A failed document keeps its successful steps and delivered results (nothing is paid for
        twice); only failed or errored steps run again. `force` also re-runs a successfully
        archived document from scratch.
        """
        with self._write() as conn:
            doc = _document(
                conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
            )
            if doc.state == "archived" and not force:
                raise InvalidTransition(f"document {doc_id} succeeded; use --force to run it again")
            if doc.state not in ("archived", "failed", "rejected"):
                raise InvalidTransition(f"document {doc_id} is still in progress ({doc.state})")
            if doc.state == "rejected" or doc.sha256 is None or doc.state == "archived":
                conn.execute("DELETE FROM steps WHERE document_id = ?", (doc_id,))
            else:
                conn.execute(
                    "DELETE FROM steps WHERE document_id = ? AND state IN ('error', 'failed')",
                    (doc_id,),
                )
                conn.execute(
                    "UPDATE deliveries SET state = 'pending', error = NULL"
                    " WHERE document_id = ? AND state = 'failed'",
                    (doc_id,),
                )
            new_state = "discovered" if doc.state == "rejected" or doc.sha256 is None else "queued"
            if doc.state == "archived":
                new_state = "queued"
            # In the same transaction: a daemon that sees the new count also sees the document.
            conn.execute(
                "INSERT INTO meta (key, value, updated_at) VALUES (?, 1, ?) ON CONFLICT (key)"
                " DO UPDATE SET value = value + 1, updated_at = excluded.updated_at",
                (REQUEUED_KEY, self._clock()),
            )
            return self._set_state(
                conn,
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
                flags="",
                duplicate_of=None,
            )

    def requeue_count(self) -> int:
        """How many documents `requeue` has requeued in this journal's life (the daemon polls it
        to pick up what `docutray-watch retry` requeued from another process)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (REQUEUED_KEY,)).fetchone()
        return int(row[0]) if row is not None else 0

    def set_path(self, doc_id: int, path: str) -> None:
        """The source file now lives at `path` (retrying a document from the failed folder)."""
        with self._write() as conn:
            conn.execute("UPDATE documents SET path = ? WHERE id = ?", (path, doc_id))

    # -- retention ---------------------------------------------------------------------------

    def prune_candidates(
        self, finished_before: float, *, after_id: int = 0, limit: int = 500
    ) -> list[PruneCandidate]:
        """Documents that finished before `finished_before`, in id order from `after_id` on."""
        rows = self.conn.execute(
            "SELECT d.id, d.pipeline, d.path, d.archived_to = d.path AS kept,"
            " d.id = (SELECT MAX(x.id) FROM documents x"
            "         WHERE x.pipeline = d.pipeline AND x.path = d.path) AS latest"
            " FROM documents d WHERE d.finished_at IS NOT NULL AND d.finished_at < ?"
            " AND d.id > ? ORDER BY d.id LIMIT ?",
            (finished_before, after_id, limit),
        ).fetchall()
        return [
            PruneCandidate(
                id=r["id"],
                pipeline=r["pipeline"],
                path=r["path"],
                kept_latest=bool(r["kept"]) and bool(r["latest"]),
            )
            for r in rows
        ]

    def forget_documents(self, ids: Sequence[int], finished_before: float) -> int:
        """Delete these documents with their steps and deliveries; returns how many went.

        Only documents still finished before `finished_before` go: one requeued meanwhile (by
        `retry`) is unfinished again and stays.
        """
        if not ids:
            return 0
        marks = ",".join("?" for _ in ids)
        with self._write() as conn:
            cursor = conn.execute(
                f"DELETE FROM documents WHERE id IN ({marks})"  # noqa: S608 - placeholders only
                " AND finished_at IS NOT NULL AND finished_at < ?",
                (*ids, finished_before),
            )
            return cursor.rowcount

    # -- reports -----------------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """Number of documents per pipeline and state."""
        result: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT pipeline, state, COUNT(*) AS n FROM documents GROUP BY pipeline, state"
        ):
            result.setdefault(row["pipeline"], {})[row["state"]] = row["n"]
        return result

    def outcome_counts(self) -> dict[str, dict[str, int]]:
        """Documents per pipeline: finished ones by outcome (`success`, `duplicate`, `failed`,
        `rejected`: the words `process` prints), unfinished ones by state."""
        result: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT pipeline, COUNT(*) AS n,"
            " CASE WHEN state = 'archived' THEN COALESCE(outcome, 'success') ELSE state END AS word"
            " FROM documents GROUP BY pipeline, word"
        ):
            result.setdefault(row["pipeline"], {})[row["word"]] = row["n"]
        return result

    def superseded_results(self) -> dict[str, int]:
        """Delivered results later found to describe an older version of their file, per
        pipeline (see `supersede`)."""
        return {
            row["pipeline"]: row["n"]
            for row in self.conn.execute(
                "SELECT d.pipeline, COUNT(*) AS n FROM deliveries r"
                " JOIN documents d ON d.id = r.document_id"
                " WHERE r.state = 'superseded' GROUP BY d.pipeline"
            )
        }

    def recent_failures(self, limit: int = 10, pipeline: str | None = None) -> list[DocumentRow]:
        """The last failed or rejected documents, newest first."""
        query = "SELECT * FROM documents WHERE state IN ('failed', 'rejected')"
        args: tuple[Any, ...] = ()
        if pipeline is not None:
            query += " AND pipeline = ?"
            args = (pipeline,)
        rows = self.conn.execute(
            query + " ORDER BY updated_at DESC, id DESC LIMIT ?", (*args, limit)
        )
        return [_document(r) for r in rows]

    def documents_in(self, *states: str, pipeline: str | None = None) -> list[DocumentRow]:
        """Documents in any of the given states."""
        marks = ",".join("?" for _ in states)
        query = f"SELECT * FROM documents WHERE state IN ({marks})"  # noqa: S608
        args: tuple[Any, ...] = tuple(states)
        if pipeline is not None:
            query += " AND pipeline = ?"
            args = (*args, pipeline)
        return [_document(r) for r in self.conn.execute(query + " ORDER BY id", args)]

    def find_documents(self, ref: str) -> list[DocumentRow]:
        """Documents whose path (where found or where archived) is `ref`, or whose sha256 is or
        starts with `ref` (6 hex digits at least), oldest first."""
        wanted = os.path.abspath(ref)
        query = "SELECT * FROM documents WHERE path = ? OR archived_to = ?"
        args: tuple[Any, ...] = (wanted, wanted)
        if len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref.lower()):
            query += " OR substr(sha256, 1, ?) = ?"
            args = (*args, len(ref), ref.lower())
        return [_document(r) for r in self.conn.execute(query + " ORDER BY id", args)]

    def oldest_pending(self) -> dict[str, float]:
        """Creation time of the oldest unfinished document, per pipeline."""
        return {
            row["pipeline"]: row["t"]
            for row in self.conn.execute(
                "SELECT pipeline, MIN(created_at) AS t FROM documents"
                " WHERE finished_at IS NULL GROUP BY pipeline"
            )
        }

    # -- facts about the running daemon (key/value) ----------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        """Store `value` under `key` (e.g. the current request rate, for `status`)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key)"
                " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, self._clock()),
            )

    def get_meta(self, key: str) -> tuple[str, float] | None:
        """The value stored under `key` and when it was stored (epoch seconds), or None."""
        row = self.conn.execute(
            "SELECT value, updated_at FROM meta WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (str(row["value"]), float(row["updated_at"]))

    # -- learned latencies --------------------------------------------------------------------

    def load_latencies(self) -> list[tuple[str, int, int, float, float]]:
        """Saved (step_id, size_class, count, mean, variance) rows."""
        return [
            (r["step_id"], r["size_class"], r["count"], r["mean"], r["variance"])
            for r in self.conn.execute("SELECT * FROM step_latency")
        ]

    def save_latencies(self, rows: Iterable[tuple[str, int, int, float, float]]) -> None:
        """Persist learned processing times so a restart polls well from the first document."""
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO step_latency (step_id, size_class, count, mean, variance)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (step_id, size_class) DO UPDATE SET"
                " count = excluded.count, mean = excluded.mean, variance = excluded.variance",
                list(rows),
            )

    # -- fast reports and start-up (history-sized journals) --------------------------------------

    def counted_outcomes(self) -> dict[str, dict[str, int]]:
        """`outcome_counts()` from the counts the triggers keep: no scan of the documents."""
        result: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT pipeline, SUM(n) AS n,"
            " CASE WHEN state = 'archived' THEN COALESCE(NULLIF(outcome, ''), 'success')"
            " ELSE state END AS word"
            " FROM document_counts WHERE n > 0 GROUP BY pipeline, word"
        ):
            result.setdefault(row["pipeline"], {})[row["word"]] = row["n"]
        return result

    def counted_states(self) -> dict[str, dict[str, int]]:
        """`counts()` from the counts the triggers keep: no scan of the documents."""
        result: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT pipeline, state, SUM(n) AS n FROM document_counts WHERE n > 0"
            " GROUP BY pipeline, state"
        ):
            result.setdefault(row["pipeline"], {})[row["state"]] = row["n"]
        return result

    def unfinished_by_path(self, pipeline: str) -> dict[str, DocumentRow]:
        """The newest unfinished document for each path of a pipeline (few: work in hand)."""
        rows = self.conn.execute(
            "SELECT * FROM documents WHERE finished_at IS NULL AND pipeline = ? ORDER BY id",
            (pipeline,),
        )
        return {r["path"]: _document(r) for r in rows}

    def kept_stamps(self, pipeline: str) -> dict[str, int]:
        """Each path whose file was kept where it was found, with `kept_stamp(size, mtime_ns)`
        of its newest kept document: all a folder scan needs to leave the file alone."""
        stamps: dict[str, int] = {}
        # In the index's order (path, then id): the newest row of a path comes last and stays.
        for path, size, mtime_ns in self.conn.execute(
            "SELECT path, size, mtime_ns FROM documents"
            " WHERE pipeline = ? AND archived_to = path ORDER BY path, id",
            (pipeline,),
        ):
            stamps[path] = kept_stamp(size, mtime_ns)
        return stamps

    def add_queued_batch(self, items: Sequence[NewDocument]) -> list[Queued | None]:
        """Many hashed, checked files journaled `queued` in one transaction (a backlog taken in:
        one commit for many files). None for an item whose `skip_if_done` found a document of
        the same content already delivered (`find_done_by_sha`: one index lookup); the engine
        journals that one on its own, as a duplicate."""
        now = self._clock()
        out: list[Queued | None] = []
        with self._write() as conn:
            for item in items:
                if item.skip_if_done and self.find_done_by_sha(
                    item.pipeline, item.sha256, exclude=0
                ):
                    out.append(None)
                    continue
                cursor = conn.execute(
                    "INSERT INTO documents (pipeline, path, relative_path, size, mtime_ns,"
                    " ctime_ns, inode, sha256, content_type, state, attempts, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 1, ?, ?)",
                    (
                        item.pipeline,
                        item.path,
                        item.relative_path,
                        item.size,
                        item.mtime_ns,
                        item.ctime_ns,
                        item.inode,
                        item.sha256,
                        item.content_type,
                        now,
                        now,
                    ),
                )
                doc_id = cursor.lastrowid
                assert doc_id is not None
                steps = []
                for step_id in dict.fromkeys(item.steps):
                    step_row = conn.execute(_INSERT_PENDING_STEP, (doc_id, step_id)).lastrowid
                    assert step_row is not None
                    steps.append(_pending_step(step_row, doc_id, step_id))
                # The rows as written (no reading back: this is the hot path of a backlog).
                document = DocumentRow(
                    id=doc_id,
                    pipeline=item.pipeline,
                    path=item.path,
                    relative_path=item.relative_path,
                    size=item.size,
                    mtime_ns=item.mtime_ns,
                    sha256=item.sha256,
                    content_type=item.content_type,
                    state="queued",
                    outcome=None,
                    attempts=1,
                    error=None,
                    error_stage=None,
                    error_detail=None,
                    flags=frozenset(),
                    duplicate_of=None,
                    archive_to=None,
                    archived_to=None,
                    created_at=now,
                    updated_at=now,
                    finished_at=None,
                    ctime_ns=item.ctime_ns,
                    inode=item.inode,
                )
                out.append(Queued(document, steps))
        return out


def _pending_step(step_row: int, doc_id: int, step_id: str) -> StepRow:
    return StepRow(
        id=step_row,
        document_id=doc_id,
        step_id=step_id,
        state="pending",
        execution_id=None,
        status=None,
        attempts=0,
        uncertain=0,
        first_try_at=None,
        submitted_at=None,
        completed_at=None,
        result=None,
        error=None,
        http_status=None,
    )


@dataclass(frozen=True)
class NewDocument:
    """A hashed, checked file for `Journal.add_queued_batch`."""

    pipeline: str
    path: str
    relative_path: str
    sha256: str
    content_type: str
    size: int
    mtime_ns: int
    ctime_ns: int | None
    inode: int | None
    steps: Sequence[str]
    skip_if_done: bool  # `duplicates: skip`: not journaled when a delivered twin exists


@dataclass(frozen=True)
class Queued:
    """A document `add_queued_batch` journaled, with its pending step rows."""

    document: DocumentRow
    steps: list[StepRow]


def kept_stamp(size: int | None, mtime_ns: int | None) -> int:
    """(size, mtime_ns) as one exact int: one object per kept file instead of a tuple of three."""
    return ((mtime_ns or 0) << 64) | (size or 0)


class AsyncJournal:
    """Runs `Journal` methods on one dedicated writer thread, with group commit.

    Calls queued while a transaction is being committed are run together in the next one
    (each inside its own savepoint), so many documents share one fsync without weakening what a
    returned call guarantees: it returns only after its changes are committed. The outcomes of a
    batch reach the event loop in one wake-up, not one per call (each wake-up is a system call).
    """

    def __init__(self, journal: Journal, *, max_batch: int = 256) -> None:
        self.journal = journal
        self._max_batch = max_batch
        self._queue: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.write_error: str | None = None
        """Why the last batch that tried to change the journal failed (disk full, I/O error);
        None once a later batch committed changes. `/readyz` reports it."""

    async def open(self) -> None:
        """Open the journal and start the writer thread."""
        await asyncio.to_thread(self.journal.open)
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Finish queued calls, stop the thread and close the database."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        await asyncio.to_thread(self.journal.close)

    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the journal is closed")
            self._queue.append((fn, future))
            self._cond.notify()
        return future

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` (a `Journal` method) on the writer thread."""
        return await self._submit(lambda: fn(*args, **kwargs))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.journal, name)
        if not callable(method):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.call(method, *args, **kwargs)

        return call

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]]) -> None:
        conn = self.journal.conn
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        changes_before = conn.total_changes
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, future in batch:
                # A call whose caller was cancelled still runs: a write that was asked for (an
                # execution id, say) must not be lost because the task waiting on it stopped.
                try:
                    outcomes.append((future, True, fn()))
                except BaseException as exc:
                    outcomes.append((future, False, exc))
                    if isinstance(exc, sqlite3.OperationalError):
                        self.write_error = f"{type(exc).__name__}: {exc}"
                    if not conn.in_transaction:
                        raise  # SQLite rolled the whole batch back: every call in it failed
            conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - the batch failed: every call fails
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                self.write_error = f"{type(exc).__name__}: {exc}"
                if _is_disk_full(exc):
                    # The WAL holds many versions of the same pages: copying the latest into the
                    # database lets the next transactions reuse the WAL from its start instead of
                    # growing it. PASSIVE: never waits for readers (the writer must not block).
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            _hand_over([(future, False, exc) for _fn, future in batch])
            return
        if conn.total_changes != changes_before:
            self.write_error = None  # a write went through: the journal takes changes again
        _hand_over(outcomes)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a journal written by an older version up to date (columns only ever get added)."""
    for table, columns in _ADDED_COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def _is_disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(
        exc
    )


def _hand_over(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """Pass a batch's outcomes to their callers: one wake-up per event loop (from the writer)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_settle_all, items)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """Hand each call's outcome to its caller, unless the caller has stopped waiting."""
    for future, ok, value in outcomes:
        if future.done():
            continue  # cancelled by its caller: the work is done (or failed) all the same
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
