"""API resources, one module each (only ``steps`` for now; convert, identify, document types and
knowledge bases would sit beside it)."""

from docutray_watch.client.resources.steps import (
    AsyncSteps,
    AsyncStepsWithRawResponse,
    Steps,
    StepsWithRawResponse,
)

__all__ = ["AsyncSteps", "AsyncStepsWithRawResponse", "Steps", "StepsWithRawResponse"]
