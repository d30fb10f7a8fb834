"""Small, real sample documents made on the fly (for the demo, tests and benchmarks).

`make_pdf()` writes a valid one-page PDF (correct cross-reference table) with a few lines of
text; `make_png()` a valid RGB PNG. Both are deterministic for the same arguments, and `padding`
grows a PDF to a given size (a comment stream) for large-upload tests without changing validity.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["make_pdf", "make_png", "write_pdf", "write_png"]


def _pdf_text(lines: Iterable[str]) -> bytes:
    ops = ["BT", "/F1 14 Tf", "72 760 Td", "18 TL"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(f"({escaped}) Tj T*")
    ops.append("ET")
    return "\n".join(ops).encode("latin-1", errors="replace")


def make_pdf(lines: Iterable[str] = ("docutray-watch sample",), *, padding: int = 0) -> bytes:
    """A one-page PDF showing `lines`; `padding` extra bytes go into an unused stream."""
    content = _pdf_text(lines)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if padding > 0:
        filler = b"0" * padding
        objects.append(b"<< /Length %d >>\nstream\n" % len(filler) + filler + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(
    width: int = 32, height: int = 32, *, color: tuple[int, int, int] = (40, 90, 160)
) -> bytes:
    """An RGB PNG of one color with a lighter diagonal, `width` x `height` pixels."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            if x == y:
                rows += bytes(min(255, c + 80) for c in color)
            else:
                rows += bytes(color)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _chunk(b"IEND", b"")
    )


def write_pdf(
    path: Path, lines: Iterable[str] = ("docutray-watch sample",), *, padding: int = 0
) -> Path:
    """Write `make_pdf(...)` to `path`."""
    path.write_bytes(make_pdf(lines, padding=padding))
    return path


def write_png(
    path: Path, width: int = 32, height: int = 32, **kwargs: tuple[int, int, int]
) -> Path:
    """Write `make_png(...)` to `path`."""
    path.write_bytes(make_png(width, height, **kwargs))
    return path
