"""The journal of a pipeline that routes by document type: the `@identify` step row, the
identified type on the document, the `unrouted` outcome, `retry`, counts, schema 3."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from docutray_watch._memstore import MemoryStore
from docutray_watch.journal import (
    END_STATES,
    IDENTIFY_STEP,
    SCHEMA_VERSION,
    DocumentState,
    InvalidTransition,
    Journal,
)
from docutray_watch.journal.sqlite import schema
from docutray_watch.journal.sqlite.counts import pipeline_counts
from docutray_watch.journal.states import check_document
from docutray_watch.records import Identification

SHA = "b" * 64
INVOICE = Identification(code="invoice", name="Invoice", confidence=0.9)


@pytest.fixture(name="journal")
def journal_fixture(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "journal.sqlite3") as journal:
        yield journal


def queued_for_identification(journal: Journal, path: str = "/in/a.pdf") -> int:
    """A document of a routed pipeline, queued with its one `@identify` row."""
    doc = journal.add_document("mixed", path, path.rsplit("/", 1)[-1], 10, 1)
    journal.mark_queued(
        doc.id,
        sha256=SHA,
        content_type="application/pdf",
        size=10,
        mtime_ns=1,
        steps=[IDENTIFY_STEP],
    )
    return doc.id


def run(journal: Journal, doc_id: int, step_id: str, state: str = "success") -> bool:
    """Submit, accept and end one step row; whether the document completed."""
    step = next(s for s in journal.steps_of(doc_id) if s.step_id == step_id)
    journal.step_submitting(step.id)
    journal.step_accepted(step.id, f"id-{step_id}", "ENQUEUED")
    _, completed = journal.step_finished(
        step.id,
        state=state,
        status="SUCCESS" if state == "success" else "ERROR",
        result={"status": "SUCCESS", "document_type": {"code": "invoice"}},
        error=None if state == "success" else "unreadable",
    )
    return completed


def identified(journal: Journal, identification: Identification = INVOICE) -> int:
    doc_id = queued_for_identification(journal)
    assert not run(journal, doc_id, IDENTIFY_STEP)
    journal.set_identification(doc_id, identification.model_dump_json(), identification.code)
    return doc_id


class TestIdentificationStep:
    def test_a_successful_identification_does_not_complete_the_document(
        self, journal: Journal
    ) -> None:
        """With only `@identify` ended (success) the document waits for its route."""
        doc_id = queued_for_identification(journal)
        assert not run(journal, doc_id, IDENTIFY_STEP)
        assert journal.document(doc_id).state == DocumentState.POLLING

    def test_a_failed_identification_completes_it_like_a_step_error(self, journal: Journal) -> None:
        """An ERROR identification ends the document's steps: it completes (then fails)."""
        doc_id = queued_for_identification(journal)
        assert run(journal, doc_id, IDENTIFY_STEP, state="error")
        assert journal.document(doc_id).state == DocumentState.COMPLETED

    def test_identification_is_stored_on_the_document(self, journal: Journal) -> None:
        """set_identification keeps the code and the whole answer, read back as JSON data."""
        doc_id = identified(journal)
        doc = journal.document(doc_id)
        assert doc.identified_type == "invoice"
        assert doc.identification is not None
        assert Identification.model_validate(doc.identification) == INVOICE

    def test_set_identification_refuses_text_that_is_not_json(self, journal: Journal) -> None:
        """What cannot be read back is never stored."""
        doc_id = queued_for_identification(journal)
        with pytest.raises(ValueError, match="Expecting value"):
            journal.set_identification(doc_id, "not json", "invoice")
        assert journal.document(doc_id).identified_type is None

    def test_routed_steps_run_then_the_document_completes(self, journal: Journal) -> None:
        """ensure_steps adds the route's steps; the document completes once they ended."""
        doc_id = identified(journal)
        steps = journal.ensure_steps(doc_id, ["stp_inv", "stp_tot"])
        assert [(s.step_id, s.state) for s in steps] == [
            (IDENTIFY_STEP, "success"),
            ("stp_inv", "pending"),
            ("stp_tot", "pending"),
        ]
        assert journal.document(doc_id).state == DocumentState.POLLING
        assert not run(journal, doc_id, "stp_inv")
        assert run(journal, doc_id, "stp_tot")
        assert journal.document(doc_id).state == DocumentState.COMPLETED

    def test_no_route_and_otherwise_fail_fails_it(self, journal: Journal) -> None:
        """An identified document no route takes may fail straight from polling."""
        doc_id = identified(journal)
        doc = journal.mark_failed(doc_id, "identified as `x` (0.40)…", stage="route")
        assert (doc.state, doc.outcome, doc.error_stage) == ("failed", "failed", "route")


