"""A source's document as an upload: streamed from the source for each attempt, never whole.

`SourceUpload(source, doc, content_type)` goes where the client takes a file
(`AsyncClient.steps.run_async(step_id, file=…)`); every attempt opens the document again through
`Source.open`, so a retried upload is still conditional on the version taken at intake (an
object overwritten meanwhile fails the attempt with `VersionChangedError`).
"""

from __future__ import annotations

from typing import Any

from docutray_watch.client._files import AsyncOpenedUpload, OpenedUpload, UploadSource
from docutray_watch.sources.base import Source, SourceDocument

__all__ = ["SourceUpload"]


def _nothing() -> None:
    return None


class SourceUpload(UploadSource):
    """One nominated document, uploaded straight from its source (async clients only)."""

    def __init__(self, source: Source[Any], doc: SourceDocument, *, content_type: str) -> None:
        super().__init__(
            document=doc.identity, filename=doc.name, content_type=content_type, size=doc.size
        )
        self.source = source
        self.doc = doc

    def open_sync(self) -> OpenedUpload:
        """Sources are asynchronous: a synchronous client cannot stream one."""
        raise TypeError(f"{self.document}: a source's document uploads with AsyncClient only")

    async def open_async(self) -> AsyncOpenedUpload:
        """The document's chunks, read again from the source for this attempt."""
        return AsyncOpenedUpload(self.source.open(self.doc), _nothing)
