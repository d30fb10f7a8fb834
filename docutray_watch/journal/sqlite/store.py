"""`SqliteStore`: the SQLite journal as a `StateStore`, each method a call on the writer thread.

Every method is spelled out (no `__getattr__`), so what the engine awaits is typed end to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path

from docutray_watch.journal.rows import (
    Completion,
    DeliveryRow,
    DocumentRow,
    JSONObject,
    LatencyRow,
    NewDocument,
    Queued,
    StepRow,
)
from docutray_watch.journal.sqlite.journal import Journal
from docutray_watch.journal.sqlite.writer import GroupCommitWriter
from docutray_watch.journal.states import DocumentState, StepState

__all__ = ["SqliteStore"]


class SqliteStore(GroupCommitWriter):
    """The `StateStore` of one machine: a SQLite journal behind one writer thread."""

    def __init__(self, journal: Journal | str | Path, *, max_batch: int = 256) -> None:
        super().__init__(
            journal if isinstance(journal, Journal) else Journal(journal), max_batch=max_batch
        )

    async def probe(self) -> None:
        """Raise unless the journal can take a transaction now (the readiness check)."""
        await self.call(self.journal.probe)

    # -- documents ---------------------------------------------------------------------------

    async def add_document(
        self,
        pipeline: str,
        path: str,
        relative_path: str,
        size: int,
        mtime_ns: int,
        *,
        ctime_ns: int | None = None,
        inode: int | None = None,
        source_version: str | None = None,
    ) -> DocumentRow:
        """Record a newly found file as `discovered`."""
        return await self.call(
            self.journal.add_document,
            pipeline,
            path,
            relative_path,
            size,
            mtime_ns,
            ctime_ns=ctime_ns,
            inode=inode,
            source_version=source_version,
        )

    async def mark_queued(
        self,
        doc_id: int,
        *,
        sha256: str,
        content_type: str,
        size: int,
        mtime_ns: int,
        steps: Sequence[str],
        ctime_ns: int | None = None,
        inode: int | None = None,
    ) -> tuple[DocumentRow, list[StepRow]]:
        """A hashed, checked document waits for submission; one pending row per step."""
        return await self.call(
            self.journal.mark_queued,
            doc_id,
            sha256=sha256,
            content_type=content_type,
            size=size,
            mtime_ns=mtime_ns,
            steps=steps,
            ctime_ns=ctime_ns,
            inode=inode,
        )

    async def add_queued(
        self,
        pipeline: str,
        path: str,
        relative_path: str,
        *,
        sha256: str,
        content_type: str,
        size: int,
        mtime_ns: int,
        steps: Sequence[str],
        ctime_ns: int | None = None,
        inode: int | None = None,
    ) -> tuple[DocumentRow, list[StepRow]]:
        """`add_document` and `mark_queued` in one transaction."""
        return await self.call(
            self.journal.add_queued,
            pipeline,
            path,
            relative_path,
            sha256=sha256,
            content_type=content_type,
            size=size,
            mtime_ns=mtime_ns,
            steps=steps,
            ctime_ns=ctime_ns,
            inode=inode,
        )

    async def ensure_steps(self, doc_id: int, steps: Sequence[str]) -> list[StepRow]:
        """Add a pending row for each configured step the document lacks; all its step rows."""
        return await self.call(self.journal.ensure_steps, doc_id, steps)

    async def mark_rediscovered(self, doc_id: int) -> DocumentRow:
        """The file changed before submission: hash it again."""
        return await self.call(self.journal.mark_rediscovered, doc_id)

    async def reject(
        self,
        doc_id: int,
        reason: str,
        *,
        stage: str = "intake",
        detail: JSONObject | None = None,
        sha256: str | None = None,
        content_type: str | None = None,
    ) -> DocumentRow:
        """The document will not be submitted (unsupported, empty, too large, vanished…)."""
        return await self.call(
            self.journal.reject,
            doc_id,
            reason,
            stage=stage,
            detail=detail,
            sha256=sha256,
            content_type=content_type,
        )

    async def mark_duplicate(
        self, doc_id: int, *, sha256: str, content_type: str, of: int
    ) -> DocumentRow:
        """Same content as a document already processed: no submission."""
        return await self.call(
            self.journal.mark_duplicate, doc_id, sha256=sha256, content_type=content_type, of=of
        )

    async def document(self, doc_id: int) -> DocumentRow:
        """One document by id (KeyError when unknown)."""
        return await self.call(self.journal.document, doc_id)

    async def unfinished_documents(self) -> list[DocumentRow]:
        """Every document whose final file action is not done yet, oldest first."""
        return await self.call(self.journal.unfinished_documents)

    async def documents_in(
        self, *states: DocumentState | str, pipeline: str | None = None
    ) -> list[DocumentRow]:
        """Documents in any of the given states."""
        return await self.call(self.journal.documents_in, *states, pipeline=pipeline)

    async def latest_by_path(self, pipeline: str) -> dict[str, DocumentRow]:
        """The most recent document for each path a folder scan must know about."""
        return await self.call(self.journal.latest_by_path, pipeline)

    async def find_done_by_sha(
        self, pipeline: str, sha256: str, *, exclude: int
    ) -> DocumentRow | None:
        """A document of this pipeline with the same content whose results were delivered."""
        return await self.call(self.journal.find_done_by_sha, pipeline, sha256, exclude=exclude)

    async def refresh_identity(
        self, doc_id: int, *, mtime_ns: int, ctime_ns: int, inode: int
    ) -> None:
        """The file's metadata changed but not its bytes: remember the new facts."""
        await self.call(
            self.journal.refresh_identity, doc_id, mtime_ns=mtime_ns, ctime_ns=ctime_ns, inode=inode
        )

    # -- identification ----------------------------------------------------------------------

    async def set_identification(
        self, doc_id: int, identification_json: str, code: str
    ) -> DocumentRow:
        """Remember the identified type and the whole answer (JSON text)."""
        return await self.call(self.journal.set_identification, doc_id, identification_json, code)

    async def mark_unrouted(
        self, doc_id: int, reason: str, *, detail: JSONObject | None = None
    ) -> DocumentRow:
        """No route takes the identified document (`otherwise: keep`): it ends `unrouted`."""
        return await self.call(self.journal.mark_unrouted, doc_id, reason, detail=detail)

    # -- steps -------------------------------------------------------------------------------

    async def steps_of(self, doc_id: int) -> list[StepRow]:
        """The step rows of a document."""
        return await self.call(self.journal.steps_of, doc_id)

    async def step(self, step_row: int) -> StepRow:
        """One step row."""
        return await self.call(self.journal.step, step_row)

    async def steps_in(self, *states: StepState | str) -> list[StepRow]:
        """Step rows in any of the given states, of unfinished documents."""
        return await self.call(self.journal.steps_in, *states)

    async def step_submitting(self, step_row: int) -> StepRow:
        """Journal the intent to submit, before the POST."""
        return await self.call(self.journal.step_submitting, step_row)

    async def step_accepted(self, step_row: int, execution_id: str, status: str) -> StepRow:
        """The service accepted the submission: store its execution id, start polling."""
        return await self.call(self.journal.step_accepted, step_row, execution_id, status)

    async def step_not_accepted(self, step_row: int, error: str) -> StepRow:
        """The submission provably never reached the service: back to pending."""
        return await self.call(self.journal.step_not_accepted, step_row, error)

    async def step_uncertain(self, step_row: int, error: str) -> StepRow:
        """A submission may or may not have started an execution; count it."""
        return await self.call(self.journal.step_uncertain, step_row, error)

    async def step_status(self, step_row: int, status: str) -> None:
        """Remember the last non-final status seen while polling (no transition)."""
        await self.call(self.journal.step_status, step_row, status)

    async def finish_step(
        self,
        step_row: int,
        *,
        state: StepState | str,
        status: str | None = None,
        result: JSONObject | None = None,
        error: str | None = None,
        http_status: int | None = None,
        sinks: Iterable[str] = (),
    ) -> Completion:
        """A step reached its end: journal it and create its deliveries (one per sink), then read
        back the document with its steps and deliveries as they are now, in the same call (what
        delivery needs once the last step ended: one round trip less)."""
        return await self.call(
            self.journal.finish_step,
            step_row,
            state=state,
            status=status,
            result=result,
            error=error,
            http_status=http_status,
            sinks=list(sinks),
        )

    # -- deliveries and ends -----------------------------------------------------------------

    async def completion(self, doc_id: int) -> Completion:
        """A document with its steps and deliveries, in one read."""
        return await self.call(self.journal.completion, doc_id)

    async def deliveries_of(self, doc_id: int) -> list[DeliveryRow]:
        """The delivery rows of a document."""
        return await self.call(self.journal.deliveries_of, doc_id)

    async def delivery_done(self, delivery_id: int, receipt: str | None) -> None:
        """The sink stored the record."""
        await self.call(self.journal.delivery_done, delivery_id, receipt)

    async def delivery_attempt_failed(self, delivery_id: int, error: str, *, final: bool) -> None:
        """A delivery attempt failed; `final` when the engine gives up on it."""
        await self.call(self.journal.delivery_attempt_failed, delivery_id, error, final=final)

    async def delivery_gave_up(self, delivery_id: int, error: str) -> None:
        """The engine gave up on a delivery whose failed attempts are already counted."""
        await self.call(self.journal.delivery_gave_up, delivery_id, error)

    async def mark_delivered(self, doc_id: int) -> DocumentRow:
        """Every result reached every sink."""
        return await self.call(self.journal.mark_delivered, doc_id)

    async def mark_failed(
        self, doc_id: int, reason: str, *, stage: str, detail: JSONObject | None = None
    ) -> DocumentRow:
        """The document failed (an ERROR result, a timeout, a rejected submission, a sink)."""
        return await self.call(self.journal.mark_failed, doc_id, reason, stage=stage, detail=detail)

    async def archive_intent(self, doc_id: int, destination: str | None) -> None:
        """Journal where the file is about to go, before moving it."""
        await self.call(self.journal.archive_intent, doc_id, destination)

    async def deliver_and_finish(self, doc_id: int, archived_to: str | None) -> DocumentRow:
        """`mark_delivered` and `finish` in one transaction (a file kept where it was)."""
        return await self.call(self.journal.deliver_and_finish, doc_id, archived_to)

    async def finish(self, doc_id: int, archived_to: str | None) -> DocumentRow:
        """The final file action is done."""
        return await self.call(self.journal.finish, doc_id, archived_to)

    async def supersede(self, doc_id: int, reason: str) -> tuple[DocumentRow, int]:
        """The file changed while processed: end as `superseded`; (document, results marked)."""
        return await self.call(self.journal.supersede, doc_id, reason)

    async def fail_changed(self, doc_id: int, reason: str) -> DocumentRow:
        """`on_change: fail`: the file changed while it was processed; the document fails."""
        return await self.call(self.journal.fail_changed, doc_id, reason)

    # -- what other processes and the operator see -------------------------------------------

    async def set_meta(self, key: str, value: str) -> None:
        """Store a small fact for `status` (e.g. the request rate the daemon uses now)."""
        await self.call(self.journal.set_meta, key, value)

    async def get_meta(self, key: str) -> tuple[str, float] | None:
        """The value `set_meta` stored under `key` and when (epoch seconds), or None."""
        return await self.call(self.journal.get_meta, key)

    async def record_api_pause(self, reasons: str | None) -> None:
        """Why the daemon's API work is paused now (None: it is not), for `status`."""
        await self.call(self.journal.record_api_pause, reasons)

    async def add_queued_batch(self, items: Sequence[NewDocument]) -> list[Queued | None]:
        """Many hashed files journaled `queued` in one commit (None: a delivered twin exists)."""
        return await self.call(self.journal.add_queued_batch, items)

    async def unfinished_by_path(self, pipeline: str) -> dict[str, DocumentRow]:
        """The newest unfinished document for each path of a pipeline."""
        return await self.call(self.journal.unfinished_by_path, pipeline)

    async def kept_stamps(self, pipeline: str) -> dict[str, int]:
        """Each path kept where it was found, with `kept_stamp(size, mtime_ns)`; read on a
        connection of its own in a worker thread, not on the writer thread."""
        if str(self.journal.path) == ":memory:":  # one connection only
            return await self.call(self.journal.kept_stamps, pipeline)
        return await asyncio.to_thread(self.journal.kept_stamps_apart, pipeline)

    async def requeue_count(self) -> int:
        """How many documents `retry` has requeued over the journal's life."""
        return await self.call(self.journal.requeue_count)

    async def counts(self) -> dict[str, dict[str, int]]:
        """Number of documents per pipeline and state."""
        return await self.call(self.journal.counts)

    async def counts_by_type(self) -> dict[str, dict[str, int]]:
        """Number of identified documents per pipeline and identified type code."""
        return await self.call(self.journal.counts_by_type)

    async def outcomes_by_type(self) -> dict[str, dict[str, dict[str, int]]]:
        """Identified documents per pipeline, type code and outcome word (or state)."""
        return await self.call(self.journal.outcomes_by_type)

    async def oldest_pending(self) -> dict[str, float]:
        """Creation time of the oldest unfinished document, per pipeline."""
        return await self.call(self.journal.oldest_pending)

    async def load_latencies(self) -> list[LatencyRow]:
        """Saved learned processing times."""
        return await self.call(self.journal.load_latencies)

    async def save_latencies(self, rows: Iterable[LatencyRow]) -> None:
        """Persist learned processing times."""
        await self.call(self.journal.save_latencies, list(rows))
