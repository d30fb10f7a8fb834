"""Every hook a docutray-watch plugin can implement, grouped by phase.

Implement them with `docutray_watch.hookimpl`; all arguments are keyword arguments and a plugin
may accept any subset of them. The order in which the document hooks fire is documented on
`docutray_watch.engine.Engine`. Observer hooks run on the daemon's event loop: keep them quick, and
know that an exception in one is logged and ignored (it never stops a document or another plugin).
Sinks and sources are not hooks: a plugin registers sink and source *classes* and the engine
drives each configured one itself (see `docutray_watch.sinks.base.Sink` and
`docutray_watch.sources.base.Source`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from docutray_watch.config import Config
    from docutray_watch.records import Document, Identification, ResultRecord
    from docutray_watch.sinks.base import Receipt, Sink
    from docutray_watch.sources.base import Source

__all__ = ["hookimpl", "hookspec"]

PROJECT_NAME = "docutray_watch"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- registration -------------------------------------------------------------------------------


@hookspec
def register_sink_types(register: Callable[[type[Sink[Any]]], None]) -> None:
    """Register sink classes by calling `register(SinkClass)` once for each."""


@hookspec
def register_source_types(register: Callable[[type[Source[Any]]], None]) -> None:
    """Register source classes (where documents come from) by calling `register(SourceClass)`
    once for each; see `docutray_watch.sources.base.Source`."""


# --- daemon lifecycle ---------------------------------------------------------------------------


@hookspec
def startup(config: Config) -> None:
    """Called once the journal is open and sinks are ready, before the first document is taken."""


@hookspec
def shutdown(config: Config) -> None:
    """Called when the engine has stopped, before the sinks are closed and the process exits."""


# --- document lifecycle -------------------------------------------------------------------------


@hookspec(firstresult=True)
def ignore_document(pipeline: str, path: Path, location: str) -> str | None:
    """Return a reason to leave a candidate document alone; the first non-None answer wins.

    `location` is where the document is, intact: a file's absolute path, or a source's
    identity such as `s3://bucket/key`. `path` is `Path(location)`: right for a file of a
    watched folder; for a source's document only its `name` and `suffix` mean anything."""


@hookspec
def document_discovered(pipeline: str, document: Document) -> None:
    """A complete file was hashed, checked and recorded in the journal as a document."""


@hookspec
def after_document_identified(
    pipeline: str, document: Document, identification: Identification
) -> None:
    """A pipeline with `identify`: the service said which type the document is (journaled),
    before its route's steps are submitted or no route takes it; fires once per document."""


@hookspec
def before_document_submit(
    pipeline: str, document: Document, step_id: str, metadata: dict[str, Any]
) -> dict[str, Any] | None:
    """Return extra `document_metadata` entries to send with this step's submission."""


@hookspec
def after_document_result(pipeline: str, document: Document, record: ResultRecord) -> None:
    """A step reached a final status (SUCCESS or ERROR) and the result is journaled."""


@hookspec
def after_document_delivered(
    pipeline: str, document: Document, record: ResultRecord, sink: str, receipt: Receipt
) -> None:
    """One sink stored one result record (and the journal says so)."""


@hookspec
def on_document_error(
    pipeline: str, document: Document | None, path: Path, stage: str, error: str, location: str
) -> None:
    """A document was rejected or failed; `stage` names where (intake, submit, poll, deliver…).
    `location`: where it is, intact (`/in/a.pdf`, `s3://bucket/key`; see `ignore_document`)."""


@hookspec
def after_document_archived(
    pipeline: str,
    document: Document | None,
    path: Path,
    outcome: str,
    destination: Path | str | None,
    location: str,
) -> None:
    """The source file got its final action; `outcome` is success, duplicate, failed, rejected,
    superseded (the file changed while it was processed: left alone, and taken again) or
    unrouted (identified as a type no route takes, `otherwise: keep`: left where it is).
    `location`: where it was found, intact (`/in/a.pdf`, `s3://bucket/key`); `destination`:
    where it went (a `Path` for a folder, a `str` URI such as `s3://bucket/done/key` for a
    source), None when deleted or kept."""
