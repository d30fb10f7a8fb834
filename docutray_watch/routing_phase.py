"""The identification phase of a pipeline with `identify`, for the engine to call.

The `@identify` step row goes through the engine's usual submit → poll machinery; only three
things differ from a step, and this module does them:

- what is sent: `submit_identification` (`POST /api/identify-async` with the pipeline's
  `identify.options`; no `document_metadata`, no `before_document_submit`), whose id the engine
  journals with `step_accepted` like an execution id; `read_identification` polls it;
- what is journaled when it ends: `identification_outcome(status)` gives `finish_step`'s
  `state`, `result` and `error` (and no sinks: an identification is never delivered);
- what follows a SUCCESS: `route_identified` journals the identification on the document, says
  whether it is new (the engine then fires `after_document_identified` and counts the metric),
  chooses the route and journals its consequence (the routed steps, or the document failed or
  unrouted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from docutray_watch.client._models import IdentificationStatus
from docutray_watch.config import PipelineConfig
from docutray_watch.journal.rows import DocumentRow, JSONObject, StepRow
from docutray_watch.journal.states import IDENTIFY_STEP
from docutray_watch.journal.store import StateStore
from docutray_watch.records import Identification
from docutray_watch.routing import Route, choose_route, identification_from, identification_of

if TYPE_CHECKING:
    from docutray_watch.client import AsyncClient
    from docutray_watch.client._files import FileInput
    from docutray_watch.client._models import AsyncIdentificationStatus

__all__ = [
    "ROUTE_STAGE",
    "Outcome",
    "Routed",
    "identification_in_step",
    "identification_outcome",
    "read_identification",
    "route_identified",
    "submit_identification",
]

ROUTE_STAGE = "route"
"""The `error_stage` of a document no route took (its sidecar's `stage`)."""


async def submit_identification(
    client: AsyncClient,
    pipeline: PipelineConfig,
    doc: DocumentRow,
    *,
    file: FileInput | None = None,
    url: str | None = None,
) -> AsyncIdentificationStatus:
    """Start the identification of `doc` (streamed from its path, or from `file` / `url` when
    given: a source's document): the answer's `identification_id` is what the engine journals
    as the step's execution id. Raises what `client.steps.run_async` raises (the same POST
    retry rule applies)."""
    if pipeline.identify is None:
        raise ValueError(f"pipeline {pipeline.name!r} does not identify its documents")
    if file is None and url is None:
        file = Path(doc.path)
    return await client.identify.run_async(
        file=file,
        url=url,
        content_type=doc.content_type,
        document_type_code_options=pipeline.identify.options,
        filename=doc.name,
    )


async def read_identification(
    client: AsyncClient, identification_id: str
) -> AsyncIdentificationStatus:
    """One status read of an identification (`GET /api/identify-async/status/{id}`)."""
    return await client.identify.get_status(identification_id)


@dataclass(frozen=True)
class Outcome:
    """The arguments of `finish_step` for an identification that reached SUCCESS or ERROR."""

    state: str  # "success" | "error"
    result: JSONObject
    error: str | None


def identification_outcome(status: IdentificationStatus) -> Outcome:
    """What to journal for a terminal identification status: the whole answer as the step's
    result (so a restart can route without asking again), `error` text for ERROR. A SUCCESS
    that names no document type is journaled as an error."""
    result = status.model_dump(mode="json")
    if status.status == IdentificationStatus.SUCCESS and status.document_type is not None:
        return Outcome("success", result, None)
    if status.status == IdentificationStatus.SUCCESS:
        return Outcome("error", result, "the identification succeeded without a document type")
    reason = status.error if isinstance(status.error, str) else str(status.error or "")
    return Outcome("error", result, f"the identification ended in ERROR: {reason or 'no reason'}")


def identification_in_step(step: StepRow) -> Identification | None:
    """The identification a successful `@identify` step row holds (its journaled answer)."""
    if step.step_id != IDENTIFY_STEP or step.result is None or step.state != "success":
        return None
    return identification_from(IdentificationStatus.model_validate(step.result))


@dataclass(frozen=True)
class Routed:
    """What `route_identified` did: the document as journaled now, its step rows (the routed
    ones added when `route.action == "run"`), the route, the identification, and whether the
    identification was journaled by this call (fire the hook and count the metric then)."""

    document: DocumentRow
    steps: list[StepRow]
    route: Route
    identification: Identification
    newly_identified: bool


async def route_identified(
    store: StateStore, pipeline: PipelineConfig, doc: DocumentRow, step: StepRow
) -> Routed:
    """After `doc`'s `@identify` row `step` ended SUCCESS (now, or before a restart, or before
    `retry` requeued it): journal the identification on the document unless it is there
    already, then journal the route's consequence —

    - `run`: `ensure_steps` with the route's steps (the engine submits the pending ones);
    - `fail`: `mark_failed(reason, stage="route")` (the engine finalizes: on_failure, sidecar);
    - `keep`: `mark_unrouted(reason, stage "route")` (the engine finalizes: the file stays
      where it is, `finish(doc.id, doc.path)`).
    """
    identification = identification_of(doc.identification)
    newly = identification is None
    if identification is None:
        identification = identification_in_step(step)
        if identification is None:
            raise ValueError(f"document {doc.id}: its {IDENTIFY_STEP} step did not succeed")
        doc = await store.set_identification(
            doc.id, identification.model_dump_json(), identification.code
        )
    route = choose_route(pipeline, identification)
    detail: JSONObject = {
        "step_id": IDENTIFY_STEP,
        "execution_id": step.execution_id,
        "identified_type": identification.code,
        "confidence": identification.confidence,
        "route": route.route,
    }
    if route.action == "run":
        steps = await store.ensure_steps(doc.id, [IDENTIFY_STEP, *route.steps])
        doc = await store.document(doc.id)
    elif route.action == "fail":
        doc = await store.mark_failed(
            doc.id, route.reason or "no route", stage=ROUTE_STAGE, detail=detail
        )
        steps = await store.steps_of(doc.id)
    else:
        doc = await store.mark_unrouted(doc.id, route.reason or "no route", detail=detail)
        steps = await store.steps_of(doc.id)
    return Routed(doc, steps, route, identification, newly)
