"""The API key never shows: not in errors (str, repr, tracebacks, chained httpx requests), reprs,
raw responses or logs, whatever the failure."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from docutray_watch.client import AsyncClient, Client, DocuTrayError

from .conftest import PDF, FakeAPI, Flavor, json_response

CANARY = "sk_live_CANARY_5f3c9a1e7b2d4c6a"

_TRANSPORT_FAILURES: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.LocalProtocolError,
)

_FAILURES: dict[str, Callable[[], Any]] = {
    "401 echoing the key": lambda: json_response(
        401, {"error": {"message": f"Invalid API key {CANARY}"}}
    ),
    "403 detail": lambda: json_response(403, {"detail": f"key {CANARY} may not run this step"}),
    "500 echoing headers": lambda: json_response(
        500, {"message": "boom", "echo": {"authorization": f"Bearer {CANARY}"}}
    ),
    "503 string error": lambda: json_response(503, {"error": f"overloaded ({CANARY})"}),
    "429 too long": lambda: json_response(429, {"message": "slow", "retryAfter": 3600}),
    "502 html": lambda: httpx.Response(502, text=f"<html>proxy saw Bearer {CANARY}</html>"),
    **{
        failure.__name__: partial(lambda failure: failure, failure)
        for failure in _TRANSPORT_FAILURES
    },
}


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _assert_hidden(error: BaseException) -> None:
    rendered = "".join(traceback.format_exception(error))
    assert CANARY not in rendered
    for link in _chain(error):
        assert CANARY not in str(link)
        assert CANARY not in repr(link)
        assert CANARY not in repr(getattr(link, "body", None))
        try:
            request = link.request  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):
            continue
        assert CANARY not in str(request.headers.raw)
        assert CANARY not in repr(request)


class TestKeyNeverLeaks:
    @pytest.mark.parametrize("failure", list(_FAILURES))
    @pytest.mark.parametrize("method", ["GET", "POST"])
    async def test_error_paths(
        self, flavor: Flavor, api: FakeAPI, failure: str, method: str
    ) -> None:
        """Every failure, retried or not, raises an error that never shows the key."""
        client: Client | AsyncClient = flavor.make(api_key=CANARY, max_retries=1)
        api.queue(_FAILURES[failure](), _FAILURES[failure]())
        if method == "GET":
            request = flavor.call(client.steps.get_status, "exec_1")
        else:
            request = flavor.call(client.steps.run_async, "step_1", file=PDF)
        with capture_logs() as logs, pytest.raises(DocuTrayError) as caught:
            await request
        _assert_hidden(caught.value)
        assert CANARY not in repr(logs)
        assert api.seen[0].headers["authorization"] == f"Bearer {CANARY}"  # it was really sent

    async def test_raw_response_request_is_redacted(self, flavor: Flavor, api: FakeAPI) -> None:
        """The request behind a raw response no longer carries the key."""
        client = flavor.make(api_key=CANARY)
        raw = await flavor.call(client.steps.with_raw_response.get_status, "exec_1")
        assert CANARY not in str(raw.http_response.request.headers.raw)
        assert CANARY not in repr(raw)

    async def test_reprs(self, flavor: Flavor, api: FakeAPI) -> None:
        """Client, resource and status reprs never show the key."""
        client = flavor.make(api_key=CANARY)
        status = await flavor.call(client.steps.run_async, "step_1", file=PDF)
        for text in (
            repr(client),
            str(client),
            repr(client.steps),
            repr(status),
            str(vars(client)),
        ):
            assert CANARY not in text

    async def test_real_connection_refused(self, flavor: Flavor) -> None:
        """A real refused loopback connection (retried, then raised) does not leak the key."""
        import socket

        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        client_class = AsyncClient if flavor.is_async else Client
        client = client_class(api_key=CANARY, base_url=f"http://127.0.0.1:{port}", max_retries=1)
        with capture_logs() as logs, pytest.raises(DocuTrayError) as caught:
            await flavor.call(client.steps.run_async, "step_1", file=PDF)
        await flavor.call(client.close)
        assert caught.value.request_sent is False  # type: ignore[attr-defined]
        _assert_hidden(caught.value)
        assert CANARY not in repr(logs)
