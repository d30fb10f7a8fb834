"""Tests of `docutray_watch.journal.states`: the three transition tables, checked on every write."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path

import pytest

from docutray_watch.journal import (
    DELIVERY_TRANSITIONS,
    DOCUMENT_TRANSITIONS,
    STEP_TRANSITIONS,
    DeliveryState,
    DocumentState,
    InvalidTransition,
    Journal,
    StepState,
)
from docutray_watch.journal.states import check_delivery, check_document, check_step

SHA = "b" * 64

TABLES = [
    pytest.param(DocumentState, DOCUMENT_TRANSITIONS, check_document, id="documents"),
    pytest.param(StepState, STEP_TRANSITIONS, check_step, id="steps"),
    pytest.param(DeliveryState, DELIVERY_TRANSITIONS, check_delivery, id="deliveries"),
]


@pytest.fixture(name="journal")
def journal_fixture(tmp_path: Path) -> Iterator[Journal]:
    """An open journal in the test's folder."""
    with Journal(tmp_path / "journal.sqlite3") as journal:
        yield journal


def delivered_step(journal: Journal, *sinks: str) -> tuple[int, int]:
    """A queued document whose one step ended in success with deliveries to `sinks`;
    returns (document id, step row)."""
    doc, steps = journal.add_queued(
        "p",
        "/in/a.pdf",
        "a.pdf",
        sha256=SHA,
        content_type="application/pdf",
        size=1,
        mtime_ns=1,
        steps=["stp_a"],
    )
    journal.step_submitting(steps[0].id)
    journal.step_accepted(steps[0].id, "exec-1", "ENQUEUED")
    journal.step_finished(steps[0].id, state="success", status="SUCCESS", result={}, sinks=sinks)
    return doc.id, steps[0].id


class TestTables:
    @pytest.mark.parametrize(("enum", "table", "check"), TABLES)
    def test_every_state_has_a_row_and_values_are_the_stored_strings(
        self, enum: type[StrEnum], table: Mapping[StrEnum, frozenset[StrEnum]], check: object
    ) -> None:
        """Each table covers every state of its enum, and each value is its lower-case name
        (the strings the journal has always stored)."""
        assert set(table) == set(enum)
        for state in enum:
            assert state.value == state.name.lower()
            assert table[state] <= set(enum)

    @pytest.mark.parametrize(("enum", "table", "check"), TABLES)
    def test_a_move_is_allowed_exactly_when_the_table_lists_it(
        self, enum: type[StrEnum], table: Mapping[StrEnum, frozenset[StrEnum]], check: object
    ) -> None:
        """For every pair of states: listed (or staying put) passes, anything else raises."""
        assert callable(check)
        for before, after in itertools.product(enum, repeat=2):
            if after == before or after in table[before]:
                assert check(1, before.value, after.value) == after
            else:
                with pytest.raises(InvalidTransition):
                    check(1, before.value, after.value)

    def test_an_unknown_state_raises(self) -> None:
        """A state no table knows is refused, whatever the kind."""
        with pytest.raises(InvalidTransition, match="unknown"):
            check_step(1, "pending", "half-done")
        with pytest.raises(InvalidTransition, match="unknown"):
            check_delivery(1, "lost", "pending")

    def test_old_names_still_answer(self) -> None:
        """`TRANSITIONS` is the document table and answers plain strings."""
        from docutray_watch.journal import TRANSITIONS

        assert TRANSITIONS is DOCUMENT_TRANSITIONS
        assert "submitting" in TRANSITIONS["queued"]


class TestDocumentWrites:
    def test_an_invalid_document_move_raises_and_changes_nothing(self, journal: Journal) -> None:
        """Marking a discovered document delivered is refused; it stays discovered."""
        doc = journal.add_document("p", "/in/a.pdf", "a.pdf", 1, 1)
        with pytest.raises(InvalidTransition, match="discovered → delivered"):
            journal.mark_delivered(doc.id)
        assert journal.document(doc.id).state is DocumentState.DISCOVERED

    def test_rows_carry_enums(self, journal: Journal) -> None:
        """Rows read back carry the state enums, equal to the stored strings."""
        doc_id, step_row = delivered_step(journal, "files")
        doc = journal.document(doc_id)
        assert doc.state is DocumentState.COMPLETED
        assert doc.state == "completed"
        assert journal.step(step_row).state is StepState.SUCCESS
        assert journal.deliveries_of(doc_id)[0].state is DeliveryState.PENDING


