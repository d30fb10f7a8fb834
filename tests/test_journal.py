"""Tests of `docutray_watch.journal`: the state machine, steps, deliveries, group commit."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.journal import (
    DOCUMENT_STATES,
    END_STATES,
    SCHEMA_VERSION,
    TRANSITIONS,
    AsyncJournal,
    InvalidTransition,
    Journal,
)

SHA = "a" * 64


class FakeClock:
    """A wall clock that ticks one second per reading (so updates are ordered)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture(name="journal")
def journal_fixture(tmp_path: Path) -> Iterator[Journal]:
    """An open journal in the test's folder."""
    with Journal(tmp_path / "state" / "journal.sqlite3", clock=FakeClock()) as journal:
        yield journal


def queued(journal: Journal, *steps: str, path: str = "/in/a.pdf", sha: str = SHA) -> int:
    """Add a document and queue it with the given steps; returns its id."""
    doc = journal.add_document("invoices", path, path.rsplit("/", 1)[-1], 10, 123)
    journal.mark_queued(
        doc.id,
        sha256=sha,
        content_type="application/pdf",
        size=10,
        mtime_ns=123,
        steps=steps or ("stp_a",),
    )
    return doc.id


def run_step(
    journal: Journal,
    doc_id: int,
    step_id: str,
    state: str = "success",
    sinks: tuple[str, ...] = ("files",),
) -> bool:
    """Take one step from pending to `state`; returns whether the document completed."""
    step = next(s for s in journal.steps_of(doc_id) if s.step_id == step_id)
    journal.step_submitting(step.id)
    journal.step_accepted(step.id, f"exec-{step_id}", "ENQUEUED")
    _, completed = journal.step_finished(
        step.id,
        state=state,
        status="SUCCESS" if state == "success" else "ERROR",
        result={"ok": True} if state == "success" else None,
        error=None if state == "success" else "boom",
        sinks=sinks,
    )
    return completed


def force_state(journal: Journal, doc_id: int, state: str) -> None:
    """Put a document in `state` directly (to test transitions from any state)."""
    journal.conn.execute("UPDATE documents SET state = ? WHERE id = ?", (state, doc_id))


def set_state(journal: Journal, doc_id: int, state: str) -> None:
    """Run the state machine's own transition check (the private primitive every method uses)."""
    with journal._write() as conn:
        journal._set_state(conn, doc_id, state)


