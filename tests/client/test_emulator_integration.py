"""The client against the local emulator over loopback HTTP: round trips, ERROR results, faults."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from docutray_watch.client import (
    APIConnectionError,
    AsyncClient,
    AsyncPage,
    AuthenticationError,
    Client,
    InternalServerError,
    RateLimitError,
    _retry,
)
from docutray_watch.emulator import ERROR_MARKER, EmulatorServer
from docutray_watch.testing import EmulatorFactory

from .conftest import PDF, PNG

KEY = "sk_test_integration_key"


class Harness:
    """A Client or an AsyncClient on an emulator; ``call`` awaits only what needs awaiting."""

    def __init__(self, kind: str, emulator: EmulatorServer, **options: Any) -> None:
        client_class = AsyncClient if kind == "async" else Client
        self.client: Client | AsyncClient = client_class(
            api_key=emulator.api_key, base_url=emulator.base_url, **options
        )

    @staticmethod
    async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    async def run(self, **inputs: Any) -> Any:
        return await self.call(self.client.steps.run_async, "step_abc123", **inputs)

    async def finish(self, status: Any) -> Any:
        return await self.call(status.wait, poll_interval=0.02, timeout=10)


@pytest.fixture(name="emu")
def emu_fixture(emulator_factory: EmulatorFactory) -> EmulatorServer:
    """An emulator with a short latency and a known key."""
    return emulator_factory(api_key=KEY, latency=0.05)


@pytest.fixture(name="kind", params=["sync", "async"])
def kind_fixture(request: pytest.FixtureRequest) -> str:
    """Each test runs with Client and with AsyncClient."""
    return str(request.param)


@pytest.fixture(name="harness")
async def harness_fixture(kind: str, emu: EmulatorServer) -> AsyncIterator[Harness]:
    """A client of the current kind on the emulator, closed afterwards."""
    harness = Harness(kind, emu)
    yield harness
    await harness.call(harness.client.close)


def _first_server_error_seed(emu: EmulatorServer, wanted: int) -> int:
    """A dice seed whose first injected server error is ``wanted`` (found by asking the
    emulator itself, so the test does not depend on how it rolls)."""
    emu.configure(server_error_rate=1.0)
    with httpx.Client(base_url=emu.base_url) as probe:
        for seed in range(500):
            emu.configure(seed=seed)
            emu.reset()
            answer = probe.get("/api/steps-async/status/probe")
            if answer.status_code == wanted:
                emu.reset()  # replay the same dice for the test
                return seed
    raise AssertionError(f"no seed gives {wanted} first")


class TestRoundTrips:
    @pytest.mark.parametrize("input_kind", ["path", "bytes", "base64", "data uri", "url"])
    async def test_submit_and_wait(
        self, harness: Harness, emu: EmulatorServer, tmp_path: Path, input_kind: str
    ) -> None:
        """Each input kind goes through the emulator to SUCCESS, with the document intact."""
        path = tmp_path / "document.pdf"
        path.write_bytes(PDF)
        inputs_by_kind: dict[str, dict[str, Any]] = {
            "path": {"file": path},
            "bytes": {"file": PDF},
            "base64": {"file_base64": base64.b64encode(PDF).decode()},
            "data uri": {
                "file_base64": "data:application/pdf;base64," + base64.b64encode(PDF).decode()
            },
            "url": {"url": "https://example.com/document.pdf"},
        }
        inputs = inputs_by_kind[input_kind]
        status = await harness.run(document_metadata={"source": "test"}, **inputs)
        assert status.status == "ENQUEUED"
        result = await harness.finish(status)
        assert result.is_success()
        assert result.execution_id == status.execution_id
        if input_kind != "url":
            assert result.data["sha256"] == hashlib.sha256(PDF).hexdigest()
            assert result.data["size"] == len(PDF)
        assert result.model_extra is not None  # the emulator's extra fields were kept

    async def test_large_upload_streams_intact(
        self, harness: Harness, emu: EmulatorServer, tmp_path: Path
    ) -> None:
        """A multi-chunk file arrives byte for byte (the emulator hashes what it received)."""
        path = tmp_path / "scan.png"
        path.write_bytes(PNG + bytes(range(256)) * (3 * 4096 + 7))
        result = await harness.finish(await harness.run(file=path))
        assert result.data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert result.original_filename == "scan.png"

    async def test_error_result(self, harness: Harness) -> None:
        """A document carrying the ERROR marker ends as an ERROR status with a message."""
        result = await harness.finish(await harness.run(file=PDF + ERROR_MARKER))
        assert result.is_error()
        assert not result.is_success()
        assert result.error

    async def test_raw_response(self, harness: Harness) -> None:
        """A raw response carries the emulator's request id and parses to the status."""
        raw = await harness.call(
            harness.client.steps.with_raw_response.run_async, "step_1", file=PNG
        )
        assert raw.status_code == 200
        assert raw.headers["x-request-id"].startswith("req_")
        assert raw.parse().status == "ENQUEUED"


