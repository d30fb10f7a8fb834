"""Local checks on documents, and upload sources that stream them in chunks.

Everything here runs before a request is built: the size limit, the type (sniffed from magic
bytes, or the caller's explicit content type), base64 validation. The daemon's intake reuses
``sniff_content_type``, ``SUPPORTED_CONTENT_TYPES`` and ``MAX_FILE_SIZE``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from docutray_watch.client._exceptions import (
    FileTooLargeError,
    InvalidDocumentError,
    UnsupportedFileTypeError,
)

__all__ = [
    "CHUNK_SIZE",
    "MAX_FILE_SIZE",
    "SMALL_FILE_SIZE",
    "SNIFF_LENGTH",
    "SUPPORTED_CONTENT_TYPES",
    "AsyncOpenedUpload",
    "Base64Document",
    "FileInput",
    "OpenedUpload",
    "UploadSource",
    "check_content_type",
    "prepare_base64",
    "prepare_file",
    "sniff_content_type",
]

MAX_FILE_SIZE = 100 * 1024 * 1024
"""The service's upload limit in bytes (100 MiB)."""

SNIFF_LENGTH = 1024
"""How many leading bytes ``sniff_content_type`` looks at (``%PDF-`` may follow junk)."""

CHUNK_SIZE = 1024 * 1024
"""Bytes read per chunk while streaming an upload."""

SMALL_FILE_SIZE = 128 * 1024
"""Documents up to this size may be read whole and sent in one piece (see ``read_small``): for a
small document, streaming it in chunks costs more than the document itself."""

SUPPORTED_CONTENT_TYPES: frozenset[str] = frozenset(
    {"image/jpeg", "image/png", "image/gif", "image/bmp", "image/webp", "application/pdf"}
)
"""The document types the service accepts."""

_TYPE_NAMES = "JPEG, PNG, GIF, BMP, WebP, PDF"

# Non-canonical spellings seen in the wild for the supported types.
_CONTENT_TYPE_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "application/x-pdf": "application/pdf",
}

_BASE64_BODY = re.compile(r"[A-Za-z0-9+/\s]*=?\s*=?\s*")
_WHITESPACE = (" ", "\t", "\r", "\n")


def sniff_content_type(head: bytes) -> str | None:
    """The supported content type the leading bytes belong to, or None.

    Pass at least the first ``SNIFF_LENGTH`` bytes: a PDF's ``%PDF-`` marker may follow up to
    1 KiB of leading junk, as PDF readers allow.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if b"%PDF-" in head[:SNIFF_LENGTH]:
        return "application/pdf"
    return None


def check_content_type(content_type: str, *, document: str) -> str:
    """The canonical form of a caller-given content type; raises if it is not supported."""
    canonical = content_type.split(";", 1)[0].strip().lower()
    canonical = _CONTENT_TYPE_ALIASES.get(canonical, canonical)
    if canonical not in SUPPORTED_CONTENT_TYPES:
        raise UnsupportedFileTypeError(
            f"{document}: content type {content_type!r} is not supported "
            f"(supported: {_TYPE_NAMES})",
            document=document,
            content_type=content_type,
        )
    return canonical


def _resolve_content_type(explicit: str | None, head: bytes, *, document: str) -> str:
    if explicit is not None:
        return check_content_type(explicit, document=document)
    sniffed = sniff_content_type(head)
    if sniffed is None:
        raise UnsupportedFileTypeError(
            f"{document}: unsupported file type, the content is none of {_TYPE_NAMES}",
            document=document,
            content_type=None,
        )
    return sniffed


def _check_size(size: int, *, document: str) -> None:
    if size > MAX_FILE_SIZE:
        raise FileTooLargeError(
            f"{document}: file is too large ({size} bytes, the limit is "
            f"{MAX_FILE_SIZE} bytes = {MAX_FILE_SIZE // (1024 * 1024)} MiB)",
            document=document,
            size=size,
            limit=MAX_FILE_SIZE,
        )
    if size == 0:
        raise InvalidDocumentError(f"{document}: file is empty", document=document)


@dataclass(frozen=True)
class OpenedUpload:
    """One attempt's view of a document: its chunks, and how to release the file."""

    chunks: Iterator[bytes]
    close: Callable[[], None]


