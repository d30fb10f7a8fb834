"""The `StateStore` contract: the same behaviour from SqliteStore, MemoryStore and PostgresStore.

Each test runs against the three stores (a SQLite file in the test's folder, the in-memory fake,
a PostgreSQL database of the test's own: the `store` fixture of `conftest.py`). The behaviour of
pipelines that route by document type is in `test_store_contract_routing.py`. What only
PostgreSQL has (migrations under an advisory lock, lease fencing, the unique content index, the
counters, concurrency) is tested in `test_postgres_store.py`.
"""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from docutray_watch._memstore import MemoryStore
from docutray_watch.journal import (
    REQUEST_RATE_KEY,
    DeliveryState,
    DocumentState,
    InvalidTransition,
    Journal,
    NewDocument,
    NewerJournalError,
    SqliteStore,
    StateStore,
    StepState,
)
from docutray_watch.journal.postgres import PostgresStore, migrate
from docutray_watch.journal.rows import Completion, StepRow
from docutray_watch.journal.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from docutray_watch.journal.sqlite.reports import REQUEUED_KEY


def sha(n: int) -> str:
    """A distinct content hash per number."""
    return f"{n:064x}"


async def queued(
    store: StateStore, n: int, *, pipeline: str = "p", steps: tuple[str, ...] = ("stp_a",)
) -> int:
    """A queued document of content `n` at /in/<n>.pdf; its id."""
    doc, _ = await store.add_queued(
        pipeline,
        f"/in/{n}.pdf",
        f"{n}.pdf",
        sha256=sha(n),
        content_type="application/pdf",
        size=100 + n,
        mtime_ns=1_000 + n,
        steps=list(steps),
    )
    return doc.id


def ended(view: Completion, step_row: int) -> tuple[StepRow, bool]:
    """What `finish_step` read back as (the ended step's row, whether the document is now
    completed): only the end of its last step completes a document."""
    step = next(s for s in view.steps if s.id == step_row)
    return step, view.document.state == DocumentState.COMPLETED


async def delivered(store: StateStore, n: int, *, sinks: tuple[str, ...] = ("fs",)) -> int:
    """A document of content `n` run to `delivered`, its one step a success; its id."""
    doc_id = await queued(store, n)
    (step,) = await store.steps_of(doc_id)
    await store.step_submitting(step.id)
    await store.step_accepted(step.id, f"exe-{n}", "RUNNING")
    await store.finish_step(step.id, state=StepState.SUCCESS, result={"n": n}, sinks=sinks)
    for delivery in await store.deliveries_of(doc_id):
        await store.delivery_done(delivery.id, "ok")
    await store.mark_delivered(doc_id)
    return doc_id


class TestSignatures:
    @pytest.mark.parametrize("cls", [SqliteStore, MemoryStore, PostgresStore])
    def test_every_protocol_method_has_the_protocols_signature(self, cls: type) -> None:
        """Each store class has every StateStore method, async, with the same parameters."""
        for name, member in vars(StateStore).items():
            if name.startswith("_") or not (callable(member) or isinstance(member, property)):
                continue
            found = inspect.getattr_static(cls, name)
            if isinstance(member, property):
                assert isinstance(found, property), (cls, name)
                continue
            assert inspect.iscoroutinefunction(found), (cls, name)
            expected = inspect.signature(member).parameters
            actual = inspect.signature(found).parameters
            assert list(actual) == list(expected), (cls, name)
            for param, spec in expected.items():
                assert actual[param].kind == spec.kind, (cls, name, param)
                assert actual[param].default == spec.default, (cls, name, param)

    def test_a_postgres_store_is_a_state_store(self) -> None:
        """The runtime check agrees with mypy: PostgresStore satisfies StateStore."""
        assert isinstance(PostgresStore("postgresql://nobody@127.0.0.1/none"), StateStore)


