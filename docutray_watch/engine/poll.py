"""The poll phase: a step in `polling` read until its execution ends or its deadline passes.

`poll_once` is one status read: it journals what it learned and says what comes next (ended,
or read again in so many seconds). `poll` drives it for one step in single-node mode; in
multi-node mode a job calls `poll_once` and defers itself for the returned wait. When to read is
learned (see `polling`): the first read aims at when executions of this step and size usually end.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

from structlog.typing import FilteringBoundLogger

from docutray_watch.client import (
    DocuTrayError,
    IdentificationStatus,
    NotFoundError,
    StepExecutionStatus,
)
from docutray_watch.delivery import describe
from docutray_watch.engine.context import Context
from docutray_watch.engine.errors import Failure, classify
from docutray_watch.engine.steps import (
    TERMINAL,
    Deadline,
    HeldSlot,
    identification_ended,
    step_ended,
    step_failed,
)
from docutray_watch.engine.submit import await_api, report_pause
from docutray_watch.journal import IDENTIFY_STEP, DocumentRow, StepRow
from docutray_watch.polling import PollSchedule, probe_schedule
from docutray_watch.routing_phase import read_identification

__all__ = ["PollState", "Polled", "poll", "poll_once"]


@dataclass
class PollState:
    """What one step's polling remembers between reads (rebuilt from the rows after a restart)."""

    schedule: PollSchedule
    submitted_wall: float
    last_pending_at: float
    overdue: PollSchedule | None = None
    probe: bool = False  # this step measures how long its kind takes (see `LatencyModel`)
    asked: bool = False


@dataclass(frozen=True)
class Polled:
    """What a status read found: the step as journaled, and when to read again (None: ended)."""

    step: StepRow
    next_in: float | None


async def poll(
    ctx: Context,
    doc: DocumentRow,
    step: StepRow,
    *,
    slot: HeldSlot,
    deadline: Deadline,
    log: FilteringBoundLogger,
) -> StepRow:
    """Read the execution's status until it ends or the deadline passes; the step ended."""
    state, wait = await _first_read_plan(ctx, doc, step, deadline)
    try:
        while True:
            remaining = deadline.at(step) - time.time()
            if remaining <= 0:
                if state.asked:
                    config = ctx.pipelines[doc.pipeline].config
                    return await step_failed(
                        ctx,
                        step,
                        f"timed out after {config.poll.timeout:g} s waiting for the result "
                        f"(last status {step.status or 'unknown'})",
                        log,
                        stage="poll",
                    )
                # Past its deadline before this loop asked even once (the daemon was down
                # meanwhile): the paid-for result may be ready, so ask before giving up.
                wait = remaining = 0.0
            await asyncio.sleep(min(wait, remaining))
            polled = await poll_once(ctx, doc, step, state, slot=slot, log=log)
            step = polled.step
            if polled.next_in is None:
                return step
            wait = polled.next_in
    finally:
        if state.probe:
            ctx.latency.release_probe(step.step_id, doc.size or 0)


async def _first_read_plan(
    ctx: Context, doc: DocumentRow, step: StepRow, deadline: Deadline
) -> tuple[PollState, float]:
    """The polling state of a step, and how long to wait before its first read."""
    poll_config = ctx.pipelines[doc.pipeline].config.poll
    size = doc.size or 0
    submitted_wall = step.submitted_at or time.time()
    state = PollState(
        schedule=PollSchedule(poll_config.initial, poll_config.max),
        submitted_wall=submitted_wall,
        last_pending_at=submitted_wall,
    )
    expected = ctx.latency.first_read(step.step_id, size)
    if expected is None:
        state.probe = ctx.latency.claim_probe(step.step_id, size)
        if state.probe:
            state.schedule = probe_schedule(poll_config.initial, poll_config.max)
        else:
            patience = max(0.0, min(deadline.at(step) - time.time(), poll_config.max * 4))
            await ctx.latency.wait_learned(step.step_id, size, patience=patience)
            expected = ctx.latency.first_read(step.step_id, size)
    if expected is not None:
        return state, max(0.0, submitted_wall + expected - time.time())
    return state, state.schedule.next_interval()


async def poll_once(
    ctx: Context,
    doc: DocumentRow,
    step: StepRow,
    state: PollState,
    *,
    slot: HeldSlot,
    log: FilteringBoundLogger,
) -> Polled:
    """One status read of the step's execution (waiting first while the API is paused)."""
    assert step.execution_id is not None
    await await_api(ctx, doc.pipeline)
    state.asked = True
    asked_at = time.time()
    try:
        ctx.metrics.status_requests.inc()
        status: StepExecutionStatus | IdentificationStatus
        if step.step_id == IDENTIFY_STEP:
            status = await read_identification(ctx.api(), step.execution_id)
        else:
            status = await ctx.api().steps.get_status(step.execution_id)
    except DocuTrayError as exc:
        failure = classify(exc, stage="poll")
        if failure is Failure.REJECTED:
            unknown = isinstance(exc, NotFoundError)
            reason = (
                f"the service does not know execution {step.execution_id}: {describe(exc)}"
                if unknown
                else f"the service refused the status read: {describe(exc)}"
            )
            step = await step_failed(
                ctx,
                step,
                reason,
                log,
                stage="poll",
                http_status=getattr(exc, "status_code", None),
            )
            return Polled(step, None)
        if failure.pauses:
            report_pause(ctx, failure, doc.pipeline, exc)  # the next read waits at the gate
        else:
            log.warning(
                "status_read_failed",
                step_id=step.step_id,
                execution_id=step.execution_id,
                error=describe(exc),
            )
        return Polled(step, state.schedule.next_interval())
    ctx.limits.pauses.answered()
    size = doc.size or 0
    if status.status in TERMINAL:
        _learn(ctx, step.step_id, size, status, state, asked_at)
        if state.probe:
            ctx.latency.release_probe(step.step_id, size)
            state.probe = False
        # The execution is over at the service: its slot can take the next document while the
        # result is journaled (a crash before that re-reads the status).
        slot.release()
        if isinstance(status, IdentificationStatus):
            return Polled(await identification_ended(ctx, step, status, log), None)
        return Polled(await step_ended(ctx, doc, step, status, log), None)
    state.last_pending_at = asked_at
    if status.status != step.status:
        await ctx.store.step_status(step.id, status.status)
        step = await ctx.store.step(step.id)
    return Polled(step, _next_wait(ctx, step, size, state))


def _next_wait(ctx: Context, step: StepRow, size: int, state: PollState) -> float:
    wait = state.schedule.next_interval()
    learned = ctx.latency.first_read(step.step_id, size)
    if learned is None:
        return wait
    # Something was learned meanwhile (by another execution): aim at it.
    target = state.submitted_wall + learned - time.time()
    if target > 0:
        return min(wait, target)
    # Read too early: the result is due, so look again soon.
    if state.overdue is None:
        poll_max = state.schedule.maximum
        state.overdue = ctx.latency.recheck_schedule(step.step_id, size, poll_max)
    return min(wait, state.overdue.next_interval())


def _learn(
    ctx: Context,
    step_id: str,
    size: int,
    status: StepExecutionStatus | IdentificationStatus,
    state: PollState,
    seen_at: float,
) -> None:
    started = _parse_time(status.request_timestamp)
    ended = _parse_time(status.response_timestamp)
    if started is not None and ended is not None:
        seconds = (ended - started).total_seconds()
    else:
        # No server timestamps: completion happened between the last two reads.
        seconds = (state.last_pending_at + seen_at) / 2 - state.submitted_wall
    ctx.latency.observe(step_id, size, seconds)


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None
