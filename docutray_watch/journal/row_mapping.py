"""One mapping from a stored row to the store's row objects, for every backend.

SQLite keeps JSON columns as text and `flags` as a comma-separated string; PostgreSQL hands out
JSON and arrays already decoded. Each backend passes its decoders; the column names live here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from docutray_watch.journal.rows import DeliveryRow, DocumentRow, StepRow
from docutray_watch.journal.states import DeliveryState, DocumentState, StepState

__all__ = ["Record", "delivery_row", "document_row", "step_row"]


class Record(Protocol):
    """A row read by column name (`sqlite3.Row`, SQLAlchemy's `RowMapping`)."""

    def __getitem__(self, key: str, /) -> Any: ...


def _as_is(value: Any) -> Any:
    return value


def document_row(
    row: Record,
    *,
    decode_json: Callable[[Any], Any] = _as_is,
    decode_flags: Callable[[Any], Iterable[str]] = _as_is,
) -> DocumentRow:
    """A `documents` row."""
    return DocumentRow(
        id=row["id"],
        pipeline=row["pipeline"],
        path=row["path"],
        relative_path=row["relative_path"],
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        sha256=row["sha256"],
        content_type=row["content_type"],
        state=DocumentState(row["state"]),
        outcome=row["outcome"],
        attempts=row["attempts"],
        error=row["error"],
        error_stage=row["error_stage"],
        error_detail=decode_json(row["error_detail"]),
        flags=frozenset(decode_flags(row["flags"])),
        duplicate_of=row["duplicate_of"],
        archive_to=row["archive_to"],
        archived_to=row["archived_to"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        ctime_ns=row["ctime_ns"],
        inode=row["inode"],
        identified_type=row["identified_type"],
        identification=decode_json(row["identification"]),
        source_version=row["source_version"],
    )


def step_row(row: Record, *, decode_json: Callable[[Any], Any] = _as_is) -> StepRow:
    """A `steps` row."""
    return StepRow(
        id=row["id"],
        document_id=row["document_id"],
        step_id=row["step_id"],
        state=StepState(row["state"]),
        execution_id=row["execution_id"],
        status=row["status"],
        attempts=row["attempts"],
        uncertain=row["uncertain"],
        first_try_at=row["first_try_at"],
        submitted_at=row["submitted_at"],
        completed_at=row["completed_at"],
        result=decode_json(row["result"]),
        error=row["error"],
        http_status=row["http_status"],
    )


def delivery_row(row: Record) -> DeliveryRow:
    """A `deliveries` row (no column needs decoding)."""
    return DeliveryRow(
        id=row["id"],
        step_row=row["step_row"],
        document_id=row["document_id"],
        sink=row["sink"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        receipt=row["receipt"],
        error=row["error"],
        delivered_at=row["delivered_at"],
    )