class TestDocuments:
    async def test_a_found_file_is_discovered_then_queued_with_one_pending_step_per_id(
        self, store: StateStore
    ) -> None:
        """add_document records `discovered`; mark_queued stores the facts and pending steps
        (a step ID given twice gets one row)."""
        doc = await store.add_document("p", "/in/a.pdf", "a.pdf", 10, 5, ctime_ns=6, inode=7)
        assert (doc.state, doc.size, doc.mtime_ns, doc.ctime_ns, doc.inode) == (
            DocumentState.DISCOVERED,
            10,
            5,
            6,
            7,
        )
        assert (doc.name, doc.finished, doc.attempts, doc.flags) == ("a.pdf", False, 0, frozenset())
        row, steps = await store.mark_queued(
            doc.id,
            sha256=sha(1),
            content_type="application/pdf",
            size=11,
            mtime_ns=12,
            steps=["stp_a", "stp_b", "stp_a"],
            ctime_ns=13,
            inode=14,
        )
        assert (row.state, row.sha256, row.size, row.mtime_ns, row.inode) == (
            DocumentState.QUEUED,
            sha(1),
            11,
            12,
            14,
        )
        assert row.attempts == 1
        assert [(s.step_id, s.state) for s in steps] == [
            ("stp_a", StepState.PENDING),
            ("stp_b", StepState.PENDING),
        ]
        assert await store.document(doc.id) == row

    async def test_an_unknown_document_is_a_key_error(self, store: StateStore) -> None:
        """Reading or moving a document that does not exist raises KeyError."""
        with pytest.raises(KeyError):
            await store.document(999)
        with pytest.raises(KeyError):
            await store.mark_failed(999, "x", stage="intake")

    async def test_reject_keeps_the_reason_stage_detail_and_hash(self, store: StateStore) -> None:
        """A rejected document records why, where, the details and (if known) its content."""
        doc = await store.add_document("p", "/in/a.txt", "a.txt", 10, 5)
        row = await store.reject(
            doc.id, "unsupported", detail={"type": "text/plain"}, sha256=sha(2), content_type="t"
        )
        assert (row.state, row.outcome, row.error, row.error_stage) == (
            DocumentState.REJECTED,
            "rejected",
            "unsupported",
            "intake",
        )
        assert (row.error_detail, row.sha256, row.content_type) == (
            {"type": "text/plain"},
            sha(2),
            "t",
        )

    async def test_rediscovered_drops_pending_steps(self, store: StateStore) -> None:
        """A queued file that changed goes back to `discovered` without its pending steps."""
        doc_id = await queued(store, 1)
        row = await store.mark_rediscovered(doc_id)
        assert row.state == DocumentState.DISCOVERED
        assert await store.steps_of(doc_id) == []

    async def test_refresh_identity_updates_the_file_facts(self, store: StateStore) -> None:
        """New metadata of the same bytes is remembered; the state does not move."""
        doc_id = await queued(store, 1)
        await store.refresh_identity(doc_id, mtime_ns=50, ctime_ns=51, inode=52)
        row = await store.document(doc_id)
        assert (row.mtime_ns, row.ctime_ns, row.inode, row.state) == (
            50,
            51,
            52,
            DocumentState.QUEUED,
        )