class TestOpening:
    def test_pragmas_for_durability(self, journal: Journal) -> None:
        """WAL mode, synchronous=FULL (2) and foreign keys are on."""
        assert journal.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert journal.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert journal.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1

    def test_integrity_check(self, journal: Journal) -> None:
        """A fresh journal passes SQLite's integrity check."""
        queued(journal, "a", "b")
        assert journal.integrity_check() == "ok"

    def test_reopening_keeps_the_data(self, tmp_path: Path) -> None:
        """What one connection committed, the next one reads."""
        path = tmp_path / "j.sqlite3"
        with Journal(path) as journal:
            doc_id = queued(journal)
        with Journal(path) as journal:
            assert journal.document(doc_id).state == "queued"

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A journal written by a newer version is not touched."""
        path = tmp_path / "j.sqlite3"
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version=99")
        with pytest.raises(RuntimeError, match="newer"):
            Journal(path).open()

    def test_version_1_journal_is_migrated(self, tmp_path: Path) -> None:
        """A journal of schema 1 (no `meta` table) opens, keeps its documents and counts retries."""
        path = tmp_path / "j.sqlite3"
        with Journal(path) as journal:
            doc_id = queued(journal)
            journal.conn.execute("DROP TABLE meta")
            journal.conn.execute("PRAGMA user_version=1")
        with Journal(path) as journal:
            assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert journal.document(doc_id).state == "queued"
            assert journal.requeue_count() == 0
            force_state(journal, doc_id, "failed")
            journal.requeue(doc_id)
            assert journal.requeue_count() == 1

    def test_a_schema_1_journal_gains_the_identity_columns(self, tmp_path: Path) -> None:
        """A journal of schema 1 opens: ctime_ns and inode are added (NULL for its rows), the
        schema version becomes 2, and new rows keep the facts."""
        path = tmp_path / "j.sqlite3"
        with Journal(path) as journal:
            old_id = queued(journal)
        with sqlite3.connect(path) as conn:
            conn.execute("ALTER TABLE documents DROP COLUMN ctime_ns")
            conn.execute("ALTER TABLE documents DROP COLUMN inode")
            conn.execute("PRAGMA user_version=1")
        with Journal(path) as journal:
            old = journal.document(old_id)
            assert (old.ctime_ns, old.inode, old.state) == (None, None, "queued")
            new = journal.add_document("p", "/in/n.pdf", "n.pdf", 1, 2, ctime_ns=3, inode=4)
            assert (new.ctime_ns, new.inode) == (3, 4)
            assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    def test_closed_journal_has_no_connection(self, tmp_path: Path) -> None:
        """Using a journal that is not open is a clear error."""
        with pytest.raises(RuntimeError, match="not open"):
            _ = Journal(tmp_path / "j.sqlite3").conn


class TestTransitions:
    @pytest.mark.parametrize(
        ("current", "new"),
        [(a, b) for a, b in itertools.permutations(DOCUMENT_STATES, 2) if b in TRANSITIONS[a]],
    )
    def test_allowed_transitions_succeed(self, journal: Journal, current: str, new: str) -> None:
        """Every transition listed in TRANSITIONS is accepted."""
        doc = journal.add_document("p", "/in/x.pdf", "x.pdf", 1, 1)
        force_state(journal, doc.id, current)
        set_state(journal, doc.id, new)
        assert journal.document(doc.id).state == new

    @pytest.mark.parametrize(
        ("current", "new"),
        [(a, b) for a, b in itertools.permutations(DOCUMENT_STATES, 2) if b not in TRANSITIONS[a]],
    )
    def test_other_transitions_raise(self, journal: Journal, current: str, new: str) -> None:
        """Every transition not listed raises InvalidTransition and changes nothing."""
        doc = journal.add_document("p", "/in/x.pdf", "x.pdf", 1, 1)
        force_state(journal, doc.id, current)
        with pytest.raises(InvalidTransition):
            set_state(journal, doc.id, new)
        assert journal.document(doc.id).state == current

    def test_table_is_closed(self) -> None:
        """Every target state of the table is itself a state, and end states are states."""
        for targets in TRANSITIONS.values():
            assert targets <= set(DOCUMENT_STATES)
        assert set(DOCUMENT_STATES) >= END_STATES

    def test_unknown_document(self, journal: Journal) -> None:
        """A transition of a document that does not exist is a KeyError."""
        with pytest.raises(KeyError):
            journal.mark_delivered(404)

    def test_a_refused_step_move_changes_nothing(self, journal: Journal) -> None:
        """A step's checked move is one UPDATE naming the states it may come from: a pending
        step cannot be accepted (pending → polling), and is left exactly as it was."""
        doc_id = queued(journal)
        (step,) = journal.steps_of(doc_id)
        with pytest.raises(InvalidTransition, match="pending → polling"):
            journal.step_accepted(step.id, "exe-1", "RUNNING")
        assert journal.step(step.id) == step
        with pytest.raises(KeyError):
            journal.step_accepted(404, "exe-1", "RUNNING")


class TestDocumentLifecycle:
    def test_new_document_is_discovered(self, journal: Journal) -> None:
        """add_document records path, size and mtime in state `discovered`."""
        doc = journal.add_document("invoices", "/in/sub/a.pdf", "sub/a.pdf", 10, 5)
        assert (doc.state, doc.name, doc.size, doc.mtime_ns) == ("discovered", "a.pdf", 10, 5)
        assert not doc.finished

    def test_queueing_creates_pending_steps(self, journal: Journal) -> None:
        """mark_queued stores hash and type and one pending row per step."""
        doc_id = queued(journal, "stp_a", "stp_b")
        doc = journal.document(doc_id)
        assert (doc.state, doc.sha256, doc.content_type, doc.attempts) == (
            "queued",
            SHA,
            "application/pdf",
            1,
        )
        assert [(s.step_id, s.state) for s in journal.steps_of(doc_id)] == [
            ("stp_a", "pending"),
            ("stp_b", "pending"),
        ]

    def test_single_step_lifecycle(self, journal: Journal) -> None:
        """pending → submitting → polling → success moves the document to completed."""
        doc_id = queued(journal)
        (step,) = journal.steps_of(doc_id)
        step = journal.step_submitting(step.id)
        assert (step.state, step.attempts) == ("submitting", 1)
        assert step.first_try_at is not None
        assert journal.document(doc_id).state == "submitting"
        step = journal.step_accepted(step.id, "exec-1", "ENQUEUED")
        assert (step.state, step.execution_id, step.status) == ("polling", "exec-1", "ENQUEUED")
        assert step.submitted_at is not None
        assert journal.document(doc_id).state == "polling"
        journal.step_status(step.id, "PROCESSING")
        assert journal.step(step.id).status == "PROCESSING"
        step, completed = journal.step_finished(
            step.id, state="success", status="SUCCESS", result={"total": 12}, sinks=["files"]
        )
        assert completed
        assert (step.state, step.result, step.finished) == ("success", {"total": 12}, True)
        assert journal.document(doc_id).state == "completed"

    def test_multi_step_document_completes_when_all_steps_end(self, journal: Journal) -> None:
        """With two steps, the document is completed only after the second one ends."""
        doc_id = queued(journal, "stp_a", "stp_b")
        assert not run_step(journal, doc_id, "stp_a")
        assert journal.document(doc_id).state == "submitting"
        b = next(s for s in journal.steps_of(doc_id) if s.step_id == "stp_b")
        journal.step_submitting(b.id)
        journal.step_accepted(b.id, "exec-b", "ENQUEUED")
        assert journal.document(doc_id).state == "polling"
        _, completed = journal.step_finished(b.id, state="error", status="ERROR", error="bad")
        assert completed
        assert journal.document(doc_id).state == "completed"

    def test_step_finished_creates_deliveries(self, journal: Journal) -> None:
        """step_finished adds one pending delivery per given sink, and not twice."""
        doc_id = queued(journal)
        run_step(journal, doc_id, "stp_a", sinks=("files", "db"))
        deliveries = journal.deliveries_of(doc_id)
        assert sorted((d.sink, d.state) for d in deliveries) == [
            ("db", "pending"),
            ("files", "pending"),
        ]
        step = journal.steps_of(doc_id)[0]
        journal.step_finished(step.id, state="success", sinks=["files", "db"])
        assert len(journal.deliveries_of(doc_id)) == 2

    def test_step_finished_needs_an_end_state(self, journal: Journal) -> None:
        """A step can only finish in success, error or failed."""
        doc_id = queued(journal)
        step = journal.steps_of(doc_id)[0]
        with pytest.raises(InvalidTransition):
            journal.step_finished(step.id, state="polling")

    def test_polling_step_cannot_be_submitted_again(self, journal: Journal) -> None:
        """step_submitting refuses a step that already has an execution id."""
        doc_id = queued(journal)
        step = journal.steps_of(doc_id)[0]
        journal.step_submitting(step.id)
        journal.step_accepted(step.id, "exec", "ENQUEUED")
        with pytest.raises(InvalidTransition):
            journal.step_submitting(step.id)

    def test_uncertain_submission_is_counted_and_flagged(self, journal: Journal) -> None:
        """step_uncertain increments `uncertain` and flags the document `resubmitted`."""
        doc_id = queued(journal)
        step = journal.steps_of(doc_id)[0]
        journal.step_submitting(step.id)
        step = journal.step_uncertain(step.id, "read timeout")
        assert (step.state, step.uncertain, step.error) == ("submitting", 1, "read timeout")
        assert "resubmitted" in journal.document(doc_id).flags
        journal.step_submitting(step.id)
        assert journal.step_uncertain(step.id, "again").uncertain == 2

    def test_not_accepted_submission_returns_to_pending(self, journal: Journal) -> None:
        """A submission that provably never arrived goes back to pending with its error."""
        doc_id = queued(journal)
        step = journal.steps_of(doc_id)[0]
        journal.step_submitting(step.id)
        step = journal.step_not_accepted(step.id, "connection refused")
        assert (step.state, step.error, step.uncertain) == ("pending", "connection refused", 0)
        assert journal.step_submitting(step.id).attempts == 2

    def test_deliveries_done_and_failed(self, journal: Journal) -> None:
        """delivery_done records the receipt; delivery_attempt_failed counts and may give up."""
        doc_id = queued(journal)
        run_step(journal, doc_id, "stp_a", sinks=("files", "db"))
        files, db = sorted(journal.deliveries_of(doc_id), key=lambda d: d.sink, reverse=True)
        journal.delivery_done(files.id, "/out/a.json")
        journal.delivery_attempt_failed(db.id, "db down", final=False)
        rows = {d.sink: d for d in journal.deliveries_of(doc_id)}
        assert (rows["files"].state, rows["files"].receipt) == ("delivered", "/out/a.json")
        assert rows["files"].delivered_at is not None
        assert (rows["db"].state, rows["db"].attempts, rows["db"].error) == (
            "pending",
            1,
            "db down",
        )
        journal.delivery_attempt_failed(db.id, "still down", final=True)
        assert {d.sink: d.state for d in journal.deliveries_of(doc_id)}["db"] == "failed"

    def test_delivered_then_archived(self, journal: Journal) -> None:
        """mark_delivered, archive_intent and finish end the document as archived."""
        doc_id = queued(journal)
        run_step(journal, doc_id, "stp_a")
        assert journal.mark_delivered(doc_id).outcome == "success"
        journal.archive_intent(doc_id, "/done/a.pdf")
        assert journal.document(doc_id).archive_to == "/done/a.pdf"
        doc = journal.finish(doc_id, "/done/a.pdf")
        assert (doc.state, doc.archived_to, doc.archive_to) == ("archived", "/done/a.pdf", None)
        assert doc.finished
        assert journal.unfinished_documents() == []

    def test_deliver_and_finish_is_one_step_from_completed_to_archived(
        self, journal: Journal
    ) -> None:
        """deliver_and_finish takes a completed document to archived with outcome success."""
        doc_id = queued(journal)
        run_step(journal, doc_id, "stp_a")
        doc = journal.deliver_and_finish(doc_id, "/in/a.pdf")
        assert (doc.state, doc.outcome, doc.archived_to) == ("archived", "success", "/in/a.pdf")
        assert doc.finished

    def test_deliver_and_finish_refuses_a_document_in_progress(self, journal: Journal) -> None:
        """deliver_and_finish of a document whose steps have not ended changes nothing."""
        doc_id = queued(journal, "stp_a", "stp_b")
        run_step(journal, doc_id, "stp_a")
        with pytest.raises(InvalidTransition):
            journal.deliver_and_finish(doc_id, "/in/a.pdf")
        assert journal.document(doc_id).state == "submitting"

    def test_mark_queued_returns_the_rows_it_created(self, journal: Journal) -> None:
        """mark_queued hands back the pending step rows, as steps_of would read them."""
        doc = journal.add_document("invoices", "/in/q.pdf", "q.pdf", 10, 123)
        queued_doc, steps = journal.mark_queued(
            doc.id,
            sha256=SHA,
            content_type="application/pdf",
            size=10,
            mtime_ns=123,
            steps=["stp_a", "stp_b"],
        )
        assert queued_doc.state == "queued"
        assert steps == journal.steps_of(doc.id)
        assert [(s.step_id, s.state) for s in steps] == [("stp_a", "pending"), ("stp_b", "pending")]

    def test_add_queued_journals_a_hashed_file_as_queued_in_one_transaction(
        self, journal: Journal
    ) -> None:
        """add_queued inserts the document already queued, with its pending step rows."""
        doc, steps = journal.add_queued(
            "invoices",
            "/in/h.pdf",
            "h.pdf",
            sha256=SHA,
            content_type="application/pdf",
            size=10,
            mtime_ns=123,
            steps=["stp_a", "stp_b"],
        )
        assert (doc.state, doc.sha256, doc.content_type, doc.attempts) == (
            "queued",
            SHA,
            "application/pdf",
            1,
        )
        assert journal.document(doc.id) == doc
        assert [(s.step_id, s.state) for s in steps] == [("stp_a", "pending"), ("stp_b", "pending")]
        assert not journal.conn.in_transaction

    def test_add_queued_leaves_nothing_when_it_fails(self, journal: Journal) -> None:
        """A step id SQLite cannot store fails add_queued whole: no half-journaled document."""
        with pytest.raises(sqlite3.Error):
            journal.add_queued(
                "invoices",
                "/in/x.pdf",
                "x.pdf",
                sha256=SHA,
                content_type="application/pdf",
                size=10,
                mtime_ns=123,
                steps=[object()],  # type: ignore[list-item]
            )
        assert journal.unfinished_documents() == []

    def test_completion_reads_document_steps_and_deliveries_together(
        self, journal: Journal
    ) -> None:
        """completion returns what document, steps_of and deliveries_of return."""
        doc_id = queued(journal, "stp_a", "stp_b")
        run_step(journal, doc_id, "stp_a", sinks=("files", "db"))
        run_step(journal, doc_id, "stp_b", state="error")
        view = journal.completion(doc_id)
        assert view.document == journal.document(doc_id)
        assert view.steps == journal.steps_of(doc_id)
        assert view.deliveries == journal.deliveries_of(doc_id)
        with pytest.raises(KeyError):
            journal.completion(404)

    def test_finish_keeps_failed_state(self, journal: Journal) -> None:
        """Finishing a failed document records the file action but keeps `failed`."""
        doc_id = queued(journal)
        run_step(journal, doc_id, "stp_a", state="error")
        journal.mark_failed(doc_id, "step stp_a: boom", stage="result", detail={"step_id": "a"})
        doc = journal.finish(doc_id, "/failed/a.pdf")
        assert (doc.state, doc.error, doc.error_stage) == ("failed", "step stp_a: boom", "result")
        assert doc.error_detail == {"step_id": "a"}
        assert doc.finished

    def test_finish_of_a_document_in_progress_raises(self, journal: Journal) -> None:
        """A document still in progress cannot be finished."""
        with pytest.raises(InvalidTransition):
            journal.finish(queued(journal), None)

    def test_reject_and_duplicate(self, journal: Journal) -> None:
        """reject and mark_duplicate end intake with an outcome and the reason."""
        rejected = journal.add_document("p", "/in/e.pdf", "e.pdf", 0, 1)
        doc = journal.reject(rejected.id, "empty file (0 bytes)", sha256=SHA, content_type=None)
        assert (doc.state, doc.outcome, doc.error, doc.sha256) == (
            "rejected",
            "rejected",
            "empty file (0 bytes)",
            SHA,
        )
        twin = journal.add_document("p", "/in/t.pdf", "t.pdf", 1, 1)
        doc = journal.mark_duplicate(twin.id, sha256=SHA, content_type="application/pdf", of=1)
        assert (doc.state, doc.outcome, doc.duplicate_of) == ("duplicate", "duplicate", 1)

    def test_rediscovered_drops_pending_steps(self, journal: Journal) -> None:
        """A file that changed while queued goes back to discovered without its pending steps."""
        doc_id = queued(journal, "a", "b")
        assert journal.mark_rediscovered(doc_id).state == "discovered"
        assert journal.steps_of(doc_id) == []

    def test_flags(self, journal: Journal) -> None:
        """add_flag adds a marker once."""
        doc_id = queued(journal)
        journal.add_flag(doc_id, "slow")
        journal.add_flag(doc_id, "slow")
        assert journal.document(doc_id).flags == frozenset({"slow"})


class TestRequeue:
    def failed_document(self, journal: Journal) -> int:
        """A document whose step a succeeded (delivered to files, failed to db), b errored."""
        doc_id = queued(journal, "stp_a", "stp_b")
        run_step(journal, doc_id, "stp_a", sinks=("files", "db"))
        run_step(journal, doc_id, "stp_b", state="error", sinks=())
        rows = {d.sink: d for d in journal.deliveries_of(doc_id)}
        journal.delivery_done(rows["files"].id, "/out/a.json")
        journal.delivery_attempt_failed(rows["db"].id, "db down", final=True)
        journal.mark_failed(doc_id, "step stp_b: boom", stage="result")
        journal.finish(doc_id, "/failed/a.pdf")
        return doc_id

    def test_failed_document_keeps_successes(self, journal: Journal) -> None:
        """Requeue keeps the successful step and its delivered row; only failed work runs again."""
        doc_id = self.failed_document(journal)
        doc = journal.requeue(doc_id)
        assert (doc.state, doc.error, doc.outcome, doc.finished_at) == ("queued", None, None, None)
        assert doc.attempts == 2
        assert [(s.step_id, s.state) for s in journal.steps_of(doc_id)] == [("stp_a", "success")]
        rows = {d.sink: d for d in journal.deliveries_of(doc_id)}
        assert (rows["files"].state, rows["files"].receipt) == ("delivered", "/out/a.json")
        assert (rows["db"].state, rows["db"].error) == ("pending", None)
        steps = journal.ensure_steps(doc_id, ["stp_a", "stp_b"])
        assert [(s.step_id, s.state) for s in steps] == [("stp_a", "success"), ("stp_b", "pending")]

    def test_document_failed_only_in_delivery_can_complete(self, journal: Journal) -> None:
        """After requeue, a document whose steps all succeeded goes on to completed → delivered."""
        doc_id = queued(journal)
        run_step(journal, doc_id, "stp_a", sinks=("db",))
        (row,) = journal.deliveries_of(doc_id)
        journal.delivery_attempt_failed(row.id, "db down", final=True)
        journal.mark_failed(doc_id, "sink db: db down", stage="deliver")
        journal.finish(doc_id, None)
        journal.requeue(doc_id)
        steps = journal.ensure_steps(doc_id, ["stp_a"])
        assert all(s.finished for s in steps)
        assert journal.document(doc_id).state == "completed"
        journal.delivery_done(row.id, "ok")
        assert journal.mark_delivered(doc_id).state == "delivered"

    def test_archived_document_needs_force(self, journal: Journal) -> None:
        """A successfully archived document is only run again with force, from scratch."""
        doc_id = queued(journal)
        run_step(journal, doc_id, "stp_a")
        journal.mark_delivered(doc_id)
        journal.finish(doc_id, "/done/a.pdf")
        with pytest.raises(InvalidTransition, match="--force"):
            journal.requeue(doc_id)
        doc = journal.requeue(doc_id, force=True)
        assert (doc.state, doc.archived_to) == ("queued", None)
        assert journal.steps_of(doc_id) == []

    def test_rejected_document_is_inspected_again(self, journal: Journal) -> None:
        """A rejected document goes back to discovered (its file will be hashed again)."""
        doc = journal.add_document("p", "/in/x.pdf", "x.pdf", 0, 1)
        journal.reject(doc.id, "empty")
        journal.finish(doc.id, None)
        assert journal.requeue(doc.id).state == "discovered"

    def test_requeue_bumps_the_requeued_counter(self, journal: Journal) -> None:
        """Each requeue adds one to the counter a running daemon polls; a refused one does not."""
        assert journal.requeue_count() == 0
        doc_id = self.failed_document(journal)
        journal.requeue(doc_id)
        assert journal.requeue_count() == 1
        with pytest.raises(InvalidTransition):
            journal.requeue(doc_id)  # in progress again
        assert journal.requeue_count() == 1

    def test_document_in_progress_cannot_be_requeued(self, journal: Journal) -> None:
        """Requeueing a document that is still running is refused."""
        with pytest.raises(InvalidTransition, match="in progress"):
            journal.requeue(queued(journal))

    def test_set_path(self, journal: Journal) -> None:
        """set_path records where a retried file now lives."""
        doc_id = self.failed_document(journal)
        journal.set_path(doc_id, "/failed/a.pdf")
        assert journal.document(doc_id).path == "/failed/a.pdf"


class TestMeta:
    def test_a_value_is_stored_replaced_and_timed(self, journal: Journal) -> None:
        """set_meta stores a value under a key with its time; a second set replaces both."""
        assert journal.get_meta("request_rate") is None
        journal.set_meta("request_rate", '{"requests_per_second": 16}')
        first = journal.get_meta("request_rate")
        journal.set_meta("request_rate", '{"requests_per_second": 4.5}')
        second = journal.get_meta("request_rate")
        assert first is not None
        assert second is not None
        assert second[0] == '{"requests_per_second": 4.5}'
        assert second[1] > first[1]


class TestQueries:
    def test_find_done_by_sha(self, journal: Journal) -> None:
        """Only delivered/archived documents of the same pipeline count, never itself or dupes."""
        first = queued(journal, path="/in/1.pdf")
        second = queued(journal, path="/in/2.pdf")
        assert journal.find_done_by_sha("invoices", SHA, exclude=second) is None
        run_step(journal, first, "stp_a")
        journal.mark_delivered(first)
        found = journal.find_done_by_sha("invoices", SHA, exclude=second)
        assert found is not None
        assert found.id == first
        assert journal.find_done_by_sha("invoices", SHA, exclude=first) is None
        assert journal.find_done_by_sha("receipts", SHA, exclude=second) is None
        assert journal.find_done_by_sha("invoices", "b" * 64, exclude=second) is None

    def test_counts_and_recent_failures(self, journal: Journal) -> None:
        """counts() groups by pipeline and state; recent_failures lists newest first."""
        a = journal.add_document("invoices", "/in/a.pdf", "a.pdf", 0, 1)
        b = journal.add_document("invoices", "/in/b.pdf", "b.pdf", 0, 1)
        c = journal.add_document("receipts", "/in/c.pdf", "c.pdf", 0, 1)
        journal.reject(a.id, "empty")
        journal.reject(b.id, "too large")
        assert journal.counts() == {
            "invoices": {"rejected": 2},
            "receipts": {"discovered": 1},
        }
        assert [d.id for d in journal.recent_failures()] == [b.id, a.id]
        assert [d.id for d in journal.recent_failures(limit=1)] == [b.id]
        assert journal.recent_failures(pipeline="receipts") == []
        assert [d.id for d in journal.documents_in("discovered")] == [c.id]
        assert [d.id for d in journal.documents_in("rejected", pipeline="invoices")] == [a.id, b.id]

    def test_outcome_counts_name_finished_documents_by_outcome(self, journal: Journal) -> None:
        """outcome_counts() counts archived documents as success or duplicate, others by state."""
        a = journal.add_document("invoices", "/in/a.pdf", "a.pdf", 0, 1)
        b = journal.add_document("invoices", "/in/b.pdf", "b.pdf", 0, 1)
        journal.add_document("invoices", "/in/c.pdf", "c.pdf", 0, 1)
        journal.reject(a.id, "empty")
        journal.mark_duplicate(b.id, sha256="b" * 64, content_type="application/pdf", of=a.id)
        journal.finish(b.id, "/done/b.pdf")
        assert journal.outcome_counts() == {
            "invoices": {"rejected": 1, "duplicate": 1, "discovered": 1}
        }

    def test_latest_by_path_and_oldest_pending(self, journal: Journal) -> None:
        """latest_by_path keeps the newest row per path; oldest_pending is per pipeline."""
        old = journal.add_document("invoices", "/in/a.pdf", "a.pdf", 1, 1)
        new = journal.add_document("invoices", "/in/a.pdf", "a.pdf", 2, 2)
        latest = journal.latest_by_path("invoices")
        assert list(latest) == ["/in/a.pdf"]
        assert latest["/in/a.pdf"].id == new.id
        assert journal.oldest_pending() == {"invoices": old.created_at}

    def test_steps_in(self, journal: Journal) -> None:
        """steps_in finds steps by state among unfinished documents."""
        doc_id = queued(journal, "a", "b")
        a = journal.steps_of(doc_id)[0]
        journal.step_submitting(a.id)
        journal.step_accepted(a.id, "exec", "ENQUEUED")
        assert [s.step_id for s in journal.steps_in("polling")] == ["a"]
        assert [s.step_id for s in journal.steps_in("pending", "polling")] == ["a", "b"]

    def test_latencies_round_trip(self, journal: Journal) -> None:
        """save_latencies upserts rows that load_latencies returns."""
        journal.save_latencies([("stp", 0, 3, 2.5, 0.1)])
        journal.save_latencies([("stp", 0, 4, 2.0, 0.2), ("stp", 1, 1, 9.0, 0.0)])
        assert sorted(journal.load_latencies()) == [
            ("stp", 0, 4, 2.0, 0.2),
            ("stp", 1, 1, 9.0, 0.0),
        ]


class TestAsyncJournal:
    @pytest.fixture(name="async_journal")
    async def async_journal_fixture(self, tmp_path: Path) -> Any:
        """An open AsyncJournal, closed after the test."""
        journal = AsyncJournal(Journal(tmp_path / "journal.sqlite3"))
        await journal.open()
        yield journal
        await journal.close()

    async def test_calls_run_on_one_writer_thread(self, async_journal: AsyncJournal) -> None:
        """Every call runs on the same thread, which is not the event loop's."""
        names = await asyncio.gather(
            *(async_journal.call(lambda: threading.current_thread().name) for _ in range(20))
        )
        assert set(names) == {"journal-writer"}

    async def test_methods_are_proxied(self, async_journal: AsyncJournal) -> None:
        """Journal methods are awaitable on the AsyncJournal under the same names."""
        doc = await async_journal.add_document("p", "/in/a.pdf", "a.pdf", 1, 1)
        assert (await async_journal.document(doc.id)).state == "discovered"

    async def test_concurrent_calls_share_transactions(self, async_journal: AsyncJournal) -> None:
        """200 concurrent add_document calls all commit, in far fewer than 200 transactions."""
        begins: list[str] = []
        async_journal.journal.conn.set_trace_callback(
            lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None
        )
        gate = threading.Event()
        # Hold the writer so that the 200 calls queue up behind this one.
        held = asyncio.ensure_future(async_journal.call(gate.wait, 10))

        async def release() -> None:
            gate.set()

        docs = await asyncio.gather(
            *(
                async_journal.add_document("p", f"/in/{i}.pdf", f"{i}.pdf", i, i)
                for i in range(200)
            ),
            release(),
        )
        await held
        async_journal.journal.conn.set_trace_callback(None)
        assert len({d.id for d in docs[:200]}) == 200
        assert len(begins) < 10, begins
        count = async_journal.journal.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        assert count == 200

    async def test_failing_call_does_not_roll_back_the_batch(
        self, async_journal: AsyncJournal
    ) -> None:
        """A call that fails half-way is undone alone; the others in its batch commit."""
        doc = await async_journal.add_document("p", "/in/a.pdf", "a.pdf", 1, 1)
        gate = threading.Event()
        held = asyncio.ensure_future(async_journal.call(gate.wait, 10))

        async def release() -> None:
            gate.set()

        results = await asyncio.gather(
            async_journal.add_document("p", "/in/b.pdf", "b.pdf", 1, 1),
            # Sets the state to queued, then fails binding a step id SQLite cannot store.
            async_journal.mark_queued(
                doc.id,
                sha256=SHA,
                content_type="application/pdf",
                size=1,
                mtime_ns=1,
                steps=[object()],
            ),
            async_journal.add_document("p", "/in/c.pdf", "c.pdf", 1, 1),
            release(),
            return_exceptions=True,
        )
        await held
        assert isinstance(results[1], sqlite3.Error)
        assert (await async_journal.document(doc.id)).state == "discovered"
        paths = {d.path for d in await async_journal.documents_in("discovered")}
        assert paths == {"/in/a.pdf", "/in/b.pdf", "/in/c.pdf"}

    async def test_a_batch_without_failures_takes_no_savepoints(
        self, async_journal: AsyncJournal
    ) -> None:
        """Savepoints cost two statements a call: a batch whose calls all succeed runs without
        them; one with a failing call runs again with them (the test above: nothing is lost)."""
        statements: list[str] = []
        async_journal.journal.conn.set_trace_callback(statements.append)
        await asyncio.gather(
            *(async_journal.add_document("p", f"/in/{i}.pdf", f"{i}.pdf", 1, 1) for i in range(20))
        )
        async_journal.journal.conn.set_trace_callback(None)
        assert not [s for s in statements if "SAVEPOINT" in s], statements
        assert len(await async_journal.documents_in("discovered")) == 20

    async def test_cancelled_caller_does_not_stop_the_writer(
        self, async_journal: AsyncJournal
    ) -> None:
        """A call whose caller was cancelled still writes (nothing asked for is lost); the
        writer goes on with later calls."""
        gate = threading.Event()
        held = asyncio.ensure_future(async_journal.call(gate.wait, 10))
        victim = asyncio.ensure_future(async_journal.add_document("p", "/in/v.pdf", "v.pdf", 1, 1))
        await asyncio.sleep(0)
        victim.cancel()
        for _ in range(3):
            await asyncio.sleep(0)  # let the cancellation reach the queued call
        gate.set()
        await held
        doc = await asyncio.wait_for(
            async_journal.add_document("p", "/in/w.pdf", "w.pdf", 1, 1), timeout=10
        )
        assert doc.path == "/in/w.pdf"
        assert victim.cancelled()
        paths = {d.path for d in await async_journal.documents_in("discovered")}
        assert paths == {"/in/v.pdf", "/in/w.pdf"}

    async def test_calls_after_close_raise(self, tmp_path: Path) -> None:
        """Once closed, the AsyncJournal refuses new calls."""
        journal = AsyncJournal(Journal(tmp_path / "journal.sqlite3"))
        await journal.open()
        await journal.add_document("p", "/in/a.pdf", "a.pdf", 1, 1)
        await journal.close()
        with pytest.raises(RuntimeError, match="closed"):
            await journal.add_document("p", "/in/b.pdf", "b.pdf", 1, 1)
        with Journal(tmp_path / "journal.sqlite3") as reopened:
            assert len(reopened.documents_in("discovered")) == 1


