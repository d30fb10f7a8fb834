"""API resources, one module each: steps, identify and document types (convert and knowledge
bases would sit beside them)."""

from docutray_watch.client.resources.document_types import (
    AsyncDocumentTypes,
    AsyncDocumentTypesWithRawResponse,
    DocumentTypes,
    DocumentTypesWithRawResponse,
)
from docutray_watch.client.resources.identify import (
    AsyncIdentify,
    AsyncIdentifyWithRawResponse,
    Identify,
    IdentifyWithRawResponse,
)
from docutray_watch.client.resources.steps import (
    AsyncSteps,
    AsyncStepsWithRawResponse,
    Steps,
    StepsWithRawResponse,
)

__all__ = [
    "AsyncDocumentTypes",
    "AsyncDocumentTypesWithRawResponse",
    "AsyncIdentify",
    "AsyncIdentifyWithRawResponse",
    "AsyncSteps",
    "AsyncStepsWithRawResponse",
    "DocumentTypes",
    "DocumentTypesWithRawResponse",
    "Identify",
    "IdentifyWithRawResponse",
    "Steps",
    "StepsWithRawResponse",
]