class TestSteps:
    async def test_submit_accept_finish_moves_the_document_along(self, store: StateStore) -> None:
        """submitting → polling → success: the document follows (submitting, polling,
        completed) and the step's deliveries are created, one per sink."""
        doc_id = await queued(store, 1)
        (step,) = await store.steps_of(doc_id)
        row = await store.step_submitting(step.id)
        assert (row.state, row.attempts) == (StepState.SUBMITTING, 1)
        assert row.first_try_at is not None
        assert (await store.document(doc_id)).state == DocumentState.SUBMITTING
        row = await store.step_accepted(step.id, "exe-1", "RUNNING")
        assert (row.state, row.execution_id, row.status) == (StepState.POLLING, "exe-1", "RUNNING")
        assert (await store.document(doc_id)).state == DocumentState.POLLING
        await store.step_status(step.id, "STILL_RUNNING")
        assert (await store.step(step.id)).status == "STILL_RUNNING"
        assert [s.id for s in await store.steps_in(StepState.POLLING)] == [step.id]
        view = await store.finish_step(
            step.id,
            state=StepState.SUCCESS,
            status="SUCCESS",
            result={"total": 3},
            sinks=["fs", "s3"],
        )
        row, completed = ended(view, step.id)
        assert completed
        assert (row.state, row.result, row.finished) == (StepState.SUCCESS, {"total": 3}, True)
        assert (await store.document(doc_id)).state == DocumentState.COMPLETED
        done = await store.completion(doc_id)
        assert view == done  # what the end read back is what a later read sees
        assert [(d.sink, d.state) for d in done.deliveries] == [
            ("fs", DeliveryState.PENDING),
            ("s3", DeliveryState.PENDING),
        ]
        assert [s.id for s in done.steps] == [step.id]

    async def test_a_document_completes_only_when_every_step_ended(self, store: StateStore) -> None:
        """With two steps, the first end leaves the document polling; the second completes it."""
        doc_id = await queued(store, 1, steps=("stp_a", "stp_b"))
        first, second = await store.steps_of(doc_id)
        for step in (first, second):
            await store.step_submitting(step.id)
            await store.step_accepted(step.id, f"exe-{step.id}", "RUNNING")
        view = await store.finish_step(first.id, state=StepState.ERROR, error="bad")
        assert view.document.state == DocumentState.POLLING
        assert [s.state for s in view.steps] == [StepState.ERROR, StepState.POLLING]
        _, completed = ended(await store.finish_step(second.id, state=StepState.SUCCESS), second.id)
        assert completed

    async def test_not_accepted_returns_to_pending_and_uncertain_is_counted(
        self, store: StateStore
    ) -> None:
        """A POST that never arrived goes back to pending; an uncertain one stays submitting,
        counted, and flags the document `resubmitted`."""
        doc_id = await queued(store, 1)
        (step,) = await store.steps_of(doc_id)
        await store.step_submitting(step.id)
        row = await store.step_not_accepted(step.id, "connect refused")
        assert (row.state, row.error) == (StepState.PENDING, "connect refused")
        await store.step_submitting(step.id)
        row = await store.step_uncertain(step.id, "read timeout")
        assert (row.state, row.uncertain, row.attempts) == (StepState.SUBMITTING, 1, 2)
        assert (await store.document(doc_id)).flags == frozenset({"resubmitted"})
        await store.step_uncertain(step.id, "again")
        assert (await store.document(doc_id)).flags == frozenset({"resubmitted"})

    async def test_illegal_step_moves_are_refused_and_change_nothing(
        self, store: StateStore
    ) -> None:
        """A pending step cannot be accepted, be uncertain or end in a non-end state; an ended
        step cannot be submitted again. The refused write leaves the row as it was."""
        doc_id = await queued(store, 1)
        (step,) = await store.steps_of(doc_id)
        with pytest.raises(InvalidTransition):
            await store.step_accepted(step.id, "exe", "RUNNING")
        with pytest.raises(InvalidTransition):
            await store.step_uncertain(step.id, "x")
        with pytest.raises(InvalidTransition):
            await store.finish_step(step.id, state=StepState.POLLING)
        assert await store.step(step.id) == step
        await store.step_submitting(step.id)
        await store.step_accepted(step.id, "exe", "RUNNING")
        await store.finish_step(step.id, state=StepState.FAILED, error="gone")
        with pytest.raises(InvalidTransition):
            await store.step_submitting(step.id)
        assert (await store.step(step.id)).state == StepState.FAILED

    async def test_ensure_steps_adds_missing_rows_only(self, store: StateStore) -> None:
        """A step added to the pipeline gets a pending row; existing rows stay as they are."""
        doc_id = await queued(store, 1)
        (step,) = await store.steps_of(doc_id)
        await store.step_submitting(step.id)
        rows = await store.ensure_steps(doc_id, ["stp_a", "stp_b"])
        assert [(s.step_id, s.state) for s in rows] == [
            ("stp_a", StepState.SUBMITTING),
            ("stp_b", StepState.PENDING),
        ]


