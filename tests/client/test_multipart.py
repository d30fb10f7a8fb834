"""The hand-built multipart body: framing, exact length, streaming, file handles, async reads."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from docutray_watch.client import _files
from docutray_watch.client._files import prepare_file
from docutray_watch.client._multipart import MultipartBody

from .conftest import PDF, parse_multipart


class _ThreadSpy(io.BytesIO):
    """A seekable binary file that records which threads read it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.threads: set[threading.Thread] = set()

    def read(self, size: int | None = -1) -> bytes:
        self.threads.add(threading.current_thread())
        return super().read(size)


class TestMultipartBody:
    def test_framing_and_length(self, pdf_path: Path) -> None:
        """Fields then the image part, closing boundary, and an exact Content-Length."""
        body = MultipartBody(prepare_file(pdf_path), fields={"document_metadata": '{"a": 1}'})
        stream = body.sync_stream()
        data = b"".join(stream)
        stream.close()
        assert body.headers["Content-Length"] == str(len(data)) == str(body.content_length)
        parts = parse_multipart(body.headers["Content-Type"], data)
        assert list(parts) == ["document_metadata", "image"]
        assert parts["document_metadata"].data == b'{"a": 1}'
        assert parts["image"].data == PDF
        assert parts["image"].filename == "invoice.pdf"

    def test_boundaries_differ(self, pdf_path: Path) -> None:
        """Each body gets a fresh random boundary."""
        source = prepare_file(pdf_path)
        assert MultipartBody(source).boundary != MultipartBody(source).boundary

    @pytest.mark.parametrize(
        ("filename", "quoted"),
        [
            ('a"b.pdf', "a%22b.pdf"),
            ("line\r\nbreak.pdf", "line%0D%0Abreak.pdf"),
            ("ñ.pdf", "ñ.pdf"),
        ],
    )
    def test_filename_is_escaped(self, filename: str, quoted: str) -> None:
        """Quotes and control characters in the filename cannot break the part header."""
        body = MultipartBody(prepare_file(PDF, filename=filename))
        data = b"".join(body.sync_stream())
        assert parse_multipart(body.headers["Content-Type"], data)["image"].filename == quoted

    def test_path_handle_closed_after_each_attempt(self, pdf_path: Path) -> None:
        """close() releases the file the attempt opened, even if streaming stopped early."""
        body = MultipartBody(prepare_file(pdf_path))
        stream = body.sync_stream()
        iterator = iter(stream)
        next(iterator)
        stream.close()
        handle = stream._opened.close.__self__  # type: ignore[attr-defined]
        assert handle.closed

    def test_unknown_size_has_no_length(self) -> None:
        """A stream of unknown size has no Content-Length (httpx sends it chunked)."""
        pipe = io.BufferedReader(io.BytesIO(PDF))
        pipe.seekable = lambda: False  # type: ignore[method-assign]
        body = MultipartBody(prepare_file(pipe))
        assert body.content_length is None
        assert "Content-Length" not in body.headers

    async def test_async_stream_matches_sync(self, pdf_path: Path) -> None:
        """The async body is byte for byte the sync body."""
        body = MultipartBody(prepare_file(pdf_path), fields={"k": "v"})
        sync_data = b"".join(body.sync_stream())
        stream = await body.async_stream()
        async_data = b"".join([chunk async for chunk in stream])
        stream.close()
        assert async_data == sync_data

    async def test_async_reads_run_off_the_event_loop(self) -> None:
        """Every read of the async body's file happens in a worker thread."""
        spy = _ThreadSpy(PDF + b"\x00" * (2 * _files.CHUNK_SIZE))
        source = prepare_file(spy)
        spy.threads.clear()  # the size/type check ran here, before streaming
        stream = await MultipartBody(source).async_stream()
        chunks = [chunk async for chunk in stream]
        assert len(chunks) >= 4  # preamble, several file chunks, epilogue
        assert spy.threads
        assert threading.current_thread() not in spy.threads
