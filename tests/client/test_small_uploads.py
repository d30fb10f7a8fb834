"""Small documents (up to ``SMALL_FILE_SIZE``) go out as one body read in one worker-thread trip.

Checked here: the one-piece body is byte for byte what the streamed path sends, the threshold
is exact, a file that changes size between the check and the read is refused, and a retry reads
the file again (streamed) instead of resending what the first attempt read.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from docutray_watch.client import (
    AiohttpTransport,
    AsyncClient,
    Client,
    InvalidDocumentError,
    RetryInfo,
    _base,
    _files,
)
from docutray_watch.client._files import SMALL_FILE_SIZE
from docutray_watch.emulator import EmulatorServer
from docutray_watch.testing import EmulatorFactory

from .conftest import API_KEY, BASE_URL, PNG, FakeAPI, FakeTransport, json_response, parse_multipart

T = TypeVar("T")

METADATA = {"source": "scanner-3"}


class KindRecorder(FakeTransport):
    """The fake API's transport, noting whether each request body was one piece (in memory)."""

    def __init__(self, api: FakeAPI) -> None:
        super().__init__(api)
        self.one_piece: list[bool] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.one_piece.append(isinstance(request.stream, httpx.ByteStream))
        return super().handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.one_piece.append(isinstance(request.stream, httpx.ByteStream))
        return await super().handle_async_request(request)


@pytest.fixture(name="recorder")
def recorder_fixture(api: FakeAPI) -> KindRecorder:
    """A recording transport on the fake API."""
    return KindRecorder(api)


@pytest.fixture(name="client")
async def client_fixture(recorder: KindRecorder) -> AsyncIterator[AsyncClient]:
    """AsyncClient on the recording transport."""
    async with httpx.AsyncClient(transport=recorder) as http:
        yield AsyncClient(api_key=API_KEY, base_url=BASE_URL, http_client=http)


