"""The submit phase: a step from `pending` (or `submitting`, after a crash) to `polling` or ended.

The execution id is journaled before anything else happens: losing it would mean paying twice.
A submission whose outcome is unknown (it may have started an execution) is made at most once
more; the document is not failed for what is not its fault (a refused key, an unreachable API, a
429): those wait at the shared gate instead, not counted against the step's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import tenacity
from structlog.typing import FilteringBoundLogger

from docutray_watch.client import (
    DocuTrayError,
    InvalidDocumentError,
    RateLimitError,
)
from docutray_watch.config import PipelineConfig
from docutray_watch.delivery import describe
from docutray_watch.engine.context import Context, document_of, now
from docutray_watch.engine.errors import Failure, classify
from docutray_watch.engine.http import SUBMISSION_WIRE, SubmissionWire
from docutray_watch.engine.source_actions import submission_input
from docutray_watch.engine.steps import Deadline, HeldSlot, step_failed
from docutray_watch.journal import IDENTIFY_STEP, DocumentRow, StepRow, StepState
from docutray_watch.plugins import call_observers, has_observers
from docutray_watch.routing_phase import submit_identification
from docutray_watch.sources.base import DocumentGoneError, SourceError, VersionChangedError
from docutray_watch.templates import metadata_context, render

__all__ = [
    "SubmitAttempt",
    "await_api",
    "interrupted",
    "report_pause",
    "source_changed",
    "submit",
    "submit_once",
    "write_until_done",
]

T = TypeVar("T")
_STOPPED_UNSENT = "stopped before the submission was sent"
SUBMIT_BACKOFF_MAX = 60.0


@dataclass(frozen=True)
class SubmitAttempt:
    """What one submission attempt left: the step as journaled, and when to try again.

    `retry_in` is None when the step is done with submitting (`polling`, or ended); 0.0 to try
    again as soon as the API is usable (an uncertain outcome, or a pause reported to the gate);
    otherwise the backoff after a submission the service provably never took.
    """

    step: StepRow
    retry_in: float | None


async def submit(
    ctx: Context,
    doc: DocumentRow,
    step: StepRow,
    *,
    slot: HeldSlot,
    deadline: Deadline,
    log: FilteringBoundLogger,
) -> StepRow:
    """Submit until the service accepts the document; returns the step in `polling` or ended."""
    if step.state == StepState.POLLING:
        return step
    config = ctx.pipelines[doc.pipeline].config
    if step.state == StepState.SUBMITTING:
        step = await interrupted(ctx, step)
    backoff = 1.0
    while True:
        await await_api(ctx, doc.pipeline, slot=slot)
        attempt = await submit_once(ctx, doc, step, log=log, backoff=backoff)
        step = attempt.step
        if attempt.retry_in is None:
            return step
        if attempt.retry_in == 0.0:
            continue
        # Not accepted: wait and try again, until the step's deadline.
        if time.time() + backoff > deadline.at(step):
            return await step_failed(
                ctx,
                step,
                f"could not submit within {config.poll.timeout:g} s (last error: {step.error})",
                log,
                stage="submit",
            )
        await asyncio.sleep(backoff)
        backoff = min(SUBMIT_BACKOFF_MAX, backoff * 2)


async def interrupted(ctx: Context, step: StepRow) -> StepRow:
    """A step found `submitting` by a new run (a crash or hard stop mid-submission): its
    outcome is unknown, and counted as such."""
    return await ctx.store.step_uncertain(step.id, "interrupted while submitting")


async def submit_once(
    ctx: Context,
    doc: DocumentRow,
    step: StepRow,
    *,
    log: FilteringBoundLogger,
    backoff: float = 1.0,
) -> SubmitAttempt:
    """One submission of a `pending` (or uncertain `submitting`) step, the API being usable
    (the caller waited at the gate or checked it): see `SubmitAttempt` for what comes next."""
    if step.uncertain >= 2:
        failed = await step_failed(
            ctx,
            step,
            "the outcome of two submissions is unknown; not submitting a "
            "third time, to avoid paying twice (use `retry` to force)",
            log,
            stage="submit",
        )
        return SubmitAttempt(failed, None)
    changed = source_changed(doc)  # one lstat: inline, no thread trip
    if changed:
        return SubmitAttempt(await step_failed(ctx, step, changed, log, stage="submit"), None)
    config = ctx.pipelines[doc.pipeline].config
    step = await ctx.store.step_submitting(step.id)
    wire = SubmissionWire()
    SUBMISSION_WIRE.set(wire)
    try:
        execution_id, status = await _send(ctx, config, doc, step, log)
    except asyncio.CancelledError:
        if not wire.maybe_sent:
            # Stopped before the POST went out (waiting for its turn in the rate, or
            # between retries of a connection never made): nothing can have started, so
            # the next run submits it as new, not as an uncertain resubmission.
            # (A write that fails leaves it `submitting`: uncertain, the safe side.)
            with contextlib.suppress(Exception):
                await asyncio.shield(ctx.store.step_not_accepted(step.id, _STOPPED_UNSENT))
        raise
    except InvalidDocumentError as exc:
        return SubmitAttempt(await step_failed(ctx, step, str(exc), log, stage="submit"), None)
    except FileNotFoundError:
        reason = "the file disappeared before it was uploaded"
        return SubmitAttempt(await step_failed(ctx, step, reason, log, stage="submit"), None)
    except (VersionChangedError, DocumentGoneError) as exc:
        # A source's document changed or went (nothing was sent): the version check after
        # the steps takes the new version again, as for a file replaced before its upload.
        reason = (
            f"{exc}; it will be taken again" if isinstance(exc, VersionChangedError) else str(exc)
        )
        return SubmitAttempt(await step_failed(ctx, step, reason, log, stage="submit"), None)
    except SourceError as exc:  # the source is unreachable: not accepted, tried again
        step = await ctx.store.step_not_accepted(step.id, describe(exc))
        return SubmitAttempt(step, backoff)
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror or describe(exc)}"
        return SubmitAttempt(await step_failed(ctx, step, reason, log, stage="submit"), None)
    except DocuTrayError as exc:
        failure = classify(exc, stage="submit")
        if failure is Failure.REJECTED:
            failed = await step_failed(
                ctx,
                step,
                f"the service rejected the document: {describe(exc)}",
                log,
                stage="submit",
                http_status=getattr(exc, "status_code", None),
            )
            return SubmitAttempt(failed, None)
        if failure is Failure.UNCERTAIN:
            step = await ctx.store.step_uncertain(step.id, describe(exc))
            log.warning(
                "submission_uncertain",
                step_id=step.step_id,
                error=describe(exc),
                uncertain=step.uncertain,
            )
            return SubmitAttempt(step, 0.0)
        step = await ctx.store.step_not_accepted(step.id, describe(exc))
        if failure.pauses:
            # Not this document's fault: wait at the gate (not counted against its
            # deadline) instead of backing off towards a failure.
            report_pause(ctx, failure, doc.pipeline, exc)
            return SubmitAttempt(step, 0.0)
        return SubmitAttempt(step, backoff)
    # The service is running it now: losing its id would mean paying twice, so a
    # journal that cannot be written (disk full) is waited for, not given up on.
    step = await write_until_done(
        partial(ctx.store.step_accepted, step.id, execution_id, status),
        log=log,
        what=f"execution id {execution_id}",
    )
    ctx.limits.pauses.answered(doc.pipeline)
    ctx.metrics.submissions.labels(doc.pipeline).inc()
    log.info(
        "document_submitted",
        doc_sha256=doc.sha256,
        step_id=step.step_id,
        execution_id=execution_id,
    )
    return SubmitAttempt(step, None)


async def _send(
    ctx: Context,
    config: PipelineConfig,
    doc: DocumentRow,
    step: StepRow,
    log: FilteringBoundLogger,
) -> tuple[str, str]:
    """The submission itself (streamed from the file or the source); the id to poll and its
    first status. A pipeline that identifies first sends its `@identify` row to the identify
    endpoint (no metadata: `before_document_submit` is for the steps)."""
    document = await submission_input(ctx, doc, log)
    if step.step_id == IDENTIFY_STEP:
        identification = await submit_identification(
            ctx.api(), config, doc, file=document.file, url=document.url
        )
        return identification.identification_id, identification.status
    metadata = _metadata(ctx, config, doc, step.step_id)
    status = await ctx.api().steps.run_async(
        step.step_id,
        file=document.file,
        url=document.url,
        content_type=doc.content_type,
        document_metadata=metadata or None,
        filename=doc.name,
    )
    return status.execution_id, status.status


async def await_api(ctx: Context, pipeline: str, *, slot: HeldSlot | None = None) -> None:
    """Wait while the API is paused for this pipeline. A submission (`slot` given) gives its
    execution slot back meanwhile (the other pipelines may use it); a status read keeps it
    (its execution is running at the service)."""
    pauses = ctx.limits.pauses
    if slot is None or pauses.blocked(pipeline) is None:
        await pauses.wait_open(pipeline, submission=slot is not None)
        return
    slot.release()
    await pauses.wait_open(pipeline, submission=True)
    await slot.acquire()


def report_pause(ctx: Context, failure: Failure, pipeline: str, exc: DocuTrayError) -> None:
    """Tell the gate about a failure that pauses work (see `engine.errors`)."""
    retry_after = exc.retry_after if isinstance(exc, RateLimitError) else None
    status = getattr(exc, "status_code", None)
    error = f"HTTP {status}: {describe(exc)}" if status else describe(exc)
    ctx.limits.pauses.report(failure, pipeline=pipeline, error=error, retry_after=retry_after)


def source_changed(doc: DocumentRow) -> str | None:
    """Why the file may no longer be what was hashed, or None."""
    if doc.source_version is not None:
        return None  # not a file: every read from its source is conditional on the version
    try:
        st = os.lstat(doc.path)
    except FileNotFoundError:
        return "the file disappeared before it was uploaded"
    except OSError as exc:
        return f"cannot read the file: {exc.strerror}"
    if (st.st_size, st.st_mtime_ns) != (doc.size, doc.mtime_ns):
        return "the file was replaced or modified after it was checked; it will be taken again"
    return None


def _metadata(
    ctx: Context, pipeline: PipelineConfig, doc: DocumentRow, step_id: str
) -> dict[str, object]:
    hooked = has_observers(ctx.pm, "before_document_submit")
    if not pipeline.document_metadata and not hooked:
        return {}  # nothing to render and nobody to ask: no `Document` built
    document = document_of(doc)
    context = metadata_context(pipeline.name, document, now())
    metadata: dict[str, object] = {
        key: render(value, context) if isinstance(value, str) else value
        for key, value in pipeline.document_metadata.items()
    }
    for extra in call_observers(
        ctx.pm,
        "before_document_submit",
        pipeline=pipeline.name,
        document=document,
        step_id=step_id,
        metadata=dict(metadata),
    ):
        if isinstance(extra, dict):
            metadata.update(extra)
    return metadata


async def write_until_done(
    write: Callable[[], Awaitable[T]], *, log: FilteringBoundLogger, what: str
) -> T:
    """A journal write that must not be lost, retried with backoff while SQLite refuses it."""

    def announce(state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None
        assert state.next_action is not None
        log.error(
            "journal_write_retrying",
            what=what,
            error=describe(state.outcome.exception() or Exception()),
            retry_in_s=state.next_action.sleep,
        )

    try:
        return await write()
    except sqlite3.OperationalError:
        pass  # refused (disk full…): tried again at once, then with backoff, each announced
    # No stop: giving up would lose the write; shutdown cancels the wait instead.
    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(sqlite3.OperationalError),
        wait=tenacity.wait_exponential(multiplier=0.5, max=30.0),
        before_sleep=announce,
        reraise=True,
    )
    result: T = await retrying(write)
    return result
