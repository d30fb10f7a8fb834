"""The `StateStore` contract for pipelines that route by document type, against SqliteStore,
MemoryStore and PostgresStore (the `store` fixture of `conftest.py`): the `@identify` step row,
the identification on the document, counts per type, `unrouted`, `retry` of it, and a document
that fails while it waits for its route. `test_identification.py` has the SQLite-only parts
(schema 3, the query plan).
"""

from __future__ import annotations

from typing import Any

import pytest

from docutray_watch.journal import (
    IDENTIFY_STEP,
    DocumentState,
    InvalidTransition,
    SqliteStore,
    StateStore,
    StepState,
)
from docutray_watch.journal.postgres import PostgresStore
from docutray_watch.records import Identification
from tests.journal.test_store_contract import ended, queued

INVOICE = Identification(code="invoice", name="Invoice", confidence=0.9)
RECEIPT = Identification(code="receipt", name="Receipt", confidence=0.7)


async def run_step(
    store: StateStore, doc_id: int, step_id: str, state: StepState = StepState.SUCCESS
) -> bool:
    """Submit, accept and end one step row of the document; whether the document completed."""
    step = next(s for s in await store.steps_of(doc_id) if s.step_id == step_id)
    await store.step_submitting(step.id)
    await store.step_accepted(step.id, f"exe-{doc_id}-{step_id}", "ENQUEUED")
    view = await store.finish_step(
        step.id,
        state=state,
        status="SUCCESS" if state == StepState.SUCCESS else "ERROR",
        result={"document_type": {"code": "invoice"}} if state == StepState.SUCCESS else None,
        error=None if state == StepState.SUCCESS else "unreadable",
    )
    return ended(view, step.id)[1]


async def identified(
    store: StateStore, n: int, identification: Identification = INVOICE, *, pipeline: str = "p"
) -> int:
    """A document of content `n` whose `@identify` step succeeded and whose identification is
    stored; its id."""
    doc_id = await queued(store, n, pipeline=pipeline, steps=(IDENTIFY_STEP,))
    assert not await run_step(store, doc_id, IDENTIFY_STEP)
    await store.set_identification(doc_id, identification.model_dump_json(), identification.code)
    return doc_id


async def requeue(store: StateStore, doc_id: int, *, force: bool = False) -> Any:
    """`retry` (outside the protocol): the PostgreSQL store's method, or the SQLite Journal's on
    the store's writer (MemoryStore is a SqliteStore)."""
    if isinstance(store, PostgresStore):
        return await store.requeue(doc_id, force=force)
    assert isinstance(store, SqliteStore)
    return await store.call(store.journal.requeue, doc_id, force=force)


class TestIdentification:
    async def test_the_identification_is_stored_and_counted_per_type(
        self, store: StateStore
    ) -> None:
        """set_identification keeps the code and the whole answer (read back as JSON data, by
        `document` too); counts_by_type counts identified documents per pipeline and type, not
        one that is still being identified."""
        assert await store.counts_by_type() == {}
        doc_id = await queued(store, 1, steps=(IDENTIFY_STEP,))
        assert not await run_step(store, doc_id, IDENTIFY_STEP)
        row = await store.set_identification(doc_id, INVOICE.model_dump_json(), "invoice")
        assert row.identified_type == "invoice"
        assert row.identification is not None
        assert Identification.model_validate(row.identification) == INVOICE
        assert await store.document(doc_id) == row
        await identified(store, 2)
        await identified(store, 3, RECEIPT)
        await identified(store, 4, RECEIPT, pipeline="q")
        await queued(store, 5, steps=(IDENTIFY_STEP,))  # not identified yet
        assert await store.counts_by_type() == {
            "p": {"invoice": 2, "receipt": 1},
            "q": {"receipt": 1},
        }

    async def test_outcomes_by_type_count_each_type_by_outcome_word(
        self, store: StateStore
    ) -> None:
        """What `status` reads: identified documents per pipeline, type and word — `unrouted`
        for one ended so, the state for one still waiting for its route."""
        assert isinstance(store, SqliteStore | PostgresStore)
        assert await store.outcomes_by_type() == {}
        await identified(store, 1)
        kept = await identified(store, 2)
        await store.mark_unrouted(kept, "identified as `invoice`, no route for this type")
        await store.finish(kept, "/in/2.pdf")
        await identified(store, 3, RECEIPT, pipeline="q")
        waiting = (await store.document(1)).state
        assert await store.outcomes_by_type() == {
            "p": {"invoice": {waiting: 1, "unrouted": 1}},
            "q": {"receipt": {waiting: 1}},
        }

    async def test_text_that_is_not_json_is_refused(self, store: StateStore) -> None:
        """What could not be read back is never stored: ValueError, the document unchanged."""
        doc_id = await queued(store, 1, steps=(IDENTIFY_STEP,))
        with pytest.raises(ValueError, match="Expecting value"):
            await store.set_identification(doc_id, "not json", "invoice")
        assert (await store.document(doc_id)).identified_type is None
        assert await store.counts_by_type() == {}

    async def test_a_successful_identify_alone_does_not_complete_the_document(
        self, store: StateStore
    ) -> None:
        """With only `@identify` ended (success) the document waits, polling, for its route;
        ensure_steps adds the routed steps and it completes once they ended."""
        doc_id = await identified(store, 1)
        assert (await store.document(doc_id)).state == DocumentState.POLLING
        steps = await store.ensure_steps(doc_id, ["stp_inv", "stp_tot"])
        assert [(s.step_id, s.state) for s in steps] == [
            (IDENTIFY_STEP, StepState.SUCCESS),
            ("stp_inv", StepState.PENDING),
            ("stp_tot", StepState.PENDING),
        ]
        assert (await store.document(doc_id)).state == DocumentState.POLLING
        assert not await run_step(store, doc_id, "stp_inv")
        assert await run_step(store, doc_id, "stp_tot")
        assert (await store.document(doc_id)).state == DocumentState.COMPLETED

    async def test_an_identify_error_completes_the_document(self, store: StateStore) -> None:
        """An ERROR identification ends the document's steps: it completes (the engine then
        fails it), as after any step error."""
        doc_id = await queued(store, 1, steps=(IDENTIFY_STEP,))
        assert await run_step(store, doc_id, IDENTIFY_STEP, StepState.ERROR)
        assert (await store.document(doc_id)).state == DocumentState.COMPLETED

    async def test_a_document_waiting_for_its_route_may_fail(self, store: StateStore) -> None:
        """No route and `otherwise: fail`: mark_failed straight from polling (or queued)."""
        doc_id = await identified(store, 1)
        row = await store.mark_failed(doc_id, "identified as `x` (0.40)", stage="route")
        assert (row.state, row.outcome, row.error_stage, row.identified_type) == (
            DocumentState.FAILED,
            "failed",
            "route",
            "invoice",
        )
        waiting = await queued(store, 2, steps=(IDENTIFY_STEP,))
        row = await store.mark_failed(waiting, "no route", stage="route")
        assert row.state == DocumentState.FAILED