class TestAbortedBatch:
    async def test_a_batch_rolled_back_by_sqlite_fails_every_call_in_it(
        self, tmp_path: Path
    ) -> None:
        """When SQLite aborts the group transaction, no call in it reports success."""
        journal = AsyncJournal(Journal(tmp_path / "journal.sqlite3"))
        await journal.open()
        try:

            def abort_transaction() -> None:
                journal.journal.conn.execute("ROLLBACK")  # what SQLITE_FULL does to a transaction
                raise sqlite3.OperationalError("database or disk is full")

            gate = threading.Event()
            held = asyncio.ensure_future(journal.call(gate.wait, 10))
            await asyncio.sleep(0.05)
            first = asyncio.ensure_future(journal.add_document("p", "/a", "a", 1, 1))
            boom = asyncio.ensure_future(journal.call(abort_transaction))
            after = asyncio.ensure_future(journal.add_document("p", "/b", "b", 1, 1))
            await asyncio.sleep(0.05)
            gate.set()
            await held
            results = await asyncio.gather(first, boom, after, return_exceptions=True)
            assert all(isinstance(r, sqlite3.Error) for r in results)
            assert await journal.documents_in("discovered") == []
            # The writer is still alive for the next batch.
            doc = await journal.add_document("p", "/c", "c", 1, 1)
            assert doc.path == "/c"
        finally:
            await journal.close()


class TestLatestByPath:
    def test_only_unfinished_and_kept_files_are_remembered(self, journal: Journal) -> None:
        """A scan must know unfinished documents and files kept in place, not moved history."""
        moved = journal.add_document("p", "/in/moved.pdf", "moved.pdf", 1, 1)
        journal.reject(moved.id, "x")
        journal.finish(moved.id, "/failed/moved.pdf")
        kept = journal.add_document("p", "/in/kept.pdf", "kept.pdf", 1, 1)
        journal.reject(kept.id, "x")
        journal.finish(kept.id, "/in/kept.pdf")
        journal.add_document("p", "/in/new.pdf", "new.pdf", 1, 1)
        assert sorted(journal.latest_by_path("p")) == ["/in/kept.pdf", "/in/new.pdf"]
