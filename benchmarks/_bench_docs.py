"""Benchmark documents: small unique PNGs and large (sparse) PDFs.

Every document has different bytes, so docutray-watch's duplicate detection never short-cuts one,
and the same seeds give the same bytes: each tool gets its own identical copy of the set.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

__all__ = ["write_pdf", "write_png", "write_set"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png(path: Path, seed: int, side: int = 32) -> None:
    """A valid RGB PNG of side x side pixels of noise (about 3 KB at 32) unique to ``seed``."""
    rng = random.Random(seed)
    rows = b"".join(b"\x00" + rng.randbytes(side * 3) for _ in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 6))
        + _chunk(b"IEND", b"")
    )


def write_pdf(path: Path, size: int, seed: int) -> None:
    """A PDF-looking file of exactly ``size`` bytes: header, a unique comment, zeros, EOF.

    The zeros are a hole in a sparse file, so even 95 MB documents cost no disk writes.
    """
    head = f"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n% benchmark document {seed}\n".encode("latin-1")
    trailer = b"\n%%EOF\n"
    if size < len(head) + len(trailer):
        raise ValueError(f"a PDF needs at least {len(head) + len(trailer)} bytes")
    with path.open("wb") as handle:
        handle.write(head)
        handle.truncate(size - len(trailer))
        handle.seek(size - len(trailer))
        handle.write(trailer)


def write_set(
    folder: Path, count: int, *, pdf_bytes: int | None = None, prefix: str = "doc", seed: int = 0
) -> list[Path]:
    """``count`` documents in ``folder``: PNGs, or PDFs of ``pdf_bytes`` bytes.

    Names are ``<prefix>-<index>``; the content of document ``index`` depends on ``seed + index``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    width = len(str(max(count - 1, 0)))
    paths: list[Path] = []
    for index in range(count):
        if pdf_bytes is None:
            path = folder / f"{prefix}-{index:0{width}d}.png"
            write_png(path, seed=seed + index)
        else:
            path = folder / f"{prefix}-{index:0{width}d}.pdf"
            write_pdf(path, pdf_bytes, seed=seed + index)
        paths.append(path)
    return paths
