"""``AiohttpTransport``: an httpx transport that sends with aiohttp's pool and C HTTP parser.

httpx's default async transport (httpcore over anyio) costs about 0.9 ms of CPU per request on a
small machine — more than everything else a document needs — and writes a streamed body in as
many socket sends as it has parts. aiohttp, already a dependency, parses HTTP in C and sends the
request head with the first body chunk. This transport keeps httpx's client (hooks, auth,
redirect policy, proxies from the environment, which httpx mounts on its own transports) and
swaps only the wire:

- timeouts follow httpx's four: ``pool`` + ``connect`` to get a connection, ``connect`` to open
  one, ``read`` per read of the answer, ``write`` per chunk of the body (measured between chunks);
- errors become the httpx exceptions httpcore raises, with the same meaning for "was the request
  sent?": ``ConnectError``/``ConnectTimeout`` (never sent), ``WriteTimeout``/``WriteError``,
  ``ReadTimeout``, ``RemoteProtocolError`` (possibly sent);
- the answer is read whole (the API answers with small JSON bodies) and handed to httpx still
  encoded, so httpx decodes it as usual;
- a pooled connection the server closed meanwhile fails on the first write, before a byte is
  sent: an in-memory body is sent again at once on a fresh connection, a streamed one raises
  ``ConnectError`` (the client may then retry even a POST);
- connections are kept alive 5 s (httpx's default), TLS uses httpx's default context (certifi),
  built on the first ``https://`` request only.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

_KEEPALIVE_EXPIRY = 5.0
# Request headers aiohttp would otherwise add on its own; httpx already chose ours.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class _StaleConnection(Exception):
    """The pooled connection was closed before anything was written; `error` says so."""

    def __init__(self, error: httpx.ConnectError) -> None:
        super().__init__(str(error))
        self.error = error


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over one ``aiohttp.ClientSession`` (created lazily).

    ``max_connections`` bounds the connections open at once (``httpx.Limits`` does not apply to
    a transport passed in). Use one instance per event loop; ``aclose()`` closes its connections.
    """

    def __init__(self, *, max_connections: int = 100, verify: bool | ssl.SSLContext = True) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._verify = verify
        self._ssl: ssl.SSLContext | bool | None = None
        self._session: aiohttp.ClientSession | None = None

    def _ssl_for(self, url: httpx.URL) -> ssl.SSLContext | bool:
        if url.scheme != "https":
            return True  # unused without TLS
        if self._ssl is None:
            if isinstance(self._verify, ssl.SSLContext):
                self._ssl = self._verify
            elif self._verify:
                self._ssl = httpx.create_ssl_context()
            else:
                self._ssl = False
        return self._ssl

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=_KEEPALIVE_EXPIRY,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                trust_env=False,  # httpx applies environment proxies itself
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return its whole answer (errors as httpx exceptions)."""
        try:
            return await self._send(request)
        except _StaleConnection as stale:
            if not isinstance(request.stream, httpx.ByteStream):
                raise stale.error from stale.__cause__  # a stream cannot be read twice
            # Nothing was sent and the body is in memory: once more, on a fresh connection.
            try:
                return await self._send(request)
            except _StaleConnection as again:
                raise again.error from again.__cause__

    async def _send(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        connect, read = timeouts.get("connect"), timeouts.get("read")
        pool, write = timeouts.get("pool"), timeouts.get("write")
        acquire = None if connect is None or pool is None else connect + pool
        timeout = aiohttp.ClientTimeout(
            total=None, connect=acquire, sock_connect=connect, sock_read=read
        )
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        chunked = any(k.lower() == "transfer-encoding" for k, _ in headers)
        if chunked:
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        body, progress = _body_of(request)
        session = self._session_now()
        try:
            async with asyncio.timeout(None) as deadline:
                if body is not None and write is not None:
                    progress.arm(deadline, write)
                async with session.request(
                    request.method,
                    str(request.url),
                    headers=headers,
                    data=body,
                    chunked=True if chunked else None,
                    allow_redirects=False,
                    timeout=timeout,
                    ssl=self._ssl_for(request.url),
                ) as answer:
                    progress.done()
                    content = await answer.read()
                    status, reason = answer.status, answer.reason
                    raw_headers = list(answer.raw_headers)
        except aiohttp.ClientError as exc:  # aiohttp's own timeouts are among these
            if progress.chunks <= 1 and _closed_before_writing(exc):
                # A pooled connection the server had already closed: not a byte left this host
                # (httpcore checks for this before reusing a connection; aiohttp finds out on
                # the first write), so this is a connect error, which even a POST may retry.
                error = httpx.ConnectError(
                    "the connection was closed by the server before the request was written",
                    request=request,
                )
                raise _StaleConnection(error) from exc
            raise _network_error(exc, request) from exc
        except TimeoutError as exc:
            if progress.sending:
                raise httpx.WriteTimeout(
                    f"no progress writing the body for {write} s", request=request
                ) from exc
            # Not ours and not aiohttp's: the phase is unknown, so say it may have been sent.
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        return httpx.Response(
            status,
            headers=raw_headers,
            content=content,
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Progress:
    """Moves the request's deadline forward each time the body hands over a chunk.

    aiohttp asks for the next chunk only once the previous one is written, so a body that makes
    no progress for ``write`` seconds lets the deadline expire; once the body is sent (or the
    answer begins) the deadline is lifted and aiohttp's read timeout takes over.
    """

    def __init__(self) -> None:
        self._deadline: asyncio.Timeout | None = None
        self._write = 0.0
        self.sending = False
        self.chunks = 0  # chunks handed to aiohttp; it asks for one only after writing the last

    def arm(self, deadline: asyncio.Timeout, write: float) -> None:
        # The clock starts with the first chunk: connecting has its own timeouts.
        self._deadline, self._write = deadline, write

    def tick(self) -> None:
        if self._deadline is not None:
            self.sending = True
            self._deadline.reschedule(asyncio.get_running_loop().time() + self._write)

    def done(self) -> None:
        if self.sending and self._deadline is not None and not self._deadline.expired():
            self._deadline.reschedule(None)
        self.sending = False
        self._deadline = None


def _body_of(request: httpx.Request) -> tuple[AsyncIterator[bytes] | None, _Progress]:
    """The body as chunks that move the write deadline (None for a request without a body)."""
    progress = _Progress()
    if isinstance(request.stream, httpx.ByteStream):
        content = request.content
        if not content:
            return None, progress
        source: Any = _one(content)
    else:
        source = request.stream

    async def body() -> AsyncIterator[bytes]:
        async for chunk in source:
            progress.chunks += 1
            progress.tick()
            yield chunk
        progress.done()

    return body(), progress


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content


def _closed_before_writing(exc: BaseException) -> bool:
    """True when aiohttp refused the first write because the connection was already closing."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectionResetError):
            return True
        cause = cause.__cause__
    return False


def _network_error(exc: aiohttp.ClientError, request: httpx.Request) -> httpx.RequestError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.WriteError(message, request=request)
    return httpx.RemoteProtocolError(message, request=request)
