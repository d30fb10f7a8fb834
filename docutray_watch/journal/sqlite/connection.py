"""The journal's connection: opening (and migrating), transactions, and checked state writes.

Durability: WAL mode with `synchronous=FULL` (a committed transaction survives power loss once
`COMMIT` returns), and every write in `BEGIN IMMEDIATE` (the write lock is taken up front, so a
transaction never fails half-way on a lock upgrade).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Self, TypeVar

from docutray_watch.journal.rows import DocumentRow, StepRow
from docutray_watch.journal.sqlite import rows
from docutray_watch.journal.sqlite.schema import migrate
from docutray_watch.journal.states import (
    DELIVERY_TRANSITIONS,
    DOCUMENT_TRANSITIONS,
    STEP_TRANSITIONS,
    InvalidTransition,
    check_delivery,
    check_document,
    check_step,
)

__all__ = ["Connection", "Expr"]

S = TypeVar("S", bound=StrEnum)


class Connection:
    """One SQLite connection to the journal, with the helpers every part of it writes through."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        # Inside a transaction each write takes a savepoint of its own, so that one failing call
        # undoes only its own changes. The writer thread turns this off for a batch it can run
        # again from the start if a call fails (see `GroupCommitWriter`): two statements less
        # per call on the hot path.
        self.savepoints = True

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
        if conn.in_transaction and not self.savepoints:
            yield conn  # the writer rolls the whole batch back if this raises
            return
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
        row = self._moved(conn, doc_id, new, known_state, columns, read=True)
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
        self._moved(conn, doc_id, new, known_state, columns, read=False)

    def _moved(
        self,
        conn: sqlite3.Connection,
        doc_id: int,
        new: str,
        known_state: str | None,
        columns: dict[str, Any],
        *,
        read: bool,
    ) -> sqlite3.Row | None:
        columns["updated_at"] = self._clock()
        if known_state is None:
            return self._checked_update(conn, "documents", doc_id, new, columns, read=read)
        columns["state"] = check_document(doc_id, known_state, new)
        return _update(conn, "documents", doc_id, columns, read=read)

    def _update_step(
        self,
        conn: sqlite3.Connection,
        step_row: int,
        new: str | None = None,
        *,
        known_state: str | None = None,
        **columns: Any,
    ) -> StepRow:
        """Update a step row; with `new`, move it to that state (checked; `known_state`: its
        state as the caller just read it in this transaction)."""
        if new is not None and known_state is None:
            row = self._checked_update(conn, "steps", step_row, new, columns)
        else:
            if new is not None:
                columns["state"] = check_step(step_row, str(known_state), new)
            if not columns:
                return self._step_row(conn, step_row)
            row = _update(conn, "steps", step_row, columns)
        if row is None:
            raise KeyError(f"step {step_row} is not in the journal")
        return rows.step(row)

    def _checked_update(
        self,
        conn: sqlite3.Connection,
        table: str,
        row_id: int,
        new: str,
        columns: dict[str, Any],
        *,
        read: bool = True,
        then: str | None = None,
    ) -> sqlite3.Row | None:
        """Move a row to `new` with `columns`, in one statement whose WHERE names the states it
        may move from (the check, without reading the state first); the row after it (`read`).
        `then`: the state written instead, a move checked from `new` (two moves in one write).

        A row in any other state is not changed: its state is read then, to raise what the
        check raises (`InvalidTransition`), or KeyError when there is no such row."""
        check = _CHECKS[table]
        state = check(row_id, new, new)  # an unknown `new` raises here
        sources = _SOURCES[table][state]
        columns["state"] = state if then is None else check(row_id, state, then)
        assignments, values = _assignments(columns)
        marks = ",".join("?" for _ in sources)
        # Fixed table and column names (no value from outside): S608 does not apply.
        update = f"UPDATE {table} SET {assignments} WHERE id = ? AND state IN ({marks})"  # noqa: S608
        params = (*values, row_id, *sources)
        row: sqlite3.Row | None = None
        if read and _RETURNING:
            row = conn.execute(update + " RETURNING *", params).fetchone()
            moved = row is not None
        else:
            moved = conn.execute(update, params).rowcount > 0
            if moved and read:
                row = _read_row(conn, table, row_id)
        if moved:
            return row
        current = self._state_of(conn, table, row_id)
        check(row_id, current, state)
        raise InvalidTransition(f"{table} row {row_id}: {current} → {state} was not written")

    def _move_delivery(
        self, conn: sqlite3.Connection, delivery_id: int, new: str, **columns: Any
    ) -> None:
        """Move a delivery to `new` (checked), with `columns`."""
        self._checked_update(conn, "deliveries", delivery_id, new, columns, read=False)

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


class Expr(str):
    """A column's new value as an SQL expression of the row (`attempts + 1`), not a value."""


def _assignments(columns: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """`a = ?, b = attempts + 1` and the values of its placeholders."""
    parts = [f"{k} = {v}" if isinstance(v, Expr) else f"{k} = ?" for k, v in columns.items()]
    values = tuple(v for v in columns.values() if not isinstance(v, Expr))
    return ", ".join(parts), values


def _read_row(conn: sqlite3.Connection, table: str, row_id: int) -> sqlite3.Row | None:
    found: sqlite3.Row | None = conn.execute(
        f"SELECT * FROM {table} WHERE id = ?",  # noqa: S608 - fixed table names
        (row_id,),
    ).fetchone()
    return found


def _update(
    conn: sqlite3.Connection,
    table: str,
    row_id: int,
    columns: dict[str, Any],
    *,
    read: bool = True,
) -> sqlite3.Row | None:
    """Update one row's `columns` (at least one); the whole row after it (`read`), else None."""
    assignments, values = _assignments(columns)
    # Fixed table and column names (no value from outside): S608 does not apply.
    update = f"UPDATE {table} SET {assignments} WHERE id = ?"  # noqa: S608
    params = (*values, row_id)
    if not read:
        conn.execute(update, params)
        return None
    if _RETURNING:
        row: sqlite3.Row | None = conn.execute(update + " RETURNING *", params).fetchone()
        return row
    conn.execute(update, params)
    return _read_row(conn, table, row_id)


def _sources(transitions: Mapping[S, frozenset[S]]) -> dict[str, tuple[str, ...]]:
    """For each state, the states a row may move to it from (itself included)."""
    sources: dict[str, tuple[str, ...]] = {}
    for new in transitions:
        before = {old.value for old, to in transitions.items() if new in to}
        sources[new.value] = tuple(sorted(before | {new.value}))
    return sources


# A checked move is one UPDATE whose WHERE names the states it may come from (`_checked_update`).
_SOURCES = {
    "documents": _sources(DOCUMENT_TRANSITIONS),
    "steps": _sources(STEP_TRANSITIONS),
    "deliveries": _sources(DELIVERY_TRANSITIONS),
}
_CHECKS: dict[str, Callable[[int, str, str], StrEnum]] = {
    "documents": check_document,
    "steps": check_step,
    "deliveries": check_delivery,
}
