"""``AiohttpTransport`` against raw loopback TCP servers the tests script byte by byte.

Every failure mode is produced for real (refused and backlogged connects, silent servers, stalled
uploads, dropped and reset connections, keep-alive connections closed under the client) and
checked twice: the httpx exception the transport raises, and what ``AsyncClient`` makes of it
(``request_sent``, whether the POST rule lets it retry).
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import hashlib
import io
import ipaddress
import json
import select
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from docutray_watch.client import (
    AiohttpTransport,
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    InvalidDocumentError,
    RetryInfo,
    _transport,
)
from docutray_watch.emulator import EmulatorServer
from docutray_watch.testing import EmulatorFactory

from .conftest import PDF, PNG, parse_multipart

KEY = "sk_test_transport_0123456789"
FAST = httpx.Timeout(2.0, read=0.2)
MiB = 1024 * 1024


@dataclass
class Received:
    """A request as the raw server read it off the socket."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class Conn:
    """One accepted connection, as the handler sees it."""

    def __init__(
        self,
        server: RawServer,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.number = number
        self.reader = reader
        self.writer = writer

    async def read_request(self, *, body: bool = True) -> Received | None:
        """The next request (None at EOF); its body too unless ``body`` is False."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = [(k, v) for k, _, v in (line.partition(": ") for line in lines if line)]
        received = Received(method, target, headers, b"", self.number)
        if body:
            received.body = await self._read_body(received)
        self.server.requests.append(received)
        return received

    async def _read_body(self, received: Received) -> bytes:
        length = received.header("content-length")
        if length is not None:
            return await self.reader.readexactly(int(length))
        if (received.header("transfer-encoding") or "").lower() != "chunked":
            return b""
        chunks = []
        while size := int((await self.reader.readline()).strip(), 16):
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        await self.reader.readexactly(2)
        return b"".join(chunks)

    async def answer(
        self,
        status: int = 200,
        body: bytes = b"{}",
        headers: list[tuple[str, str]] | None = None,
        *,
        length: bool = True,
    ) -> None:
        """Write an answer (with ``Content-Length`` unless ``length`` is False)."""
        lines = [f"HTTP/1.1 {status} Reason {status}"]
        lines += [f"{k}: {v}" for k, v in headers or [("Content-Type", "application/json")]]
        if length:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await self.writer.drain()

    async def stall(self) -> None:
        """Neither read nor write until the test ends."""
        await self.server.stopping.wait()

    async def until_eof(self) -> None:
        """Read (and discard) until the client closes the connection."""
        while await self.reader.read(65536):
            pass
        self.server.eofs += 1

    def reset(self) -> None:
        """Close with a TCP reset instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Conn], Awaitable[None]]


