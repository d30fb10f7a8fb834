"""Fixtures for the client's tests: a scripted API behind a mock transport, run sync and async.

Most tests take the ``flavor`` fixture, so each runs once with ``Client`` and once with
``AsyncClient``; ``flavor.call`` awaits a result only when the async client returns a coroutine.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from docutray_watch.client import AsyncClient, Client, _polling, _retry

API_KEY = "sk_test_unit_0123456789abcdef"
BASE_URL = "https://docutray.test"

PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64

Step = httpx.Response | BaseException | type[BaseException]

# Failures that happen before the request body could be read by anyone.
_BEFORE_SEND = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def json_response(status_code: int, body: Any = None, **headers: str) -> httpx.Response:
    """An answer with a JSON body (``Retry_After="3"`` becomes ``Retry-After: 3``)."""
    return httpx.Response(
        status_code,
        json=body if body is not None else {},
        headers={name.replace("_", "-"): value for name, value in headers.items()},
    )


def enqueued(execution_id: str = "exec_1", **fields: Any) -> httpx.Response:
    """The answer to a successful submission."""
    return json_response(200, {"execution_id": execution_id, "status": "ENQUEUED", **fields})


def status_answer(status: str, execution_id: str = "exec_1", **fields: Any) -> httpx.Response:
    """The answer to a status read."""
    return json_response(200, {"execution_id": execution_id, "status": status, **fields})


@dataclass
class Seen:
    """A request as the API received it (headers copied before the client redacts them)."""

    method: str
    path: str
    headers: httpx.Headers
    body: bytes


class FakeAPI:
    """A scripted DocuTray API: answers queued steps in order, then default answers."""

    def __init__(self) -> None:
        self.script: list[Step] = []
        self.seen: list[Seen] = []

    def queue(self, *steps: Step) -> FakeAPI:
        """Answer the next requests with ``steps`` (responses, or exceptions to raise)."""
        self.script.extend(steps)
        return self

    def _next(self, request: httpx.Request) -> Step:
        if self.script:
            return self.script.pop(0)
        if request.method == "POST":
            return enqueued()
        execution_id = request.url.path.rsplit("/", 1)[-1]
        return status_answer("SUCCESS", execution_id, data={"total": 1160.0})

    def _record(self, request: httpx.Request, body: bytes) -> None:
        self.seen.append(
            Seen(
                request.method, request.url.raw_path.decode(), httpx.Headers(request.headers), body
            )
        )

    @staticmethod
    def _resolve(step: Step, request: httpx.Request) -> httpx.Response:
        if isinstance(step, httpx.Response):
            return step
        if isinstance(step, type):
            step = step("simulated failure", request=request)  # type: ignore[call-arg]
        raise step

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer a request of ``httpx.Client``."""
        step = self._next(request)
        if isinstance(step, type) and issubclass(step, _BEFORE_SEND):
            self._record(request, b"")
            return self._resolve(step, request)
        self._record(request, request.read())
        return self._resolve(step, request)

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        """Answer a request of ``httpx.AsyncClient``."""
        step = self._next(request)
        if isinstance(step, type) and issubclass(step, _BEFORE_SEND):
            self._record(request, b"")
            return self._resolve(step, request)
        self._record(request, await request.aread())
        return self._resolve(step, request)


class FakeTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Like httpx.MockTransport, but without reading the request body up front, so a connect
    failure leaves the body unread as it would on a real network."""

    def __init__(self, api: FakeAPI) -> None:
        self.api = api

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.api.handle(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.api.ahandle(request)


class Flavor:
    """Builds a ``Client`` or an ``AsyncClient`` on the fake API, and calls either alike."""

    def __init__(self, name: str, api: FakeAPI) -> None:
        self.name = name
        self.api = api
        self.is_async = name == "async"
        self._pools: list[httpx.Client | httpx.AsyncClient] = []

    def make(self, **kwargs: Any) -> Client | AsyncClient:
        """A client on the fake API (``api_key``/``base_url`` default to the test ones)."""
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("base_url", BASE_URL)
        if self.is_async:
            async_pool = httpx.AsyncClient(transport=FakeTransport(self.api))
            self._pools.append(async_pool)
            return AsyncClient(http_client=async_pool, **kwargs)
        pool = httpx.Client(transport=FakeTransport(self.api))
        self._pools.append(pool)
        return Client(http_client=pool, **kwargs)

    @staticmethod
    async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``function``; await the result if it is awaitable."""
        result = function(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def close(self) -> None:
        """Close the pools this flavor made."""
        for pool in self._pools:
            if isinstance(pool, httpx.AsyncClient):
                await pool.aclose()
            else:
                pool.close()


@pytest.fixture(name="api")
def api_fixture() -> FakeAPI:
    """A fresh scripted API."""
    return FakeAPI()


@pytest.fixture(name="flavor", params=["sync", "async"])
async def flavor_fixture(request: pytest.FixtureRequest, api: FakeAPI) -> AsyncIterator[Flavor]:
    """Each test runs with Client and with AsyncClient."""
    flavor = Flavor(request.param, api)
    yield flavor
    await flavor.close()


@pytest.fixture(name="client")
def client_fixture(flavor: Flavor) -> Client | AsyncClient:
    """A client of the current flavor on the fake API, with default settings."""
    return flavor.make()


@pytest.fixture(name="retry_waits", autouse=True)
def retry_waits_fixture(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits are recorded instead of slept, so retry tests stay fast."""
    waits: list[float] = []

    def record(seconds: float) -> None:
        waits.append(seconds)

    async def record_async(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(_retry, "_sleep", record)
    monkeypatch.setattr(_retry, "_async_sleep", record_async)
    return waits


class FakeClock:
    """A monotonic clock that only moves when the poller sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture(name="clock")
def clock_fixture(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Polling runs on a fake clock: sleeps are recorded and advance time instantly."""
    clock = FakeClock()
    monkeypatch.setattr(_polling, "_clock", clock.monotonic)
    monkeypatch.setattr(_polling, "_sleep", clock.sleep)
    monkeypatch.setattr(_polling, "_async_sleep", clock.async_sleep)
    return clock


@dataclass
class Part:
    """One part of a multipart body."""

    headers: dict[str, str]
    filename: str | None
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """Split a multipart/form-data body into its parts, checking the framing strictly."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    pieces = body.split(b"--" + boundary)
    assert pieces[0] == b"", "the body starts with the first boundary"
    assert pieces[-1] == b"--\r\n", "the body ends with the closing boundary"
    parts: dict[str, Part] = {}
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n")
        assert piece.endswith(b"\r\n")
        head, _, data = piece[2:-2].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        disposition = headers["Content-Disposition"]
        name = re.search(r' name="([^"]*)"', disposition)
        filename = re.search(r' filename="([^"]*)"', disposition)
        assert name is not None
        parts[name.group(1)] = Part(headers, filename.group(1) if filename else None, data)
    return parts


@pytest.fixture(name="pdf_path")
def pdf_path_fixture(tmp_path: Path) -> Path:
    """A small PDF on disk."""
    path = tmp_path / "invoice.pdf"
    path.write_bytes(PDF)
    return path


@pytest.fixture(name="no_network")
def no_network_fixture(api: FakeAPI) -> Iterator[FakeAPI]:
    """The fake API, asserted to have seen no request by the end of the test."""
    yield api
    assert api.seen == [], "no request may be sent"