class TestFaults:
    async def test_drop_after_accept_is_not_retried(
        self, harness: Harness, emu: EmulatorServer
    ) -> None:
        """A POST dropped after acceptance raises request_sent=True and is not resent."""
        emu.configure(drop_after_accept_rate=1.0)
        with pytest.raises(APIConnectionError) as caught:
            await harness.run(file=PDF)
        assert caught.value.request_sent is True
        stats = emu.stats(include_executions=False)
        assert (stats.posts, stats.executions_created, stats.resubmissions) == (1, 1, 0)

    async def test_dropped_post_is_not_retried(self, harness: Harness, emu: EmulatorServer) -> None:
        """A POST whose connection drops unanswered is ambiguous: raised, not resent."""
        emu.configure(drop_rate=1.0)
        with pytest.raises(APIConnectionError) as caught:
            await harness.run(file=PDF)
        assert caught.value.request_sent is True
        assert emu.stats(include_executions=False).posts == 1

    async def test_dropped_get_is_retried(self, harness: Harness, emu: EmulatorServer) -> None:
        """A status GET whose connection drops is retried up to max_retries."""
        status = await harness.run(file=PDF)
        emu.configure(drop_rate=1.0)
        with pytest.raises(APIConnectionError):
            await harness.call(harness.client.steps.get_status, status.execution_id)
        assert emu.stats(include_executions=False).status_gets == 3

    async def test_post_retried_after_503(self, kind: str, emu: EmulatorServer) -> None:
        """A POST answered 503 is sent again."""
        _first_server_error_seed(emu, 503)
        harness = Harness(kind, emu, max_retries=1)
        with pytest.raises(InternalServerError):
            await harness.run(file=PDF)
        await harness.call(harness.client.close)
        assert emu.stats(include_executions=False).posts == 2

    async def test_post_not_retried_after_500(self, kind: str, emu: EmulatorServer) -> None:
        """A POST answered 500 is not sent again (it may have been accepted)."""
        _first_server_error_seed(emu, 500)
        harness = Harness(kind, emu, max_retries=3)
        with pytest.raises(InternalServerError) as caught:
            await harness.run(file=PDF)
        await harness.call(harness.client.close)
        assert caught.value.status_code == 500
        assert emu.stats(include_executions=False).posts == 1

    async def test_get_retried_on_server_errors(
        self, harness: Harness, emu: EmulatorServer
    ) -> None:
        """Status GETs are retried on every injected 5xx."""
        status = await harness.run(file=PDF)
        emu.configure(server_error_rate=1.0)
        with pytest.raises(InternalServerError):
            await harness.call(harness.client.steps.get_status, status.execution_id)
        assert emu.stats(include_executions=False).status_gets == 3

    async def test_rate_limit_retry_after_is_obeyed(
        self, kind: str, emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A 429's Retry-After is really waited out before the POST is resent."""
        monkeypatch.setattr(_retry, "_sleep", time.sleep)
        monkeypatch.setattr(_retry, "_async_sleep", asyncio.sleep)
        emu.configure(rate_limit_rate=1.0, retry_after=0.2)  # the header says 1 s
        harness = Harness(kind, emu, max_retries=1)
        with pytest.raises(RateLimitError) as caught:
            await harness.run(file=PDF)
        await harness.call(harness.client.close)
        assert caught.value.retry_after == 1.0
        stats = emu.stats(include_executions=False)
        assert stats.posts == 2
        assert stats.retry_after_violations == 0

    async def test_wrong_key(self, kind: str, emu: EmulatorServer) -> None:
        """A wrong key gets AuthenticationError from the emulator, unretried."""
        client_class = AsyncClient if kind == "async" else Client
        client = client_class(api_key="wrong", base_url=emu.base_url)
        with pytest.raises(AuthenticationError):
            await Harness.call(client.steps.run_async, "step_1", file=PDF)
        await Harness.call(client.close)
        assert emu.stats(include_executions=False).posts == 1


class TestIdentifyRoundTrips:
    @pytest.mark.parametrize("id_field", ["identification_id", "id"])
    async def test_identify_async_and_wait(
        self, harness: Harness, emu: EmulatorServer, id_field: str
    ) -> None:
        """``identify.run_async`` then ``wait()`` reach the emulator's marker-decided type,
        whichever name the service gives the id."""
        emu.configure(identify_id_field=id_field)
        document = PDF + b"DOCUTRAY-EMULATOR:TYPE=receipt DOCUTRAY-EMULATOR:CONFIDENCE=0.7\n"
        client = harness.client
        started = await harness.call(
            client.identify.run_async, file=document, document_type_code_options=["receipt"]
        )
        assert started.status == "ENQUEUED"
        final = await harness.finish(started)
        assert final.is_success()
        assert final.identification_id == started.identification_id
        assert (final.document_type.code, final.document_type.confidence) == ("receipt", 0.7)
        assert final.alternatives == []

    async def test_identify_sync_with_every_input(self, harness: Harness) -> None:
        """``identify.run`` answers at once for a file, base64 and a URL."""
        client = harness.client
        by_file = await harness.call(client.identify.run, file=PNG)
        by_base64 = await harness.call(
            client.identify.run, file_base64=base64.b64encode(PDF).decode()
        )
        by_url = await harness.call(client.identify.run, url="https://example.com/scan.png")
        assert by_file.document_type.code == "receipt"
        assert by_base64.document_type.code == "invoice"
        assert by_url.document_type.code == "receipt"

    async def test_document_types_across_pages(self, harness: Harness) -> None:
        """``document_types.list`` pages over the emulator's catalogue."""
        page = await harness.call(harness.client.document_types.list, limit=4)
        if isinstance(page, AsyncPage):
            codes = [t.codeType async for t in page.auto_paging_iter_async()]
        else:
            codes = [t.codeType for t in page.auto_paging_iter()]
        assert codes[:2] == ["invoice", "receipt"]
        assert len(codes) == page.total == 6
        found = await harness.call(harness.client.document_types.list, search="bank")
        assert [t.name for t in found] == ["Bank statement"]