class TestDeliveriesAndEnds:
    async def test_a_delivered_document_is_archived_and_finished(self, store: StateStore) -> None:
        """delivery_done, mark_delivered, archive_intent, finish: the document ends archived,
        with its destination, and leaves the unfinished list."""
        doc_id = await delivered(store, 1)
        (delivery,) = await store.deliveries_of(doc_id)
        assert (delivery.state, delivery.receipt, delivery.attempts) == (
            DeliveryState.DELIVERED,
            "ok",
            1,
        )
        await store.archive_intent(doc_id, "/done/1.pdf")
        assert (await store.document(doc_id)).archive_to == "/done/1.pdf"
        row = await store.finish(doc_id, "/done/1.pdf")
        assert (row.state, row.outcome, row.archived_to, row.archive_to) == (
            DocumentState.ARCHIVED,
            "success",
            "/done/1.pdf",
            None,
        )
        assert row.finished
        assert await store.unfinished_documents() == []

    async def test_delivery_attempts_fail_retry_and_give_up(self, store: StateStore) -> None:
        """A failed attempt stays pending (counted); a final one fails; given up keeps the
        count; a failed delivery may be tried again."""
        doc_id = await queued(store, 1)
        (step,) = await store.steps_of(doc_id)
        await store.step_submitting(step.id)
        await store.step_accepted(step.id, "exe", "RUNNING")
        await store.finish_step(step.id, state=StepState.SUCCESS, sinks=["fs"])
        (delivery,) = await store.deliveries_of(doc_id)
        await store.delivery_attempt_failed(delivery.id, "disk full", final=False)
        (row,) = await store.deliveries_of(doc_id)
        assert (row.state, row.attempts, row.error) == (DeliveryState.PENDING, 1, "disk full")
        await store.delivery_gave_up(delivery.id, "stopped")
        (row,) = await store.deliveries_of(doc_id)
        assert (row.state, row.attempts, row.error) == (DeliveryState.FAILED, 1, "stopped")
        await store.delivery_attempt_failed(delivery.id, "again", final=False)
        (row,) = await store.deliveries_of(doc_id)
        assert (row.state, row.attempts) == (DeliveryState.PENDING, 2)
        await store.delivery_attempt_failed(delivery.id, "last", final=True)
        row = await store.mark_failed(
            doc_id, "sink fs failed", stage="deliver", detail={"sink": "fs"}
        )
        assert (row.state, row.outcome, row.error_stage, row.error_detail) == (
            DocumentState.FAILED,
            "failed",
            "deliver",
            {"sink": "fs"},
        )

    async def test_illegal_document_and_delivery_moves_are_refused(self, store: StateStore) -> None:
        """A queued document cannot be delivered or finished; a delivered result cannot fail."""
        doc_id = await queued(store, 1)
        with pytest.raises(InvalidTransition):
            await store.mark_delivered(doc_id)
        with pytest.raises(InvalidTransition):
            await store.finish(doc_id, None)
        assert (await store.document(doc_id)).state == DocumentState.QUEUED
        done_id = await delivered(store, 2)
        (delivery,) = await store.deliveries_of(done_id)
        with pytest.raises(InvalidTransition):
            await store.delivery_gave_up(delivery.id, "late")
        assert (await store.deliveries_of(done_id))[0].state == DeliveryState.DELIVERED

    async def test_deliver_and_finish_is_one_step(self, store: StateStore) -> None:
        """A completed document kept in place goes straight to archived."""
        doc_id = await delivered(store, 1)
        await store.finish(doc_id, "/in/1.pdf")
        other = await queued(store, 2)
        (step,) = await store.steps_of(other)
        await store.step_submitting(step.id)
        await store.step_accepted(step.id, "exe", "RUNNING")
        await store.finish_step(step.id, state=StepState.SUCCESS)
        row = await store.deliver_and_finish(other, "/in/2.pdf")
        assert (row.state, row.outcome, row.archived_to) == (
            DocumentState.ARCHIVED,
            "success",
            "/in/2.pdf",
        )

    async def test_supersede_marks_delivered_results_and_drops_the_rest(
        self, store: StateStore
    ) -> None:
        """A document whose file changed ends superseded: its delivered results become
        superseded, undelivered ones dropped; the count of superseded results is returned."""
        doc_id = await queued(store, 1)
        (step,) = await store.steps_of(doc_id)
        await store.step_submitting(step.id)
        await store.step_accepted(step.id, "exe", "RUNNING")
        await store.finish_step(step.id, state=StepState.SUCCESS, sinks=["fs", "s3"])
        fs, _s3 = await store.deliveries_of(doc_id)
        await store.delivery_done(fs.id, None)
        row, superseded = await store.supersede(doc_id, "file changed")
        assert superseded == 1
        assert (row.state, row.outcome, row.error_stage, row.finished) == (
            DocumentState.SUPERSEDED,
            "superseded",
            "changed",
            True,
        )
        states = [d.state for d in await store.deliveries_of(doc_id)]
        assert states == [DeliveryState.SUPERSEDED, DeliveryState.DROPPED]

    async def test_fail_changed_fails_the_document(self, store: StateStore) -> None:
        """`on_change: fail`: the document fails with stage `changed`, results marked stale."""
        doc_id = await queued(store, 1)
        (step,) = await store.steps_of(doc_id)
        await store.step_submitting(step.id)
        await store.step_accepted(step.id, "exe", "RUNNING")
        await store.finish_step(step.id, state=StepState.SUCCESS, sinks=["fs"])
        row = await store.fail_changed(doc_id, "changed")
        assert (row.state, row.error_stage) == (DocumentState.FAILED, "changed")
        assert [d.state for d in await store.deliveries_of(doc_id)] == [DeliveryState.DROPPED]


