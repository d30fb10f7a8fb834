"""`check_source`: drive a source through the round trips the engine relies on (for plugin tests).

Exported by `docutray_watch.testing`. The caller gives the source (not started) and `put(name,
content)`, which drops a document into the source's inbox the way a user would (writes a file,
uploads an object…), and a move destination in the source's own form. Each round trip checks one
promise of `docutray_watch.sources.base.Source`; the first broken one fails with an
`AssertionError` naming it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from docutray_watch.sources.base import (
    DocumentGoneError,
    Source,
    SourceDocument,
    VersionChangedError,
)

__all__ = ["check_source"]

Put = Callable[[str, bytes], Awaitable[None] | None]

_BODY = b"%PDF-1.7\n% docutray-watch check_source\n%%EOF\n"


class _Recorder:
    def __init__(self) -> None:
        self.docs: list[SourceDocument] = []

    def __call__(self, doc: SourceDocument) -> bool:
        self.docs.append(doc)
        return True

    def take(self) -> list[SourceDocument]:
        docs, self.docs = self.docs, []
        return docs


async def _put(put: Put, name: str, content: bytes) -> None:
    result = put(name, content)
    if result is not None:
        await result


async def _read(source: Source[Any], doc: SourceDocument) -> bytes:
    return b"".join([chunk async for chunk in source.open(doc)])


async def _nominated(source: Source[Any], seen: _Recorder, name: str) -> SourceDocument:
    await source.discover()
    docs = [doc for doc in seen.take() if doc.name == name]
    assert len(docs) == 1, f"discover() nominated {name} {len(docs)} times, not once"
    return docs[0]


async def _raises(kind: type[Exception], action: Awaitable[Any], what: str) -> None:
    try:
        await action
    except kind:
        return
    raise AssertionError(f"{what} did not raise {kind.__name__}")


async def check_source(source: Source[Any], *, put: Put, move_to: str) -> list[str]:
    """Run the round trips; returns their names (all passed) or raises AssertionError."""
    seen = _Recorder()
    passed: list[str] = []
    await source.start(seen)
    try:
        await _put(put, "check-1.pdf", _BODY)
        doc = await _nominated(source, seen, "check-1.pdf")
        await source.discover()
        again = [d for d in seen.take() if d.identity == doc.identity]
        assert not again, "discover() nominated an unchanged document twice"
        passed.append("nominate once")

        assert await _read(source, doc) == _BODY, "open() did not give the document's bytes"
        passed.append("open")

        await source.keep(doc)
        source.forget(doc.identity)
        await source.discover()
        assert not [d for d in seen.take() if d.identity == doc.identity], (
            "a kept document was nominated again"
        )
        passed.append("keep")

        await source.write_sidecar(doc, {"reason": "check_source"})
        await source.discover()
        assert not seen.take(), "the sidecar (or something else) was nominated as a document"
        await source.remove_sidecar(doc)
        assert await source.current_version(doc) == doc.version, (
            "current_version() of an unchanged document is not its version"
        )
        passed.append("sidecar")

        await _put(put, "check-2.pdf", _BODY + b"2")
        doc = await _nominated(source, seen, "check-2.pdf")
        await source.delete(doc)
        await _raises(DocumentGoneError, _read(source, doc), "open() after delete()")
        assert await source.current_version(doc) is None, "current_version() after delete()"
        passed.append("delete")

        await _put(put, "check-3.pdf", _BODY + b"3")
        doc = await _nominated(source, seen, "check-3.pdf")
        destination = await source.plan_move(doc, move_to)
        assert await source.move(doc, destination) == destination, "move() went elsewhere"
        assert await source.move(doc, destination) == destination, (
            "move() run again (as after a crash) did not find the finished move"
        )
        await _raises(DocumentGoneError, _read(source, doc), "open() after move()")
        passed.append("move")

        await _put(put, "check-4.pdf", _BODY + b"4")
        doc = await _nominated(source, seen, "check-4.pdf")
        await _put(put, "check-4.pdf", _BODY + b"4, rewritten with more bytes")
        assert await source.current_version(doc) not in (None, doc.version), (
            "current_version() does not see the change"
        )
        await _raises(VersionChangedError, _read(source, doc), "open() of a changed document")
        await _raises(VersionChangedError, source.delete(doc), "delete() of a changed document")
        passed.append("version")
    finally:
        await source.stop()
    return passed