@dataclass(frozen=True)
class AsyncOpenedUpload:
    """The async twin of ``OpenedUpload``; chunks are read in a worker thread."""

    chunks: AsyncIterator[bytes]
    close: Callable[[], None]


class UploadSource(ABC):
    """A checked document ready to stream, once per attempt.

    ``document`` names it in errors, ``filename`` is sent in the multipart part, ``size`` is
    None only for a non-seekable file object (its length is unknown until read).
    """

    def __init__(
        self, *, document: str, filename: str, content_type: str, size: int | None
    ) -> None:
        self.document = document
        self.filename = filename
        self.content_type = content_type
        self.size = size

    @property
    def replayable(self) -> bool:
        """Whether another attempt can stream the same bytes from the start."""
        return True

    in_memory = False
    """True when the document is held in memory (reading it costs no I/O)."""

    def read_small(self) -> bytes | None:
        """The whole document if it is at most ``SMALL_FILE_SIZE`` bytes, else None.

        Applies the same checks as opening an attempt (a file that changed size is refused).
        """
        return None

    @abstractmethod
    def open_sync(self) -> OpenedUpload:
        """Start streaming from the document's beginning."""

    @abstractmethod
    async def open_async(self) -> AsyncOpenedUpload:
        """Start streaming from the document's beginning, without blocking the event loop."""


FileInput = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | UploadSource
"""A document for ``file=``: a path (``str`` or ``os.PathLike``), bytes, a binary file, or an
``UploadSource`` of the caller's own (a source's document streamed from object storage)."""


class _PathSource(UploadSource):
    """A file on disk, reopened for every attempt."""

    def __init__(self, path: Path, *, filename: str, content_type: str, size: int) -> None:
        super().__init__(
            document=str(path), filename=filename, content_type=content_type, size=size
        )
        self._path = path
        self._size = size

    def _open_checked(self) -> IO[bytes]:
        handle = self._path.open("rb")
        if os.fstat(handle.fileno()).st_size != self._size:
            handle.close()
            raise _changed(self.document)
        return handle

    def open_sync(self) -> OpenedUpload:
        handle = self._open_checked()
        return OpenedUpload(_read_chunks(handle.read, self._size, self.document), handle.close)

    def read_small(self) -> bytes | None:
        if self._size > SMALL_FILE_SIZE:
            return None
        with self._open_checked() as handle:
            data = handle.read(self._size + 1)
        if len(data) != self._size:
            raise _changed(self.document)
        return data

    async def open_async(self) -> AsyncOpenedUpload:
        handle = await asyncio.to_thread(self._open_checked)
        chunks = _aread_chunks(handle.read, self._size, self.document)
        return AsyncOpenedUpload(chunks, handle.close)


class _BytesSource(UploadSource):
    """Bytes already in memory, sliced without copying the whole buffer."""

    def __init__(
        self, data: memoryview, *, document: str, filename: str, content_type: str
    ) -> None:
        super().__init__(
            document=document, filename=filename, content_type=content_type, size=len(data)
        )
        self._data = data

    in_memory = True

    def read_small(self) -> bytes | None:
        return bytes(self._data) if len(self._data) <= SMALL_FILE_SIZE else None

    def _chunks(self) -> Iterator[bytes]:
        for start in range(0, len(self._data), CHUNK_SIZE):
            yield bytes(self._data[start : start + CHUNK_SIZE])

    def open_sync(self) -> OpenedUpload:
        return OpenedUpload(self._chunks(), _nothing)

    async def open_async(self) -> AsyncOpenedUpload:
        async def chunks() -> AsyncIterator[bytes]:
            for chunk in self._chunks():
                yield chunk

        return AsyncOpenedUpload(chunks(), _nothing)


class _SeekableFileSource(UploadSource):
    """A caller's seekable binary file: rewound to where it was for every attempt."""

    def __init__(
        self, handle: IO[bytes], *, start: int, document: str, filename: str, content_type: str,
        size: int,
    ) -> None:  # fmt: skip
        super().__init__(document=document, filename=filename, content_type=content_type, size=size)
        self._handle = handle
        self._start = start
        self._size = size

    def open_sync(self) -> OpenedUpload:
        self._handle.seek(self._start)
        chunks = _read_chunks(self._handle.read, self._size, self.document)
        return OpenedUpload(chunks, _nothing)  # the caller owns (and closes) the file

    async def open_async(self) -> AsyncOpenedUpload:
        await asyncio.to_thread(self._handle.seek, self._start)
        chunks = _aread_chunks(self._handle.read, self._size, self.document)
        return AsyncOpenedUpload(chunks, _nothing)