def document_of(size: int, salt: bytes = b"") -> bytes:
    """A PNG-looking document of exactly ``size`` bytes, its content depending on ``salt``."""
    filler = hashlib.sha256(salt).digest() * (size // 32 + 1)
    return (PNG + filler)[:size]


def normalised(api: FakeAPI, index: int) -> tuple[str, bytes]:
    """The content type and body of request ``index``, with its boundary replaced."""
    seen = api.seen[index]
    boundary = seen.headers["content-type"].split("boundary=", 1)[1]
    return (
        seen.headers["content-type"].replace(boundary, "BOUNDARY"),
        seen.body.replace(boundary.encode(), b"BOUNDARY"),
    )


def _error_503() -> httpx.Response:
    return json_response(503, {"error": {"message": "busy"}})


class TestOnePieceBody:
    @pytest.mark.parametrize(
        ("size", "one_piece"),
        [(1000, True), (SMALL_FILE_SIZE, True), (SMALL_FILE_SIZE + 1, False)],
        ids=["small", "at-threshold", "just-over"],
    )
    async def test_threshold(
        self,
        client: AsyncClient,
        recorder: KindRecorder,
        api: FakeAPI,
        tmp_path: Path,
        size: int,
        one_piece: bool,
    ) -> None:
        """Up to SMALL_FILE_SIZE is one in-memory body, one byte more is streamed."""
        path = tmp_path / "scan.png"
        path.write_bytes(document_of(size))
        await client.steps.run_async("step_1", file=path, document_metadata=METADATA)
        assert recorder.one_piece == [one_piece]
        (seen,) = api.seen
        assert seen.headers["content-length"] == str(len(seen.body))
        parts = parse_multipart(seen.headers["content-type"], seen.body)
        assert parts["image"].data == path.read_bytes()

    async def test_same_bytes_as_the_streamed_path(
        self,
        client: AsyncClient,
        api: FakeAPI,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The one-piece body equals the streamed one byte for byte (boundary aside)."""
        path = tmp_path / "scan.png"
        path.write_bytes(document_of(SMALL_FILE_SIZE))
        await client.steps.run_async("step_1", file=path, document_metadata=METADATA)
        monkeypatch.setattr(_files, "SMALL_FILE_SIZE", 0)  # the same file, streamed this time
        await client.steps.run_async("step_1", file=path, document_metadata=METADATA)
        one_piece, streamed = normalised(api, 0), normalised(api, 1)
        assert one_piece == streamed
        parts = parse_multipart(api.seen[0].headers["content-type"], api.seen[0].body)
        assert list(parts) == ["document_metadata", "image"]
        assert parts["image"].filename == "scan.png"
        assert parts["image"].headers["Content-Type"] == "image/png"

    @pytest.mark.parametrize("size", [SMALL_FILE_SIZE, SMALL_FILE_SIZE + 1])
    def test_sync_client_bytes(self, api: FakeAPI, recorder: KindRecorder, size: int) -> None:
        """Client sends small bytes in one piece too (they are in memory), larger ones streamed."""
        data = document_of(size)
        with httpx.Client(transport=recorder) as http:
            Client(api_key=API_KEY, base_url=BASE_URL, http_client=http).steps.run_async(
                "step_1", file=data
            )
        assert recorder.one_piece == [size <= SMALL_FILE_SIZE]
        image = parse_multipart(api.seen[0].headers["content-type"], api.seen[0].body)["image"]
        assert image.data == data


class TestWorkerThreadTrips:
    @pytest.mark.parametrize(
        ("size", "trips"),
        [(SMALL_FILE_SIZE, 1), (SMALL_FILE_SIZE + 1, 4)],
        ids=["small", "just-over"],
    )
    async def test_trips(
        self,
        client: AsyncClient,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        size: int,
        trips: int,
    ) -> None:
        """A small file costs one worker-thread trip, a larger one four."""
        path = tmp_path / "scan.png"
        path.write_bytes(document_of(size))
        calls: list[str] = []
        real_to_thread = asyncio.to_thread

        async def counting(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
            calls.append(getattr(function, "__name__", type(function).__name__))
            return await real_to_thread(function, *args, **kwargs)

        monkeypatch.setattr(asyncio, "to_thread", counting)
        await client.steps.run_async("step_1", file=path)
        assert len(calls) == trips, calls


class TestChangedFiles:
    @pytest.mark.parametrize("change", ["grown", "shrunk"])
    async def test_change_between_check_and_read(
        self,
        client: AsyncClient,
        api: FakeAPI,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        change: str,
    ) -> None:
        """A size change between the check and the read is refused; nothing is sent."""
        path = tmp_path / "scan.png"
        original = document_of(5000)
        path.write_bytes(original)
        check = _files.prepare_file

        def check_then_change(file: Any, **kwargs: Any) -> _files.UploadSource:
            source = check(file, **kwargs)  # size and type are taken here...
            path.write_bytes(original + b"more" if change == "grown" else original[:-1])
            return source  # ...and the file is read right after

        monkeypatch.setattr(_base, "prepare_file", check_then_change)
        with pytest.raises(InvalidDocumentError, match="changed size"):
            await client.steps.run_async("step_1", file=path)
        assert api.seen == []


class TestRetries:
    async def test_retry_reads_the_file_again(
        self, recorder: KindRecorder, api: FakeAPI, tmp_path: Path
    ) -> None:
        """A retry streams the file again from disk instead of resending the first read."""
        path = tmp_path / "scan.png"
        path.write_bytes(document_of(5000, b"first"))

        def rewrite(info: RetryInfo) -> None:
            path.write_bytes(document_of(5000, b"second"))

        api.queue(_error_503())
        async with httpx.AsyncClient(transport=recorder) as http:
            client = AsyncClient(
                api_key=API_KEY, base_url=BASE_URL, http_client=http, on_retry=rewrite
            )
            await client.steps.run_async("step_1", file=path)
        assert recorder.one_piece == [True, False]
        images = [
            parse_multipart(s.headers["content-type"], s.body)["image"].data for s in api.seen
        ]
        assert images == [document_of(5000, b"first"), document_of(5000, b"second")]

    async def test_retry_bodies_match(
        self, client: AsyncClient, api: FakeAPI, tmp_path: Path
    ) -> None:
        """Unchanged, the retried (streamed) body is identical to the first (one-piece) one."""
        path = tmp_path / "scan.png"
        path.write_bytes(document_of(SMALL_FILE_SIZE))
        api.queue(_error_503())
        await client.steps.run_async("step_1", file=path, document_metadata=METADATA)
        assert len(api.seen) == 2
        assert api.seen[0].headers == api.seen[1].headers
        assert api.seen[0].body == api.seen[1].body

    async def test_size_change_before_retry(
        self, recorder: KindRecorder, api: FakeAPI, tmp_path: Path
    ) -> None:
        """A file that changed size before the retry is refused, not sent cut or padded."""
        path = tmp_path / "scan.png"
        path.write_bytes(document_of(5000))

        def grow(info: RetryInfo) -> None:
            path.write_bytes(document_of(6000))

        api.queue(_error_503())
        async with httpx.AsyncClient(transport=recorder) as http:
            client = AsyncClient(
                api_key=API_KEY, base_url=BASE_URL, http_client=http, on_retry=grow
            )
            with pytest.raises(InvalidDocumentError, match="changed size"):
                await client.steps.run_async("step_1", file=path)
        assert len(api.seen) == 1


class TestOnTheWire:
    @pytest.mark.parametrize("size", [SMALL_FILE_SIZE, SMALL_FILE_SIZE + 1])
    async def test_emulator_receives_the_file(
        self, emulator_factory: EmulatorFactory, tmp_path: Path, size: int
    ) -> None:
        """At and just over the threshold the emulator hashes exactly the file."""
        emu: EmulatorServer = emulator_factory(api_key=API_KEY, latency=0.01)
        path = tmp_path / "scan.png"
        path.write_bytes(document_of(size))
        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            client = AsyncClient(api_key=API_KEY, base_url=emu.base_url, http_client=http)
            status = await client.steps.run_async("step_1", file=path)
            result = await status.wait(poll_interval=0.02, timeout=10)
        assert result.data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert result.data["size"] == size
