"""Intake of a source's document: hashed, sized and sniffed in one streamed pass.

What `intake.inspect_file` is for a local file, `inspect_document` is for any source: the bytes
come from `Source.open` (conditional on the version nominated), 1 MiB at a time, never whole.
The result is an `intake.FileFacts`, so `intake.rejection_for` and the journal take it as they
take a file's; a source has no mtime, ctime or inode (its version token stands for them).
"""

from __future__ import annotations

import hashlib
from typing import Any

from docutray_watch.client import MAX_FILE_SIZE, sniff_content_type
from docutray_watch.intake import FileFacts
from docutray_watch.sources.base import Source, SourceDocument, VersionChangedError

__all__ = ["inspect_document"]

_SNIFF_BYTES = 1024


async def inspect_document(source: Source[Any], doc: SourceDocument) -> FileFacts:
    """SHA-256, size and type of `doc` as the source holds it now (its version at nomination).

    Stops reading past the service's size limit (the facts then say "too large" without the
    rest being read: the hash covers what was read). `VersionChangedError` when the document
    is another version, or when the bytes read are not the size nominated.
    """
    digest = hashlib.sha256()
    head = b""
    size = 0
    stream = source.open(doc)
    try:
        async for chunk in stream:
            size += len(chunk)
            if len(head) < _SNIFF_BYTES:
                head += chunk[: _SNIFF_BYTES - len(head)]
            digest.update(chunk)
            if size > MAX_FILE_SIZE:
                break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    if size <= MAX_FILE_SIZE and size != doc.size:
        raise VersionChangedError(f"{doc.identity}: read {size} bytes, {doc.size} were listed")
    return FileFacts(
        size=doc.size if size > MAX_FILE_SIZE else size,  # what was listed, not what was read
        mtime_ns=0,
        sha256=digest.hexdigest(),
        content_type=sniff_content_type(head),
        head=head,
    )