class TestDuplicatesAndBatches:
    async def test_duplicates_are_found_by_content_among_delivered_documents(
        self, store: StateStore
    ) -> None:
        """find_done_by_sha finds a delivered document of the same pipeline and content (not
        one in flight, not `exclude`, not a duplicate); a duplicate is archived as such."""
        in_flight = await queued(store, 1)
        assert await store.find_done_by_sha("p", sha(1), exclude=0) is None
        original = await delivered(store, 2)
        assert await store.find_done_by_sha("other", sha(2), exclude=0) is None
        assert await store.find_done_by_sha("p", sha(2), exclude=original) is None
        found = await store.find_done_by_sha("p", sha(2), exclude=in_flight)
        assert found is not None
        assert found.id == original
        copy = await store.add_document("p", "/in/copy.pdf", "copy.pdf", 102, 9)
        row = await store.mark_duplicate(
            copy.id, sha256=sha(2), content_type="application/pdf", of=original
        )
        assert (row.state, row.outcome, row.duplicate_of) == (
            DocumentState.DUPLICATE,
            "duplicate",
            original,
        )
        row = await store.finish(copy.id, "/done/copy.pdf")
        assert (row.state, row.outcome) == (DocumentState.ARCHIVED, "duplicate")
        found = await store.find_done_by_sha("p", sha(2), exclude=0)
        assert found is not None
        assert found.id == original

    async def test_a_batch_is_queued_with_steps_and_skips_delivered_twins(
        self, store: StateStore
    ) -> None:
        """add_queued_batch journals every item `queued` with its pending steps, in order; an
        item with `skip_if_done` whose content was delivered gets None."""
        await delivered(store, 5)

        def item(n: int, *, skip: bool) -> NewDocument:
            return NewDocument(
                pipeline="p",
                path=f"/in/b{n}.pdf",
                relative_path=f"b{n}.pdf",
                sha256=sha(n),
                content_type="application/pdf",
                size=n,
                mtime_ns=n,
                ctime_ns=None,
                inode=n,
                steps=["stp_a", "stp_b", "stp_a"],
                skip_if_done=skip,
            )

        result = await store.add_queued_batch(
            [item(6, skip=True), item(5, skip=True), item(7, skip=False)]
        )
        assert result[1] is None
        first, third = result[0], result[2]
        assert first is not None
        assert third is not None
        assert (first.document.path, first.document.state, first.document.attempts) == (
            "/in/b6.pdf",
            DocumentState.QUEUED,
            1,
        )
        assert [s.step_id for s in third.steps] == ["stp_a", "stp_b"]
        assert await store.document(first.document.id) == first.document
        assert await store.steps_of(third.document.id) == third.steps
        assert await store.add_queued_batch([]) == []