class _StreamSource(UploadSource):
    """A non-seekable binary stream (pipe, socket): read once, so it can be sent only once.

    Its size is unknown up front, so the upload goes out chunked and the size limit is
    enforced while reading.
    """

    def __init__(
        self, handle: IO[bytes], *, head: bytes, document: str, filename: str, content_type: str
    ) -> None:
        super().__init__(document=document, filename=filename, content_type=content_type, size=None)
        self._handle = handle
        self._head = head
        self._consumed = False

    @property
    def replayable(self) -> bool:
        return not self._consumed

    def _take_head(self) -> bytes:
        if self._consumed:
            raise InvalidDocumentError(
                f"{self.document}: a non-seekable stream can be sent only once",
                document=self.document,
            )
        self._consumed = True
        return self._head

    def open_sync(self) -> OpenedUpload:
        def chunks() -> Iterator[bytes]:
            head = self._take_head()
            yield head
            yield from _read_chunks(self._handle.read, None, self.document, already=len(head))

        return OpenedUpload(chunks(), _nothing)

    async def open_async(self) -> AsyncOpenedUpload:
        async def chunks() -> AsyncIterator[bytes]:
            head = self._take_head()
            yield head
            rest = _aread_chunks(self._handle.read, None, self.document, already=len(head))
            async for chunk in rest:
                yield chunk

        return AsyncOpenedUpload(chunks(), _nothing)


def prepare_file(
    file: FileInput, *, content_type: str | None = None, filename: str | None = None
) -> UploadSource:
    """Check ``file`` (size, type) and return a source that streams it.

    Reads at most ``SNIFF_LENGTH`` bytes; raises ``InvalidDocumentError`` subclasses for
    documents the service would refuse, ``TypeError`` for inputs that are not documents.
    """
    if isinstance(file, UploadSource):
        return file  # checked by whoever made it (the daemon's intake, for a source)
    if isinstance(file, bytes | bytearray | memoryview):
        view = memoryview(file).cast("B")
        document = filename or "<bytes>"
        _check_size(len(view), document=document)
        resolved = _resolve_content_type(
            content_type, bytes(view[:SNIFF_LENGTH]), document=document
        )
        return _BytesSource(
            view, document=document, filename=filename or "document", content_type=resolved
        )
    if isinstance(file, str | os.PathLike):
        path = Path(os.fsdecode(file))
        document = str(path)
        size = path.stat().st_size
        _check_size(size, document=document)
        with path.open("rb") as handle:
            head = handle.read(SNIFF_LENGTH)
        resolved = _resolve_content_type(content_type, head, document=document)
        return _PathSource(path, filename=filename or path.name, content_type=resolved, size=size)
    if callable(getattr(file, "read", None)):
        return _prepare_file_object(file, content_type=content_type, filename=filename)
    raise TypeError(
        "file must be a path (str or os.PathLike), bytes, or a binary file object, "
        f"not {type(file).__name__}"
    )


def _prepare_file_object(
    handle: IO[bytes], *, content_type: str | None, filename: str | None
) -> UploadSource:
    name_attr = getattr(handle, "name", None)
    own_name = name_attr if isinstance(name_attr, str) else None
    base_name = os.path.basename(own_name) if own_name else None
    document = filename or own_name or "<file>"
    upload_name = filename or base_name or "document"
    if _is_text(handle):
        raise TypeError(f"{document}: file object must be opened in binary mode ('rb')")
    seekable = _is_seekable(handle)
    start = handle.tell() if seekable else 0
    head = handle.read(SNIFF_LENGTH)
    if not isinstance(head, bytes):
        raise TypeError(f"{document}: file object must be opened in binary mode ('rb')")
    if not seekable:
        if not head:
            raise InvalidDocumentError(f"{document}: file is empty", document=document)
        resolved = _resolve_content_type(content_type, head, document=document)
        return _StreamSource(
            handle, head=head, document=document, filename=upload_name, content_type=resolved
        )
    end = handle.seek(0, os.SEEK_END)
    handle.seek(start)
    size = end - start
    _check_size(size, document=document)
    resolved = _resolve_content_type(content_type, head, document=document)
    return _SeekableFileSource(
        handle,
        start=start,
        document=document,
        filename=upload_name,
        content_type=resolved,
        size=size,
    )


