"""Routing by document type: which steps a document runs once the service said what it is.

A pipeline with `identify` journals each document's identification as a step row with the reserved
id `IDENTIFY_STEP` (`@identify`): submitted, polled and never submitted twice exactly like a step.
Once it ends, `choose_route(pipeline, identification)` says what happens next:

- `run`: the steps of the route for the identified type (or of `routes.otherwise` when the type
  has no route or its confidence is below `identify.min_confidence`);
- `fail`: `otherwise: fail` (the default) — the document fails, `reason` goes into its sidecar;
- `keep`: `otherwise: keep` — the document ends `unrouted`, left where it is for a person, until
  `retry` releases it once a route exists for its type.

Everything here is pure: no I/O, no journal, no client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from docutray_watch.config import OTHERWISE, PipelineConfig
from docutray_watch.journal.states import IDENTIFY_STEP
from docutray_watch.records import Identification, TypeMatch

__all__ = [
    "IDENTIFY_STEP",
    "OTHERWISE",
    "Identification",
    "IdentificationAnswer",
    "Route",
    "TypeMatch",
    "choose_route",
    "identification_from",
    "identification_of",
    "release_problem",
    "routed_steps_pending",
    "routing_summary",
]


class _Match(Protocol):
    """The shape of the client's `DocumentTypeMatch`."""

    @property
    def code(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def confidence(self) -> float: ...


class IdentificationAnswer(Protocol):
    """What `identification_from` reads: the client's `IdentificationStatus` (on SUCCESS) and
    `IdentificationResult` both have these."""

    @property
    def document_type(self) -> _Match | None: ...
    @property
    def alternatives(self) -> Sequence[_Match] | None: ...


def identification_from(answer: IdentificationAnswer) -> Identification:
    """The `Identification` in a successful answer of `client.identify` (`get_status` on
    SUCCESS, or `run`); `ValueError` when it names no document type."""
    best = answer.document_type
    if best is None:
        raise ValueError("the identification names no document type")
    return Identification(
        code=best.code,
        name=best.name,
        confidence=best.confidence,
        alternatives=[
            TypeMatch(code=m.code, name=m.name, confidence=m.confidence)
            for m in answer.alternatives or ()
        ],
    )


def identification_of(stored: Mapping[str, object] | None) -> Identification | None:
    """The `Identification` a journal row holds (`DocumentRow.identification`), or None."""
    return Identification.model_validate(stored) if stored is not None else None


@dataclass(frozen=True)
class Route:
    """What an identified document does next.

    `action`: `run` its `steps`; `fail` it; or `keep` it (`unrouted`). `route` is the `routes`
    key that decided (the type code, or `otherwise`). `reason` says why no route of its type
    took the document (None when one did): the text of the error sidecar and of `status`.
    """

    action: Literal["run", "fail", "keep"]
    route: str
    steps: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def outcome(self) -> str | None:
        """The document's outcome word when the route ends it: `failed`, `unrouted`, or None
        when it runs steps."""
        return {"fail": "failed", "keep": "unrouted"}.get(self.action)


def choose_route(pipeline: PipelineConfig, identification: Identification) -> Route:
    """The route `pipeline` gives a document identified as `identification`.

    The identified type's route applies when the confidence reaches `identify.min_confidence`;
    otherwise (or when the type has no route) `routes.otherwise` does, `fail` when absent.
    `ValueError` for a pipeline that does not identify.
    """
    if pipeline.identify is None or pipeline.routes is None:
        raise ValueError(f"pipeline {pipeline.name!r} does not identify its documents")
    routes = pipeline.routes
    minimum = pipeline.identify.min_confidence
    known = ", ".join(pipeline.route_codes)
    code = identification.code
    shown = f"identified as `{code}` ({identification.confidence:.2f})"
    reason: str | None
    if identification.confidence < minimum:
        reason = f"{shown}, below min_confidence {minimum:g}; routes: {known}"
    else:
        target = routes.get(code) if code != OTHERWISE else None
        if isinstance(target, list):
            return Route("run", code, tuple(target))
        reason = f"{shown}, no route for this type; routes: {known}"
    fallback = routes.get(OTHERWISE, "fail")
    if isinstance(fallback, list):
        return Route("run", OTHERWISE, tuple(fallback), reason)
    return Route(fallback, OTHERWISE, (), reason)


def routed_steps_pending(step_ids: Sequence[str]) -> bool:
    """Whether a document whose step rows have these ids still waits for its route: it has
    its `@identify` row and no other (the routed steps are added once it is identified)."""
    return IDENTIFY_STEP in step_ids and all(step == IDENTIFY_STEP for step in step_ids)


def release_problem(pipeline: PipelineConfig, identification: Identification | None) -> str | None:
    """Why `retry` must leave an `unrouted` document of `pipeline` where it is, or None when it
    can be released: the pipeline now has a route that runs steps for its type (or no longer
    identifies at all, so its `steps` run)."""
    if pipeline.identify is None:
        return None
    if identification is None:
        return "its identification is not in the journal"
    route = choose_route(pipeline, identification)
    if route.action == "run":
        return None
    return f"still no route: {route.reason}"


def routing_summary(pipeline: PipelineConfig) -> str:
    """One line for `process --dry-run`: routing happens after the upload, and the routes.

    `invoice → stp_a; receipt → stp_b, stp_c; otherwise → fail`."""
    given = pipeline.routes or {}
    routes = {code: given[code] for code in pipeline.route_codes}
    routes[OTHERWISE] = given.get(OTHERWISE, "fail")  # last, whatever the file's order
    shown = "; ".join(
        f"{code} → {', '.join(target) if isinstance(target, list) else target}"
        for code, target in routes.items()
    )
    return (
        "each document is identified after upload (one submission), then runs its route's "
        f"steps — so which route a file takes is not known here: {shown}"
    )