class TestSourceVersions:
    async def test_a_source_documents_version_is_journaled_and_read_back(
        self, store: StateStore
    ) -> None:
        """A source document's version token (an ETag) given to add_document or in a batch
        item is on its row, read back after reopening; a file's is None."""
        found = await store.add_document(
            "p", "s3://b/in/a.pdf", "a.pdf", 10, 0, source_version='"etag-a"'
        )
        plain = await store.add_document("p", "/in/f.pdf", "f.pdf", 10, 5)
        (batch,) = await store.add_queued_batch(
            [
                NewDocument(
                    pipeline="p",
                    path="s3://b/in/b.pdf",
                    relative_path="b.pdf",
                    sha256=sha(9),
                    content_type="application/pdf",
                    size=20,
                    mtime_ns=0,
                    ctime_ns=None,
                    inode=None,
                    steps=["stp_a"],
                    skip_if_done=False,
                    source_version='"etag-b"',
                )
            ]
        )
        assert batch is not None
        assert (found.source_version, plain.source_version) == ('"etag-a"', None)
        assert batch.document.source_version == '"etag-b"'
        again = await reopened(store)
        try:
            assert (await again.document(found.id)).source_version == '"etag-a"'
            assert (await again.document(batch.document.id)).source_version == '"etag-b"'
        finally:
            if again is not store:
                await again.close()
                await store.open()  # the fixture closes it


