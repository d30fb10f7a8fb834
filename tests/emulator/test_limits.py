"""Tests of the emulator's document limits and content-type sniffing."""

from __future__ import annotations

import pytest

from docutray_watch.emulator import MAX_FILE_SIZE, SUPPORTED_CONTENT_TYPES, sniff_content_type


class TestSniffContentType:
    @pytest.mark.parametrize(
        ("head", "expected"),
        [
            (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
            (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
            (b"GIF87a\x01\x00", "image/gif"),
            (b"GIF89a\x01\x00", "image/gif"),
            (b"BM\x36\x00\x00\x00", "image/bmp"),
            (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
            (b"%PDF-1.7\n", "application/pdf"),
        ],
    )
    def test_recognises_supported_magic(self, head: bytes, expected: str) -> None:
        """Each supported format is recognised from its magic bytes."""
        assert sniff_content_type(head) == expected

    def test_finds_pdf_header_after_leading_junk(self) -> None:
        """A PDF header within the first 1024 bytes is recognised."""
        assert sniff_content_type(b"\x00" * 1000 + b"%PDF-1.4") == "application/pdf"

    def test_ignores_pdf_header_beyond_1024_bytes(self) -> None:
        """A PDF header starting after the first 1024 bytes is not recognised."""
        assert sniff_content_type(b"\x00" * 1024 + b"%PDF-1.4") is None

    @pytest.mark.parametrize(
        "head", [b"hello, world", b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"GIF90a"]
    )
    def test_rejects_unknown_bytes(self, head: bytes) -> None:
        """Text, empty input and look-alike signatures are not recognised."""
        assert sniff_content_type(head) is None


class TestLimits:
    def test_max_file_size_is_100_mib(self) -> None:
        """The default size limit is the service's 100 MB."""
        assert MAX_FILE_SIZE == 100 * 1024 * 1024

    def test_supported_types_match_the_api_reference(self) -> None:
        """The supported types are exactly the six formats of the API reference."""
        assert {
            "image/jpeg",
            "image/png",
            "image/gif",
            "image/bmp",
            "image/webp",
            "application/pdf",
        } == SUPPORTED_CONTENT_TYPES
