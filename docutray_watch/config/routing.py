"""Routing by document type: the `identify:` block and the shape of `routes:` entries."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from docutray_watch.config._base import _FieldError, _Model
from docutray_watch.journal.states import IDENTIFY_STEP

OTHERWISE = "otherwise"
"""The `routes` key for documents no other route takes."""

StepId = Annotated[str, Field(min_length=1, max_length=200)]
RouteTarget = list[StepId] | Literal["fail", "keep"]


# Mark `steps` absent or empty in a pipeline that does not identify (only then is it required),
# so the error is reported at `steps` itself, next to any other problem of the pipeline.
class _StepsMarker(list[str]):
    """An empty list recognised by identity (an error never echoes a list's value)."""


_STEPS_MISSING = _StepsMarker()
_STEPS_EMPTY = _StepsMarker()


class IdentifyConfig(_Model):
    """Identify each document's type first (one submission), then run the steps of its route."""

    options: list[StepId] | None = Field(
        None,
        min_length=1,
        description="Document type codes the service may answer (default: the route keys).",
    )
    min_confidence: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Below this confidence (0-1) a document counts as unidentified: "
        "`routes.otherwise` applies.",
    )

    @field_validator("options")
    @classmethod
    def _unique_options(cls, options: list[str] | None) -> list[str] | None:
        if options is not None and len(set(options)) != len(options):
            raise ValueError("document type codes must be unique")
        return options


def _check_route(key: str, target: Any) -> None:
    """Raise `_FieldError` at `key` unless `target` is a valid route for it."""
    if key == OTHERWISE:
        if target in ("fail", "keep"):
            return
        if not isinstance(target, list) or not target:
            raise _FieldError(
                (key,), "otherwise must be fail, keep or a non-empty list of step IDs"
            )
    elif not isinstance(target, list):
        raise _FieldError(
            (key,),
            "a route is a list of step IDs (fail and keep are for `otherwise` only)",
        )
    elif not target:
        raise _FieldError((key,), "a route needs at least one step ID")
    if not all(isinstance(step, str) and step for step in target):
        raise _FieldError((key,), "step IDs must be non-empty strings")
    if len(set(target)) != len(target):
        raise _FieldError((key,), "step IDs must be unique in a route")
    if IDENTIFY_STEP in target:
        raise _FieldError((key,), f"{IDENTIFY_STEP} is reserved for the identification")
