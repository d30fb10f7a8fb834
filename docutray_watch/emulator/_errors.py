"""Error answers of the emulated API, raised by handlers and rendered by the middleware."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web


class ApiError(Exception):
    """An HTTP error answer with a JSON body carrying a human message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        flat: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        # The real service answers in both shapes; clients must read either.
        self.flat = flat

    def to_response(self) -> web.Response:
        """Render the error as a JSON response."""
        body: dict[str, Any] = (
            {"message": self.message} if self.flat else {"error": {"message": self.message}}
        )
        body.update(self.extra)
        return web.json_response(body, status=self.status, headers=self.headers)


class DropConnection(Exception):
    """Close the client's connection without sending any answer."""
