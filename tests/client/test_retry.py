"""Retries: what is retried (the POST rule), how long each wait is, and how retries are reported."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from docutray_watch.client import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncClient,
    Client,
    InternalServerError,
    RateLimitError,
    RetryInfo,
)

from .conftest import PDF, FakeAPI, Flavor, enqueued, json_response, parse_multipart

_NOT_SENT = [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout]
_MAYBE_SENT = [httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError]


async def _post(flavor: Flavor, client: Client | AsyncClient, **inputs: Any) -> Any:
    inputs = inputs or {"file": PDF}
    return await flavor.call(client.steps.run_async, "step_1", **inputs)


async def _get(flavor: Flavor, client: Client | AsyncClient) -> Any:
    return await flavor.call(client.steps.get_status, "exec_1")


def _error(status_code: int, **headers: str) -> httpx.Response:
    return json_response(
        status_code, {"error": {"message": f"failed with {status_code}"}}, **headers
    )


class TestPostRetries:
    @pytest.mark.parametrize("failure", _NOT_SENT)
    async def test_retried_when_never_sent(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, failure: type[Exception]
    ) -> None:
        """A POST whose connection was never established is retried, and then succeeds."""
        api.queue(failure, enqueued("exec_ok"))
        status = await _post(flavor, client)
        assert status.execution_id == "exec_ok"
        assert len(api.seen) == 2

    @pytest.mark.parametrize("code", [429, 503])
    async def test_retried_on_429_and_503(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, code: int
    ) -> None:
        """A POST answered 429 or 503 was not accepted, so it is retried."""
        api.queue(_error(code), _error(code), enqueued("exec_ok"))
        status = await _post(flavor, client)
        assert status.execution_id == "exec_ok"
        assert len(api.seen) == 3

    @pytest.mark.parametrize("failure", _MAYBE_SENT)
    async def test_not_retried_when_maybe_accepted(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, failure: type[Exception]
    ) -> None:
        """A POST that failed after its body went out raises with request_sent=True, unretried."""
        api.queue(failure)
        with pytest.raises(APIConnectionError) as caught:
            await _post(flavor, client)
        assert caught.value.request_sent is True
        assert isinstance(caught.value, APITimeoutError) == issubclass(
            failure, httpx.TimeoutException
        )
        assert len(api.seen) == 1

    @pytest.mark.parametrize("code", [500, 502, 504])
    async def test_not_retried_on_other_5xx(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, code: int
    ) -> None:
        """500, 502 and 504 may come after acceptance: a POST is not retried on them."""
        api.queue(_error(code))
        with pytest.raises(InternalServerError):
            await _post(flavor, client)
        assert len(api.seen) == 1

    @pytest.mark.parametrize("failure", _NOT_SENT)
    async def test_request_sent_false_when_exhausted(
        self, flavor: Flavor, api: FakeAPI, failure: type[Exception]
    ) -> None:
        """When never-sent failures exhaust the retries, the error says request_sent=False."""
        client = flavor.make(max_retries=1)
        api.queue(failure, failure)
        with pytest.raises(APIConnectionError) as caught:
            await _post(flavor, client)
        assert caught.value.request_sent is False
        assert len(api.seen) == 2

    async def test_path_is_restreamed_in_full(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, pdf_path: Path
    ) -> None:
        """A retried path upload is reopened and sent whole again."""
        api.queue(_error(503), enqueued())
        await _post(flavor, client, file=pdf_path)
        first, second = (parse_multipart(s.headers["content-type"], s.body) for s in api.seen)
        assert first["image"].data == second["image"].data == PDF

    async def test_seekable_file_object_is_rewound(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """A retried seekable file object is rewound to where it started."""
        handle = io.BytesIO(b"xx" + PDF)
        handle.seek(2)
        api.queue(_error(429), enqueued())
        await _post(flavor, client, file=handle)
        bodies = [
            parse_multipart(s.headers["content-type"], s.body)["image"].data for s in api.seen
        ]
        assert bodies == [PDF, PDF]

    async def test_consumed_stream_is_not_retried(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """A non-seekable stream, once read, cannot be re-sent: no retry even on 503."""
        api.queue(_error(503), enqueued())
        with pytest.raises(InternalServerError):
            await _post(flavor, client, file=_Unseekable(PDF))
        assert len(api.seen) == 1
        assert "transfer-encoding" in api.seen[0].headers  # size unknown: sent chunked
        assert parse_multipart(api.seen[0].headers["content-type"], api.seen[0].body)

    async def test_unread_stream_is_retried(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """A non-seekable stream not read yet (connect error) can still be sent."""
        api.queue(httpx.ConnectError, enqueued())
        await _post(flavor, client, file=_Unseekable(PDF))
        image = parse_multipart(api.seen[1].headers["content-type"], api.seen[1].body)["image"]
        assert image.data == PDF


class _Unseekable(io.RawIOBase):
    """A pipe-like binary stream."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


