"""Step and delivery rows: submitting, polling, results, deliveries to sinks.

The execution id is stored in the same transaction that moves the step to `polling`; a delivery
is marked done only after the sink returned. Each write moves the document along with its steps
(`_advance_document`), in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence

from docutray_watch.journal.rows import Completion, DeliveryRow, JSONObject, StepRow
from docutray_watch.journal.sqlite import rows
from docutray_watch.journal.sqlite.connection import Connection, Expr
from docutray_watch.journal.states import (
    IDENTIFY_STEP,
    STEP_END_STATES,
    DeliveryState,
    DocumentState,
    InvalidTransition,
    StepState,
)

__all__ = ["StepWrites"]

INSERT_PENDING_STEP = (
    "INSERT OR IGNORE INTO steps (document_id, step_id, state) VALUES (?, ?, 'pending')"
)


class StepWrites(Connection):
    """The steps and deliveries of documents."""

    def steps_of(self, doc_id: int) -> list[StepRow]:
        """The step rows of a document."""
        found = self.conn.execute(
            "SELECT * FROM steps WHERE document_id = ? ORDER BY id", (doc_id,)
        ).fetchall()
        return [rows.step(r) for r in found]

    def step(self, step_row: int) -> StepRow:
        """One step row."""
        return self._step_row(self.conn, step_row)

    def steps_in(self, *states: str) -> list[StepRow]:
        """Step rows in any of the given states, of unfinished documents."""
        marks = ",".join("?" for _ in states)
        found = self.conn.execute(
            f"SELECT s.* FROM steps s JOIN documents d ON d.id = s.document_id"  # noqa: S608
            f" WHERE s.state IN ({marks}) AND d.finished_at IS NULL ORDER BY s.id",
            states,
        ).fetchall()
        return [rows.step(r) for r in found]

    def step_submitting(self, step_row: int) -> StepRow:
        """Journal the intent to submit *before* the POST (so a crash is noticed on restart)."""
        now = self._clock()
        with self._write() as conn:
            step = self._step_row(conn, step_row)
            if step.state not in (StepState.PENDING, StepState.SUBMITTING):
                raise InvalidTransition(f"step {step_row}: {step.state} → submitting")
            # A queued document starts submitting with its first step (one UPDATE: a document
            # in any other state is left as it is).
            conn.execute(
                "UPDATE documents SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
                (DocumentState.SUBMITTING, self._clock(), step.document_id, DocumentState.QUEUED),
            )
            return self._update_step(
                conn,
                step_row,
                StepState.SUBMITTING,
                known_state=step.state,
                attempts=step.attempts + 1,
                first_try_at=step.first_try_at or now,
            )

    def step_accepted(self, step_row: int, execution_id: str, status: str) -> StepRow:
        """The service accepted the submission: store its execution id and start polling."""
        with self._write() as conn:
            step = self._update_step(
                conn,
                step_row,
                StepState.POLLING,
                execution_id=execution_id,
                status=status,
                submitted_at=self._clock(),
            )
            self._advance_document(conn, step.document_id)
            return step

    def step_not_accepted(self, step_row: int, error: str) -> StepRow:
        """The submission provably never reached the service: it can be tried again freely."""
        with self._write() as conn:
            return self._update_step(conn, step_row, StepState.PENDING, error=error)

    def step_uncertain(self, step_row: int, error: str) -> StepRow:
        """A submission may or may not have started an execution; count it."""
        with self._write() as conn:
            step = self._step_row(conn, step_row)
            if step.state != StepState.SUBMITTING:
                raise InvalidTransition(f"step {step_row}: uncertain while {step.state}")
            step = self._update_step(
                conn, step_row, StepState.SUBMITTING, uncertain=step.uncertain + 1, error=error
            )
            self._add_flag(conn, step.document_id, "resubmitted")
            return step

    def step_status(self, step_row: int, status: str) -> None:
        """Remember the last non-final status seen while polling (no transition)."""
        with self._write() as conn:
            conn.execute("UPDATE steps SET status = ? WHERE id = ?", (status, step_row))

    def step_finished(
        self,
        step_row: int,
        *,
        state: str,
        status: str | None = None,
        result: JSONObject | None = None,
        error: str | None = None,
        http_status: int | None = None,
        sinks: Iterable[str] = (),
    ) -> tuple[StepRow, bool]:
        """A step reached its end; create its delivery rows. Returns (step, document completed?)."""
        if state not in STEP_END_STATES:
            raise InvalidTransition(f"step {step_row}: {state} is not an end state")
        with self._write() as conn:
            step = self._update_step(
                conn,
                step_row,
                state,
                status=status,
                completed_at=self._clock(),
                result=json.dumps(result) if result is not None else None,
                error=error,
                http_status=http_status,
            )
            conn.executemany(
                "INSERT OR IGNORE INTO deliveries (step_row, document_id, sink, state)"
                " VALUES (?, ?, ?, 'pending')",
                [(step_row, step.document_id, sink) for sink in sinks],
            )
            completed = self._advance_document(conn, step.document_id)
            return step, completed

    def finish_step(
        self,
        step_row: int,
        *,
        state: str,
        status: str | None = None,
        result: JSONObject | None = None,
        error: str | None = None,
        http_status: int | None = None,
        sinks: Iterable[str] = (),
    ) -> Completion:
        """`step_finished`, then the document with its steps and deliveries as they are now."""
        step, _completed = self.step_finished(
            step_row,
            state=state,
            status=status,
            result=result,
            error=error,
            http_status=http_status,
            sinks=sinks,
        )
        return self.completion(step.document_id)

    def ensure_steps(self, doc_id: int, steps: Sequence[str]) -> list[StepRow]:
        """Add a pending row for each configured step the document has no row for (after a
        retry, or when a step was added to the pipeline); returns all its step rows."""
        with self._write() as conn:
            conn.executemany(INSERT_PENDING_STEP, [(doc_id, step) for step in steps])
            # A retried document whose steps all ended (it failed only in delivery) goes on to
            # `completed`, so its deliveries can run and it can become `delivered`.
            state = conn.execute("SELECT state FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if state is not None and state[0] in ("queued", "submitting", "polling"):
                self._advance_document(conn, doc_id)
            return self.steps_of(doc_id)

    def _add_flag(self, conn: sqlite3.Connection, doc_id: int, flag: str) -> None:
        row = conn.execute("SELECT flags FROM documents WHERE id = ?", (doc_id,)).fetchone()
        flags = rows.parse_flags(row["flags"]) | {flag}
        conn.execute(
            "UPDATE documents SET flags = ? WHERE id = ?", (",".join(sorted(flags)), doc_id)
        )

    def _advance_document(self, conn: sqlite3.Connection, doc_id: int) -> bool:
        """Move the document along with its steps; True when it just became `completed`.

        A document whose only step is a successful `@identify` is not complete: it waits for
        its route (the engine adds the routed steps, or ends it as failed or unrouted).
        """
        # The document's state comes with its steps (one read; no steps: nothing to advance).
        found = conn.execute(
            "SELECT s.step_id, s.state, d.state AS doc_state FROM steps s"
            " JOIN documents d ON d.id = s.document_id WHERE s.document_id = ?",
            (doc_id,),
        ).fetchall()
        if not found:
            return False
        states = [r["state"] for r in found]
        if [(r["step_id"], r["state"]) for r in found] == [(IDENTIFY_STEP, StepState.SUCCESS)]:
            return False
        doc_state = found[0]["doc_state"]
        if states and all(s in STEP_END_STATES for s in states):
            if doc_state == DocumentState.QUEUED:
                self._move_document(conn, doc_id, DocumentState.SUBMITTING, known_state=doc_state)
                doc_state = DocumentState.SUBMITTING
            if doc_state != DocumentState.COMPLETED:
                self._move_document(conn, doc_id, DocumentState.COMPLETED, known_state=doc_state)
                return True
            return False
        all_submitted = all(s in STEP_END_STATES or s == StepState.POLLING for s in states)
        if states and all_submitted and doc_state in ("queued", "submitting"):
            if doc_state == DocumentState.QUEUED:
                self._move_document(conn, doc_id, DocumentState.SUBMITTING, known_state=doc_state)
                doc_state = DocumentState.SUBMITTING
            self._move_document(conn, doc_id, DocumentState.POLLING, known_state=doc_state)
        return False

    # -- deliveries --------------------------------------------------------------------------

    def deliveries_of(self, doc_id: int) -> list[DeliveryRow]:
        """The delivery rows of a document."""
        found = self.conn.execute(
            "SELECT * FROM deliveries WHERE document_id = ? ORDER BY id", (doc_id,)
        ).fetchall()
        return [rows.delivery(r) for r in found]

    def completion(self, doc_id: int) -> Completion:
        """A document whose steps have ended, with its steps and deliveries: one read."""
        conn = self.conn
        return Completion(
            self._document_row(conn, doc_id), self.steps_of(doc_id), self.deliveries_of(doc_id)
        )

    def delivery_done(self, delivery_id: int, receipt: str | None) -> None:
        """The sink stored the record."""
        with self._write() as conn:
            self._move_delivery(
                conn,
                delivery_id,
                DeliveryState.DELIVERED,
                receipt=receipt,
                delivered_at=self._clock(),
                attempts=Expr("attempts + 1"),
                error=None,
            )

    def delivery_attempt_failed(self, delivery_id: int, error: str, *, final: bool) -> None:
        """A delivery attempt failed; `final` when the engine gives up on it."""
        new = DeliveryState.FAILED if final else DeliveryState.PENDING
        with self._write() as conn:
            self._move_delivery(conn, delivery_id, new, attempts=Expr("attempts + 1"), error=error)

    def delivery_gave_up(self, delivery_id: int, error: str) -> None:
        """The engine gave up on a delivery; its failed attempts are already counted."""
        with self._write() as conn:
            self._move_delivery(conn, delivery_id, DeliveryState.FAILED, error=error)
