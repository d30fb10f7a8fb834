"""Engine helpers: the failure reason of an ERROR result, the pause a 429 asks for, the cookie
jar of the engine's HTTP client."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from docutray_watch.config import parse_config
from docutray_watch.engine.http import NoCookies, build_client, rate_limit_wait_of, rate_slot
from docutray_watch.engine.steps import error_text
from docutray_watch.metrics import Metrics


@pytest.mark.parametrize(
    ("error", "text"),
    [
        ("unreadable scan", "unreadable scan"),
        ({"code": "E42", "message": "unreadable scan"}, "unreadable scan"),
        ({"detail": "no pages"}, "no pages"),
        ({"code": "E42"}, '{"code": "E42"}'),
        ([{"field": "total", "message": "missing"}], '[{"field": "total", "message": "missing"}]'),
        (None, "no error message"),
    ],
)
def test_error_text_is_the_message_or_json(error: Any, text: str) -> None:
    """A message is used as it is; objects without one and lists become JSON, never a repr."""
    assert error_text(error) == text


def _unread_429(headers: dict[str, str], body: bytes) -> httpx.Response:
    """A 429 as a response hook sees it: the body not read yet."""
    return httpx.Response(429, headers=headers, stream=httpx.ByteStream(body))


@pytest.mark.parametrize(
    ("headers", "body", "wait"),
    [
        ({"Retry-After": "7"}, b'{"retryAfter": 30}', 7.0),  # the header wins
        ({}, b'{"error": "rate limited", "retryAfter": 30, "limitType": "minute"}', 30.0),
        ({}, b'{"error": "rate limited"}', None),
        ({}, b"<html>slow down</html>", None),
    ],
)
def test_rate_limit_wait_reads_the_header_then_the_body(
    headers: dict[str, str], body: bytes, wait: float | None
) -> None:
    """A 429 pauses everyone for Retry-After, or the body's retryAfter when there is no header."""
    response = _unread_429(headers, body)
    assert asyncio.run(rate_limit_wait_of(response)) == wait
    assert asyncio.run(response.aread()) == body  # still readable by the client afterwards


def test_the_engines_http_client_keeps_no_cookie_a_server_sets() -> None:
    """A Set-Cookie answer (a load balancer's, say) is neither stored nor sent back."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"Set-Cookie": "lb=node-7; Path=/"}, json={})

    seen: list[str | None] = []
    with httpx.Client(transport=httpx.MockTransport(answer), cookies=NoCookies()) as client:
        client.get("http://api.test/a")
        client.get("http://api.test/b")
        assert list(client.cookies.jar) == []
    assert seen == [None, None]


class _OpenRate:
    async def acquire(self, *, yield_to_others: bool = False) -> None:
        return None

    def accepted(self, sent_at: float | None = None) -> None:
        return None

    def throttled(self, seconds: float, sent_at: float | None = None) -> None:
        return None


def test_build_clients_http_client_neither_keeps_nor_sends_a_cookie() -> None:
    """The engine's HTTP client (`build_client`) ignores Set-Cookie: nothing kept, none sent."""

    async def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"Set-Cookie": "lb=node-7; Path=/"}, json={})

    seen: list[str | None] = []
    config = parse_config(
        {"state_dir": "/tmp/unused", "pipelines": [{"name": "p", "watch": {"path": "/tmp/in"},
         "steps": ["s"], "sinks": [{"type": "filesystem", "path": "/tmp/out"}]}]},
        environ={},
        need_secrets=False,
    )  # fmt: skip

    async def main() -> None:
        _client, http = build_client(
            config,
            api_key="k",
            base_url="http://api.test",
            rate=_OpenRate(),
            metrics=Metrics(),
            transport=httpx.MockTransport(answer),
        )
        async with http:
            await http.get("http://api.test/a")
            await http.get("http://api.test/b")
            assert list(http.cookies.jar) == []

    asyncio.run(main())
    assert seen == [None, None]


class _RecordingLimiter:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    async def acquire(self, *, yield_to_others: bool = False) -> None:
        self.calls.append(yield_to_others)


def test_submissions_yield_the_rate_to_status_reads() -> None:
    """A POST (new work) waits for an unreserved slot; a GET (a status read) reserves one."""
    limiter = _RecordingLimiter()
    for method in ("POST", "GET"):
        request = httpx.Request(method, "http://127.0.0.1/api/steps-async/x")
        asyncio.run(rate_slot(limiter, request))  # type: ignore[arg-type]
    assert limiter.calls == [True, False]