class TestUnrouted:
    def test_mark_unrouted_ends_it_with_the_reason(self, journal: Journal) -> None:
        """otherwise: keep — outcome `unrouted`, stage `route`, the reason kept."""
        doc_id = identified(journal)
        doc = journal.mark_unrouted(doc_id, "no route", detail={"identified_type": "id_card"})
        assert (doc.state, doc.outcome, doc.error, doc.error_stage) == (
            "unrouted",
            "unrouted",
            "no route",
            "route",
        )
        assert doc.error_detail == {"identified_type": "id_card"}

    def test_unrouted_is_an_end_state_that_finish_keeps(self, journal: Journal) -> None:
        """finish() records the file kept where it was; the state stays `unrouted`."""
        doc_id = identified(journal)
        journal.mark_unrouted(doc_id, "no route")
        doc = journal.finish(doc_id, "/in/a.pdf")
        assert doc.state == "unrouted"
        assert doc.finished
        assert DocumentState.UNROUTED in END_STATES
        assert journal.latest_by_path("mixed")["/in/a.pdf"].id == doc_id

    def test_status_counts_unrouted(self, journal: Journal) -> None:
        """The counts kept by triggers have the word `unrouted`."""
        doc_id = identified(journal)
        journal.mark_unrouted(doc_id, "no route")
        journal.finish(doc_id, "/in/a.pdf")
        assert pipeline_counts(journal.conn)["mixed"] == {"unrouted": 1}

    def test_retry_releases_it_without_identifying_again(self, journal: Journal) -> None:
        """requeue: back to queued, the successful `@identify` row and the type are kept, so
        the engine routes it again (adding the steps) without a second identification."""
        doc_id = identified(journal)
        journal.mark_unrouted(doc_id, "no route")
        journal.finish(doc_id, "/in/a.pdf")
        doc = journal.requeue(doc_id)
        assert (doc.state, doc.outcome, doc.error, doc.identified_type) == (
            "queued",
            None,
            None,
            "invoice",
        )
        assert [(s.step_id, s.state) for s in journal.steps_of(doc_id)] == [
            (IDENTIFY_STEP, "success")
        ]
        steps = journal.ensure_steps(doc_id, ["stp_inv"])
        assert [s.step_id for s in steps] == [IDENTIFY_STEP, "stp_inv"]
        assert journal.document(doc_id).state == "queued"

    def test_forced_retry_of_a_success_identifies_again(self, journal: Journal) -> None:
        """retry --force re-runs a done document from scratch, identification included."""
        doc_id = identified(journal)
        journal.ensure_steps(doc_id, ["stp_inv"])
        run(journal, doc_id, "stp_inv")
        journal.deliver_and_finish(doc_id, "/in/a.pdf")
        doc = journal.requeue(doc_id, force=True)
        assert (doc.identified_type, doc.identification) == (None, None)
        assert journal.steps_of(doc_id) == []

    @pytest.mark.parametrize(
        ("before", "after", "allowed"),
        [
            ("unrouted", "queued", True),
            ("unrouted", "superseded", True),
            ("unrouted", "completed", False),
            ("polling", "unrouted", True),
            ("queued", "unrouted", True),
            ("completed", "unrouted", False),
            ("archived", "unrouted", False),
        ],
    )
    def test_transitions(self, before: str, after: str, allowed: bool) -> None:
        """unrouted is reached from a waiting document and left by retry or a file change."""
        if allowed:
            assert check_document(1, before, after) == after
        else:
            with pytest.raises(InvalidTransition):
                check_document(1, before, after)