class TestReads:
    async def test_unfinished_documents_and_state_queries(self, store: StateStore) -> None:
        """Unfinished documents come oldest first; documents_in filters by state and pipeline;
        unfinished_by_path and latest_by_path map paths to their newest rows."""
        a = await queued(store, 1)
        b = await queued(store, 2, pipeline="q")
        c = await delivered(store, 3)
        await store.finish(c, "/in/3.pdf")  # kept in place: a scan must still know it
        d = await delivered(store, 4)
        await store.finish(d, "/done/4.pdf")  # moved away: its path is free
        assert [r.id for r in await store.unfinished_documents()] == [a, b]
        assert [r.id for r in await store.documents_in(DocumentState.QUEUED)] == [a, b]
        assert [r.id for r in await store.documents_in("queued", "archived", pipeline="p")] == [
            a,
            c,
            d,
        ]
        assert {k: v.id for k, v in (await store.unfinished_by_path("p")).items()} == {
            "/in/1.pdf": a
        }
        latest = await store.latest_by_path("p")
        assert {k: v.id for k, v in latest.items()} == {"/in/1.pdf": a, "/in/3.pdf": c}
        kept = await store.kept_stamps("p")
        assert list(kept) == ["/in/3.pdf"]

    async def test_counts_and_oldest_pending_follow_every_move(self, store: StateStore) -> None:
        """counts() gives documents per pipeline and state; oldest_pending the creation time of
        the oldest unfinished document per pipeline."""
        assert await store.counts() == {}
        a = await queued(store, 1)
        await queued(store, 2)
        await queued(store, 3, pipeline="q")
        done = await delivered(store, 4)
        await store.finish(done, None)
        await store.mark_rediscovered(a)
        assert await store.counts() == {
            "p": {"discovered": 1, "queued": 1, "archived": 1},
            "q": {"queued": 1},
        }
        oldest = await store.oldest_pending()
        assert set(oldest) == {"p", "q"}
        assert oldest["p"] == (await store.document(a)).created_at

    async def test_meta_facts_and_the_requeue_counter(self, store: StateStore) -> None:
        """set_meta stores facts (the requeue counter among them); an API pause is recorded and
        cleared without error."""
        assert await store.requeue_count() == 0
        await store.set_meta(REQUEST_RATE_KEY, "4.5")
        await store.set_meta(REQUEUED_KEY, "3")
        assert await store.requeue_count() == 3
        await store.record_api_pause("credentials refused")
        await store.record_api_pause("credentials refused")
        await store.record_api_pause(None)

    async def test_latencies_are_saved_and_replaced(self, store: StateStore) -> None:
        """Learned processing times come back as saved; saving a key again replaces it."""
        assert await store.load_latencies() == []
        await store.save_latencies([("stp_a", 1, 3, 2.0, 0.5), ("stp_b", 2, 1, 9.0, 0.0)])
        await store.save_latencies([("stp_a", 1, 4, 2.5, 0.25)])
        assert sorted(await store.load_latencies()) == [
            ("stp_a", 1, 4, 2.5, 0.25),
            ("stp_b", 2, 1, 9.0, 0.0),
        ]

    async def test_probe_passes_and_no_write_error_is_reported(self, store: StateStore) -> None:
        """A healthy store answers the readiness probe and reports no write error."""
        await store.probe()
        await queued(store, 1)
        assert store.write_error is None


async def reopened(store: StateStore) -> StateStore:
    """The same journal opened again after `store` was closed (a restart)."""
    await store.close()
    again: StateStore
    if isinstance(store, MemoryStore):
        again = store  # its contents outlive `close`, as a file's do
    elif isinstance(store, SqliteStore):
        again = SqliteStore(store.journal.path)
    else:
        assert isinstance(store, PostgresStore)
        again = PostgresStore(store.url, schema=store.schema)
    await again.open()
    return again


class TestLifeCycle:
    async def test_a_reopened_store_has_what_was_written(self, store: StateStore) -> None:
        """Closing and opening again (migrations run again: nothing to do) keeps every row."""
        doc_id = await queued(store, 1)
        await store.save_latencies([("stp_a", 1, 1, 1.0, 0.0)])
        before = await store.completion(doc_id)
        again = await reopened(store)
        try:
            assert await again.completion(doc_id) == before
            assert await again.load_latencies() == [("stp_a", 1, 1, 1.0, 0.0)]
            assert await again.counts() == {"p": {"queued": 1}}
        finally:
            if again is not store:
                await again.close()
                await store.open()  # the fixture closes it

    @pytest.mark.parametrize(
        "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
    )
    async def test_a_journal_written_by_a_newer_release_is_refused(
        self, backend: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """A journal whose schema version is above this code's: open raises NewerJournalError
        (the commands exit 78) and the journal is left as it was."""
        store: StateStore
        if backend == "sqlite":
            path = tmp_path / "journal.sqlite3"
            with Journal(path):
                pass
            with sqlite3.connect(path) as conn:
                conn.execute(f"PRAGMA user_version = {SQLITE_SCHEMA_VERSION + 1}")
            store = SqliteStore(path)
        else:
            url = request.getfixturevalue("pg_url")
            await migrate(url)
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE docutray.schema_version SET version = version + 1"))
            engine.dispose()
            store = PostgresStore(url)
        with pytest.raises(NewerJournalError, match="newer docutray-watch"):
            await store.open()
