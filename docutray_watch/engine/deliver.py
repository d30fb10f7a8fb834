"""The deliver phase: every step has ended; each result goes to each sink of the pipeline.

Each delivery is its own journal row with its own retries (`SinkRunner`); a sink that gives up
fails the document, with which sink and after how many attempts. Delivered results describe the
bytes hashed at intake: the file is checked first (see `finalize.version_check`), and a file that
changed meanwhile gets nothing more delivered.
"""

from __future__ import annotations

import asyncio
import time

from structlog.typing import FilteringBoundLogger

from docutray_watch.delivery import DeliveryGaveUp, describe
from docutray_watch.engine.context import Context, PipelineRuntime
from docutray_watch.engine.steps import json_text, record_of
from docutray_watch.journal import Completion, DeliveryRow, DocumentRow, StepRow, StepState
from docutray_watch.plugins import call_observers

__all__ = ["deliver", "deliver_all"]


async def deliver_all(
    ctx: Context, doc: DocumentRow, view: Completion, log: FilteringBoundLogger
) -> DocumentRow:
    """The document's pending deliveries (`view`: its steps and deliveries as journaled), all at
    once; the document is then still `completed` (all delivered) or `failed` (a step failed or a
    sink gave up)."""
    deliveries = view.deliveries
    runtime = ctx.pipelines[doc.pipeline]
    steps = {s.id: s for s in view.steps}
    pending = [d for d in deliveries if d.state == "pending"]
    if len(pending) == 1:
        # The usual case, one result to one sink: awaited here, no task to wrap it in.
        (only,) = pending
        results = [await deliver(ctx, doc, runtime, steps[only.step_row], only, log)]
    else:
        results = await asyncio.gather(
            *(deliver(ctx, doc, runtime, steps[d.step_row], d, log) for d in pending)
        )
    delivery_errors = [r for r in results if r is not None]
    # Deliveries that had already given up before (in an earlier run) fail it too.
    for d in deliveries:
        if d.state == "failed" and d.error:
            reason = f"sink {d.sink}: {d.error}"
            if reason not in delivery_errors:
                delivery_errors.append(reason)
    failed_steps = [s for s in steps.values() if s.state in (StepState.ERROR, StepState.FAILED)]
    if not failed_steps and not delivery_errors:
        return doc
    first = failed_steps[0] if failed_steps else None
    detail: dict[str, object] = {
        "step_id": first.step_id if first else None,
        "execution_id": first.execution_id if first else None,
        "http_status": first.http_status if first else None,
    }
    if first is not None:
        reason = f"step {first.step_id}: {first.error}"
        stage = "result" if first.state == StepState.ERROR else _stage_of(first)
    else:
        reason, stage = delivery_errors[0], "deliver"
        detail.update(await _delivery_failure(ctx, doc.id, steps))
    return await ctx.store.mark_failed(doc.id, reason, stage=stage, detail=detail)


async def deliver(
    ctx: Context,
    doc: DocumentRow,
    runtime: PipelineRuntime,
    step: StepRow,
    delivery: DeliveryRow,
    log: FilteringBoundLogger,
) -> str | None:
    """One result to one sink (retried by its runner); why not, when the sink gave up."""
    sink_id = delivery.sink
    record = record_of(doc, step)
    runner = runtime.sinks.get(sink_id)
    if record is None or runner is None:
        reason = "the sink is no longer configured" if runner is None else "no result stored"
        await ctx.store.delivery_attempt_failed(delivery.id, reason, final=True)
        return f"sink {sink_id}: {reason}"

    async def on_failure(exc: BaseException, attempt: int) -> None:
        ctx.metrics.delivery_failures.labels(doc.pipeline, sink_id).inc()
        await ctx.store.delivery_attempt_failed(delivery.id, describe(exc), final=False)

    started = time.monotonic()
    try:
        receipt = await runner.deliver(record, on_failure=on_failure)
    except DeliveryGaveUp as exc:
        await ctx.store.delivery_gave_up(delivery.id, str(exc))
        log.error(
            "delivery_gave_up",
            sink=sink_id,
            plugin=runner.plugin,
            step_id=step.step_id,
            attempts=exc.attempts,
            error=str(exc),
        )
        return f"sink {sink_id}: {exc}"
    text = receipt if isinstance(receipt, str) or receipt is None else json_text(receipt)
    await ctx.store.delivery_done(delivery.id, text)
    ctx.metrics.deliveries.labels(doc.pipeline, sink_id).inc()
    ctx.metrics.last_delivery.labels(doc.pipeline, sink_id).set(time.time())
    log.info(
        "document_delivered",
        doc_sha256=doc.sha256,
        step_id=step.step_id,
        execution_id=step.execution_id,
        sink=sink_id,
        duration_s=round(time.monotonic() - started, 4),
    )
    call_observers(
        ctx.pm,
        "after_document_delivered",
        pipeline=doc.pipeline,
        document=record.document,
        record=record,
        sink=sink_id,
        receipt=receipt,
    )
    return None


async def _delivery_failure(
    ctx: Context, doc_id: int, steps: dict[int, StepRow]
) -> dict[str, object]:
    """The step, sink and attempt count of the first delivery that failed (sidecar)."""
    for d in await ctx.store.deliveries_of(doc_id):
        if d.state == "failed":
            step = steps.get(d.step_row)
            return {
                "step_id": step.step_id if step else None,
                "execution_id": step.execution_id if step else None,
                "sink": d.sink,
                "attempts": d.attempts,
            }
    return {}


def _stage_of(step: StepRow) -> str:
    return "submit" if step.execution_id is None else "poll"
