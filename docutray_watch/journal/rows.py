"""What the store hands out: immutable rows, the same whatever backend keeps them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from docutray_watch.journal.states import (
    STEP_END_STATES,
    DeliveryState,
    DocumentState,
    StepState,
)

__all__ = [
    "Completion",
    "DeliveryRow",
    "DocumentRow",
    "JSONObject",
    "LatencyRow",
    "NewDocument",
    "PruneCandidate",
    "Queued",
    "StepRow",
    "kept_stamp",
]

JSONObject = Mapping[str, object]
"""A JSON object handed to the store (a step result, an error's details)."""

LatencyRow = tuple[str, int, int, float, float]
"""A learned processing time: (step_id, size_class, count, mean, variance)."""


@dataclass(frozen=True)
class DocumentRow:
    """A row of `documents`."""

    id: int
    pipeline: str
    path: str
    relative_path: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    content_type: str | None
    state: DocumentState
    outcome: str | None
    attempts: int
    error: str | None
    error_stage: str | None
    error_detail: dict[str, Any] | None
    flags: frozenset[str]
    duplicate_of: int | None
    archive_to: str | None
    archived_to: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    ctime_ns: int | None = None
    inode: int | None = None
    # Pipelines that identify: the type code the service answered and its whole answer
    # (`docutray_watch.records.Identification` as JSON data); None before or without it.
    identified_type: str | None = None
    identification: dict[str, Any] | None = None
    # A source that is not a folder: the version taken at intake (an ETag…); every later read
    # and final action is conditional on it (schema 4). None for files.
    source_version: str | None = None

    @property
    def name(self) -> str:
        """The file name."""
        return self.relative_path.rsplit("/", 1)[-1]

    @property
    def finished(self) -> bool:
        """True once the final file action is done."""
        return self.finished_at is not None


@dataclass(frozen=True)
class StepRow:
    """A row of `steps`: one step ID on one document."""

    id: int
    document_id: int
    step_id: str
    state: StepState
    execution_id: str | None
    status: str | None
    attempts: int
    uncertain: int
    first_try_at: float | None
    submitted_at: float | None
    completed_at: float | None
    result: dict[str, Any] | None
    error: str | None
    http_status: int | None

    @property
    def finished(self) -> bool:
        """True in success, error or failed."""
        return self.state in STEP_END_STATES


@dataclass(frozen=True)
class DeliveryRow:
    """A row of `deliveries`: one result to one sink."""

    id: int
    step_row: int
    document_id: int
    sink: str
    state: DeliveryState
    attempts: int
    receipt: str | None
    error: str | None
    delivered_at: float | None


@dataclass(frozen=True)
class Completion:
    """What delivering a document needs: the document, its step rows and its delivery rows."""

    document: DocumentRow
    steps: list[StepRow]
    deliveries: list[DeliveryRow]


@dataclass(frozen=True)
class PruneCandidate:
    """A finished document old enough to be forgotten (see `docutray_watch.retention`)."""

    id: int
    pipeline: str
    path: str
    kept_latest: bool  # the newest row of a file kept where it was found


@dataclass(frozen=True)
class NewDocument:
    """A hashed, checked file for `add_queued_batch` (a backlog taken in: one commit for many)."""

    pipeline: str
    path: str
    relative_path: str
    sha256: str
    content_type: str
    size: int
    mtime_ns: int
    ctime_ns: int | None
    inode: int | None
    steps: Sequence[str]
    skip_if_done: bool  # `duplicates: skip`: not journaled when a delivered twin exists
    source_version: str | None = None  # a source document's version (ETag…); None for files


@dataclass(frozen=True)
class Queued:
    """A document `add_queued_batch` journaled, with its pending step rows."""

    document: DocumentRow
    steps: list[StepRow]


def kept_stamp(size: int | None, mtime_ns: int | None) -> int:
    """(size, mtime_ns) as one exact int: one object per file kept in place instead of a row."""
    return ((mtime_ns or 0) << 64) | (size or 0)
