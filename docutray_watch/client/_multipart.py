"""A streamed ``multipart/form-data`` body with an exact ``Content-Length``.

httpx's own multipart encoder needs file objects it can read whole or length-peek; building the
framing here lets the file part come straight from ``UploadSource`` chunks (read in a worker
thread on the async side), and lets every attempt restart the stream from the beginning.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping

from docutray_watch.client._files import AsyncOpenedUpload, OpenedUpload, UploadSource

__all__ = ["FILE_FIELD", "AsyncBodyStream", "MultipartBody", "SyncBodyStream"]

FILE_FIELD = "image"
"""The API names the document part ``image`` whatever the document is."""

# WHATWG's multipart/form-data encoding of names: quote and control characters are %-escaped.
_ESCAPED = re.compile(r'["\x00-\x1f\x7f]')


def _quote(value: str) -> str:
    return _ESCAPED.sub(lambda match: f"%{ord(match.group()):02X}", value)


class SyncBodyStream:
    """One attempt's body for ``httpx.Client``; ``close()`` releases the file."""

    def __init__(self, preamble: bytes, opened: OpenedUpload, epilogue: bytes) -> None:
        self._preamble = preamble
        self._opened = opened
        self._epilogue = epilogue

    def __iter__(self) -> Iterator[bytes]:
        yield self._preamble
        yield from self._opened.chunks
        yield self._epilogue

    def close(self) -> None:
        """Release the file handle this attempt opened (idempotent)."""
        self._opened.close()


class AsyncBodyStream:
    """One attempt's body for ``httpx.AsyncClient``; ``close()`` releases the file."""

    def __init__(self, preamble: bytes, opened: AsyncOpenedUpload, epilogue: bytes) -> None:
        self._preamble = preamble
        self._opened = opened
        self._epilogue = epilogue

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._preamble
        async for chunk in self._opened.chunks:
            yield chunk
        yield self._epilogue

    def close(self) -> None:
        """Release the file handle this attempt opened (idempotent)."""
        self._opened.close()


class MultipartBody:
    """Text fields first, then the document as the ``image`` part."""

    def __init__(
        self,
        source: UploadSource,
        *,
        fields: Mapping[str, str] | None = None,
        boundary: str | None = None,
    ) -> None:
        self.source = source
        self.boundary = boundary or secrets.token_hex(16)
        dash = f"--{self.boundary}\r\n".encode()
        parts = [
            dash
            + f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
            for name, value in (fields or {}).items()
        ]
        parts.append(
            dash
            + (
                f'Content-Disposition: form-data; name="{FILE_FIELD}"; '
                f'filename="{_quote(source.filename)}"\r\n'
                f"Content-Type: {source.content_type}\r\n\r\n"
            ).encode()
        )
        self._preamble = b"".join(parts)
        self._epilogue = f"\r\n--{self.boundary}--\r\n".encode()
        self._preloaded: bytes | None = None

    @property
    def content_length(self) -> int | None:
        """The exact body length, or None when the document's size is unknown (sent chunked)."""
        if self.source.size is None:
            return None
        return len(self._preamble) + self.source.size + len(self._epilogue)

    @property
    def headers(self) -> dict[str, str]:
        """``Content-Type`` with the boundary, and ``Content-Length`` when known."""
        headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        if self.content_length is not None:
            headers["Content-Length"] = str(self.content_length)
        return headers

    @property
    def replayable(self) -> bool:
        """Whether another attempt can send the body again from the start."""
        return self.source.replayable

    def preload(self) -> None:
        """Read a small document now, for the first attempt (call it off the event loop).

        Later attempts read the file again, like streamed ones do.
        """
        if not self.source.in_memory:
            self._preloaded = self.source.read_small()

    def whole(self) -> bytes | None:
        """The entire body in one piece when the document is small and in memory, else None."""
        if self.source.in_memory:
            data = self.source.read_small()
        else:
            data, self._preloaded = self._preloaded, None
        if data is None:
            return None
        return self._preamble + data + self._epilogue

    def sync_stream(self) -> SyncBodyStream:
        """A fresh body for one attempt (reopens or rewinds the document)."""
        return SyncBodyStream(self._preamble, self.source.open_sync(), self._epilogue)

    async def async_stream(self) -> AsyncBodyStream:
        """A fresh body for one attempt, opened without blocking the event loop."""
        opened = await self.source.open_async()
        return AsyncBodyStream(self._preamble, opened, self._epilogue)
