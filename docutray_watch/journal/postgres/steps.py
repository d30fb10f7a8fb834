"""Step rows: submitting, polling, results; each write moves the document along with its steps.

The execution id is stored in the same transaction that moves the step to `polling`. Semantics
are the SQLite journal's (`docutray_watch.journal.sqlite.steps`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from docutray_watch.journal.postgres import rows
from docutray_watch.journal.postgres.documents import add_pending_steps
from docutray_watch.journal.postgres.tables import deliveries, documents, steps
from docutray_watch.journal.postgres.tx import Tx
from docutray_watch.journal.rows import JSONObject, StepRow
from docutray_watch.journal.states import (
    IDENTIFY_STEP,
    STEP_END_STATES,
    DocumentState,
    InvalidTransition,
    StepState,
)

__all__ = [
    "advance_document",
    "ensure_steps",
    "step_accepted",
    "step_finished",
    "step_not_accepted",
    "step_status",
    "step_submitting",
    "step_uncertain",
    "steps_in",
]

_D = DocumentState


async def steps_in(tx: Tx, states: Sequence[str]) -> list[StepRow]:
    """Step rows in any of the given states, of unfinished documents."""
    found = await tx.conn.execute(
        sa.select(steps)
        .join(documents, documents.c.id == steps.c.document_id)
        .where(steps.c.state.in_(list(states)), documents.c.finished_at.is_(None))
        .order_by(steps.c.id)
    )
    return [rows.step(r) for r in found.mappings()]


async def step_submitting(tx: Tx, step_row: int) -> StepRow:
    """Journal the intent to submit *before* the POST (so a crash is noticed on restart)."""
    step = await tx.lock_step(step_row)
    if step.state not in (StepState.PENDING, StepState.SUBMITTING):
        raise InvalidTransition(f"step {step_row}: {step.state} → submitting")
    doc_state = await tx.lock_document(step.document_id)
    if doc_state == _D.QUEUED:
        await tx.set_state(step.document_id, _D.SUBMITTING)
    return await tx.update_step(
        step_row,
        StepState.SUBMITTING,
        attempts=step.attempts + 1,
        first_try_at=step.first_try_at or tx.now,
    )


async def step_accepted(tx: Tx, step_row: int, execution_id: str, status: str) -> StepRow:
    """The service accepted the submission: store its execution id and start polling.
    Idempotent: run again after its connection was lost, it finds its own earlier commit (the
    execution id is only in the submitting job's memory until this lands)."""
    current = await tx.lock_step(step_row)
    if current.state == StepState.POLLING and current.execution_id == execution_id:
        return current
    step = await tx.update_step(
        step_row,
        StepState.POLLING,
        execution_id=execution_id,
        status=status,
        submitted_at=tx.now,
    )
    await advance_document(tx, step.document_id)
    return step


async def step_not_accepted(tx: Tx, step_row: int, error: str) -> StepRow:
    """The submission provably never reached the service: it can be tried again freely."""
    return await tx.update_step(step_row, StepState.PENDING, error=error)


async def step_uncertain(tx: Tx, step_row: int, error: str) -> StepRow:
    """A submission may or may not have started an execution; count it."""
    step = await tx.lock_step(step_row)
    if step.state != StepState.SUBMITTING:
        raise InvalidTransition(f"step {step_row}: uncertain while {step.state}")
    step = await tx.update_step(
        step_row, StepState.SUBMITTING, uncertain=step.uncertain + 1, error=error
    )
    await tx.add_flag(step.document_id, "resubmitted")
    return step


async def step_status(tx: Tx, step_row: int, status: str) -> None:
    """Remember the last non-final status seen while polling (an unknown row: nothing)."""
    try:
        await tx.update_step(step_row, status=status)
    except KeyError:
        return


async def step_finished(
    tx: Tx,
    step_row: int,
    *,
    state: str,
    status: str | None,
    result: JSONObject | None,
    error: str | None,
    http_status: int | None,
    sinks: Iterable[str],
) -> tuple[StepRow, bool]:
    """A step reached its end; create its delivery rows. Returns (step, document completed?)."""
    if state not in STEP_END_STATES:
        raise InvalidTransition(f"step {step_row}: {state} is not an end state")
    step = await tx.update_step(
        step_row,
        state,
        status=status,
        completed_at=tx.now,
        result=dict(result) if result is not None else None,
        error=error,
        http_status=http_status,
    )
    wanted = list(dict.fromkeys(sinks))
    if wanted:
        await tx.conn.execute(
            postgresql.insert(deliveries)
            .values(
                [
                    {"step_row": step_row, "document_id": step.document_id, "sink": sink}
                    | {"state": "pending"}
                    for sink in wanted
                ]
            )
            .on_conflict_do_nothing(index_elements=[deliveries.c.step_row, deliveries.c.sink])
        )
    completed = await advance_document(tx, step.document_id)
    return step, completed


async def ensure_steps(tx: Tx, doc_id: int, step_ids: Sequence[str]) -> list[StepRow]:
    """Add a pending row for each configured step the document has no row for (after a retry,
    or when a step was added to the pipeline); returns all its step rows."""
    try:
        doc_state = await tx.lock_document(doc_id)
    except KeyError:
        doc_state = None
    await add_pending_steps(tx, doc_id, step_ids)
    # A retried document whose steps all ended (it failed only in delivery) goes on to
    # `completed`, so its deliveries can run and it can become `delivered`.
    if doc_state in ("queued", "submitting", "polling"):
        await advance_document(tx, doc_id)
    return await tx.steps_of(doc_id)


async def advance_document(tx: Tx, doc_id: int) -> bool:
    """Move the document along with its steps; True when it just became `completed`.

    A document whose only step is a successful `@identify` is not complete: it waits for its
    route (the engine adds the routed steps, or ends it as failed or unrouted).
    """
    found = (
        await tx.conn.execute(
            sa.select(steps.c.step_id, steps.c.state).where(steps.c.document_id == doc_id)
        )
    ).all()
    if [(r.step_id, r.state) for r in found] == [(IDENTIFY_STEP, StepState.SUCCESS)]:
        return False
    states = [str(r.state) for r in found]
    doc_state = await tx.lock_document(doc_id)
    if states and all(s in STEP_END_STATES for s in states):
        if doc_state == _D.QUEUED:
            await tx.set_state(doc_id, _D.SUBMITTING)
        if doc_state != _D.COMPLETED:
            await tx.set_state(doc_id, _D.COMPLETED)
            return True
        return False
    all_submitted = all(s in STEP_END_STATES or s == StepState.POLLING for s in states)
    if states and all_submitted and doc_state in ("queued", "submitting"):
        if doc_state == _D.QUEUED:
            await tx.set_state(doc_id, _D.SUBMITTING)
        await tx.set_state(doc_id, _D.POLLING)
    return False
