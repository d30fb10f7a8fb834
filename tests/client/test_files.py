"""Local document checks: type sniffing, size limit, input kinds, base64 validation."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from docutray_watch.client import (
    MAX_FILE_SIZE,
    SUPPORTED_CONTENT_TYPES,
    FileTooLargeError,
    InvalidDocumentError,
    UnsupportedFileTypeError,
    _files,
    sniff_content_type,
)
from docutray_watch.client._files import prepare_base64, prepare_file

from .conftest import PDF, PNG


def _drain(source: _files.UploadSource) -> bytes:
    opened = source.open_sync()
    try:
        return b"".join(opened.chunks)
    finally:
        opened.close()


class TestSniffContentType:
    @pytest.mark.parametrize(
        ("head", "expected"),
        [
            (b"\xff\xd8\xff\xdb rest", "image/jpeg"),
            (b"\x89PNG\r\n\x1a\n rest", "image/png"),
            (b"GIF87a rest", "image/gif"),
            (b"GIF89a rest", "image/gif"),
            (b"BM rest", "image/bmp"),
            (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
            (b"%PDF-1.7\n", "application/pdf"),
            (b"\x00" * 1000 + b"%PDF-1.4", "application/pdf"),
            (b"RIFF\x10\x00\x00\x00WAVEfmt ", None),
            (b"\x89PNG\r\n", None),
            (b"GIF88a", None),
            (b"hello world", None),
            (b"", None),
        ],
    )
    def test_magic_bytes(self, head: bytes, expected: str | None) -> None:
        """Each supported type is recognised by its magic bytes; anything else is None."""
        assert sniff_content_type(head) == expected

    def test_pdf_marker_only_within_first_kib(self) -> None:
        """``%PDF-`` counts within the first 1024 bytes only."""
        assert sniff_content_type(b"\x00" * 1019 + b"%PDF-") == "application/pdf"
        assert sniff_content_type(b"\x00" * 1020 + b"%PDF-") is None

    def test_constants(self) -> None:
        """The limit is 100 MiB and the six documented types are supported."""
        assert MAX_FILE_SIZE == 100 * 1024 * 1024
        assert {
            "image/jpeg",
            "image/png",
            "image/gif",
            "image/bmp",
            "image/webp",
            "application/pdf",
        } == SUPPORTED_CONTENT_TYPES


class TestPrepareFile:
    def test_path(self, pdf_path: Path) -> None:
        """A path gives its name, sniffed type and size, and streams its bytes."""
        source = prepare_file(pdf_path)
        assert (source.filename, source.content_type, source.size) == (
            "invoice.pdf",
            "application/pdf",
            len(PDF),
        )
        assert source.document == str(pdf_path)
        assert _drain(source) == _drain(source) == PDF

    def test_streams_in_chunks(self, tmp_path: Path) -> None:
        """A file is read in chunks of at most CHUNK_SIZE, never whole."""
        path = tmp_path / "big.pdf"
        path.write_bytes(PDF + b"\x00" * (3 * _files.CHUNK_SIZE))
        opened = prepare_file(path).open_sync()
        sizes = [len(chunk) for chunk in opened.chunks]
        opened.close()
        assert max(sizes) <= _files.CHUNK_SIZE
        assert sum(sizes) == path.stat().st_size

    def test_file_changed_before_upload(self, pdf_path: Path) -> None:
        """A file whose size changed since the check is refused when the attempt opens it."""
        source = prepare_file(pdf_path)
        pdf_path.write_bytes(PDF + b"more")
        with pytest.raises(InvalidDocumentError, match="changed size"):
            source.open_sync()

    def test_file_grew_during_upload(self, pdf_path: Path) -> None:
        """A file that grows while being streamed fails instead of sending a truncated copy."""
        source = prepare_file(pdf_path)
        opened = source.open_sync()
        first = next(opened.chunks)
        with pdf_path.open("ab") as handle:
            handle.write(b"appended")
        with pytest.raises(InvalidDocumentError, match="changed size"):
            list(opened.chunks)
        opened.close()
        assert first == PDF

    def test_text_mode_file_rejected(self, tmp_path: Path) -> None:
        """A file object opened in text mode is a TypeError."""
        path = tmp_path / "a.pdf"
        path.write_bytes(PDF)
        with path.open() as handle, pytest.raises(TypeError, match="binary mode"):
            prepare_file(handle)  # type: ignore[arg-type]

    def test_not_a_document(self) -> None:
        """Other objects are a TypeError."""
        with pytest.raises(TypeError, match="path"):
            prepare_file(12)  # type: ignore[arg-type]

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty file is refused."""
        path = tmp_path / "empty.pdf"
        path.touch()
        with pytest.raises(InvalidDocumentError, match="empty"):
            prepare_file(path, content_type="application/pdf")

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing path raises FileNotFoundError, like open() would."""
        with pytest.raises(FileNotFoundError):
            prepare_file(tmp_path / "missing.pdf")

    def test_oversize_bytes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Bytes over the limit are refused with the size and the limit."""
        monkeypatch.setattr(_files, "MAX_FILE_SIZE", 100)
        with pytest.raises(FileTooLargeError) as caught:
            prepare_file(PDF)
        assert (caught.value.size, caught.value.limit) == (len(PDF), 100)

    def test_explicit_type_wins(self) -> None:
        """An explicit supported content type overrides the sniffed one."""
        assert prepare_file(PNG, content_type="image/webp").content_type == "image/webp"

    @pytest.mark.parametrize("given", ["text/plain", "image/tiff", "application/octet-stream"])
    def test_explicit_type_must_be_supported(self, given: str) -> None:
        """An explicit content type outside the list is refused, naming it."""
        with pytest.raises(UnsupportedFileTypeError, match=given) as caught:
            prepare_file(PDF, content_type=given)
        assert caught.value.content_type == given

    def test_named_file_object(self, pdf_path: Path) -> None:
        """A file object's name gives the part's filename; it is not closed."""
        with pdf_path.open("rb") as handle:
            source = prepare_file(handle)
            assert source.filename == "invoice.pdf"
            assert _drain(source) == PDF
            assert not handle.closed

    def test_non_seekable_stream_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A stream of unknown size is cut off with FileTooLargeError once over the limit."""

        class Pipe(io.RawIOBase):
            def __init__(self) -> None:
                self._data = io.BytesIO(PDF * 4)

            def readable(self) -> bool:
                return True

            def read(self, size: int = -1) -> bytes:
                return self._data.read(size)

        monkeypatch.setattr(_files, "MAX_FILE_SIZE", len(PDF) * 2)
        source = prepare_file(Pipe())  # type: ignore[arg-type]  # raw streams work too
        assert source.size is None
        with pytest.raises(FileTooLargeError):
            _drain(source)
        assert not source.replayable


class TestPrepareBase64:
    def test_plain(self) -> None:
        """Plain base64: decoded size from the length, type sniffed from the decoded head."""
        encoded = base64.b64encode(PDF).decode()
        document = prepare_base64(encoded)
        assert document.size == len(PDF)
        assert document.fields == {"image_base64": encoded, "image_content_type": "application/pdf"}

    @pytest.mark.parametrize("length", [1, 2, 3, 1500])
    def test_size_with_padding(self, length: int) -> None:
        """The decoded size is exact whatever the padding."""
        data = PNG[:length] if length <= len(PNG) else PNG + b"\x00" * (length - len(PNG))
        encoded = base64.b64encode(data).decode()
        assert prepare_base64(encoded, content_type="image/png").size == length

    def test_line_breaks_are_allowed(self) -> None:
        """MIME-style base64 with line breaks is accepted."""
        encoded = base64.encodebytes(PDF).decode()
        assert "\n" in encoded
        assert prepare_base64(encoded).size == len(PDF)

    def test_data_uri(self) -> None:
        """A data URI's own type is used and it is sent whole."""
        uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
        document = prepare_base64(uri)
        assert document.content_type == "image/png"
        assert document.fields == {"image_base64": uri}

    def test_data_uri_unsupported_type(self) -> None:
        """A data URI declaring an unsupported type is refused."""
        uri = "data:text/plain;base64," + base64.b64encode(b"hello").decode()
        with pytest.raises(UnsupportedFileTypeError):
            prepare_base64(uri)

    @pytest.mark.parametrize(
        "data", ["not base64!", "JVBERi0", "data:image/png,raw", "data:;base64"]
    )
    def test_invalid(self, data: str) -> None:
        """Malformed base64 or data URIs are InvalidDocumentError (a ValueError)."""
        with pytest.raises(InvalidDocumentError):
            prepare_base64(data)

    def test_oversize(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Base64 decoding to more than the limit is refused without decoding it all."""
        monkeypatch.setattr(_files, "MAX_FILE_SIZE", 1000)
        with pytest.raises(FileTooLargeError):
            prepare_base64(base64.b64encode(PDF).decode())
