"""What a source is: where a pipeline's documents come from, and what becomes of them at the end.

A source *nominates* documents and performs their final action; everything between (name rules,
readiness checks of the engine, hashing, type sniffing, duplicates, the journal, submission,
delivery) stays in the engine. A plugin registers a source class through the
`register_source_types` hook, like a sink::

    class DropboxConfig(SourceConfig):
        folder: str

    class DropboxSource(Source[DropboxConfig]):
        type = "dropbox"
        description = "Documents dropped into a Dropbox folder."
        config_model = DropboxConfig
        ...

    @hookimpl
    def register_source_types(register):
        register(DropboxSource)

The engine drives it (see `Source` for the order): `start(nominate)` once, `discover()` every
`rescan_interval`, `open(doc)` to stream a nominated document's bytes for hashing and upload,
then one final action — `plan_move(doc, to)` + `move(doc, destination)`, `delete(doc)` or
`keep(doc)`, with `write_sidecar(doc, details)` before it for a failed document — and `stop()`.

Every read and final action is **conditional on the version seen at nomination** (`doc.version`):
when the document changed meanwhile it raises `VersionChangedError` and does nothing, and the
source nominates the new version itself. A document that is gone raises `DocumentGoneError`.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Ack",
    "DocumentGoneError",
    "DryRunEntry",
    "NameRule",
    "Nominate",
    "Source",
    "SourceConfig",
    "SourceDocument",
    "SourceError",
    "VersionChangedError",
    "noop_nominate",
]


class SourceError(Exception):
    """A source operation failed in a way that may succeed later (outage, permissions…)."""


class VersionChangedError(SourceError):
    """The document is no longer the version nominated: nothing was read, moved or deleted.

    The source has nominated (or will nominate at its next look) the new version on its own.
    """


class DocumentGoneError(SourceError):
    """The document no longer exists at its source (deleted or moved by someone else)."""


class SourceConfig(BaseModel):
    """Options every source has; a source type subclasses it with its own fields."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="The source type, as registered by a plugin.")
    rescan_interval: float = Field(
        60.0, gt=0, description="Seconds between two looks for new documents."
    )

    def check_destination(self, value: str) -> str:
        """Validate `on_success.to` / `on_failure.to` given as a URI (e.g. `s3://bucket/p/`);
        return it normalised, or raise ValueError saying what is expected."""
        raise ValueError(f"a {self.type} source has no move destination of the form {value!r}")

    @property
    def moves_to_folders(self) -> bool:
        """True when `to:` is a local folder (the folder source), False when it is a URI."""
        return False


Ack = Callable[[], Awaitable[None]]
"""Called by the engine once the document is journaled (e.g. deletes its SQS messages)."""


@dataclass(frozen=True)
class SourceDocument:
    """A nominated document: enough to take it, read it and act on it later."""

    identity: str
    """Stable and unique within the source: an absolute path, `s3://bucket/key`…; what the
    journal stores as the document's path and what hooks, records and `status` show."""
    name: str
    """The file name (last part of the key or path): the include/ignore rules apply to it."""
    relative_path: str
    """The name below the source's root (`a/b.pdf` under a prefix), for the name rules and
    templates (`{relative_dir}`)."""
    size: int
    version: str
    """Opaque version token: an ETag, a VersionId, `size:mtime_ns:inode`… Every later read and
    action is conditional on it."""
    hint: str = "listed"
    """How it was seen: `listed`, `event`, or a folder watcher's `closed` / `writing` /
    `changed` (the engine's readiness logic uses the last three)."""
    ack: Ack | None = field(default=None, compare=False, repr=False)
    """Set when a notification must be acknowledged once the document is journaled."""
    modified_ns: int | None = None
    """When this version was written (ns since the epoch; S3: LastModified), if the source
    knows: multi-node mode records it in the document's identity, so the same bytes written
    again later (after the first copy was moved away) are a new document."""


Nominate = Callable[[SourceDocument], bool]
"""The engine's callback, called on the event loop: offer one document to the pipeline. False
when the engine did not take it up now (it is busy with an older version, a rule leaves it
alone…): the source offers it again at its next look."""


def noop_nominate(doc: SourceDocument) -> bool:
    """A `Nominate` that takes nothing (what a source has before `start`)."""
    return False