class TestGetRetries:
    @pytest.mark.parametrize("failure", _NOT_SENT + _MAYBE_SENT)
    async def test_retried_on_connection_failures(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, failure: type[Exception]
    ) -> None:
        """A status GET is retried on every connection failure and timeout."""
        api.queue(failure, failure)
        status = await _get(flavor, client)
        assert status.is_success()
        assert len(api.seen) == 3

    @pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
    async def test_retried_on_listed_statuses(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, code: int
    ) -> None:
        """A status GET is retried on 429, 500, 502, 503 and 504."""
        api.queue(_error(code), _error(code))
        status = await _get(flavor, client)
        assert status.is_success()
        assert len(api.seen) == 3

    async def test_gives_up_after_max_retries(
        self, flavor: Flavor, api: FakeAPI, retry_waits: list[float]
    ) -> None:
        """After max_retries retries the last error is raised."""
        client = flavor.make(max_retries=3)
        api.queue(*[_error(502)] * 4)
        with pytest.raises(InternalServerError) as caught:
            await _get(flavor, client)
        assert caught.value.status_code == 502
        assert len(api.seen) == 4
        assert len(retry_waits) == 3

    async def test_zero_retries(self, flavor: Flavor, api: FakeAPI) -> None:
        """max_retries=0 sends exactly once."""
        client = flavor.make(max_retries=0)
        api.queue(_error(503))
        with pytest.raises(InternalServerError):
            await _get(flavor, client)
        assert len(api.seen) == 1


class TestNeverRetried:
    @pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 422, 418])
    @pytest.mark.parametrize("method", ["GET", "POST"])
    async def test_4xx_other_than_429(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, code: int, method: str
    ) -> None:
        """No 4xx but 429 is retried, whatever the method."""
        api.queue(_error(code))
        with pytest.raises(APIError) as caught:
            await (_get(flavor, client) if method == "GET" else _post(flavor, client))
        assert caught.value.status_code == code
        assert len(api.seen) == 1


