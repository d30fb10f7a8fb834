"""The DocuTray API client: a drop-in for the official ``docutray`` SDK's steps, identify and
document types surface.

``from docutray import Client`` becomes ``from docutray_watch.client import Client``; beyond the
shared names this client streams uploads, never resends a POST the service may have accepted,
and checks documents locally before sending. See docs/client.md.
"""

from docutray_watch.client._base import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_TIMEOUT,
)
from docutray_watch.client._client import AsyncClient, Client
from docutray_watch.client._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DocuTrayError,
    FileTooLargeError,
    InternalServerError,
    InvalidDocumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    UnsupportedFileTypeError,
)
from docutray_watch.client._files import (
    MAX_FILE_SIZE,
    SUPPORTED_CONTENT_TYPES,
    FileInput,
    sniff_content_type,
)
from docutray_watch.client._models import (
    AsyncIdentificationStatus,
    AsyncStepExecutionStatus,
    DocumentType,
    DocumentTypeMatch,
    IdentificationResult,
    IdentificationStatus,
    Pagination,
    StepExecutionStatus,
)
from docutray_watch.client._pagination import AsyncPage, Page
from docutray_watch.client._response import RawResponse
from docutray_watch.client._retry import RetryInfo
from docutray_watch.client._retry_after import parse_retry_after, rate_limit_wait
from docutray_watch.client._transport import AiohttpTransport
from docutray_watch.client.resources import (
    AsyncDocumentTypes,
    AsyncDocumentTypesWithRawResponse,
    AsyncIdentify,
    AsyncIdentifyWithRawResponse,
    AsyncSteps,
    AsyncStepsWithRawResponse,
    DocumentTypes,
    DocumentTypesWithRawResponse,
    Identify,
    IdentifyWithRawResponse,
    Steps,
    StepsWithRawResponse,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_RETRY_WAIT",
    "DEFAULT_TIMEOUT",
    "MAX_FILE_SIZE",
    "SUPPORTED_CONTENT_TYPES",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AiohttpTransport",
    "AsyncClient",
    "AsyncDocumentTypes",
    "AsyncDocumentTypesWithRawResponse",
    "AsyncIdentificationStatus",
    "AsyncIdentify",
    "AsyncIdentifyWithRawResponse",
    "AsyncPage",
    "AsyncStepExecutionStatus",
    "AsyncSteps",
    "AsyncStepsWithRawResponse",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "DocuTrayError",
    "DocumentType",
    "DocumentTypeMatch",
    "DocumentTypes",
    "DocumentTypesWithRawResponse",
    "FileInput",
    "FileTooLargeError",
    "IdentificationResult",
    "IdentificationStatus",
    "Identify",
    "IdentifyWithRawResponse",
    "InternalServerError",
    "InvalidDocumentError",
    "NotFoundError",
    "Page",
    "Pagination",
    "PermissionDeniedError",
    "RateLimitError",
    "RawResponse",
    "RetryInfo",
    "StepExecutionStatus",
    "Steps",
    "StepsWithRawResponse",
    "UnprocessableEntityError",
    "UnsupportedFileTypeError",
    "parse_retry_after",
    "rate_limit_wait",
    "sniff_content_type",
]
