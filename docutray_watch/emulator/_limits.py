"""Document limits of the DocuTray API: accepted types, maximum size, type sniffing.

The emulator keeps its own copy so it does not depend on the client package.
"""

from __future__ import annotations

MAX_FILE_SIZE = 100 * 1024 * 1024
"""Largest document the service accepts, in bytes (100 MB)."""

SUPPORTED_CONTENT_TYPES: frozenset[str] = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/bmp",
        "image/webp",
        "application/pdf",
    }
)
"""Content types the service processes."""

SNIFF_HEAD_SIZE = 1024
"""How many leading bytes `sniff_content_type` looks at (a PDF header may sit after junk)."""

_PREFIX_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def sniff_content_type(head: bytes) -> str | None:
    """Return the supported content type that the leading bytes `head` announce, if any."""
    for signature, content_type in _PREFIX_SIGNATURES:
        if head.startswith(signature):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if b"%PDF-" in head[:SNIFF_HEAD_SIZE]:
        return "application/pdf"
    return None
