"""Every error the DocuTray client raises, in one tree.

The class names and attributes match the official ``docutray`` SDK, so ``except`` clauses carry
over unchanged; ``request_sent`` and the ``InvalidDocumentError`` branch are this client's own.

```
DocuTrayError
 ├── APIConnectionError            no HTTP answer; .request_sent says whether the server may have it
 │    └── APITimeoutError          connect/pool/read/write timeout, or wait() ran out of time
 ├── APIError                      the service answered with an error status
 │    ├── BadRequestError          400
 │    ├── AuthenticationError      401 (also: no API key at construction)
 │    ├── PermissionDeniedError    403
 │    ├── NotFoundError            404
 │    ├── ConflictError            409
 │    ├── UnprocessableEntityError 422
 │    ├── RateLimitError           429, with .retry_after and the body's limit fields
 │    └── InternalServerError      5xx
 └── InvalidDocumentError          local pre-check failed; also a ValueError
      ├── FileTooLargeError        over MAX_FILE_SIZE
      └── UnsupportedFileTypeError not JPEG, PNG, GIF, BMP, WebP or PDF
```

Any other 4xx (or an unexpected 3xx) is a plain ``APIError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from docutray_watch.client._retry_after import rate_limit_wait

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "DocuTrayError",
    "FileTooLargeError",
    "InternalServerError",
    "InvalidDocumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "UnprocessableEntityError",
    "UnsupportedFileTypeError",
    "error_class_for_status",
    "extract_error_message",
]


class DocuTrayError(Exception):
    """Base class of every error raised by the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class APIConnectionError(DocuTrayError):
    """The request got no HTTP answer (refused, reset, dropped, DNS, TLS...).

    ``request_sent`` is False only when the request provably never reached the service (the
    connection was never established), so even a POST can safely be sent again. When it is True
    the service may have accepted the request: resending a POST may start a second execution.
    ``should_retry`` mirrors the official SDK's attribute.
    """

    def __init__(
        self, message: str, *, request_sent: bool = True, should_retry: bool = True
    ) -> None:
        super().__init__(message)
        self.request_sent = request_sent
        self.should_retry = should_retry

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, request_sent={self.request_sent})"


class APITimeoutError(APIConnectionError):
    """A timeout: connecting, waiting for a pooled connection, sending, reading, or ``wait()``."""


class APIError(DocuTrayError):
    """The service answered with an error status.

    ``body`` is the decoded JSON body (or the text when it is not JSON), ``headers`` the response
    headers, ``request_id`` the ``X-Request-ID`` header.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.request_id = request_id
        self.body = body
        self.headers = httpx.Headers(headers or {})

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, "
            f"status_code={self.status_code}, request_id={self.request_id!r})"
        )


class BadRequestError(APIError):
    """400: the request was malformed or a parameter is invalid."""


class AuthenticationError(APIError):
    """401: the API key is missing, invalid or expired."""


class PermissionDeniedError(APIError):
    """403: the API key may not use this resource."""


class NotFoundError(APIError):
    """404: no such step or execution."""


class ConflictError(APIError):
    """409: the request conflicts with the resource's current state."""


class UnprocessableEntityError(APIError):
    """422: well-formed but semantically invalid."""


class RateLimitError(APIError):
    """429: too many requests; ``retry_after`` says how long to wait, in seconds."""

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait: the ``Retry-After`` header (seconds or HTTP date) first, then the
        body's ``retryAfter``."""
        return rate_limit_wait(self.headers, self.body)

    @property
    def limit_type(self) -> str | None:
        """Which window was exceeded (``minute``, ``hour``, ``day``), when the body says."""
        value = self._body_field("limitType")
        return value if isinstance(value, str) else None

    @property
    def limit(self) -> int | None:
        """The number of requests allowed in the window, when the body says."""
        return _int_or_none(self._body_field("limit"))

    @property
    def remaining(self) -> int | None:
        """Requests left in the window, when the body says."""
        return _int_or_none(self._body_field("remaining"))

    @property
    def reset_time(self) -> int | str | None:
        """When the window resets: a Unix timestamp, or the body's string as given."""
        value = self._body_field("resetTime")
        if isinstance(value, str):
            return value
        return _int_or_none(value)

    def _body_field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None


class InternalServerError(APIError):
    """5xx: the service failed; usually transient."""


class InvalidDocumentError(DocuTrayError, ValueError):
    """A document failed a local check before anything was sent.

    ``document`` names the file (its path, its filename, or a placeholder such as ``<bytes>``).
    """

    def __init__(self, message: str, *, document: str) -> None:
        super().__init__(message)
        self.document = document


class FileTooLargeError(InvalidDocumentError):
    """The document is larger than the service accepts."""

    def __init__(self, message: str, *, document: str, size: int, limit: int) -> None:
        super().__init__(message, document=document)
        self.size = size
        self.limit = limit


class UnsupportedFileTypeError(InvalidDocumentError):
    """The document is not one of the supported types; ``content_type`` is what was found."""

    def __init__(self, message: str, *, document: str, content_type: str | None) -> None:
        super().__init__(message, document=document)
        self.content_type = content_type


_STATUS_TO_ERROR: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_class_for_status(status_code: int) -> type[APIError]:
    """The error class for an HTTP error status (5xx → InternalServerError, other → APIError)."""
    if status_code >= 500:
        return InternalServerError
    return _STATUS_TO_ERROR.get(status_code, APIError)


def extract_error_message(body: Any, status_code: int) -> str:
    """The human message of an error body: ``error.message``, ``message``, ``detail``, a string
    ``error``, else ``HTTP <code>``."""
    if isinstance(body, dict):
        error = body.get("error")
        candidates = (
            error.get("message") if isinstance(error, dict) else None,
            body.get("message"),
            body.get("detail"),
            error if isinstance(error, str) else None,
        )
        for candidate in candidates:
            text = _as_text(candidate)
            if text:
                return text
    return f"HTTP {status_code}"


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    # e.g. FastAPI-style ``detail`` lists: show them compactly rather than drop them
    return json.dumps(value, separators=(",", ":"), default=str)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
