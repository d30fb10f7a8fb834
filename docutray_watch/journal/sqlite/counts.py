"""Counts the journal keeps: documents per pipeline, word and day, maintained by triggers.

`status` (and the status page's `/api/status`) must not slow down as history grows, so they do
not count the `documents` table: SQLite triggers keep `doc_counts` up to date in the same
transaction as every insert, state change and delete (whichever process writes: the daemon,
`retry`, `prune`, or an older docutray-watch, since the triggers live in the database file).

A row counts the documents of one pipeline with one *word* (a finished document's outcome —
`success`, `duplicate`, `failed`, `rejected`, `superseded`, the words `process` prints — and an
unfinished one's state) and one *day*: the UTC date its final file action was done, '' while it
is unfinished. The table has a row per pipeline, word and day, so it stays small (days are
bounded by `journal.retention_days`); a journal that predates it is counted once when it is
created.

`type_counts` does the same for identified documents (pipelines that route by type, schema 5): a
row per pipeline, identified type code and word (no day), for `status`'s table per type. A
document counts under its current type: re-identified (`retry --force`), it moves; its
identification cleared, it leaves.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime

__all__ = [
    "IN_FLIGHT_STATES",
    "WAITING_STATES",
    "install_counts",
    "install_type_counts",
    "pipeline_counts",
    "today_counts",
    "type_counts",
    "type_outcome_counts",
    "utc_day",
]

WAITING_STATES = ("discovered", "queued")
IN_FLIGHT_STATES = ("submitting", "polling", "completed", "delivered")


def _word(row: str) -> str:
    return (
        f"CASE WHEN {row}.state = 'archived' THEN COALESCE({row}.outcome, 'success')"
        f" ELSE {row}.state END"
    )


def _day(row: str) -> str:
    return (
        f"CASE WHEN {row}.finished_at IS NULL THEN '' ELSE date({row}.finished_at, 'unixepoch') END"
    )


def _add(row: str, delta: str) -> list[str]:
    key = f"pipeline = {row}.pipeline AND word = {_word(row)} AND day = {_day(row)}"
    # Fixed SQL built from constants (no value from outside): the triggers' bodies.
    statements = [f"UPDATE doc_counts SET n = n {delta} 1 WHERE {key}"]  # noqa: S608
    if delta == "+":
        statements.insert(
            0,
            "INSERT OR IGNORE INTO doc_counts (pipeline, word, day, n)"  # noqa: S608
            f" VALUES ({row}.pipeline, {_word(row)}, {_day(row)}, 0)",
        )
    return statements


def _trigger(name: str, event: str, body: list[str], when: str = "") -> str:
    return (
        f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON documents {when}"
        f" BEGIN {'; '.join(body)}; END"
    )


_TABLE = """
CREATE TABLE doc_counts (
    pipeline TEXT    NOT NULL,
    word     TEXT    NOT NULL,
    day      TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (pipeline, word, day)
) WITHOUT ROWID
"""

_TRIGGERS = (
    _trigger("doc_counts_insert", "INSERT", _add("NEW", "+")),
    _trigger("doc_counts_delete", "DELETE", _add("OLD", "-")),
    _trigger(
        "doc_counts_update",
        "UPDATE OF state, outcome, finished_at, pipeline",
        [*_add("OLD", "-"), *_add("NEW", "+")],
        when=(
            f"WHEN {_word('OLD')} IS NOT {_word('NEW')} OR {_day('OLD')} IS NOT {_day('NEW')}"
            " OR OLD.pipeline IS NOT NEW.pipeline"
        ),
    ),
)

_BACKFILL = (
    "INSERT INTO doc_counts (pipeline, word, day, n)"  # noqa: S608 - constants only
    f" SELECT pipeline, {_word('documents')}, {_day('documents')}, COUNT(*) FROM documents"
    " GROUP BY 1, 2, 3"
)


def install_counts(conn: sqlite3.Connection) -> None:
    """Create the counts table and its triggers if missing (inside the caller's write
    transaction, so no document changes between the one-time count and the triggers)."""
    _install(conn, "doc_counts", _TABLE, _BACKFILL, _TRIGGERS)


def _install(
    conn: sqlite3.Connection, name: str, table: str, backfill: str, triggers: tuple[str, ...]
) -> None:
    """A kept-counts table: created and counted once from the documents already there when it
    is missing; its triggers created if missing."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    if not exists:
        conn.execute(table)
        conn.execute(backfill)
    for trigger in triggers:
        conn.execute(trigger)


_TYPE_TABLE = """
CREATE TABLE type_counts (
    pipeline        TEXT    NOT NULL,
    identified_type TEXT    NOT NULL,
    word            TEXT    NOT NULL,
    n               INTEGER NOT NULL,
    PRIMARY KEY (pipeline, identified_type, word)
) WITHOUT ROWID
"""