class TestUnrouted:
    async def test_mark_unrouted_ends_it_and_finish_keeps_it_unrouted(
        self, store: StateStore
    ) -> None:
        """otherwise: keep — state and outcome `unrouted`, stage `route`, the reason and detail
        kept; finish records the file kept in place, the state stays; the counts have it."""
        doc_id = await identified(store, 1)
        row = await store.mark_unrouted(doc_id, "no route", detail={"identified_type": "invoice"})
        assert (row.state, row.outcome, row.error, row.error_stage, row.error_detail) == (
            DocumentState.UNROUTED,
            "unrouted",
            "no route",
            "route",
            {"identified_type": "invoice"},
        )
        row = await store.finish(doc_id, "/in/1.pdf")
        assert (row.state, row.archived_to, row.finished) == (
            DocumentState.UNROUTED,
            "/in/1.pdf",
            True,
        )
        assert await store.unfinished_documents() == []
        assert (await store.latest_by_path("p"))["/in/1.pdf"].id == doc_id
        assert await store.counts() == {"p": {"unrouted": 1}}
        assert await store.counts_by_type() == {"p": {"invoice": 1}}

    async def test_only_a_document_waiting_for_its_route_can_end_unrouted(
        self, store: StateStore
    ) -> None:
        """A completed document cannot become unrouted; the refused move changes nothing."""
        doc_id = await queued(store, 1)
        assert await run_step(store, doc_id, "stp_a")
        with pytest.raises(InvalidTransition):
            await store.mark_unrouted(doc_id, "no route")
        assert (await store.document(doc_id)).state == DocumentState.COMPLETED

    async def test_retry_requeues_it_keeping_the_identification(self, store: StateStore) -> None:
        """requeue of an unrouted document: back to queued with its successful `@identify` row
        and its identification, so it is routed again without a second identification."""
        doc_id = await identified(store, 1)
        await store.mark_unrouted(doc_id, "no route")
        await store.finish(doc_id, "/in/1.pdf")
        row = await requeue(store, doc_id)
        assert (row.state, row.outcome, row.error, row.finished) == (
            DocumentState.QUEUED,
            None,
            None,
            False,
        )
        assert row.identified_type == "invoice"
        assert row.identification is not None
        assert Identification.model_validate(row.identification) == INVOICE
        assert [(s.step_id, s.state) for s in await store.steps_of(doc_id)] == [
            (IDENTIFY_STEP, StepState.SUCCESS)
        ]
        steps = await store.ensure_steps(doc_id, ["stp_inv"])
        assert [s.step_id for s in steps] == [IDENTIFY_STEP, "stp_inv"]
        assert (await store.document(doc_id)).state == DocumentState.QUEUED
        assert await run_step(store, doc_id, "stp_inv")
        assert await store.counts() == {"p": {"completed": 1}}

    async def test_a_forced_retry_of_a_success_identifies_again(self, store: StateStore) -> None:
        """retry --force re-runs an archived document from scratch: no step rows, no
        identification, no count per type."""
        doc_id = await identified(store, 1)
        await store.ensure_steps(doc_id, ["stp_inv"])
        await run_step(store, doc_id, "stp_inv")
        await store.deliver_and_finish(doc_id, "/in/1.pdf")
        row = await requeue(store, doc_id, force=True)
        assert (row.state, row.identified_type, row.identification) == (
            DocumentState.QUEUED,
            None,
            None,
        )
        assert await store.steps_of(doc_id) == []
        assert await store.counts_by_type() == {}