class TestCountsByType:
    def test_counts_per_pipeline_and_type(self, journal: Journal) -> None:
        """Documents are counted by the type they were identified as, per pipeline."""
        identified(journal)
        identified(journal)
        identified(journal, Identification(code="receipt", name="Receipt", confidence=0.7))
        queued_for_identification(journal)  # not identified yet: not counted
        assert journal.counts_by_type() == {"mixed": {"invoice": 2, "receipt": 1}}

    def test_no_identified_document_counts_nothing(self, journal: Journal) -> None:
        """A journal of pipelines that do not identify has no per-type counts."""
        assert journal.counts_by_type() == {}


class TestMemoryStore:
    def test_the_store_methods(self) -> None:
        """MemoryStore (the tests' StateStore) has set_identification, mark_unrouted and
        counts_by_type, journaled like every other call."""

        async def scenario() -> None:
            store = MemoryStore()
            await store.open()
            doc, steps = await store.add_queued(
                "mixed",
                "/in/a.pdf",
                "a.pdf",
                sha256=SHA,
                content_type="application/pdf",
                size=1,
                mtime_ns=1,
                steps=[IDENTIFY_STEP],
            )
            await store.step_submitting(steps[0].id)
            await store.step_accepted(steps[0].id, "id-1", "ENQUEUED")
            view = await store.finish_step(steps[0].id, state="success")
            assert view.document.state == "polling"  # identified: waits for its route
            row = await store.set_identification(doc.id, INVOICE.model_dump_json(), "invoice")
            assert row.identified_type == "invoice"
            assert await store.counts_by_type() == {"mixed": {"invoice": 1}}
            row = await store.mark_unrouted(doc.id, "no route")
            assert row.state == "unrouted"
            assert store.names()[-3:] == ["set_identification", "counts_by_type", "mark_unrouted"]
            await store.close()
            store.discard()

        asyncio.run(scenario())


class TestSchema3:
    def make_v2_journal(self, path: Path) -> None:
        """A journal as the release before identification wrote it (schema 2)."""
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN")
        schema.MIGRATIONS[1](conn)
        schema.MIGRATIONS[2](conn)
        conn.execute("PRAGMA user_version=2")
        conn.execute("COMMIT")
        conn.execute(
            "INSERT INTO documents (pipeline, path, relative_path, size, mtime_ns, sha256,"
            " content_type, state, attempts, created_at, updated_at)"
            " VALUES ('p', '/in/a.pdf', 'a.pdf', 10, 5, 'ab', 'application/pdf', 'queued', 1, 1, 1)"
        )
        conn.close()

    def test_a_v2_journal_gains_the_columns(self, tmp_path: Path) -> None:
        """Opening a schema-2 journal backs it up, adds identified_type and identification
        (NULL for its documents) and the per-type index; its documents are untouched."""
        path = tmp_path / "journal.sqlite3"
        self.make_v2_journal(path)
        with Journal(path) as journal:
            assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            doc = journal.document(1)
            assert (doc.state, doc.identified_type, doc.identification) == ("queued", None, None)
            indexes = {r[1] for r in journal.conn.execute("PRAGMA index_list(documents)")}
            assert "documents_by_type" in indexes
            journal.set_identification(1, INVOICE.model_dump_json(), "invoice")
            assert journal.counts_by_type() == {"p": {"invoice": 1}}
        with sqlite3.connect(tmp_path / "journal.sqlite3.v2.bak") as old:
            assert old.execute("PRAGMA user_version").fetchone()[0] == 2
            columns = {r[1] for r in old.execute("PRAGMA table_info(documents)")}
            assert "identified_type" not in columns

    def test_counting_by_type_reads_the_kept_counts(self, journal: Journal) -> None:
        """`status` stays fast with history: the statement counts_by_type runs reads
        `type_counts` (schema 5, kept by triggers), not the documents or their index
        (tests/journal/test_type_counts.py has the rest)."""
        ran: list[str] = []
        journal.conn.set_trace_callback(ran.append)
        try:
            journal.counts_by_type()
        finally:
            journal.conn.set_trace_callback(None)
        (statement,) = ran
        plan = [str(row[-1]) for row in journal.conn.execute(f"EXPLAIN QUERY PLAN {statement}")]
        assert all("documents" not in line for line in plan), plan
        assert any("type_counts" in line for line in plan), plan