class TestStepWrites:
    def test_accepting_a_step_never_submitted_raises(self, journal: Journal) -> None:
        """pending → polling skips the journaled intent: refused."""
        _doc, steps = journal.add_queued(
            "p", "/in/a.pdf", "a.pdf", sha256=SHA, content_type="x", size=1, mtime_ns=1,
            steps=["stp_a"],
        )  # fmt: skip
        with pytest.raises(InvalidTransition, match="pending → polling"):
            journal.step_accepted(steps[0].id, "exec-1", "ENQUEUED")
        assert journal.step(steps[0].id).execution_id is None

    def test_not_accepted_from_polling_raises(self, journal: Journal) -> None:
        """A step with an execution id cannot go back to pending (it would be paid twice)."""
        _doc, steps = journal.add_queued(
            "p", "/in/a.pdf", "a.pdf", sha256=SHA, content_type="x", size=1, mtime_ns=1,
            steps=["stp_a"],
        )  # fmt: skip
        journal.step_submitting(steps[0].id)
        journal.step_accepted(steps[0].id, "exec-1", "ENQUEUED")
        with pytest.raises(InvalidTransition, match="polling → pending"):
            journal.step_not_accepted(steps[0].id, "late")

    def test_uncertain_outside_submitting_raises(self, journal: Journal) -> None:
        """Only a submission in progress can be uncertain."""
        _doc, steps = journal.add_queued(
            "p", "/in/a.pdf", "a.pdf", sha256=SHA, content_type="x", size=1, mtime_ns=1,
            steps=["stp_a"],
        )  # fmt: skip
        with pytest.raises(InvalidTransition, match="uncertain"):
            journal.step_uncertain(steps[0].id, "?")
        assert journal.step(steps[0].id).uncertain == 0

    def test_an_ended_step_cannot_end_again(self, journal: Journal) -> None:
        """success → error is refused: a result is final."""
        _doc_id, step_row = delivered_step(journal)
        with pytest.raises(InvalidTransition, match="success → error"):
            journal.step_finished(step_row, state="error", error="late")
        assert journal.step(step_row).state is StepState.SUCCESS


class TestDeliveryWrites:
    def test_a_superseded_delivery_cannot_be_delivered(self, journal: Journal) -> None:
        """superseded → delivered is refused."""
        doc_id, _step = delivered_step(journal, "files")
        (delivery,) = journal.deliveries_of(doc_id)
        journal.delivery_done(delivery.id, "r1")
        journal.supersede(doc_id, "changed")
        with pytest.raises(InvalidTransition, match="superseded → delivered"):
            journal.delivery_done(delivery.id, "r2")
        assert journal.deliveries_of(doc_id)[0].receipt == "r1"

    def test_a_delivered_result_cannot_fail(self, journal: Journal) -> None:
        """delivered → failed is refused: the sink has the record."""
        doc_id, _step = delivered_step(journal, "files")
        (delivery,) = journal.deliveries_of(doc_id)
        journal.delivery_done(delivery.id, None)
        with pytest.raises(InvalidTransition, match="delivered → failed"):
            journal.delivery_attempt_failed(delivery.id, "boom", final=True)
        with pytest.raises(InvalidTransition, match="delivered → failed"):
            journal.delivery_gave_up(delivery.id, "boom")

    def test_valid_delivery_moves_pass(self, journal: Journal) -> None:
        """pending → pending (attempt failed) → failed (gave up) → pending (retry) → delivered."""
        doc_id, _step = delivered_step(journal, "files")
        (delivery,) = journal.deliveries_of(doc_id)
        journal.delivery_attempt_failed(delivery.id, "once", final=False)
        journal.delivery_gave_up(delivery.id, "twice")
        assert journal.deliveries_of(doc_id)[0].state is DeliveryState.FAILED
        journal.mark_failed(doc_id, "sink", stage="deliver")
        journal.finish(doc_id, None)
        journal.requeue(doc_id)
        assert journal.deliveries_of(doc_id)[0].state is DeliveryState.PENDING
        journal.delivery_done(delivery.id, "ok")
        (done,) = journal.deliveries_of(doc_id)
        assert done.state is DeliveryState.DELIVERED
        assert done.attempts == 2
