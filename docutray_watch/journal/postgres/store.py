"""`PostgresStore`: the journal in PostgreSQL as a `StateStore`, for several nodes sharing work.

Every protocol method is one transaction (retried on deadlock or serialization failure, see
`connection.py`) with the same semantics as `SqliteStore` (but for content another document
claims, which `add_queued_batch` journals a duplicate or in a new generation: `batch.py`); the
bodies live in `documents`, `batch`, `steps`, `deliveries` and `reports`, the machinery (open,
fenced views) in `base.py`, the calls outside the protocol (leases, sources, generations;
`retry`, `prune`, `status`) in `extras.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

from docutray_watch.journal.postgres import batch, deliveries, documents, reports
from docutray_watch.journal.postgres import steps as _steps
from docutray_watch.journal.postgres.connection import ContentClaimed
from docutray_watch.journal.postgres.extras import ExtraCalls
from docutray_watch.journal.postgres.tx import Tx
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
from docutray_watch.journal.states import DocumentState, StepState

__all__ = ["PostgresStore"]

_BATCH_ATTEMPTS = 3  # a batch whose content another node claimed meanwhile is journaled again


class PostgresStore(ExtraCalls):
    """The `StateStore` of a cluster (`StoreBase` has the constructor, `ExtraCalls` the calls
    outside the protocol)."""

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
        return await self._call(
            lambda tx: documents.add_document(
                tx,
                pipeline,
                path,
                relative_path,
                size,
                mtime_ns,
                ctime_ns=ctime_ns,
                inode=inode,
                source_version=source_version,
            )
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
        return await self._call(
            lambda tx: documents.mark_queued(
                tx,
                doc_id,
                sha256=sha256,
                content_type=content_type,
                size=size,
                mtime_ns=mtime_ns,
                steps=steps,
                ctime_ns=ctime_ns,
                inode=inode,
            )
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
        return await self._call(
            lambda tx: documents.add_queued(
                tx,
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
        )

    async def ensure_steps(self, doc_id: int, steps: Sequence[str]) -> list[StepRow]:
        """Add a pending row for each configured step the document lacks; all its step rows."""
        step_ids = steps
        return await self._call(lambda tx: _steps.ensure_steps(tx, doc_id, step_ids))

    async def mark_rediscovered(self, doc_id: int) -> DocumentRow:
        """The file changed before submission: hash it again."""
        return await self._call(lambda tx: documents.mark_rediscovered(tx, doc_id))

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
        return await self._call(
            lambda tx: documents.reject(
                tx,
                doc_id,
                reason,
                stage=stage,
                detail=detail,
                sha256=sha256,
                content_type=content_type,
            )
        )

    async def mark_duplicate(
        self, doc_id: int, *, sha256: str, content_type: str, of: int
    ) -> DocumentRow:
        """Same content as a document already processed: no submission."""
        return await self._call(
            lambda tx: documents.mark_duplicate(
                tx, doc_id, sha256=sha256, content_type=content_type, of=of
            )
        )

    async def document(self, doc_id: int) -> DocumentRow:
        """One document by id (KeyError when unknown)."""
        return await self._call(lambda tx: tx.document(doc_id), write=False)

    async def unfinished_documents(self) -> list[DocumentRow]:
        """Every document whose final file action is not done yet, oldest first."""
        return await self._call(reports.unfinished_documents, write=False)

    async def documents_in(
        self, *states: DocumentState | str, pipeline: str | None = None
    ) -> list[DocumentRow]:
        """Documents in any of the given states."""
        wanted = [str(s) for s in states]
        return await self._call(lambda tx: reports.documents_in(tx, wanted, pipeline), write=False)

    async def latest_by_path(self, pipeline: str) -> dict[str, DocumentRow]:
        """The most recent document for each path a folder scan must know about."""
        return await self._call(lambda tx: reports.latest_by_path(tx, pipeline), write=False)

    async def find_done_by_sha(
        self, pipeline: str, sha256: str, *, exclude: int
    ) -> DocumentRow | None:
        """A document of this pipeline with the same content whose results were delivered."""
        return await self._call(
            lambda tx: documents.find_done_by_sha(tx, pipeline, sha256, exclude), write=False
        )

    async def refresh_identity(
        self, doc_id: int, *, mtime_ns: int, ctime_ns: int, inode: int
    ) -> None:
        """The file's metadata changed but not its bytes: remember the new facts."""
        await self._call(
            lambda tx: documents.refresh_identity(
                tx, doc_id, mtime_ns=mtime_ns, ctime_ns=ctime_ns, inode=inode
            )
        )

    # -- identification (pipelines that route by document type) ------------------------------

    async def set_identification(
        self, doc_id: int, identification_json: str, code: str
    ) -> DocumentRow:
        """Remember the identified type and the whole answer (JSON text)."""
        return await self._call(
            lambda tx: documents.set_identification(tx, doc_id, identification_json, code)
        )

    async def mark_unrouted(
        self, doc_id: int, reason: str, *, detail: JSONObject | None = None
    ) -> DocumentRow:
        """No route takes the identified document (`otherwise: keep`): it ends `unrouted`."""
        return await self._call(
            lambda tx: deliveries.mark_unrouted(tx, doc_id, reason, detail=detail)
        )

    # -- steps -------------------------------------------------------------------------------

    async def steps_of(self, doc_id: int) -> list[StepRow]:
        """The step rows of a document."""
        return await self._call(lambda tx: tx.steps_of(doc_id), write=False)

    async def step(self, step_row: int) -> StepRow:
        """One step row."""
        return await self._call(lambda tx: tx.step(step_row), write=False)

    async def steps_in(self, *states: StepState | str) -> list[StepRow]:
        """Step rows in any of the given states, of unfinished documents."""
        wanted = [str(s) for s in states]
        return await self._call(lambda tx: _steps.steps_in(tx, wanted), write=False)

    async def step_submitting(self, step_row: int) -> StepRow:
        """Journal the intent to submit, before the POST."""
        return await self._call(lambda tx: _steps.step_submitting(tx, step_row))

    async def step_accepted(self, step_row: int, execution_id: str, status: str) -> StepRow:
        """The service accepted the submission: store its execution id, start polling."""
        return await self._call(
            lambda tx: _steps.step_accepted(tx, step_row, execution_id, status), idempotent=True
        )

    async def step_not_accepted(self, step_row: int, error: str) -> StepRow:
        """The submission provably never reached the service: back to pending."""
        return await self._call(lambda tx: _steps.step_not_accepted(tx, step_row, error))

    async def step_uncertain(self, step_row: int, error: str) -> StepRow:
        """A submission may or may not have started an execution; count it."""
        return await self._call(lambda tx: _steps.step_uncertain(tx, step_row, error))

    async def step_status(self, step_row: int, status: str) -> None:
        """Remember the last non-final status seen while polling (no transition)."""
        await self._call(lambda tx: _steps.step_status(tx, step_row, status))

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
        sink_names = list(sinks)

        async def finish(tx: Tx) -> Completion:
            step, _completed = await _steps.step_finished(
                tx,
                step_row,
                state=str(state),
                status=status,
                result=result,
                error=error,
                http_status=http_status,
                sinks=sink_names,
            )
            return await deliveries.completion(tx, step.document_id)

        return await self._call(finish)

    # -- deliveries and ends -----------------------------------------------------------------

    async def completion(self, doc_id: int) -> Completion:
        """A document with its steps and deliveries, in one read."""
        return await self._call(lambda tx: deliveries.completion(tx, doc_id), write=False)

    async def deliveries_of(self, doc_id: int) -> list[DeliveryRow]:
        """The delivery rows of a document."""
        return await self._call(lambda tx: tx.deliveries_of(doc_id), write=False)

    async def delivery_done(self, delivery_id: int, receipt: str | None) -> None:
        """The sink stored the record."""
        await self._call(lambda tx: deliveries.delivery_done(tx, delivery_id, receipt))

    async def delivery_attempt_failed(self, delivery_id: int, error: str, *, final: bool) -> None:
        """A delivery attempt failed; `final` when the engine gives up on it."""
        await self._call(
            lambda tx: deliveries.delivery_attempt_failed(tx, delivery_id, error, final=final)
        )

    async def delivery_gave_up(self, delivery_id: int, error: str) -> None:
        """The engine gave up on a delivery whose failed attempts are already counted."""
        await self._call(lambda tx: deliveries.delivery_gave_up(tx, delivery_id, error))

    async def mark_delivered(self, doc_id: int) -> DocumentRow:
        """Every result reached every sink."""
        return await self._call(lambda tx: deliveries.mark_delivered(tx, doc_id))

    async def mark_failed(
        self, doc_id: int, reason: str, *, stage: str, detail: JSONObject | None = None
    ) -> DocumentRow:
        """The document failed (an ERROR result, a timeout, a rejected submission, a sink)."""
        return await self._call(
            lambda tx: deliveries.mark_failed(tx, doc_id, reason, stage=stage, detail=detail)
        )

    async def archive_intent(self, doc_id: int, destination: str | None) -> None:
        """Journal where the file is about to go, before moving it."""
        await self._call(lambda tx: deliveries.archive_intent(tx, doc_id, destination))

    async def deliver_and_finish(self, doc_id: int, archived_to: str | None) -> DocumentRow:
        """`mark_delivered` and `finish` in one transaction (a file kept where it was)."""
        return await self._call(lambda tx: deliveries.deliver_and_finish(tx, doc_id, archived_to))

    async def finish(self, doc_id: int, archived_to: str | None) -> DocumentRow:
        """The final file action is done."""
        return await self._call(lambda tx: deliveries.finish(tx, doc_id, archived_to))

    async def supersede(self, doc_id: int, reason: str) -> tuple[DocumentRow, int]:
        """The file changed while processed: end as `superseded`; (document, results marked)."""
        return await self._call(lambda tx: deliveries.supersede(tx, doc_id, reason))

    async def fail_changed(self, doc_id: int, reason: str) -> DocumentRow:
        """`on_change: fail`: the file changed while it was processed; the document fails."""
        return await self._call(lambda tx: deliveries.fail_changed(tx, doc_id, reason))

    # -- what other processes and the operator see -------------------------------------------

    async def set_meta(self, key: str, value: str) -> None:
        """Store a small fact for `status` (e.g. the request rate the daemon uses now)."""
        await self._call(lambda tx: reports.set_meta(tx, key, value))

    async def record_api_pause(self, reasons: str | None) -> None:
        """Why the daemon's API work is paused now (None: it is not), for `status`."""
        await self._call(lambda tx: reports.record_api_pause(tx, reasons))

    async def add_queued_batch(self, items: Sequence[NewDocument]) -> list[Queued | None]:
        """Many hashed files journaled in one commit: `queued`, or `duplicate` of a document
        claiming their content (None: a delivered twin exists); see `batch.py`."""
        for _ in range(_BATCH_ATTEMPTS - 1):
            with contextlib.suppress(ContentClaimed):
                # Another node took a content of the batch since its lookup: look again.
                return await self._call(lambda tx: batch.add_queued_batch(tx, items))
        return await self._call(lambda tx: batch.add_queued_batch(tx, items))

    async def unfinished_by_path(self, pipeline: str) -> dict[str, DocumentRow]:
        """The newest unfinished document for each path of a pipeline."""
        return await self._call(lambda tx: reports.unfinished_by_path(tx, pipeline), write=False)

    async def kept_stamps(self, pipeline: str) -> dict[str, int]:
        """Each path kept where it was found, with `kept_stamp(size, mtime_ns)`."""
        return await self._call(lambda tx: reports.kept_stamps(tx, pipeline), write=False)

    async def requeue_count(self) -> int:
        """How many documents `retry` has requeued over the store's life."""
        return await self._call(reports.requeue_count, write=False)

    async def counts(self) -> dict[str, dict[str, int]]:
        """Number of documents per pipeline and state (from the counters, not a scan)."""
        return await self._call(reports.counts, write=False)

    async def counts_by_type(self) -> dict[str, dict[str, int]]:
        """Number of identified documents per pipeline and identified type code."""
        return await self._call(reports.counts_by_type, write=False)

    async def outcomes_by_type(self) -> dict[str, dict[str, dict[str, int]]]:
        """Identified documents per pipeline, type code and outcome word (or state)."""
        return await self._call(reports.outcomes_by_type, write=False)

    async def oldest_pending(self) -> dict[str, float]:
        """Creation time of the oldest unfinished document, per pipeline."""
        return await self._call(reports.oldest_pending, write=False)

    async def load_latencies(self) -> list[LatencyRow]:
        """Saved learned processing times."""
        return await self._call(reports.load_latencies, write=False)

    async def save_latencies(self, rows: Iterable[LatencyRow]) -> None:
        """Persist learned processing times."""
        latencies = list(rows)
        await self._call(lambda tx: reports.save_latencies(tx, latencies))