@dataclass(frozen=True)
class DryRunEntry:
    """One line of `process --dry-run`: a document and whether it would be taken, and why."""

    identity: str
    decision: Literal["taken", "ignored"]
    why: str


NameRule = Callable[[str], str | None]
"""A relative path → why the pipeline leaves it alone, or None when it takes it."""

ConfigT = TypeVar("ConfigT", bound=SourceConfig)


class Source(ABC, Generic[ConfigT]):
    """Base class of every source. Subclasses set `type`, `description`, `config_model`.

    The engine calls, on its event loop:

    1. `start(nominate)` once; the source may nominate from events from then on.
    2. `discover()` at start and every `rescan_interval`: one full look, nominating what is new.
    3. for each document it takes: `open(doc)` (async iterator of byte chunks), then after the
       journal holds it `await doc.ack()` when `doc.ack` is set.
    4. at the end, exactly one of `keep(doc)`, `delete(doc)`, or `plan_move(doc, to)` — whose
       answer the engine journals *before* calling `move(doc, destination)`; after a crash the
       engine calls `move` again with the journaled destination and it completes the move.
       A failed document gets `write_sidecar(doc, details)` first.
    5. `stop()`.
    `check()` serves `validate`, `dry_run_listing()` serves `process --dry-run`.
    """

    type: ClassVar[str]
    description: ClassVar[str] = ""
    config_model: ClassVar[builtins.type[SourceConfig]] = SourceConfig

    def __init__(self, config: ConfigT, *, pipeline: str) -> None:
        self.config = config
        self.pipeline = pipeline
        self._nominate: Nominate = noop_nominate

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.pipeline}>"

    async def start(self, nominate: Nominate) -> None:
        """Begin nominating: remember the callback, open clients, start event listeners."""
        self._nominate = nominate

    async def stop(self) -> None:
        """Stop event listeners and release clients."""
        return None

    @abstractmethod
    async def discover(self) -> int:
        """One full look; nominate what is new since the last look. Returns how many."""

    @abstractmethod
    def open(self, doc: SourceDocument) -> AsyncIterator[bytes]:
        """The document's bytes in chunks, never whole in memory; `VersionChangedError` when it
        is no longer `doc.version` (checked before the first chunk)."""

    @abstractmethod
    async def plan_move(self, doc: SourceDocument, to: str) -> str:
        """Choose where `move` will put the document (journal the answer before moving)."""

    @abstractmethod
    async def move(self, doc: SourceDocument, destination: str) -> str:
        """Move it to `destination` (from `plan_move`); safe to call again after a crash.
        Returns where it is now."""

    @abstractmethod
    async def delete(self, doc: SourceDocument) -> None:
        """Delete it, if it is still `doc.version`."""

    @abstractmethod
    async def keep(self, doc: SourceDocument) -> None:
        """Leave it where it is, and never nominate this version again."""

    @abstractmethod
    async def write_sidecar(
        self, doc: SourceDocument, details: dict[str, Any], at: str | None = None
    ) -> str:
        """Write the `<name>.error.json` details beside it (or beside `at`, the destination of
        its move); returns where."""

    async def remove_sidecar(self, doc: SourceDocument) -> None:
        """Remove a sidecar a previous failed attempt left beside it (it succeeded now)."""
        return None

    @abstractmethod
    async def current_version(self, doc: SourceDocument) -> str | None:
        """The document's version now (None when it is gone): the engine's cheap check that
        results still describe it, before delivery and before the final action."""

    def remember_kept(self, identity: str, version: str) -> None:
        """The journal says this version was kept in place (at start): do not nominate it."""
        return None

    def forget(self, identity: str) -> None:
        """Nominate this document again at the next look (after an intake failure)."""
        return None

    async def check(self) -> list[str]:
        """For `validate`: one line per thing checked (e.g. `bucket x: readable`); raise
        `SourceError` naming what is unusable. Must not change anything."""
        return []

    async def dry_run_listing(self, rule: NameRule | None = None) -> list[DryRunEntry]:
        """For `process --dry-run`: every document found, taken or ignored, and why. `rule`
        is the pipeline's name rule (`intake.rule_for_name` bound to it): a reason, or None."""
        return []
