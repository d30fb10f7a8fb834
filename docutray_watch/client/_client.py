"""``Client`` and ``AsyncClient``: the same API, sending with httpx's sync or async pool."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

import httpx

from docutray_watch.client._base import (
    BaseClient,
    RequestSpec,
    build_http_request,
    connection_error,
    raise_for_status,
    redact_request,
)
from docutray_watch.client._multipart import AsyncBodyStream, SyncBodyStream
from docutray_watch.client._retry import RetryInfo
from docutray_watch.client.resources import (
    AsyncDocumentTypes,
    AsyncIdentify,
    AsyncSteps,
    DocumentTypes,
    Identify,
    Steps,
)

__all__ = ["AsyncClient", "Client"]


class Client(BaseClient):
    """Synchronous DocuTray client.

    ``api_key`` falls back to ``DOCUTRAY_API_KEY`` (missing: ``AuthenticationError``),
    ``base_url`` to ``DOCUTRAY_BASE_URL`` then ``https://app.docutray.com``. ``timeout`` is
    seconds or an ``httpx.Timeout`` (default: connect 5, read 60, write 60, pool 10).
    ``max_retries`` (default 2) bounds retries; ``max_retry_wait`` (default 60 s) is the longest
    ``Retry-After`` slept through. ``on_retry`` is called before each retry's wait;
    ``retry_filter(error)`` answering False raises a retryable error at once instead.
    ``http_client`` is an ``httpx.Client`` to send with (its hooks and limits apply); the client
    does not close it. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        http_client: httpx.Client | None = None,
        max_retry_wait: float | None = None,
        on_retry: Callable[[RetryInfo], None] | None = None,
        retry_filter: Callable[[BaseException], bool] | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            on_retry=on_retry,
            retry_filter=retry_filter,
        )
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise TypeError("http_client must be an httpx.Client (use AsyncClient for async)")
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=self.timeout)
        self.steps = Steps(self)
        """Step executions: ``run_async``, ``get_status``, ``with_raw_response``."""
        self.identify = Identify(self)
        """Document type identification: ``run``, ``run_async``, ``get_status``,
        ``with_raw_response``."""
        self.document_types = DocumentTypes(self)
        """The account's document types: ``list``, ``with_raw_response``."""

    def close(self) -> None:
        """Close the connection pool, unless it was passed in as ``http_client``."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, spec: RequestSpec) -> httpx.Response:
        return self._retry_policy.call(spec, self._send_once)

    def _send_once(self, spec: RequestSpec) -> httpx.Response:
        body: SyncBodyStream | None = None
        request: httpx.Request | None = None
        whole = spec.multipart.whole() if spec.multipart is not None else None
        try:
            if spec.multipart is not None and whole is None:
                body = spec.multipart.sync_stream()
            request = build_http_request(self._http, self._options, spec, whole or body)
            response = self._http.send(request, auth=None, follow_redirects=False)
        except httpx.RequestError as exc:
            raise connection_error(exc, spec, self._options.api_key) from exc
        finally:
            if request is not None:
                redact_request(request)
            if body is not None:
                body.close()
        raise_for_status(response, self._options.api_key)
        return response


class AsyncClient(BaseClient):
    """Asynchronous DocuTray client; same arguments as ``Client`` (``http_client`` is an
    ``httpx.AsyncClient``). Use with ``async with``, or ``await close()``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_retry_wait: float | None = None,
        on_retry: Callable[[RetryInfo], None] | None = None,
        retry_filter: Callable[[BaseException], bool] | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            on_retry=on_retry,
            retry_filter=retry_filter,
        )
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError("http_client must be an httpx.AsyncClient (use Client for sync)")
        self._owns_http = http_client is None
        self._http = (
            http_client if http_client is not None else httpx.AsyncClient(timeout=self.timeout)
        )
        self.steps = AsyncSteps(self)
        """Step executions: ``run_async``, ``get_status``, ``with_raw_response``."""
        self.identify = AsyncIdentify(self)
        """Document type identification: ``run``, ``run_async``, ``get_status``,
        ``with_raw_response``."""
        self.document_types = AsyncDocumentTypes(self)
        """The account's document types: ``list``, ``with_raw_response``."""

    async def close(self) -> None:
        """Close the connection pool, unless it was passed in as ``http_client``."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _send(self, spec: RequestSpec) -> httpx.Response:
        return await self._retry_policy.async_call(spec, self._send_once)

    async def _send_once(self, spec: RequestSpec) -> httpx.Response:
        body: AsyncBodyStream | None = None
        request: httpx.Request | None = None
        # A small document goes out as one piece: no file reads, one socket write.
        whole = spec.multipart.whole() if spec.multipart is not None else None
        try:
            if spec.multipart is not None and whole is None:
                body = await spec.multipart.async_stream()
            request = build_http_request(self._http, self._options, spec, whole or body)
            response = await self._http.send(request, auth=None, follow_redirects=False)
        except httpx.RequestError as exc:
            raise connection_error(exc, spec, self._options.api_key) from exc
        finally:
            if request is not None:
                redact_request(request)
            if body is not None:
                body.close()
        raise_for_status(response, self._options.api_key)
        return response