class TestRetryWaits:
    async def test_exponential_backoff_with_jitter_and_cap(
        self, flavor: Flavor, api: FakeAPI, retry_waits: list[float]
    ) -> None:
        """Waits grow 0.5, 1, 2, 4 s plus at most 0.5 s jitter, capped at 8 s."""
        client = flavor.make(max_retries=6)
        api.queue(*[_error(500)] * 6)
        await _get(flavor, client)
        bounds = [(0.5, 1.0), (1.0, 1.5), (2.0, 2.5), (4.0, 4.5), (8.0, 8.0), (8.0, 8.0)]
        assert len(retry_waits) == len(bounds)
        for wait, (low, high) in zip(retry_waits, bounds, strict=True):
            assert low <= wait <= high

    async def test_jitter_varies(
        self, flavor: Flavor, api: FakeAPI, retry_waits: list[float]
    ) -> None:
        """The first wait is jittered: repeated retries do not all wait the same."""
        client = flavor.make(max_retries=1)
        for _ in range(20):
            api.queue(_error(500))
            await _get(flavor, client)
        assert len(set(retry_waits)) > 1
        assert all(0.5 <= wait <= 1.0 for wait in retry_waits)

    @pytest.mark.parametrize("code", [429, 503])
    @pytest.mark.parametrize("retry_after", ["5", "5.5"])
    async def test_retry_after_seconds_is_a_floor(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI,
        retry_waits: list[float], retry_after: str, code: int,
    ) -> None:  # fmt: skip
        """A Retry-After in seconds (on a 429 or a 503) is never undercut by the backoff."""
        api.queue(_error(code, Retry_After=retry_after), enqueued())
        await _post(flavor, client)
        assert retry_waits == [float(retry_after)]

    async def test_small_retry_after_keeps_backoff(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, retry_waits: list[float]
    ) -> None:
        """A Retry-After shorter than the backoff does not shorten the wait."""
        api.queue(_error(503, Retry_After="0"), enqueued())
        await _post(flavor, client)
        assert 0.5 <= retry_waits[0] <= 1.0

    async def test_retry_after_http_date(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, retry_waits: list[float]
    ) -> None:
        """A Retry-After HTTP date is waited out (to the second)."""
        when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
        api.queue(_error(429, Retry_After=when), enqueued())
        await _post(flavor, client)
        assert 28.5 <= retry_waits[0] <= 30.0

    async def test_body_retry_after_when_no_header(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, retry_waits: list[float]
    ) -> None:
        """Without the header, a 429 body's retryAfter is the floor."""
        api.queue(json_response(429, {"message": "slow down", "retryAfter": 7}), enqueued())
        await _post(flavor, client)
        assert retry_waits == [7.0]

    async def test_long_retry_after_raises_without_sleeping(
        self, flavor: Flavor, api: FakeAPI, retry_waits: list[float]
    ) -> None:
        """A Retry-After over max_retry_wait raises RateLimitError at once for rescheduling."""
        client = flavor.make(max_retry_wait=10)
        api.queue(_error(429, Retry_After="11"))
        with pytest.raises(RateLimitError) as caught:
            await _post(flavor, client)
        assert caught.value.retry_after == 11.0
        assert retry_waits == []
        assert len(api.seen) == 1

    async def test_default_max_retry_wait_is_60(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, retry_waits: list[float]
    ) -> None:
        """By default Retry-After up to 60 s is slept through, longer is raised."""
        api.queue(_error(429, Retry_After="60"), enqueued(), _error(429, Retry_After="61"))
        await _post(flavor, client)
        with pytest.raises(RateLimitError):
            await _post(flavor, client)
        assert retry_waits == [60.0]


class TestRetryReporting:
    async def test_on_retry_hook(self, flavor: Flavor, api: FakeAPI) -> None:
        """on_retry receives method, path, attempt, reason and wait for each retry."""
        infos: list[RetryInfo] = []
        client = flavor.make(on_retry=infos.append)
        api.queue(_error(429, Retry_After="2"), httpx.ConnectError, enqueued())
        await _post(flavor, client)
        assert [(i.method, i.path, i.attempt, i.reason) for i in infos] == [
            ("POST", "/api/steps-async/step_1", 1, "http_429"),
            ("POST", "/api/steps-async/step_1", 2, "connect_error"),
        ]
        assert infos[0].wait_s == 2.0

    async def test_failing_hook_does_not_break_the_request(
        self, flavor: Flavor, api: FakeAPI
    ) -> None:
        """An on_retry hook that raises is logged and ignored."""

        def broken(info: RetryInfo) -> None:
            raise RuntimeError("metrics backend down")

        client = flavor.make(on_retry=broken)
        api.queue(_error(503), enqueued("exec_ok"))
        with capture_logs() as logs:
            status = await _post(flavor, client)
        assert status.execution_id == "exec_ok"
        assert any(entry["event"] == "retry_hook_failed" for entry in logs)

    async def test_retries_are_logged(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """Each retry logs request_retried with method, path, attempt, wait_s and reason."""
        api.queue(httpx.ReadTimeout)
        with capture_logs() as logs:
            await _get(flavor, client)
        (entry,) = [entry for entry in logs if entry["event"] == "request_retried"]
        assert set(entry) == {"event", "log_level", "method", "path", "attempt", "wait_s", "reason"}
        assert entry["reason"] == "read_timeout"
        assert entry["path"] == "/api/steps-async/status/exec_1"


class TestFastPath:
    async def test_a_successful_request_builds_no_retry_controller(
        self,
        flavor: Flavor,
        client: Client | AsyncClient,
        api: FakeAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The first attempt goes without tenacity; a controller exists only after a failure."""
        import tenacity

        built: list[str] = []
        for name in ("Retrying", "AsyncRetrying"):
            real = getattr(tenacity, name)

            def counting(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
                built.append(_name)
                return _real(*args, **kwargs)

            monkeypatch.setattr(tenacity, name, counting)
        await _post(flavor, client)
        assert built == []
        api.queue(_error(503), enqueued("exec_again"))
        status = await _post(flavor, client)
        assert status.execution_id == "exec_again"
        assert len(built) == 1
