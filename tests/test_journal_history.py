"""The journal's history objects: counts kept by triggers (`doc_counts`, journal/sqlite/counts.py),
and the indexes `status` and start-up use (`kept_stamps`, `unfinished_by_path`)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from docutray_watch import retention
from docutray_watch.journal import Journal, NewDocument, kept_stamp
from docutray_watch.journal.sqlite.counts import pipeline_counts
from tests.test_journal import SHA, FakeClock, queued, run_step


@pytest.fixture(name="journal")
def journal_fixture(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "state" / "journal.sqlite3", clock=FakeClock()) as journal:
        yield journal


def counted(journal: Journal) -> dict[str, dict[str, int]]:
    """Documents per pipeline and word, from the counts the triggers keep."""
    return pipeline_counts(journal.conn)


def assert_counts_right(journal: Journal) -> None:
    """The kept counts say what a GROUP BY over every document says."""
    assert counted(journal) == journal.outcome_counts()


class TestKeptCounts:
    def test_counts_follow_every_transition(self, journal: Journal) -> None:
        """Through intake, steps, delivery, failure, duplicate, requeue, supersede and delete,
        the kept counts equal a GROUP BY after every change."""
        check = lambda: assert_counts_right(journal)  # noqa: E731
        check()
        ok = queued(journal, "a", "b", path="/in/ok.pdf")
        check()
        run_step(journal, ok, "a")
        check()
        run_step(journal, ok, "b")
        check()
        journal.mark_delivered(ok)
        check()
        journal.finish(ok, "/done/ok.pdf")
        check()
        bad = queued(journal, path="/in/bad.pdf", sha="b" * 64)
        run_step(journal, bad, "stp_a", state="error")
        journal.mark_failed(bad, "boom", stage="result")
        check()
        journal.finish(bad, "/failed/bad.pdf")
        check()
        journal.requeue(bad)  # `docutray-watch retry`
        check()
        dup = journal.add_queued(
            "receipts",
            "/in/d.pdf",
            "d.pdf",
            sha256=SHA,
            content_type="application/pdf",
            size=1,
            mtime_ns=1,
            steps=["a"],
        )[0]
        check()
        journal.mark_rediscovered(dup.id)
        journal.mark_duplicate(dup.id, sha256=SHA, content_type="application/pdf", of=ok)
        check()
        journal.supersede(dup.id, "changed")
        check()
        rejected = journal.add_document("receipts", "/in/e.txt", "e.txt", 1, 1)
        journal.reject(rejected.id, "unsupported")
        journal.finish(rejected.id, None)
        check()
        journal.forget_documents([ok, rejected.id], finished_before=float("inf"))  # `prune`
        check()
        assert counted(journal) == {
            "invoices": {"queued": 1},
            "receipts": {"superseded": 1},
        }

    def test_a_rolled_back_change_leaves_the_counts_alone(self, journal: Journal) -> None:
        """A transaction that fails (a savepoint rolled back) counts nothing."""

        def insert_then_fail() -> None:
            with journal._write() as conn:
                conn.execute(
                    "INSERT INTO documents (pipeline, path, relative_path, state, created_at,"
                    " updated_at) VALUES ('p', '/x', 'x', 'discovered', 0, 0)"
                )
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            insert_then_fail()
        assert counted(journal) == {}
        assert_counts_right(journal)

    def test_a_crash_mid_transaction_leaves_the_counts_right(self, tmp_path: Path) -> None:
        """A process killed inside a transaction that changed documents: after reopening, the
        counts still equal a GROUP BY (the counts share the documents' transaction)."""
        path = tmp_path / "journal.sqlite3"
        with Journal(path) as journal:
            queued(journal, path="/in/a.pdf")
            queued(journal, path="/in/b.pdf")
        spawn = multiprocessing.get_context("spawn")
        child = spawn.Process(target=_die_mid_transaction, args=(path,))
        child.start()
        child.join(30)
        assert child.exitcode == 9
        with Journal(path) as journal:
            assert counted(journal) == {"invoices": {"queued": 2}}
            assert_counts_right(journal)

    def test_an_existing_journal_is_counted_once(self, tmp_path: Path) -> None:
        """A journal written before the counts existed is counted when opened, and opening it
        again counts nothing twice."""
        path = tmp_path / "journal.sqlite3"
        with Journal(path) as journal:
            queued(journal, path="/in/a.pdf")
            journal.add_document("p", "/in/b.pdf", "b.pdf", 1, 1)
            for name in ("doc_counts_insert", "doc_counts_update", "doc_counts_delete"):
                journal.conn.execute(f"DROP TRIGGER {name}")
            journal.conn.execute("DROP TABLE doc_counts")
            journal.add_document("p", "/in/c.pdf", "c.pdf", 1, 1)  # written by an older version
            journal.conn.execute("PRAGMA user_version=1")
        for _ in range(2):
            with Journal(path) as journal:
                assert counted(journal) == {
                    "invoices": {"queued": 1},
                    "p": {"discovered": 2},
                }
                assert_counts_right(journal)

    def test_status_queries_use_indexes(self, journal: Journal) -> None:
        """Counts, recent failures, superseded results and oldest pending read no full table."""
        conn = journal.conn
        plans = [
            "SELECT * FROM doc_counts WHERE n > 0",
            "SELECT * FROM documents WHERE state IN ('failed', 'rejected')"
            " ORDER BY updated_at DESC, id DESC LIMIT 10",
            "SELECT * FROM documents WHERE state IN ('failed', 'rejected') AND pipeline = 'p'"
            " ORDER BY updated_at DESC, id DESC LIMIT 10",
            "SELECT d.pipeline, COUNT(*) AS n FROM deliveries r"
            " JOIN documents d ON d.id = r.document_id"
            " WHERE r.state = 'superseded' GROUP BY d.pipeline",
            "SELECT pipeline, MIN(created_at) AS t FROM documents"
            " WHERE finished_at IS NULL GROUP BY pipeline",
            "SELECT path, size, mtime_ns FROM documents"
            " WHERE pipeline = 'p' AND archived_to = path ORDER BY path, id",
        ]
        for query in plans:
            lines = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {query}")]
            full_scans = [
                line
                for line in lines
                if line.startswith("SCAN") and "USING" not in line and "doc_counts" not in line
            ]
            assert full_scans == [], (query, lines)
            if "failed" in query:
                assert any("documents_failures" in line for line in lines), (query, lines)


class TestKeptStamps:
    def test_only_the_newest_kept_row_of_each_path(self, journal: Journal) -> None:
        """kept_stamps gives each kept path's newest (size, mtime) and nothing for moved files or
        work in hand; unfinished_by_path gives the work in hand."""
        for size, mtime in ((1, 10), (2, 20)):
            doc = journal.add_document("p", "/in/kept.pdf", "kept.pdf", size, mtime)
            journal.reject(doc.id, "x")
            journal.finish(doc.id, "/in/kept.pdf")
        moved = journal.add_document("p", "/in/moved.pdf", "moved.pdf", 1, 1)
        journal.reject(moved.id, "x")
        journal.finish(moved.id, "/failed/moved.pdf")
        new = journal.add_document("p", "/in/new.pdf", "new.pdf", 1, 1)
        assert journal.kept_stamps("p") == {"/in/kept.pdf": kept_stamp(2, 20)}
        assert journal.kept_stamps("other") == {}
        assert list(journal.unfinished_by_path("p")) == ["/in/new.pdf"]
        assert journal.unfinished_by_path("p")["/in/new.pdf"].id == new.id

    def test_stamps_are_exact(self) -> None:
        """Different (size, mtime_ns) pairs never share a stamp."""
        pairs = [(0, 0), (1, 0), (0, 1), (2**63, 5), (5, 2**63), (7, -3)]
        assert len({kept_stamp(s, m) for s, m in pairs}) == len(pairs)

    def test_prune_keeps_the_counts_and_forgets_kept_rows_of_gone_files(
        self, tmp_path: Path
    ) -> None:
        """`prune` (retention) deletes through the triggers: the counts stay right."""
        path = tmp_path / "journal.sqlite3"
        with Journal(path, clock=lambda: 1000.0) as journal:
            doc = journal.add_document("p", str(tmp_path / "gone.pdf"), "gone.pdf", 1, 1)
            journal.reject(doc.id, "x")
            journal.finish(doc.id, str(tmp_path / "gone.pdf"))
            queued(journal)
        result = retention.prune_journal_file(path, older_than_days=1)
        assert result.forgotten == 1
        with Journal(path) as journal:
            assert journal.kept_stamps("p") == {}
            assert counted(journal) == {"invoices": {"queued": 1}}
            assert_counts_right(journal)


def _die_mid_transaction(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE documents SET state = 'rejected', outcome = 'rejected'")
    conn.execute(
        "INSERT INTO documents (pipeline, path, relative_path, state, created_at, updated_at)"
        " VALUES ('p', '/x', 'x', 'discovered', 0, 0)"
    )
    os._exit(9)


class TestAddQueuedBatch:
    @staticmethod
    def item(path: str, *, sha: str = SHA, skip: bool = True) -> NewDocument:
        return NewDocument(
            pipeline="invoices",
            path=path,
            relative_path=path.rsplit("/", 1)[-1],
            sha256=sha,
            content_type="application/pdf",
            size=10,
            mtime_ns=123,
            ctime_ns=124,
            inode=7,
            steps=["a", "b"],
            skip_if_done=skip,
        )

    def test_many_files_queued_in_one_transaction(self, journal: Journal) -> None:
        """Each item becomes a queued document with a pending row per step, as add_queued makes
        it, all in one commit."""
        before = journal.conn.total_changes
        done = journal.add_queued_batch(
            [self.item("/in/a.pdf"), self.item("/in/b.pdf", sha="b" * 64)]
        )
        assert [q.document.path for q in done if q] == ["/in/a.pdf", "/in/b.pdf"]
        one = journal.add_queued(
            "invoices",
            "/in/c.pdf",
            "c.pdf",
            sha256="c" * 64,
            content_type="application/pdf",
            size=10,
            mtime_ns=123,
            steps=["a", "b"],
            ctime_ns=124,
            inode=7,
        )[0]
        first = done[0]
        assert first is not None
        same = {"id", "path", "relative_path", "sha256", "created_at", "updated_at"}
        assert {k: v for k, v in vars(first.document).items() if k not in same} == {
            k: v for k, v in vars(one).items() if k not in same
        }
        assert [(s.step_id, s.state) for s in first.steps] == [("a", "pending"), ("b", "pending")]
        # What it returns is what is written.
        assert first.document == journal.document(first.document.id)
        assert first.steps == journal.steps_of(first.document.id)
        assert journal.conn.total_changes > before
        assert_counts_right(journal)

    def test_a_delivered_twin_leaves_the_item_out(self, journal: Journal) -> None:
        """skip_if_done: content already delivered is not queued (None), unless not asked."""
        first = queued(journal, "a", path="/in/first.pdf")
        run_step(journal, first, "a")
        journal.mark_delivered(first)
        done = journal.add_queued_batch(
            [self.item("/in/twin.pdf"), self.item("/in/again.pdf", skip=False)]
        )
        assert done[0] is None
        assert done[1] is not None
        assert [d.path for d in journal.documents_in("queued")] == ["/in/again.pdf"]
        assert_counts_right(journal)


def test_status_reads_the_engines_request_rate_key() -> None:
    """`status` (kept apart from the HTTP stack) reads the meta row the engine writes."""
    from docutray_watch.engine.rate_memory import REQUEST_RATE_KEY
    from docutray_watch.status import REQUEST_RATE_KEY as STATUS_KEY

    assert STATUS_KEY == REQUEST_RATE_KEY


def test_status_loads_no_http_stack() -> None:
    """`status --json` imports neither httpx nor aiohttp (it answers in a fraction of a second)."""
    import subprocess
    import sys

    code = (
        "import sys; from docutray_watch.status import status_report;"
        " print(sorted(m for m in ('httpx', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