@dataclass
class RawServer:
    """A loopback TCP server whose every connection is handled by the test's ``handler``."""

    handler: Handler
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    max_open: int = 0
    eofs: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    scheme: str = "http"
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(
        self, *, receive_buffer: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        """Listen on a free loopback port (``receive_buffer`` shrinks the accepted sockets')."""
        self.scheme = "https" if tls is not None else "http"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if receive_buffer is not None:  # inherited by accepted sockets
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._serve, sock=sock, ssl=tls)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"{self.scheme}://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def methods(self) -> list[str]:
        """The methods of the requests read so far, in order."""
        return [request.method for request in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            await self.handler(Conn(self, self.connections, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: that is what several tests do
        finally:
            self.open_now -= 1
            writer.close()
            self._tasks.discard(task)

    async def close(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)


ServerFactory = Callable[..., Awaitable[RawServer]]


@pytest.fixture(name="serve")
async def serve_fixture() -> AsyncIterator[ServerFactory]:
    """Start raw servers on demand (``await serve(handler)``); stop them all at teardown."""
    servers: list[RawServer] = []

    async def start(handler: Handler, **options: Any) -> RawServer:
        server = RawServer(handler)
        await server.start(**options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


HttpFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture(name="http")
async def http_fixture() -> AsyncIterator[HttpFactory]:
    """httpx clients on a fresh ``AiohttpTransport`` each (``http(timeout=..., **transport)``)."""
    clients: list[httpx.AsyncClient] = []

    def make(timeout: httpx.Timeout = FAST, **options: Any) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=AiohttpTransport(**options), timeout=timeout)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def api_client(
    server: RawServer, http: httpx.AsyncClient, timeout: httpx.Timeout = FAST, **options: Any
) -> AsyncClient:
    """Our client on ``http`` (its timeout is the one every request carries)."""
    options.setdefault("max_retries", 2)
    return AsyncClient(
        api_key=KEY, base_url=server.url, http_client=http, timeout=timeout, **options
    )


def api_body(request: Received) -> bytes:
    """What the DocuTray API would answer to ``request``."""
    if request.method == "POST":
        return json.dumps({"execution_id": "exec_1", "status": "ENQUEUED"}).encode()
    execution_id = request.target.rsplit("/", 1)[-1]
    return json.dumps({"execution_id": execution_id, "status": "SUCCESS", "data": {}}).encode()


async def keep_answering(conn: Conn) -> None:
    """A well-behaved keep-alive server."""
    while (request := await conn.read_request()) is not None:
        await conn.answer(body=api_body(request))
    conn.server.eofs += 1


async def read_then_stall(conn: Conn) -> None:
    """Reads a whole request, never answers."""
    await conn.read_request()
    await conn.stall()


async def read_then_close(conn: Conn) -> None:
    """Reads a whole request, closes without answering."""
    await conn.read_request()


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``timeout`` s)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    """``data`` as an async stream of ``size``-byte chunks."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def repeated(block: bytes, times: int) -> AsyncIterator[bytes]:
    """``block``, ``times`` times over, as an async stream."""
    for _ in range(times):
        yield block


@contextmanager
def refusing_port() -> Iterator[str]:
    """A base URL whose port is bound but not listening: every connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def backlogged_port() -> Iterator[str]:
    """A base URL whose listener never accepts and whose backlog is full: connects hang.

    Linux drops a SYN when the accept queue is full, so the client's connect neither succeeds
    nor fails; fillers are added until one of them hangs, which proves the queue is full.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(64):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            filler.connect_ex(address)
            _, writable, _ = select.select([], [filler], [], 0.2)
            if not writable:
                break
        else:
            pytest.skip("the kernel never filled the listen backlog")
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


class TestConnectFailures:
    async def test_refused_is_connect_error(self, http: HttpFactory) -> None:
        """A refused connection raises httpx.ConnectError."""
        with refusing_port() as url, pytest.raises(httpx.ConnectError):
            await http().get(url + "/")

    async def test_refused_post_is_retried_as_unsent(
        self, http: HttpFactory, retry_waits: list[float]
    ) -> None:
        """Through AsyncClient a refused POST is APIConnectionError(request_sent=False), retried."""
        infos: list[RetryInfo] = []
        with refusing_port() as url:
            client = AsyncClient(
                api_key=KEY, base_url=url, http_client=http(), on_retry=infos.append
            )
            with pytest.raises(APIConnectionError) as caught:
                await client.steps.run_async("step_1", file=PDF)
        assert caught.value.request_sent is False
        assert not isinstance(caught.value, APITimeoutError)
        assert [info.reason for info in infos] == ["connect_error", "connect_error"]

    async def test_connect_timeout(self, http: HttpFactory) -> None:
        """A connect that never completes raises httpx.ConnectTimeout after the connect timeout."""
        with backlogged_port() as url, pytest.raises(httpx.ConnectTimeout):
            await http(timeout=httpx.Timeout(2.0, connect=0.2)).get(url + "/")

    async def test_connect_timeout_post_is_retried_as_unsent(
        self, http: HttpFactory, retry_waits: list[float]
    ) -> None:
        """Through AsyncClient a connect timeout is APITimeoutError(request_sent=False), retried."""
        timeout = httpx.Timeout(2.0, connect=0.1)
        with backlogged_port() as url:
            client = AsyncClient(
                api_key=KEY, base_url=url, http_client=http(), timeout=timeout, max_retries=1
            )
            with pytest.raises(APITimeoutError) as caught:
                await client.steps.run_async("step_1", file=PDF)
        assert caught.value.request_sent is False
        assert len(retry_waits) == 1


class TestReadTimeouts:
    async def test_silent_server_is_read_timeout(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A server that reads the request and never answers raises httpx.ReadTimeout."""
        server = await serve(read_then_stall)
        with pytest.raises(httpx.ReadTimeout):
            await http().post(server.url + "/", content=b"payload")
        assert server.methods() == ["POST"]

    async def test_post_is_not_retried(self, serve: ServerFactory, http: HttpFactory) -> None:
        """An unanswered POST is APITimeoutError(request_sent=True), sent once."""
        server = await serve(read_then_stall)
        with pytest.raises(APITimeoutError) as caught:
            await api_client(server, http()).steps.run_async("step_1", file=PDF)
        assert caught.value.request_sent is True
        assert server.methods() == ["POST"]

    async def test_get_is_retried(self, serve: ServerFactory, http: HttpFactory) -> None:
        """Through AsyncClient an unanswered status GET is retried up to max_retries."""
        server = await serve(read_then_stall)
        with pytest.raises(APITimeoutError) as caught:
            await api_client(server, http()).steps.get_status("exec_1")
        assert caught.value.request_sent is True
        assert server.methods() == ["GET"] * 3

    async def test_slow_answer_within_read_timeout(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """Once the body is sent, a slow answer is bounded by read, not write."""

        async def slow(conn: Conn) -> None:
            await conn.read_request()
            await asyncio.sleep(0.3)  # the behaviour under test: a slow server
            await conn.answer()

        server = await serve(slow)
        client = http(timeout=httpx.Timeout(2.0, write=0.05))
        response = await client.post(server.url + "/", content=chunks_of(b"x" * 1000, 100))
        assert response.status_code == 200


class TestWriteTimeouts:
    async def test_stalled_upload_is_write_timeout(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """An upload the server stops reading (buffers full) raises httpx.WriteTimeout."""

        async def head_only(conn: Conn) -> None:
            await conn.read_request(body=False)
            await conn.stall()

        server = await serve(head_only, receive_buffer=4096)
        client = http(timeout=httpx.Timeout(5.0, write=0.3))
        body = repeated(b"\0" * MiB, 64)
        with pytest.raises(httpx.WriteTimeout):
            await client.post(
                server.url + "/", content=body, headers={"Content-Length": str(64 * MiB)}
            )
        assert server.methods() == ["POST"]

    async def test_stalled_body_is_write_timeout(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A body iterator that makes no progress for the write timeout raises WriteTimeout."""

        async def stalls() -> AsyncIterator[bytes]:
            yield b"first part"
            await asyncio.Event().wait()
            yield b"never"

        server = await serve(read_then_stall)
        with pytest.raises(httpx.WriteTimeout):
            await http(timeout=httpx.Timeout(5.0, write=0.1)).post(
                server.url + "/", content=stalls()
            )

    async def test_write_timeout_post_is_not_retried(
        self, serve: ServerFactory, http: HttpFactory, tmp_path: Path
    ) -> None:
        """A stalled POST upload is APITimeoutError(request_sent=True), sent once."""

        async def head_only(conn: Conn) -> None:
            await conn.read_request(body=False)
            await conn.stall()

        server = await serve(head_only, receive_buffer=4096)
        path = tmp_path / "big.png"
        path.write_bytes(PNG + b"\0" * (40 * MiB))
        client = api_client(server, http(), timeout=httpx.Timeout(5.0, write=0.3))
        with pytest.raises(APITimeoutError) as caught:
            await client.steps.run_async("step_1", file=path)
        assert caught.value.request_sent is True
        assert "WriteTimeout" in str(caught.value)
        assert server.connections == 1


class TestDisconnects:
    async def test_closed_before_answer(self, serve: ServerFactory, http: HttpFactory) -> None:
        """A server that closes after reading the request raises httpx.RemoteProtocolError."""
        server = await serve(read_then_close)
        with pytest.raises(httpx.RemoteProtocolError):
            await http().post(server.url + "/", content=b"payload")
        assert server.methods() == ["POST"]

    async def test_closed_post_is_not_retried(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """Through AsyncClient a POST left unanswered by a closed connection is not resent."""
        server = await serve(read_then_close)
        with pytest.raises(APIConnectionError) as caught:
            await api_client(server, http()).steps.run_async("step_1", file=PDF)
        assert caught.value.request_sent is True
        assert not isinstance(caught.value, APITimeoutError)
        assert server.methods() == ["POST"]

    async def test_closed_get_is_retried_by_the_policy_only(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A dropped GET is sent max_retries + 1 times: aiohttp adds no resend of its own."""
        server = await serve(read_then_close)
        with pytest.raises(APIConnectionError):
            await api_client(server, http()).steps.get_status("exec_1")
        assert server.methods() == ["GET"] * 3

    async def test_reset_after_request_is_read_error(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A reset once the body is out is a ReadError (the body was sent), not a WriteError."""

        async def read_then_reset(conn: Conn) -> None:
            await conn.read_request()
            conn.reset()

        server = await serve(read_then_reset)
        with pytest.raises(httpx.ReadError):
            await http().post(server.url + "/", content=b"payload")

    async def test_truncated_answer(self, serve: ServerFactory, http: HttpFactory) -> None:
        """An answer cut short of its Content-Length raises httpx.RemoteProtocolError."""

        async def truncated(conn: Conn) -> None:
            await conn.read_request()
            conn.writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
            await conn.writer.drain()

        server = await serve(truncated)
        with pytest.raises(httpx.RemoteProtocolError):
            await http().get(server.url + "/")

    @pytest.mark.parametrize("connection", ["close", "keep-alive"])
    async def test_early_answer_to_unread_upload(
        self, serve: ServerFactory, http: HttpFactory, connection: str
    ) -> None:
        """An answer before the stalled body is read is returned; the slot is freed."""

        async def early(conn: Conn) -> None:
            request = await conn.read_request(body=False)
            assert request is not None
            await conn.answer(413, b'{"error": "too large"}', [("Connection", connection)])
            if connection == "close":
                return
            await conn.stall()

        async def stalls() -> AsyncIterator[bytes]:
            yield b"x" * 1000
            await asyncio.Event().wait()
            yield b"never"

        server = await serve(early)
        client = http(max_connections=1)
        response = await client.post(server.url + "/", content=stalls())
        assert response.status_code == 413
        assert response.json() == {"error": "too large"}
        # the slot is free again: a second request gets a connection (and the same answer)
        second = await client.post(server.url + "/", content=b"again")
        assert second.status_code == 413


class TestStaleConnections:
    @staticmethod
    async def answer_then_close(conn: Conn) -> None:
        """Answers one request promising keep-alive, then closes the connection."""
        request = await conn.read_request()
        if request is not None:
            await conn.answer(body=api_body(request), headers=[("Connection", "keep-alive")])

    @pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
    async def test_post_after_the_server_closed_goes_out_once(
        self, serve: ServerFactory, http: HttpFactory, streamed: bool
    ) -> None:
        """A POST right after the server closed its pooled connection goes out once, anew."""
        server = await serve(self.answer_then_close)
        client = http()
        assert (await client.get(server.url + "/status/exec_0")).status_code == 200
        # no await between the two: the close is still unprocessed when the POST starts
        body = chunks_of(b"document", 3) if streamed else b"document"
        response = await client.post(server.url + "/steps", content=body)
        assert response.status_code == 200
        assert server.methods() == ["GET", "POST"]
        assert [request.connection for request in server.requests] == [1, 2]
        assert server.requests[1].body == b"document"

    @pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
    async def test_first_write_refused_by_a_closing_connection(
        self,
        serve: ServerFactory,
        http: HttpFactory,
        monkeypatch: pytest.MonkeyPatch,
        streamed: bool,
    ) -> None:
        """A first write refused as closing: memory body resent, stream ConnectError."""
        server = await serve(keep_answering)
        original = AiohttpTransport._send
        attempts = 0

        async def first_meets_a_closing_connection(
            self: AiohttpTransport, session: Any, request: httpx.Request
        ) -> httpx.Response:
            nonlocal attempts
            attempts += 1
            if attempts == 1:  # what `_send` raises when aiohttp refuses the first write
                refused = httpx.ConnectError("closed before the write", request=request)
                raise _transport._StaleConnection(refused)
            return await original(self, session, request)

        monkeypatch.setattr(AiohttpTransport, "_send", first_meets_a_closing_connection)
        body = chunks_of(b"document", 3) if streamed else b"document"
        if streamed:
            with pytest.raises(httpx.ConnectError):
                await http().post(server.url + "/steps", content=body)
            assert server.methods() == []
        else:
            response = await http().post(server.url + "/steps", content=body)
            assert response.status_code == 200
            assert server.methods() == ["POST"]

    @pytest.mark.parametrize(
        ("chunks", "expected"),
        [(0, _transport._StaleConnection), (1, _transport._StaleConnection), (2, httpx.WriteError)],
    )
    def test_closing_connection_is_unsent_only_before_the_second_chunk(
        self, chunks: int, expected: type[Exception]
    ) -> None:
        """A closing-transport refusal means unsent only up to the first chunk."""
        refused = aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        wrapped = aiohttp.ClientOSError(None, "Can not write request body")
        wrapped.__cause__ = refused
        progress = _transport._Progress()
        for _ in range(chunks):
            progress.tick()
        request = httpx.Request("POST", "http://127.0.0.1/steps")
        assert isinstance(_transport._translate(wrapped, request, progress, 1.0), expected)

    async def test_post_written_to_a_dying_connection_is_not_resent(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A POST sent whole on a connection then dropped is not resent by anyone."""

        async def answer_once_then_drop(conn: Conn) -> None:
            first = await conn.read_request()
            assert first is not None
            await conn.answer(body=api_body(first))
            await conn.read_request()  # the POST arrives whole; the server dies before answering

        server = await serve(answer_once_then_drop)
        client = api_client(server, http())
        await client.steps.get_status("exec_0")
        with pytest.raises(APIConnectionError) as caught:
            await client.steps.run_async("step_1", file=PDF)
        assert caught.value.request_sent is True
        assert server.methods() == ["GET", "POST"]
        assert [request.connection for request in server.requests] == [1, 1]

    async def test_get_written_to_a_just_closed_connection(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A GET sent into a just-closed connection is resent by the policy only."""
        server = await serve(self.answer_then_close)
        infos: list[RetryInfo] = []
        client = api_client(server, http(), on_retry=infos.append)
        await client.steps.get_status("exec_0")
        status = await client.steps.get_status("exec_1")
        assert status.is_success()
        assert server.methods() == ["GET", "GET"]
        assert [info.reason for info in infos] == ["remote_protocol_error"]


class TestPool:
    async def test_max_connections_is_honoured(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """N + 3 concurrent requests with max_connections=N use exactly N connections."""
        limit, total = 2, 5

        count = {"in_flight": 0, "answered": 0}

        def saturated() -> bool:
            return count["in_flight"] >= limit or count["in_flight"] + count["answered"] == total

        async def gated(conn: Conn) -> None:
            while (request := await conn.read_request()) is not None:
                # hold each answer until the pool is saturated (or nothing more can come), so
                # a client ignoring the limit would have to open more connections
                count["in_flight"] += 1
                await wait_for(saturated)
                count["in_flight"] -= 1
                count["answered"] += 1
                await conn.answer(body=api_body(request))

        server = await serve(gated)
        client = http(max_connections=limit)
        answers = await asyncio.gather(
            *(client.get(f"{server.url}/status/exec_{n}") for n in range(total))
        )
        assert [answer.status_code for answer in answers] == [200] * total
        assert server.max_open == limit
        assert server.connections == limit

    async def test_pool_timeout(self, serve: ServerFactory, http: HttpFactory) -> None:
        """With every slot busy past the pool timeout: PoolTimeout, request unsent."""
        release = asyncio.Event()

        async def held(conn: Conn) -> None:
            while (request := await conn.read_request()) is not None:
                await release.wait()
                await conn.answer(body=api_body(request))

        server = await serve(held)
        client = http(max_connections=1, timeout=httpx.Timeout(2.0, pool=0.1))
        first = asyncio.create_task(client.get(server.url + "/first"))
        await wait_for(lambda: len(server.requests) == 1)
        with pytest.raises(httpx.PoolTimeout):
            await client.post(server.url + "/second", content=b"never sent")
        release.set()
        assert (await first).status_code == 200
        assert [request.target for request in server.requests] == ["/first"]

    async def test_pool_timeout_post_is_retried_as_unsent(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A pool timeout is APITimeoutError(request_sent=False); the POST is retried."""
        release = asyncio.Event()

        async def held(conn: Conn) -> None:
            while (request := await conn.read_request()) is not None:
                if request.method == "GET":
                    await release.wait()
                await conn.answer(body=api_body(request))

        server = await serve(held)
        infos: list[RetryInfo] = []

        def free_the_pool(info: RetryInfo) -> None:
            infos.append(info)
            release.set()

        timeout = httpx.Timeout(2.0, pool=0.1)
        client = api_client(server, http(max_connections=1), timeout, on_retry=free_the_pool)
        reading = asyncio.create_task(client.steps.get_status("exec_0"))
        await wait_for(lambda: len(server.requests) == 1)
        status = await client.steps.run_async("step_1", file=PDF)
        await reading
        assert status.execution_id == "exec_1"
        assert [info.reason for info in infos] == ["pool_timeout"]
        assert server.methods() == ["GET", "POST"]

    async def test_slot_is_freed_by_a_failure(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A failed request gives its slot back: the next one gets the only connection slot."""
        calls = 0

        async def first_fails(conn: Conn) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                await read_then_close(conn)
            else:
                await keep_answering(conn)

        server = await serve(first_fails)
        client = http(max_connections=1, timeout=httpx.Timeout(2.0, pool=0.1))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url + "/")
        assert (await client.get(server.url + "/status/x")).status_code == 200


class TestAnswers:
    async def test_chunked_answer(self, serve: ServerFactory, http: HttpFactory) -> None:
        """A chunked answer is de-chunked."""

        async def chunked(conn: Conn) -> None:
            await conn.read_request()
            conn.writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
            )
            await conn.writer.drain()
            await conn.until_eof()

        server = await serve(chunked)
        response = await http().get(server.url + "/")
        assert response.content == b"hello world"

    @pytest.mark.parametrize("chunked", [False, True])
    async def test_gzip_answer(
        self, serve: ServerFactory, http: HttpFactory, chunked: bool
    ) -> None:
        """A Content-Encoding: gzip answer (plain or chunked) is decoded by httpx."""
        document = json.dumps({"data": ["x" * 50] * 100}).encode()
        encoded = gzip.compress(document)

        async def gzipped(conn: Conn) -> None:
            await conn.read_request()
            headers = [("Content-Type", "application/json"), ("Content-Encoding", "gzip")]
            if not chunked:
                await conn.answer(body=encoded, headers=headers)
            else:
                await conn.answer(
                    body=b"%x\r\n%s\r\n0\r\n\r\n" % (len(encoded), encoded),
                    headers=[*headers, ("Transfer-Encoding", "chunked")],
                    length=False,
                )
            await conn.until_eof()

        server = await serve(gzipped)
        response = await http().get(server.url + "/")
        assert response.headers["content-encoding"] == "gzip"
        assert response.content == document
        assert response.json()["data"][0] == "x" * 50

    async def test_close_delimited_answer(self, serve: ServerFactory, http: HttpFactory) -> None:
        """An answer without length, ended by closing the connection, is read to the end."""

        async def close_delimited(conn: Conn) -> None:
            await conn.read_request()
            await conn.answer(
                body=b"until the end", headers=[("Connection", "close")], length=False
            )

        server = await serve(close_delimited)
        response = await http().get(server.url + "/")
        assert response.content == b"until the end"

    async def test_headers_status_and_reason(self, serve: ServerFactory, http: HttpFactory) -> None:
        """Repeated answer headers keep every value in order; status and reason phrase pass."""

        async def many_headers(conn: Conn) -> None:
            await conn.read_request()
            headers = [("X-Multi", "one"), ("Set-Cookie", "a=1"), ("X-Multi", "two"),
                       ("Set-Cookie", "b=2"), ("Retry-After", "7")]  # fmt: skip
            await conn.answer(429, b"{}", headers)
            await conn.until_eof()

        server = await serve(many_headers)
        response = await http().get(server.url + "/")
        assert response.status_code == 429
        assert response.reason_phrase == "Reason 429"
        assert response.headers.get_list("x-multi") == ["one", "two"]
        assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
        assert response.headers["retry-after"] == "7"

    async def test_request_goes_out_as_httpx_built_it(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """The request line keeps httpx's encoding, and the headers are httpx's, once each."""
        server = await serve(keep_answering)
        await http().post(
            server.url + "/steps/a%41b%2Fc%25?q=a+b%2B", content=b"{}", headers={"X-Test": "1"}
        )
        (request,) = server.requests
        assert request.target == "/steps/a%41b%2Fc%25?q=a+b%2B"
        names = [name.lower() for name, _ in request.headers]
        assert sorted(names) == sorted(set(names))  # no header twice
        assert request.header("user-agent") == f"python-httpx/{httpx.__version__}"
        assert request.header("content-type") is None  # aiohttp's default type is not added
        assert request.header("x-test") == "1"
        assert request.header("host") == server.url.removeprefix("http://")


class TestRequestBodies:
    async def test_streamed_body_with_length(self, serve: ServerFactory, http: HttpFactory) -> None:
        """A streamed body with a Content-Length goes out intact, unchunked."""
        data = hashlib.sha256(b"seed").digest() * (3 * MiB // 32 + 7)
        server = await serve(keep_answering)
        await http().post(
            server.url + "/",
            content=chunks_of(data, 65536),
            headers={"Content-Length": str(len(data))},
        )
        (request,) = server.requests
        assert request.header("content-length") == str(len(data))
        assert request.header("transfer-encoding") is None
        assert hashlib.sha256(request.body).hexdigest() == hashlib.sha256(data).hexdigest()

    async def test_streamed_body_without_length(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A streamed body of unknown length goes out chunked, intact."""
        data = bytes(range(256)) * 4099
        server = await serve(keep_answering)
        await http().post(server.url + "/", content=chunks_of(data, 10000))
        (request,) = server.requests
        assert request.header("transfer-encoding") == "chunked"
        assert request.header("content-length") is None
        assert request.body == data

    async def test_upload_through_the_client_is_intact(
        self, serve: ServerFactory, http: HttpFactory, tmp_path: Path
    ) -> None:
        """A multi-chunk file uploaded by AsyncClient arrives byte for byte, with its length."""
        path = tmp_path / "scan.png"
        path.write_bytes(PNG + hashlib.sha256(b"x").digest() * (100 * 1024))
        server = await serve(keep_answering)
        await api_client(server, http()).steps.run_async("step_1", file=path)
        (request,) = server.requests
        assert request.header("content-length") == str(len(request.body))
        content_type = request.header("content-type")
        assert content_type is not None
        image = parse_multipart(content_type, request.body)["image"]
        assert hashlib.sha256(image.data).digest() == hashlib.sha256(path.read_bytes()).digest()

    async def test_body_error_comes_out_unchanged(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """An exception raised by the body iterator propagates as itself (as with httpcore)."""

        class BodyBroke(Exception):
            pass

        async def breaks() -> AsyncIterator[bytes]:
            yield b"a first chunk"
            raise BodyBroke("the source failed")

        server = await serve(keep_answering)
        with pytest.raises(BodyBroke):
            await http().post(server.url + "/", content=breaks())

    async def test_document_that_grows_is_invalid_not_a_connection_error(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A file growing mid-upload raises InvalidDocumentError, not APIConnectionError."""

        class Growing(io.BytesIO):
            reads = 0

            def read(self, size: int | None = -1) -> bytes:
                self.reads += 1
                if self.reads == 2:  # the sniffing read was the first: the upload has begun
                    position = self.tell()
                    self.seek(0, io.SEEK_END)
                    self.write(b"appended")
                    self.seek(position)
                return super().read(size)

        server = await serve(keep_answering)
        with pytest.raises(InvalidDocumentError, match="changed size"):
            await api_client(server, http()).steps.run_async("step_1", file=Growing(PDF))
        assert server.requests == []  # the server never got a complete request

    async def test_read_error_comes_out_as_os_error(
        self, serve: ServerFactory, http: HttpFactory
    ) -> None:
        """A disk error while streaming the document is the OSError, not a network error."""

        class Failing(io.BytesIO):
            reads = 0

            def read(self, size: int | None = -1) -> bytes:
                self.reads += 1
                if self.reads == 2:
                    raise OSError(5, "Input/output error")
                return super().read(size)

        server = await serve(keep_answering)
        with pytest.raises(OSError, match="Input/output error") as caught:
            await api_client(server, http()).steps.run_async("step_1", file=Failing(PDF))
        assert not isinstance(caught.value, APIConnectionError)


class TestLifecycle:
    def test_needs_a_connection(self) -> None:
        """max_connections below 1 is refused."""
        with pytest.raises(ValueError, match="max_connections"):
            AiohttpTransport(max_connections=0)

    async def test_aclose_closes_connections(self, serve: ServerFactory) -> None:
        """aclose() closes the pooled connections: the server reads EOF."""
        server = await serve(keep_answering)
        transport = AiohttpTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(server.url + "/status/a")
            assert server.eofs == 0
        await wait_for(lambda: server.eofs == 1)

    async def test_usable_after_aclose(self, serve: ServerFactory) -> None:
        """A closed transport may be used again (as documented): it opens a new connection."""
        server = await serve(keep_answering)
        transport = AiohttpTransport()
        request = httpx.Request("GET", server.url + "/status/a")
        await transport.handle_async_request(request)
        await transport.aclose()
        response = await transport.handle_async_request(httpx.Request("GET", server.url + "/b"))
        await transport.aclose()
        assert response.status_code == 200
        assert server.connections == 2

    async def test_unsupported_scheme(self) -> None:
        """A URL that is neither http nor https is httpx.UnsupportedProtocol (never sent)."""
        transport = AiohttpTransport()
        try:
            with pytest.raises(httpx.UnsupportedProtocol):
                await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/x"))
        finally:
            await transport.aclose()


def _self_signed() -> tuple[bytes, bytes]:
    """A certificate and key for 127.0.0.1, in PEM."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


class TestTLS:
    @pytest.fixture(name="tls_server")
    async def tls_server_fixture(self, tmp_path: Path) -> AsyncIterator[tuple[str, bytes]]:
        """A keep-alive HTTPS server on loopback with a self-signed certificate."""
        certificate, key = _self_signed()
        (tmp_path / "cert.pem").write_bytes(certificate)
        (tmp_path / "key.pem").write_bytes(key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        server = RawServer(keep_answering)
        await server.start(tls=context)
        yield server.url, certificate
        await server.close()

    async def test_round_trip_with_a_given_context(self, tls_server: tuple[str, bytes]) -> None:
        """verify=<SSLContext> is used for https: a request to a server it trusts succeeds."""
        url, certificate = tls_server
        trusting = ssl.create_default_context(cadata=certificate.decode())
        async with httpx.AsyncClient(transport=AiohttpTransport(verify=trusting)) as client:
            response = await client.post(url + "/steps/s", content=b"over TLS")
        assert response.json() == {"execution_id": "exec_1", "status": "ENQUEUED"}

    async def test_default_context_is_built_lazily_and_verifies(
        self, tls_server: tuple[str, bytes], serve: ServerFactory
    ) -> None:
        """The default TLS context is built on the first https request, and verifies."""
        url, _ = tls_server
        plain = await serve(keep_answering)
        transport = AiohttpTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(plain.url + "/status/a")
            assert transport._ssl is None
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(url + "/status/a")
            assert isinstance(transport._ssl, ssl.SSLContext)

    async def test_verify_false(self, tls_server: tuple[str, bytes]) -> None:
        """verify=False accepts any certificate."""
        url, _ = tls_server
        async with httpx.AsyncClient(transport=AiohttpTransport(verify=False)) as client:
            assert (await client.get(url + "/status/a")).status_code == 200


class TestAgainstEmulator:
    @pytest.fixture(name="emu")
    def emu_fixture(self, emulator_factory: EmulatorFactory) -> EmulatorServer:
        """An emulator with a short latency and a known key."""
        return emulator_factory(api_key=KEY, latency=0.02)

    @pytest.fixture(name="client")
    async def client_fixture(self, emu: EmulatorServer) -> AsyncIterator[AsyncClient]:
        """AsyncClient on an httpx pool over AiohttpTransport, closed afterwards."""
        http = httpx.AsyncClient(transport=AiohttpTransport())
        yield AsyncClient(api_key=KEY, base_url=emu.base_url, http_client=http)
        await http.aclose()

    @pytest.mark.parametrize("size", [1000, 300 * 1024], ids=["one-piece", "streamed"])
    async def test_upload_status_and_wait(
        self, client: AsyncClient, emu: EmulatorServer, tmp_path: Path, size: int
    ) -> None:
        """Upload, status read and wait() round-trip; the emulator hashes what it received."""
        path = tmp_path / "document.pdf"
        path.write_bytes(PDF + b"\n%" + b"z" * (size - len(PDF)))
        status = await client.steps.run_async("step_1", file=path, document_metadata={"n": 1})
        assert status.status == "ENQUEUED"
        read = await client.steps.get_status(status.execution_id)
        assert read.execution_id == status.execution_id
        result = await status.wait(poll_interval=0.02, timeout=10)
        assert result.is_success()
        assert result.data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    async def test_post_retried_after_503(self, emu: EmulatorServer) -> None:
        """A POST answered 503 is sent again and then accepted: two POSTs, one execution."""
        emu.configure(server_error_rate=1.0, server_error_statuses=(503,))
        infos: list[RetryInfo] = []

        def heal(info: RetryInfo) -> None:
            infos.append(info)
            emu.configure(server_error_rate=0.0)

        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            client = AsyncClient(
                api_key=KEY, base_url=emu.base_url, http_client=http, on_retry=heal
            )
            status = await client.steps.run_async("step_1", file=PDF)
        assert status.status == "ENQUEUED"
        assert [info.reason for info in infos] == ["http_503"]
        stats = emu.stats(include_executions=False)
        assert (stats.posts, stats.executions_created) == (2, 1)

    async def test_drops(self, emu: EmulatorServer, client: AsyncClient) -> None:
        """Dropped GETs are sent max_retries + 1 times; a POST dropped after acceptance once."""
        status = await client.steps.run_async("step_1", file=PDF)
        emu.configure(drop_rate=1.0)
        with pytest.raises(APIConnectionError):
            await client.steps.get_status(status.execution_id)
        assert emu.stats(include_executions=False).status_gets == 3
        emu.configure(drop_rate=0.0, drop_after_accept_rate=1.0)
        with pytest.raises(APIConnectionError) as caught:
            await client.steps.run_async("step_1", file=PNG)
        assert caught.value.request_sent is True
        stats = emu.stats(include_executions=False)
        assert (stats.posts, stats.executions_created, stats.resubmissions) == (2, 2, 0)
