"""The counts the journal keeps (doc_counts, maintained by triggers) match counting the rows."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from docutray_watch.journal import DOCUMENT_STATES, Journal
from docutray_watch.journal.sqlite.counts import pipeline_counts, today_counts, utc_day

DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


def _by_day(conn: sqlite3.Connection) -> dict[tuple[str, str, str], int]:
    """The same counts, computed the slow way over every row."""
    rows = conn.execute(
        "SELECT pipeline, CASE WHEN state = 'archived' THEN COALESCE(outcome, 'success')"
        " ELSE state END, CASE WHEN finished_at IS NULL THEN '' ELSE"
        " date(finished_at, 'unixepoch') END, COUNT(*) FROM documents GROUP BY 1, 2, 3"
    )
    return {(p, w, d): n for p, w, d, n in rows}


def _kept(conn: sqlite3.Connection) -> dict[tuple[str, str, str], int]:
    rows = conn.execute("SELECT pipeline, word, day, n FROM doc_counts WHERE n != 0")
    return {(p, w, d): n for p, w, d, n in rows}


def test_counts_follow_every_insert_change_and_delete(tmp_path: Path) -> None:
    """Random inserts, state/outcome/finish changes, requeues and deletes: the kept counts
    always equal a full count, per pipeline, word and UTC day."""
    clock = Clock()
    rng = random.Random(7)
    with Journal(tmp_path / "j.sqlite3", clock=clock) as journal:
        conn = journal.conn
        for _ in range(400):
            clock.now += rng.uniform(0, DAY / 3)
            ids = [r[0] for r in conn.execute("SELECT id FROM documents")]
            action = rng.random()
            if action < 0.35 or not ids:
                journal.add_document(rng.choice(["a", "b"]), f"/in/{rng.random()}", "x", 1, 1)
            elif action < 0.8:
                conn.execute(
                    "UPDATE documents SET state = ?, outcome = ?, finished_at = ? WHERE id = ?",
                    (
                        rng.choice(DOCUMENT_STATES),
                        rng.choice([None, "success", "duplicate", "failed"]),
                        rng.choice([None, clock.now]),
                        rng.choice(ids),
                    ),
                )
            elif action < 0.9:
                conn.execute(
                    "UPDATE documents SET pipeline = ? WHERE id = ?", ("c", rng.choice(ids))
                )
            else:
                conn.execute("DELETE FROM documents WHERE id = ?", (rng.choice(ids),))
            assert _kept(conn) == _by_day(conn)
        assert pipeline_counts(conn) == journal.outcome_counts()


def test_a_journal_without_counts_is_counted_once_on_open(tmp_path: Path) -> None:
    """A journal written before doc_counts existed gets it, filled from its rows, when it is
    migrated on open."""
    path = tmp_path / "j.sqlite3"
    with Journal(path) as journal:
        for n in range(5):
            doc = journal.add_document("a", f"/in/{n}.pdf", f"{n}.pdf", 1, 1)
            if n % 2:
                journal.reject(doc.id, "empty")
                journal.finish(doc.id, None)
        expected = journal.outcome_counts()
        for name in ("doc_counts_insert", "doc_counts_delete", "doc_counts_update"):
            journal.conn.execute(f"DROP TRIGGER {name}")
        journal.conn.execute("DROP TABLE doc_counts")
        journal.conn.execute("PRAGMA user_version=1")  # as a journal of the previous release
    with Journal(path) as journal:
        assert pipeline_counts(journal.conn) == expected == {"a": {"discovered": 3, "rejected": 2}}


def test_today_counts_only_what_finished_today(tmp_path: Path) -> None:
    """A document finished yesterday is counted in the totals, not in today's."""
    clock = Clock()
    with Journal(tmp_path / "j.sqlite3", clock=clock) as journal:
        old = journal.add_document("a", "/in/old.pdf", "old.pdf", 1, 1)
        journal.reject(old.id, "empty")
        journal.finish(old.id, None)
        clock.now += DAY
        new = journal.add_document("a", "/in/new.pdf", "new.pdf", 1, 1)
        journal.reject(new.id, "empty")
        journal.finish(new.id, None)
        assert today_counts(journal.conn, utc_day(clock.now)) == {"a": {"rejected": 1}}
        assert pipeline_counts(journal.conn) == {"a": {"rejected": 2}}


def test_status_queries_use_indexes_not_a_scan_of_every_document(tmp_path: Path) -> None:
    """Recent failures and superseded results read an index, not the documents table."""
    with Journal(tmp_path / "j.sqlite3") as journal:
        conn = journal.conn
        plans = {
            "failures": "SELECT * FROM documents WHERE state IN ('failed', 'rejected')"
            " ORDER BY updated_at DESC, id DESC LIMIT 50",
            "superseded": "SELECT d.pipeline, COUNT(*) AS n FROM deliveries r"
            " JOIN documents d ON d.id = r.document_id"
            " WHERE r.state = 'superseded' GROUP BY d.pipeline",
        }
        for name, query in plans.items():
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query)]
            # A SCAN is fine only through one of the partial indexes (failures, superseded).
            scans = [line for line in plan if line.startswith("SCAN")]
            assert all(
                "INDEX documents_failures" in s or "deliveries_superseded" in s for s in scans
            ), (name, plan)
