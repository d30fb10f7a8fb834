"""The boundary between the engine and its storage: the typed `StateStore` protocol.

The engine (and the daemon's health checks) talk to the journal only through these methods. Each
write is one transaction, committed when the call returns, and checks the state moves it makes
against the tables in `docutray_watch.journal.states`. The SQLite journal
(`docutray_watch.journal.sqlite.SqliteStore`) is the first implementation; a second backend
(PostgreSQL for several nodes) is a second class with the same methods, and the engine does not
change. No method takes or returns `Any` (mypy's `disallow_any_explicit` holds here, and a test
checks every method's hints).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

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

__all__ = ["REQUEST_RATE_KEY", "StateStore"]

# The `set_meta` key under which the daemon keeps the request rate it uses, for `status`.
REQUEST_RATE_KEY = "request_rate"


@runtime_checkable
class StateStore(Protocol):
    """Durable state of every document, its steps and its deliveries."""

    # -- life cycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating or migrating) the store; refuses one written by a newer version."""
        ...

    async def close(self) -> None:
        """Finish queued writes and release the store."""
        ...

    @property
    def write_error(self) -> str | None:
        """Why the last write failed (disk full…); None once a later write went through."""
        ...

    async def probe(self) -> None:
        """Raise unless the store can take a transaction now (the readiness check)."""
        ...

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
        """Record a newly found file as `discovered` (`source_version`: a source document's
        version token, e.g. an ETag)."""
        ...

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
        ...

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
        ...

    async def ensure_steps(self, doc_id: int, steps: Sequence[str]) -> list[StepRow]:
        """Add a pending row for each configured step the document lacks; all its step rows."""
        ...

    async def mark_rediscovered(self, doc_id: int) -> DocumentRow:
        """The file changed before submission: hash it again."""
        ...

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
        ...

    async def mark_duplicate(
        self, doc_id: int, *, sha256: str, content_type: str, of: int
    ) -> DocumentRow:
        """Same content as a document already processed: no submission."""
        ...

    async def document(self, doc_id: int) -> DocumentRow:
        """One document by id (KeyError when unknown)."""
        ...

    async def unfinished_documents(self) -> list[DocumentRow]:
        """Every document whose final file action is not done yet, oldest first."""
        ...

    async def documents_in(
        self, *states: DocumentState | str, pipeline: str | None = None
    ) -> list[DocumentRow]:
        """Documents in any of the given states."""
        ...

    async def latest_by_path(self, pipeline: str) -> dict[str, DocumentRow]:
        """The most recent document for each path a folder scan must know about."""
        ...

    async def find_done_by_sha(
        self, pipeline: str, sha256: str, *, exclude: int
    ) -> DocumentRow | None:
        """A document of this pipeline with the same content whose results were delivered."""
        ...

    async def refresh_identity(
        self, doc_id: int, *, mtime_ns: int, ctime_ns: int, inode: int
    ) -> None:
        """The file's metadata changed but not its bytes: remember the new facts."""
        ...

    # -- identification (pipelines that route by document type) ------------------------------

    async def set_identification(
        self, doc_id: int, identification_json: str, code: str
    ) -> DocumentRow:
        """Remember the identified type `code` and the whole answer (an `Identification` as
        JSON text) once the document's `@identify` step succeeded."""
        ...

    async def mark_unrouted(
        self, doc_id: int, reason: str, *, detail: JSONObject | None = None
    ) -> DocumentRow:
        """No route takes the identified document and `otherwise: keep`: it ends `unrouted`."""
        ...

    # -- steps -------------------------------------------------------------------------------

    async def steps_of(self, doc_id: int) -> list[StepRow]:
        """The step rows of a document."""
        ...

    async def step(self, step_row: int) -> StepRow:
        """One step row."""
        ...

    async def steps_in(self, *states: StepState | str) -> list[StepRow]:
        """Step rows in any of the given states, of unfinished documents."""
        ...

    async def step_submitting(self, step_row: int) -> StepRow:
        """Journal the intent to submit, before the POST."""
        ...

    async def step_accepted(self, step_row: int, execution_id: str, status: str) -> StepRow:
        """The service accepted the submission: store its execution id, start polling."""
        ...

    async def step_not_accepted(self, step_row: int, error: str) -> StepRow:
        """The submission provably never reached the service: back to pending."""
        ...

    async def step_uncertain(self, step_row: int, error: str) -> StepRow:
        """A submission may or may not have started an execution; count it."""
        ...

    async def step_status(self, step_row: int, status: str) -> None:
        """Remember the last non-final status seen while polling (no transition)."""
        ...

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
        ...

    # -- deliveries and ends -----------------------------------------------------------------

    async def completion(self, doc_id: int) -> Completion:
        """A document with its steps and deliveries, in one read."""
        ...

    async def deliveries_of(self, doc_id: int) -> list[DeliveryRow]:
        """The delivery rows of a document."""
        ...

    async def delivery_done(self, delivery_id: int, receipt: str | None) -> None:
        """The sink stored the record."""
        ...

    async def delivery_attempt_failed(self, delivery_id: int, error: str, *, final: bool) -> None:
        """A delivery attempt failed; `final` when the engine gives up on it."""
        ...

    async def delivery_gave_up(self, delivery_id: int, error: str) -> None:
        """The engine gave up on a delivery whose failed attempts are already counted."""
        ...

    async def mark_delivered(self, doc_id: int) -> DocumentRow:
        """Every result reached every sink."""
        ...

    async def mark_failed(
        self, doc_id: int, reason: str, *, stage: str, detail: JSONObject | None = None
    ) -> DocumentRow:
        """The document failed (an ERROR result, a timeout, a rejected submission, a sink)."""
        ...

    async def archive_intent(self, doc_id: int, destination: str | None) -> None:
        """Journal where the file is about to go, before moving it."""
        ...

    async def deliver_and_finish(self, doc_id: int, archived_to: str | None) -> DocumentRow:
        """`mark_delivered` and `finish` in one transaction (a file kept where it was)."""
        ...

    async def finish(self, doc_id: int, archived_to: str | None) -> DocumentRow:
        """The final file action is done."""
        ...

    async def supersede(self, doc_id: int, reason: str) -> tuple[DocumentRow, int]:
        """The file changed while processed: end as `superseded`; (document, results marked)."""
        ...

    async def fail_changed(self, doc_id: int, reason: str) -> DocumentRow:
        """`on_change: fail`: the file changed while it was processed; the document fails."""
        ...

    # -- what other processes and the operator see -------------------------------------------

    async def set_meta(self, key: str, value: str) -> None:
        """Store a small fact for `status` (e.g. the request rate the daemon uses now)."""
        ...

    async def get_meta(self, key: str) -> tuple[str, float] | None:
        """The value `set_meta` stored under `key` and when (epoch seconds), or None."""
        ...

    async def record_api_pause(self, reasons: str | None) -> None:
        """Why the daemon's API work is paused now (None: it is not), for `status`."""
        ...

    async def add_queued_batch(self, items: Sequence[NewDocument]) -> list[Queued | None]:
        """Many hashed files journaled `queued` in one commit (None: a delivered twin exists)."""
        ...

    async def unfinished_by_path(self, pipeline: str) -> dict[str, DocumentRow]:
        """The newest unfinished document for each path of a pipeline."""
        ...

    async def kept_stamps(self, pipeline: str) -> dict[str, int]:
        """Each path kept where it was found, with `kept_stamp(size, mtime_ns)`."""
        ...

    async def requeue_count(self) -> int:
        """How many documents `retry` has requeued over the store's life."""
        ...

    async def counts(self) -> dict[str, dict[str, int]]:
        """Number of documents per pipeline and state."""
        ...

    async def oldest_pending(self) -> dict[str, float]:
        """Creation time of the oldest unfinished document, per pipeline."""
        ...

    async def counts_by_type(self) -> dict[str, dict[str, int]]:
        """Number of identified documents per pipeline and identified type code."""
        ...

    async def load_latencies(self) -> list[LatencyRow]:
        """Saved learned processing times."""
        ...

    async def save_latencies(self, rows: Iterable[LatencyRow]) -> None:
        """Persist learned processing times."""
        ...
