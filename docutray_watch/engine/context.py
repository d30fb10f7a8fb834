"""What every phase is given: the services of one engine (`Context`) and the documents it holds.

A phase function takes the `Context` and a document's stored rows and returns the next stored
state; it keeps nothing of its own between calls. What the engine holds in memory about documents
lives in one place, `Documents`: which are in hand, which paths are taken, which files were kept
in place, which content is being processed. How much work is outstanding is the size of those
collections, never a hand-kept count.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pluggy

from docutray_watch.client import AsyncClient
from docutray_watch.config import Config, PipelineConfig
from docutray_watch.delivery import SinkRunner
from docutray_watch.engine.kept import KeptStamps
from docutray_watch.engine.limits import Limits
from docutray_watch.journal import Completion, DocumentRow, StateStore
from docutray_watch.metrics import Metrics
from docutray_watch.polling import LatencyModel
from docutray_watch.records import Document
from docutray_watch.sources.base import Source, SourceConfig

__all__ = ["Context", "Documents", "PipelineRuntime", "RunSummary", "document_of", "now"]

_SUMMARY_KEEP = 10_000
_IGNORED_KEEP = 10_000


@dataclass
class RunSummary:
    """What happened to the documents finished since the engine started."""

    outcomes: Counter[str] = field(default_factory=Counter)
    # The most recent ones only: a daemon runs for months (the journal keeps everything).
    failures: deque[tuple[str, str, str]] = field(  # (pipeline, where the file is now, reason)
        default_factory=lambda: deque(maxlen=_SUMMARY_KEEP)
    )
    ignored: deque[tuple[str, str, str]] = field(  # (pipeline, path, rule)
        default_factory=lambda: deque(maxlen=_SUMMARY_KEEP)
    )

    @property
    def failed(self) -> int:
        """Documents that failed or were rejected."""
        return self.outcomes["failed"] + self.outcomes["rejected"]


@dataclass
class PipelineRuntime:
    """A pipeline's config with its open sinks."""

    config: PipelineConfig
    sinks: dict[str, SinkRunner]
    root: Path
    retired: bool = False  # removed by a reload: finishes its documents, takes no new ones
    # A pipeline whose `source` is not a folder: its started source (see engine.source_intake).
    source: Source[SourceConfig] | None = None


class Documents:
    """The documents (and candidate files) the engine holds now."""

    def __init__(self) -> None:
        self.active: dict[int, DocumentRow] = {}  # journaled and not finished (in hand)
        self.nominated: set[tuple[str, str]] = set()  # (pipeline, path) offered, not journaled
        # Per pipeline: the unfinished document of each path, and for each file kept where it
        # was found (`on_success: keep`) only `kept_stamp(size, mtime_ns)`: one int per file,
        # however many months of kept files the folder holds.
        self.known: dict[str, dict[str, DocumentRow]] = {}
        self.kept: dict[str, KeptStamps] = {}  # (read in the background at start: `kept.py`)
        # (pipeline, sha256) of content in progress → set when that document lets go: a twin
        # waits for it, then is a duplicate or goes on.
        self.in_progress: dict[tuple[str, str], asyncio.Event] = {}
        # Files left alone by a rule, so each is logged once: bounded, a daemon runs for months.
        self.ignored: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
        # The rows read back when a step of a document in hand ended (`StateStore.finish_step`):
        # what its run needs next (did every step end, what to deliver), not read again.
        self.views: dict[int, Completion] = {}
        self.idle = asyncio.Event()
        self.idle.set()
        self.last_progress = time.monotonic()

    @property
    def outstanding(self) -> int:
        """Documents and candidate files not finished yet."""
        return len(self.active) + len(self.nominated)

    def progress(self) -> None:
        """Something moved on (the watchdog's measure)."""
        self.last_progress = time.monotonic()

    def nominate(self, key: tuple[str, str]) -> None:
        self.nominated.add(key)
        self.idle.clear()

    def release(self, key: tuple[str, str]) -> None:
        """A candidate file is no longer held (taken up as a document, or let go)."""
        if key in self.nominated:
            self.nominated.discard(key)
            self._maybe_idle()

    def remember(self, doc: DocumentRow) -> None:
        """A journaled document is in hand."""
        self.active[doc.id] = doc
        self.known.setdefault(doc.pipeline, {})[doc.path] = doc
        self.idle.clear()

    def update(self, doc: DocumentRow) -> None:
        """A document in hand has a new stored state."""
        if doc.id in self.active:
            self.active[doc.id] = doc

    def step_ended(self, view: Completion) -> None:
        """A step of a document ended: keep the rows read back with it, if it is in hand."""
        if view.document.id in self.active:
            self.views[view.document.id] = view

    def take_view(self, doc_id: int) -> Completion | None:
        """The rows read back when the document's last step ended (once), or None."""
        return self.views.pop(doc_id, None)

    def forget(self, doc: DocumentRow) -> None:
        """The engine is done with this document (for now); wake anyone waiting on its twin."""
        self.views.pop(doc.id, None)
        if self.active.pop(doc.id, None) is None:
            return  # already let go
        event = self.in_progress.pop((doc.pipeline, doc.sha256 or ""), None)
        if event is not None:
            event.set()
        self._maybe_idle()

    def note_ignored(self, key: tuple[str, str], stamp: tuple[int, int]) -> bool:
        """Remember a file left alone; False when this very version was noted already."""
        if self.ignored.get(key) == stamp:
            return False
        self.ignored[key] = stamp
        self.ignored.move_to_end(key)
        if len(self.ignored) > _IGNORED_KEEP:
            self.ignored.popitem(last=False)
        return True

    def _maybe_idle(self) -> None:
        self.progress()
        if not self.active and not self.nominated:
            self.idle.set()


Spawn = Callable[
    [Coroutine[object, object, object], str, DocumentRow | None], "asyncio.Task[object]"
]


@dataclass
class Context:
    """The services of one engine, shared by its phases (the engine swaps some on reload)."""

    config: Config
    pm: pluggy.PluginManager
    metrics: Metrics
    store: StateStore
    limits: Limits
    latency: LatencyModel
    summary: RunSummary
    documents: Documents
    spawn: Spawn
    pipelines: dict[str, PipelineRuntime] = field(default_factory=dict)
    client: AsyncClient | None = None
    # Set by the engine: offer a path to its pipeline again (a new version of a file), and
    # hash and check a journaled document again (it changed while queued).
    renominate: Callable[[str, Path], bool] = lambda pipeline, path: False
    reinspect: Callable[[DocumentRow], None] = lambda doc: None

    def api(self) -> AsyncClient:
        """The API client (built when the engine starts)."""
        assert self.client is not None, "the engine is not started"
        return self.client


def now() -> datetime:
    return datetime.now(UTC)


def document_of(row: DocumentRow) -> Document:
    """What hooks and records see of a journaled document."""
    return Document(
        name=row.name,
        path=row.path,
        relative_path=row.relative_path,
        sha256=row.sha256 or "",
        size=row.size or 0,
        content_type=row.content_type or "application/octet-stream",
    )