def _is_text(handle: object) -> bool:
    # IO[bytes] is what callers should pass; text files are the common mistake
    return isinstance(handle, io.TextIOBase)


def _is_seekable(handle: Any) -> bool:
    seekable = getattr(handle, "seekable", None)
    try:
        return bool(seekable()) if callable(seekable) else False
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Base64Document:
    """A checked base64 input: the JSON fields to send, and what the data turned out to be."""

    fields: dict[str, str]
    content_type: str
    size: int


def prepare_base64(data: str, *, content_type: str | None = None) -> Base64Document:
    """Check a base64 document (plain or ``data:<type>;base64,`` URI) without decoding all of it.

    The decoded size is computed from the length; the type is sniffed from the decoded head
    unless given (an explicit ``content_type``, or the data URI's own type).
    """
    document = "<base64>"
    payload = data
    declared = content_type
    is_data_uri = data.startswith("data:")
    if is_data_uri:
        header, separator, payload = data.partition(",")
        if not separator or not header.endswith(";base64"):
            raise InvalidDocumentError(
                f"{document}: a data URI must look like data:<type>;base64,<data>",
                document=document,
            )
        declared = content_type or header[len("data:") : -len(";base64")] or None
    if not _BASE64_BODY.fullmatch(payload):
        raise InvalidDocumentError(f"{document}: not valid base64", document=document)
    significant = len(payload) - sum(payload.count(char) for char in _WHITESPACE)
    if significant % 4:
        raise InvalidDocumentError(f"{document}: not valid base64 (bad length)", document=document)
    padding = len(payload.rstrip()) - len(payload.rstrip().rstrip("="))
    size = significant // 4 * 3 - padding
    _check_size(size, document=document)
    resolved = _resolve_content_type(declared, _decode_head(payload), document=document)
    fields = {"image_base64": data}
    if not is_data_uri:  # a data URI carries its own type
        fields["image_content_type"] = resolved
    return Base64Document(fields=fields, content_type=resolved, size=size)


def _decode_head(payload: str) -> bytes:
    # enough characters for SNIFF_LENGTH bytes even with line breaks, cut to whole quanta
    head = "".join(payload[: SNIFF_LENGTH * 2].split())
    head = head[: len(head) // 4 * 4]
    try:
        return base64.b64decode(head, validate=True)
    except binascii.Error as exc:
        raise InvalidDocumentError("<base64>: not valid base64", document="<base64>") from exc


def _read_chunks(
    read: Callable[[int], bytes], expected: int | None, document: str, *, already: int = 0
) -> Iterator[bytes]:
    """Yield the document's bytes; exactly ``expected`` of them, or up to the limit if unknown."""
    sent = already
    while True:
        want = CHUNK_SIZE if expected is None else min(CHUNK_SIZE, expected - sent)
        chunk = read(want if want else 1)
        if not want:  # all promised bytes sent: anything more means the file grew
            if chunk:
                raise _changed(document)
            return
        if not chunk:
            if expected is not None:
                raise _changed(document)
            return
        sent += len(chunk)
        _check_streamed(sent, expected, document)
        yield chunk


async def _aread_chunks(
    read: Callable[[int], bytes], expected: int | None, document: str, *, already: int = 0
) -> AsyncIterator[bytes]:
    """``_read_chunks`` with every read in a worker thread."""
    sent = already
    while True:
        want = CHUNK_SIZE if expected is None else min(CHUNK_SIZE, expected - sent)
        chunk = await asyncio.to_thread(read, want if want else 1)
        if not want:
            if chunk:
                raise _changed(document)
            return
        if not chunk:
            if expected is not None:
                raise _changed(document)
            return
        sent += len(chunk)
        _check_streamed(sent, expected, document)
        yield chunk


def _check_streamed(sent: int, expected: int | None, document: str) -> None:
    if expected is None and sent > MAX_FILE_SIZE:
        _check_size(sent, document=document)


def _changed(document: str) -> InvalidDocumentError:
    return InvalidDocumentError(
        f"{document}: file changed size while it was being uploaded", document=document
    )


def _nothing() -> None:
    return None
