"""``AiohttpTransport``: an httpx transport that sends with aiohttp's pool and C HTTP parser.

httpx's default async transport (httpcore over anyio) costs about 0.9 ms of CPU per request on a
small machine — more than everything else a document needs — and writes a streamed body in as
many socket sends as it has parts. aiohttp, already a dependency, parses HTTP in C and sends the
request head with the first body chunk. This transport keeps httpx's client (hooks, auth,
redirect policy, proxies from the environment, which httpx mounts on its own transports) and
swaps only the wire:

- timeouts follow httpx's four: ``pool`` to wait for one of the ``max_connections`` slots,
  ``connect`` to open a connection, ``read`` per read of the answer, ``write`` per chunk of the
  body (measured between chunks);
- errors become the httpx exceptions httpcore raises, with the same meaning for "was the request
  sent?": ``PoolTimeout``/``ConnectError``/``ConnectTimeout`` (never sent),
  ``WriteTimeout``/``WriteError`` (while the body was going out), ``ReadTimeout``/``ReadError``/
  ``RemoteProtocolError`` (after it); an exception raised by the request body itself (a file
  that changed size) comes out unchanged, as with httpcore;
- the URL is sent exactly as httpx encoded it, and a request is never resent behind the caller's
  back (aiohttp's own resend of idempotent requests is off: the caller's retry policy decides),
  with one exception, below;
- the answer is read whole (the API answers with small JSON bodies) and handed to httpx still
  encoded, so httpx decodes it as usual;
- before a request with a body takes a pooled connection, the loop gets two turns to notice
  connections the server closed meanwhile (httpcore checks each connection before reuse);
  one that closes later still fails on the first write, before a byte is sent: an in-memory
  body is then sent again at once on a fresh connection, a streamed one raises
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
import yarl

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

    ``max_connections`` bounds the requests in flight and the connections open at once
    (``httpx.Limits`` does not apply to a transport passed in); a request waits up to the
    ``pool`` timeout for a free slot. Use one instance per event loop. ``aclose()`` closes its
    connections; a closed transport may be used again and then opens new ones.
    """

    def __init__(self, *, max_connections: int = 100, verify: bool | ssl.SSLContext = True) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._verify = verify
        self._ssl: ssl.SSLContext | bool | None = None
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(max_connections)

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
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                trust_env=False,  # httpx applies environment proxies itself
            )
            # aiohttp resends a GET once, at once and unseen by httpx's hooks, when its
            # connection drops; resends are the caller's decision (backoff, rate limit, logs).
            # There is no public switch: aiohttp's own test client sets the same attribute.
            session._retry_connection = False
            self._session = session
            self._slots = asyncio.Semaphore(self._max_connections)  # bound to this loop
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return its whole answer (errors as httpx exceptions)."""
        session = self._session_now()
        slots = self._slots
        if slots.locked():
            pool = request.extensions.get("timeout", {}).get("pool")
            try:
                async with asyncio.timeout(pool):
                    await slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout(
                    f"no connection became free within {pool} s", request=request
                ) from None
        else:
            await slots.acquire()  # free: returns at once
        try:
            if not _bodiless(request):
                # Let the loop handle connections the server closed meanwhile (their EOF may
                # be waiting behind this task), so aiohttp drops them instead of writing a body
                # into them, which would leave the request's fate unknown. Two turns: what the
                # next poll reports is queued behind this task's first wake-up.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            try:
                return await self._send(session, request)
            except _StaleConnection as stale:
                if not isinstance(request.stream, httpx.ByteStream):
                    raise stale.error from stale.__cause__  # a stream cannot be read twice
                # Nothing was sent and the body is in memory: once more, on a fresh connection.
                try:
                    return await self._send(session, request)
                except _StaleConnection as again:
                    raise again.error from again.__cause__
        finally:
            slots.release()

    async def _send(self, session: aiohttp.ClientSession, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        connect, read, write = timeouts.get("connect"), timeouts.get("read"), timeouts.get("write")
        timeout = aiohttp.ClientTimeout(
            total=None, connect=connect, sock_connect=connect, sock_read=read
        )
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        chunked = any(k.lower() == "transfer-encoding" for k, _ in headers)
        if chunked:
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        body, progress = _body_of(request)
        failure: Exception | None = None
        try:
            async with asyncio.timeout(None) as deadline:
                if body is not None and write is not None:
                    progress.arm(deadline, write)
                async with session.request(
                    request.method,
                    # as httpx encoded it: yarl would otherwise re-quote the path (%41 -> A)
                    yarl.URL(str(request.url), encoded=True),
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
        except (aiohttp.ClientError, TimeoutError) as exc:  # aiohttp's timeouts are both
            failure = progress.failure
            if failure is None:
                raise _translate(exc, request, progress, write) from exc
        except Exception as exc:
            failure = progress.failure
            if failure is None:
                # Not one of aiohttp's documented errors (on Python 3.12+ a body writer that
                # fails at once can leave aiohttp reading a closed connection: AttributeError).
                # Whatever it is, the request may have left: say so, as a network error.
                raise httpx.RemoteProtocolError(
                    f"the connection failed: {type(exc).__name__}: {exc}", request=request
                ) from exc
        if failure is not None:
            # The body's own error, which aiohttp wrapped: let it through unchanged, as
            # httpcore does (outside the handler, so its own cause and context stay as they were).
            raise failure
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
    """How far the body got, and the write deadline it moves.

    aiohttp asks for the next chunk only once the previous one is written, so a body that makes
    no progress for ``write`` seconds lets the deadline expire; once the body is sent (or the
    answer begins) the deadline is lifted and aiohttp's read timeout takes over.
    """

    def __init__(self) -> None:
        self._deadline: asyncio.Timeout | None = None
        self._write = 0.0
        self.chunks = 0  # chunks handed to aiohttp; it asks for one only after writing the last
        self.finished = False  # the whole body was handed over and written
        self.failure: Exception | None = None  # what the body itself raised

    @property
    def writing(self) -> bool:
        """Whether the body had started and not finished going out."""
        return self.chunks > 0 and not self.finished

    def arm(self, deadline: asyncio.Timeout, write: float) -> None:
        # The clock starts with the first chunk: connecting has its own timeouts.
        self._deadline, self._write = deadline, write

    def tick(self) -> None:
        self.chunks += 1
        if self._deadline is not None:
            self._deadline.reschedule(asyncio.get_running_loop().time() + self._write)

    def done(self) -> None:
        if self._deadline is not None and not self._deadline.expired():
            self._deadline.reschedule(None)
        self._deadline = None


def _bodiless(request: httpx.Request) -> bool:
    return isinstance(request.stream, httpx.ByteStream) and not request.content


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
        try:
            async for chunk in source:
                progress.tick()
                yield chunk
        except Exception as exc:
            progress.failure = exc
            raise
        progress.finished = True
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


def _translate(
    exc: aiohttp.ClientError | TimeoutError,
    request: httpx.Request,
    progress: _Progress,
    write: float | None,
) -> Exception:
    """The exception to raise for a failed attempt (see the module docstring)."""
    if isinstance(exc, aiohttp.ClientError):
        if progress.chunks <= 1 and _closed_before_writing(exc):
            # A pooled connection the server had already closed: not a byte left this host
            # (httpcore checks for this before reusing a connection; aiohttp finds out on the
            # first write), so this is a connect error, which even a POST may retry.
            error = httpx.ConnectError(
                "the connection was closed by the server before the request was written",
                request=request,
            )
            return _StaleConnection(error)
        return _network_error(exc, request, writing=progress.writing)
    if progress.writing:
        return httpx.WriteTimeout(f"no progress writing the body for {write} s", request=request)
    # Not ours and not aiohttp's: the phase is unknown, so say it may have been sent.
    return httpx.ReadTimeout(str(exc) or "timed out", request=request)


def _network_error(
    exc: aiohttp.ClientError, request: httpx.Request, *, writing: bool
) -> httpx.RequestError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(exc, aiohttp.ClientOSError):  # a reset, or another socket error
        return (httpx.WriteError if writing else httpx.ReadError)(message, request=request)
    return httpx.RemoteProtocolError(message, request=request)
