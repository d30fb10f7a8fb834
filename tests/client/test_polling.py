"""wait(): success, error, timeout, on_status, the adaptive schedule and the deadline rule."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.client import APITimeoutError, AsyncClient, Client, StepExecutionStatus

from .conftest import PDF, PNG, FakeAPI, FakeClock, Flavor, status_answer


async def _submit(flavor: Flavor, client: Client | AsyncClient, **inputs: Any) -> Any:
    inputs = inputs or {"file": PNG}
    return await flavor.call(client.steps.run_async, "step_1", **inputs)


class TestWait:
    async def test_returns_success(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """wait() polls through ENQUEUED/PROCESSING and returns the SUCCESS status."""
        status = await _submit(flavor, client)
        api.queue(status_answer("PROCESSING"), status_answer("SUCCESS", data={"total": 1}))
        result = await flavor.call(status.wait)
        assert result.is_success()
        assert result.data == {"total": 1}
        assert [seen.method for seen in api.seen] == ["POST", "GET", "GET"]

    async def test_returns_error(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """wait() returns an ERROR status as a status, with its error."""
        status = await _submit(flavor, client)
        api.queue(status_answer("ERROR", error="unreadable scan"))
        result = await flavor.call(status.wait)
        assert result.is_error()
        assert result.error == "unreadable scan"

    async def test_complete_status_returns_at_once(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """wait() on a terminal status makes no request and does not sleep."""
        status = await flavor.call(client.steps.get_status, "exec_1")
        result = await flavor.call(status.wait)
        assert result is status
        assert len(api.seen) == 1
        assert clock.sleeps == []

    async def test_on_status_sees_every_poll(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """on_status is called with each polled status, in order."""
        status = await _submit(flavor, client)
        api.queue(status_answer("ENQUEUED"), status_answer("PROCESSING"), status_answer("SUCCESS"))
        seen: list[str] = []
        await flavor.call(status.wait, on_status=lambda s: seen.append(s.status))
        assert seen == ["ENQUEUED", "PROCESSING", "SUCCESS"]

    async def test_timeout_raises(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """Past the timeout wait() raises APITimeoutError naming the execution."""
        status = await _submit(flavor, client)
        api.queue(*[status_answer("PROCESSING")] * 50)
        with pytest.raises(APITimeoutError, match="exec_1 did not complete within 10 seconds"):
            await flavor.call(status.wait, timeout=10)
        assert sum(clock.sleeps) == pytest.approx(10)

    async def test_default_timeout_is_300s(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """Without a timeout, wait() gives up after 300 s."""
        status = await _submit(flavor, client)
        api.queue(*[status_answer("PROCESSING")] * 400)
        with pytest.raises(APITimeoutError):
            await flavor.call(status.wait)
        assert sum(clock.sleeps) == pytest.approx(300)

    async def test_never_sleeps_past_the_deadline(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """The last sleep is cut to end at the deadline, where one last poll happens."""
        status = await _submit(flavor, client)
        api.queue(*[status_answer("PROCESSING")] * 10)
        with pytest.raises(APITimeoutError):
            await flavor.call(status.wait, timeout=2.0)
        assert clock.sleeps == [1.0, 1.0]  # 1 s, then 1.5 s cut to the remaining 1 s
        assert len(api.seen) == 1 + 2  # the submission, then a poll after each sleep

    async def test_success_at_the_deadline_is_returned(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """A poll exactly at the deadline that sees SUCCESS wins over the timeout."""
        status = await _submit(flavor, client)
        api.queue(status_answer("PROCESSING"), status_answer("SUCCESS"))
        result = await flavor.call(status.wait, timeout=2.0)
        assert result.is_success()

    async def test_fixed_poll_interval(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """An explicit poll_interval is used for every poll."""
        status = await _submit(flavor, client, file=PDF)
        api.queue(*[status_answer("PROCESSING")] * 3, status_answer("SUCCESS"))
        await flavor.call(status.wait, poll_interval=0.25)
        assert clock.sleeps == [0.25] * 4

    @pytest.mark.parametrize("interval", [0, -1])
    async def test_poll_interval_must_be_positive(
        self,
        flavor: Flavor,
        client: Client | AsyncClient,
        api: FakeAPI,
        clock: FakeClock,
        interval: float,
    ) -> None:
        """A zero or negative poll_interval (a busy loop) is a ValueError before polling."""
        status = await _submit(flavor, client)
        with pytest.raises(ValueError, match="poll_interval"):
            await flavor.call(status.wait, poll_interval=interval)
        assert len(api.seen) == 1


class TestAdaptiveSchedule:
    async def test_small_image(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """A small image is polled at 1 s growing to 2 s."""
        status = await _submit(flavor, client, file=PNG)
        api.queue(*[status_answer("PROCESSING")] * 4, status_answer("SUCCESS"))
        await flavor.call(status.wait)
        assert clock.sleeps == [1.0, 1.5, 2.0, 2.0, 2.0]

    async def test_pdf(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """A PDF is polled at 3 s growing to 5 s."""
        status = await _submit(flavor, client, file=PDF)
        api.queue(*[status_answer("PROCESSING")] * 3, status_answer("SUCCESS"))
        await flavor.call(status.wait)
        assert clock.sleeps == [3.0, 4.5, 5.0, 5.0]

    async def test_large_image(
        self,
        flavor: Flavor,
        client: Client | AsyncClient,
        api: FakeAPI,
        clock: FakeClock,
        tmp_path: Path,
    ) -> None:
        """An image over 5 MB is polled like a large document."""
        path = tmp_path / "big.png"
        with path.open("wb") as handle:
            handle.write(PNG)
            handle.truncate(5 * 1024 * 1024 + 1)
        status = await _submit(flavor, client, file=path)
        api.queue(status_answer("PROCESSING"), status_answer("SUCCESS"))
        await flavor.call(status.wait)
        assert clock.sleeps == [3.0, 4.5]

    async def test_unknown_upload(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """A status from get_status (upload unknown) uses the small-document schedule."""
        api.queue(
            status_answer("PROCESSING"), status_answer("PROCESSING"), status_answer("SUCCESS")
        )
        status = await flavor.call(client.steps.get_status, "exec_1")
        await flavor.call(status.wait)
        assert clock.sleeps == [1.0, 1.5]

    async def test_polled_statuses_keep_the_upload_hints(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """The final status still knows the upload, so waiting on it again stays adaptive."""
        status = await _submit(flavor, client, file=PDF)
        api.queue(status_answer("SUCCESS"))
        result = await flavor.call(status.wait)
        assert (result._upload_content_type, result._upload_size) == ("application/pdf", len(PDF))


class TestAsyncWaiting:
    async def test_async_on_status_is_awaited(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """wait_async (and the async client's wait) await an async on_status."""
        status = await _submit(flavor, client)
        api.queue(status_answer("PROCESSING"), status_answer("SUCCESS"))
        seen: list[str] = []

        async def record(polled: StepExecutionStatus) -> None:
            await asyncio.sleep(0)
            seen.append(polled.status)

        await status.wait_async(on_status=record)
        assert seen == ["PROCESSING", "SUCCESS"]

    async def test_sync_status_wait_async_polls_in_a_thread(
        self, api: FakeAPI, clock: FakeClock
    ) -> None:
        """A sync status's wait_async runs each status request off the event loop's thread."""
        flavor = Flavor("sync", api)
        status = await _submit(flavor, flavor.make())
        api.queue(status_answer("SUCCESS"))
        loop_thread = threading.current_thread()
        threads: list[threading.Thread] = []
        original = api.handle

        def spy(request: Any) -> Any:
            threads.append(threading.current_thread())
            return original(request)

        api.handle = spy  # type: ignore[method-assign]
        result = await status.wait_async()
        assert result.is_success()
        assert threads
        assert loop_thread not in threads
        await flavor.close()

    async def test_async_wait_is_a_coroutine(
        self, flavor: Flavor, client: Client | AsyncClient, clock: FakeClock
    ) -> None:
        """On AsyncClient statuses, wait() itself must be awaited."""
        status = await _submit(flavor, client)
        outcome = status.wait()
        assert asyncio.iscoroutine(outcome) is flavor.is_async
        if asyncio.iscoroutine(outcome):
            await outcome
