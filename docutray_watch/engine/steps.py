"""What a step's phases share: its slot, its deadline, and how its end is journaled."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from structlog.typing import FilteringBoundLogger

from docutray_watch.client import IdentificationStatus, StepExecutionStatus
from docutray_watch.engine.context import Context, document_of
from docutray_watch.engine.limits import SlotPool
from docutray_watch.journal import Completion, DocumentRow, StepRow
from docutray_watch.plugins import call_observers, has_observers
from docutray_watch.records import ResultRecord
from docutray_watch.routing import identification_of
from docutray_watch.routing_phase import identification_outcome

__all__ = [
    "TERMINAL",
    "Deadline",
    "HeldSlot",
    "error_text",
    "identification_ended",
    "json_text",
    "record_of",
    "step_ended",
    "step_failed",
]

TERMINAL = frozenset({"SUCCESS", "ERROR"})


class HeldSlot:
    """The execution slot one step holds: taken before its submission, given back as soon as
    its execution ends at the service (or while a paused submission waits)."""

    def __init__(self, pool: SlotPool, *, held: bool) -> None:
        self.pool = pool
        self.held = held

    async def acquire(self) -> None:
        if not self.held:
            await self.pool.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.pool.release()


class Deadline:
    """When a step gives up: `poll.timeout` after its first try, plus the time the API was
    paused meanwhile (a refused key or an outage is not the document's fault)."""

    def __init__(self, ctx: Context, pipeline: str) -> None:
        self.ctx = ctx
        self.pipeline = pipeline
        self._paused_at_start = ctx.limits.pauses.paused_seconds(pipeline)

    def at(self, step: StepRow) -> float:
        timeout = self.ctx.pipelines[self.pipeline].config.poll.timeout
        paused = self.ctx.limits.pauses.paused_seconds(self.pipeline) - self._paused_at_start
        return (step.first_try_at or time.time()) + timeout + paused


def record_of(doc: DocumentRow, step: StepRow) -> ResultRecord | None:
    """The result record of a step that has a result."""
    if step.result is None or step.execution_id is None:
        return None
    result = step.result
    return ResultRecord(
        pipeline=doc.pipeline,
        document=document_of(doc),
        step_id=step.step_id,
        execution_id=step.execution_id,
        status=result["status"],
        data=result.get("data"),
        error=result.get("error"),
        original_filename=result.get("original_filename"),
        request_timestamp=result.get("request_timestamp"),
        response_timestamp=result.get("response_timestamp"),
        submitted_at=datetime.fromtimestamp(step.submitted_at or 0, UTC),
        completed_at=datetime.fromtimestamp(step.completed_at or 0, UTC),
        identification=identification_of(doc.identification),
    )


async def step_ended(
    ctx: Context,
    doc: DocumentRow,
    step: StepRow,
    status: StepExecutionStatus,
    log: FilteringBoundLogger,
) -> StepRow:
    """Journal a SUCCESS or ERROR result (with the deliveries it needs) and announce it."""
    runtime = ctx.pipelines[doc.pipeline]
    success = status.status == "SUCCESS"
    deliver = success or runtime.config.deliver_errors
    result = {
        "status": status.status,
        "data": status.data,
        "error": status.error,
        "original_filename": status.original_filename,
        "request_timestamp": _iso(status.request_timestamp),
        "response_timestamp": _iso(status.response_timestamp),
    }
    error = None if success else f"the step ended in ERROR: {error_text(status.error)}"
    step = _ended(
        ctx,
        step.id,
        await ctx.store.finish_step(
            step.id,
            state="success" if success else "error",
            status=status.status,
            result=result,
            error=error,
            sinks=list(runtime.sinks) if deliver else [],
        ),
    )
    log.info(
        "step_completed",
        doc_sha256=doc.sha256,
        step_id=step.step_id,
        execution_id=step.execution_id,
        status=status.status,
    )
    record = record_of(doc, step) if has_observers(ctx.pm, "after_document_result") else None
    if record is not None:
        call_observers(
            ctx.pm,
            "after_document_result",
            pipeline=doc.pipeline,
            document=record.document,
            record=record,
        )
    return step


async def identification_ended(
    ctx: Context, step: StepRow, status: IdentificationStatus, log: FilteringBoundLogger
) -> StepRow:
    """Journal a SUCCESS or ERROR identification (its whole answer: a restart routes without
    asking again). Nothing is delivered: the routed steps' results are."""
    outcome = identification_outcome(status)
    step = _ended(
        ctx,
        step.id,
        await ctx.store.finish_step(
            step.id,
            state=outcome.state,
            status=status.status,
            result=outcome.result,
            error=outcome.error,
        ),
    )
    log.info(
        "identification_completed",
        identification_id=step.execution_id,
        status=status.status,
        document_type=status.document_type.code if status.document_type else None,
    )
    return step


async def step_failed(
    ctx: Context,
    step: StepRow,
    reason: str,
    log: FilteringBoundLogger,
    *,
    stage: str,
    http_status: int | None = None,
) -> StepRow:
    """Journal that a step failed (the document fails with it once every step has ended)."""
    step = _ended(
        ctx,
        step.id,
        await ctx.store.finish_step(step.id, state="failed", error=reason, http_status=http_status),
    )
    log.warning(
        "step_failed",
        step_id=step.step_id,
        execution_id=step.execution_id,
        stage=stage,
        reason=reason,
    )
    return step


def _ended(ctx: Context, step_row: int, view: Completion) -> StepRow:
    """The ended step's row, out of the rows `finish_step` read back (kept for the run)."""
    ctx.documents.step_ended(view)
    return next(s for s in view.steps if s.id == step_row)


def _iso(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def error_text(error: object) -> str:
    """An API error object as one line."""
    if isinstance(error, dict):
        for key in ("message", "detail", "error"):
            if isinstance(error.get(key), str):
                return str(error[key])
        return json_text(error)
    if isinstance(error, list):
        return json_text(error)
    return str(error) if error is not None else "no error message"


def json_text(value: object) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
