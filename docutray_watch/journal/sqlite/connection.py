"""The journal's connection: opening (and migrating), transactions, and checked state writes.

Durability: WAL mode with `synchronous=FULL` (a committed transaction survives power loss once
`COMMIT` returns), and every write in `BEGIN IMMEDIATE` (the write lock is taken up front, so a
transaction never fails half-way on a lock upgrade).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

from docutray_watch.journal.rows import DocumentRow, StepRow
from docutray_watch.journal.sqlite import rows
from docutray_watch.journal.sqlite.schema import migrate
from docutray_watch.journal.states import check_delivery, check_document, check_step

__all__ = ["Connection"]


class Connection:
    """One SQLite connection to the journal, with the helpers every part of it writes through."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._conn: sqlite3.Connection | None = None

    def open(self) -> Self:
        """Open (creating if needed) the database and bring its schema up to date."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            migrate(conn, self.path)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
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
            # Nested inside the writer's group transaction: a savepoint keeps ops separate.
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

    def probe(self) -> None:
        """Take and release a savepoint: raises when the database cannot be used now."""
        self.conn.execute("SAVEPOINT readiness_probe")
        self.conn.execute("RELEASE readiness_probe")

    # -- reading single rows -----------------------------------------------------------------

    def _document_row(self, conn: sqlite3.Connection, doc_id: int) -> DocumentRow:
        row = conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            raise KeyError(f"document {doc_id} is not in the journal")
        return rows.document(row)

    def _step_row(self, conn: sqlite3.Connection, step_row: int) -> StepRow:
        row = conn.execute("SELECT * FROM steps WHERE id = ?", (step_row,)).fetchone()
        if row is None:
            raise KeyError(f"step {step_row} is not in the journal")
        return rows.step(row)

    def _state_of(self, conn: sqlite3.Connection, table: str, row_id: int) -> str:
        """The stored state of one row (only that column: the writer's hot path)."""
        row = conn.execute(
            f"SELECT state FROM {table} WHERE id = ?",  # noqa: S608 - fixed table names
            (row_id,),
        ).fetchone()
        if row is None:
            raise KeyError(f"{table} row {row_id} is not in the journal")
        return str(row[0])

    # -- checked writes: every state change goes through one of these -----------------------

    def _set_state(
        self,
        conn: sqlite3.Connection,
        doc_id: int,
        new: str,
        *,
        known_state: str | None = None,
        **columns: Any,
    ) -> DocumentRow:
        """Move a document to `new` (checked), with `columns`; the row as it is now.

        `known_state`: its state as the caller just read or wrote it in this transaction (not
        read again)."""
        columns = self._moved(conn, doc_id, new, known_state, columns)
        row = _update(conn, "documents", doc_id, columns)
        if row is None:
            raise KeyError(f"document {doc_id} is not in the journal")
        return rows.document(row)

    def _move_document(
        self,
        conn: sqlite3.Connection,
        doc_id: int,
        new: str,
        *,
        known_state: str | None = None,
        **columns: Any,
    ) -> None:
        """`_set_state` for a caller that does not need the row (nothing read back)."""
        columns = self._moved(conn, doc_id, new, known_state, columns)
        _update(conn, "documents", doc_id, columns, read=False)

    def _moved(
        self,
        conn: sqlite3.Connection,
        doc_id: int,
        new: str,
        known_state: str | None,
        columns: dict[str, Any],
    ) -> dict[str, Any]:
        current = known_state or self._state_of(conn, "documents", doc_id)
        columns["state"] = check_document(doc_id, current, new)
        columns["updated_at"] = self._clock()
        return columns

    def _update_step(
        self, conn: sqlite3.Connection, step_row: int, new: str | None = None, **columns: Any
    ) -> StepRow:
        """Update a step row; with `new`, move it to that state (checked)."""
        if new is not None:
            current = self._state_of(conn, "steps", step_row)
            columns["state"] = check_step(step_row, current, new)
        if not columns:
            return self._step_row(conn, step_row)
        row = _update(conn, "steps", step_row, columns)
        if row is None:
            raise KeyError(f"step {step_row} is not in the journal")
        return rows.step(row)

    def _check_delivery(self, conn: sqlite3.Connection, delivery_id: int, new: str) -> str:
        """`new`, if the delivery may move there from its stored state."""
        current = self._state_of(conn, "deliveries", delivery_id)
        return check_delivery(delivery_id, current, new).value

    def _move_deliveries(
        self, conn: sqlite3.Connection, doc_id: int, before: tuple[str, ...], new: str
    ) -> int:
        """Move a document's deliveries in any of `before` to `new`; how many moved."""
        for current in before:
            check_delivery(0, current, new)  # the whole set moves: check the move, not each row
        marks = ",".join("?" for _ in before)
        return conn.execute(
            f"UPDATE deliveries SET state = ? WHERE document_id = ?"  # noqa: S608 - placeholders
            f" AND state IN ({marks})",
            (new, doc_id, *before),
        ).rowcount


# `UPDATE … RETURNING` (SQLite 3.35+) hands the updated row back in the same statement; older
# libraries read it back with a SELECT, as before.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def _update(
    conn: sqlite3.Connection,
    table: str,
    row_id: int,
    columns: dict[str, Any],
    *,
    read: bool = True,
) -> sqlite3.Row | None:
    """Update one row's `columns` (at least one); the whole row after it (`read`), else None."""
    assignments = ", ".join(f"{name} = ?" for name in columns)
    # Fixed table and column names (no value from outside): S608 does not apply.
    update = f"UPDATE {table} SET {assignments} WHERE id = ?"  # noqa: S608
    values = (*columns.values(), row_id)
    if not read:
        conn.execute(update, values)
        return None
    if _RETURNING:
        row: sqlite3.Row | None = conn.execute(update + " RETURNING *", values).fetchone()
        return row
    conn.execute(update, values)
    found: sqlite3.Row | None = conn.execute(
        f"SELECT * FROM {table} WHERE id = ?",  # noqa: S608 - fixed table names
        (row_id,),
    ).fetchone()
    return found
