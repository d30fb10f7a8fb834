"""``RawResponse``: the HTTP response behind a call, with ``parse()`` for the typed result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx

__all__ = ["RawResponse"]

T = TypeVar("T")


class RawResponse(Generic[T]):
    """An HTTP response from a ``with_raw_response`` call.

    Error statuses never get here: they raise the typed errors like the plain calls do.
    """

    def __init__(self, response: httpx.Response, parse: Callable[[httpx.Response], T]) -> None:
        self._response = response
        self._parse = parse

    @property
    def status_code(self) -> int:
        """The HTTP status code."""
        return self._response.status_code

    @property
    def headers(self) -> httpx.Headers:
        """The response headers (case-insensitive)."""
        return self._response.headers

    @property
    def http_response(self) -> httpx.Response:
        """The underlying httpx response (its request's Authorization header is redacted)."""
        return self._response

    @property
    def content(self) -> bytes:
        """The body as bytes."""
        return self._response.content

    @property
    def text(self) -> str:
        """The body as text."""
        return self._response.text

    def json(self) -> Any:
        """The body decoded as JSON."""
        return self._response.json()

    def parse(self) -> T:
        """The typed result the plain call would have returned."""
        return self._parse(self._response)

    def __repr__(self) -> str:
        request = self._response.request
        return f"<RawResponse [{self.status_code}] {request.method} {request.url.path}>"