def _add_typed(row: str, delta: str) -> list[str]:
    # A row without a type matches no counter (`identified_type = NULL` is never true) and
    # inserts none (the SELECT's WHERE), so a change into or out of "identified" counts right.
    key = f"pipeline = {row}.pipeline AND identified_type = {row}.identified_type"
    # Fixed SQL built from constants (no value from outside): the triggers' bodies.
    statements = [
        f"UPDATE type_counts SET n = n {delta} 1 WHERE {key} AND word = {_word(row)}"  # noqa: S608
    ]
    if delta == "+":
        statements.insert(
            0,
            "INSERT OR IGNORE INTO type_counts (pipeline, identified_type, word, n)"
            f" SELECT {row}.pipeline, {row}.identified_type, {_word(row)}, 0"
            f" WHERE {row}.identified_type IS NOT NULL",
        )
    return statements


# Documents of pipelines that do not identify never fire them (the WHEN clauses).
_TYPE_TRIGGERS = (
    _trigger(
        "type_counts_insert",
        "INSERT",
        _add_typed("NEW", "+"),
        when="WHEN NEW.identified_type IS NOT NULL",
    ),
    _trigger(
        "type_counts_delete",
        "DELETE",
        _add_typed("OLD", "-"),
        when="WHEN OLD.identified_type IS NOT NULL",
    ),
    _trigger(
        "type_counts_update",
        "UPDATE OF state, outcome, identified_type, pipeline",
        [*_add_typed("OLD", "-"), *_add_typed("NEW", "+")],
        when=(
            "WHEN (OLD.identified_type IS NOT NULL OR NEW.identified_type IS NOT NULL)"
            " AND (OLD.identified_type IS NOT NEW.identified_type"
            f" OR {_word('OLD')} IS NOT {_word('NEW')} OR OLD.pipeline IS NOT NEW.pipeline)"
        ),
    ),
)

_TYPE_BACKFILL = (
    "INSERT INTO type_counts (pipeline, identified_type, word, n)"  # noqa: S608 - constants only
    f" SELECT pipeline, identified_type, {_word('documents')}, COUNT(*) FROM documents"
    " WHERE identified_type IS NOT NULL GROUP BY 1, 2, 3"
)


def install_type_counts(conn: sqlite3.Connection) -> None:
    """Create the per-type counts and their triggers if missing, counting the identified
    documents already there once (inside the caller's write transaction, as `install_counts`)."""
    _install(conn, "type_counts", _TYPE_TABLE, _TYPE_BACKFILL, _TYPE_TRIGGERS)


def pipeline_counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Documents in the journal per pipeline and word (what `Journal.outcome_counts` counts)."""
    result: dict[str, dict[str, int]] = {}
    for pipeline, word, n in conn.execute(
        "SELECT pipeline, word, SUM(n) FROM doc_counts GROUP BY pipeline, word"
        " HAVING SUM(n) > 0 ORDER BY pipeline, word"
    ):
        result.setdefault(pipeline, {})[word] = n
    return result


def today_counts(conn: sqlite3.Connection, day: str) -> dict[str, dict[str, int]]:
    """Documents per pipeline and word whose final action was done on `day` (UTC date)."""
    result: dict[str, dict[str, int]] = {}
    for pipeline, word, n in conn.execute(
        "SELECT pipeline, word, n FROM doc_counts WHERE day = ? AND n > 0", (day,)
    ):
        result.setdefault(pipeline, {})[word] = n
    return result


def type_counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Identified documents per pipeline and type code, whatever their state
    (`Journal.counts_by_type`)."""
    result: dict[str, dict[str, int]] = {}
    for pipeline, code, n in conn.execute(
        "SELECT pipeline, identified_type, SUM(n) FROM type_counts"
        " GROUP BY pipeline, identified_type HAVING SUM(n) > 0 ORDER BY pipeline, identified_type"
    ):
        result.setdefault(pipeline, {})[code] = n
    return result


def type_outcome_counts(conn: sqlite3.Connection) -> dict[str, dict[str, dict[str, int]]]:
    """Identified documents per pipeline, type code and word (`Journal.outcomes_by_type`)."""
    result: dict[str, dict[str, dict[str, int]]] = {}
    for pipeline, code, word, n in conn.execute(
        "SELECT pipeline, identified_type, word, n FROM type_counts WHERE n > 0"
        " ORDER BY pipeline, identified_type, word"
    ):
        result.setdefault(pipeline, {}).setdefault(code, {})[word] = n
    return result


def utc_day(timestamp: float | None = None) -> str:
    """`2026-12-05`: the UTC date of `timestamp` (now by default), as the triggers write it."""
    moment = time.time() if timestamp is None else timestamp
    return datetime.fromtimestamp(moment, UTC).date().isoformat()
