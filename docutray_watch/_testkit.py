"""Building blocks re-exported by `docutray_watch.testing`: sample records and a memory sink."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from docutray_watch.records import Document, Identification, RecordKey, ResultRecord
from docutray_watch.sinks.base import Receipt, Sink, SinkConfig, SinkError

__all__ = ["MemorySink", "MemorySinkConfig", "MemorySinkPlugin", "make_document", "make_record"]


def make_document(
    name: str = "invoice.pdf",
    *,
    content: bytes = b"%PDF-1.4 sample",
    relative_dir: str = "",
    root: str = "/srv/inbox",
    content_type: str = "application/pdf",
) -> Document:
    """A `Document` whose hash and size match `content`."""
    relative_path = f"{relative_dir}/{name}" if relative_dir else name
    return Document(
        name=name,
        path=f"{root.rstrip('/')}/{relative_path}",
        relative_path=relative_path,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        content_type=content_type,
    )


def make_record(
    *,
    pipeline: str = "invoices",
    document: Document | None = None,
    step_id: str = "stp_test",
    execution_id: str = "exec_test",
    status: Literal["SUCCESS", "ERROR"] = "SUCCESS",
    data: Any = None,
    error: Any = None,
    completed_at: datetime | None = None,
    identification: Identification | None = None,
    **document_fields: Any,
) -> ResultRecord:
    """A plausible `ResultRecord`; keyword arguments of `make_document` shape its document."""
    document = document or make_document(**document_fields)
    completed = completed_at or datetime(2026, 1, 15, 10, 30, 45, tzinfo=UTC)
    if status == "SUCCESS" and data is None:
        data = {"sha256": document.sha256, "size": document.size}
    if status == "ERROR" and error is None:
        error = "processing failed"
    return ResultRecord(
        pipeline=pipeline,
        document=document,
        step_id=step_id,
        execution_id=execution_id,
        status=status,
        data=data,
        identification=identification,
        error=error,
        original_filename=document.name,
        request_timestamp="2026-01-15T10:30:00.000Z",
        response_timestamp="2026-01-15T10:30:45.000Z",
        submitted_at=completed.replace(second=0),
        completed_at=completed,
    )


class MemorySinkConfig(SinkConfig):
    """Options of the memory sink (for tests)."""

    fail_times: int = Field(0, ge=0, description="Fail this many deliveries before succeeding.")


class MemorySink(Sink[MemorySinkConfig]):
    """Keeps delivered records in memory, keyed like a real sink (redelivery overwrites).

    `MemorySink.instances` lists every instance created, so a test can find the one the engine
    built from a config. `fail_times` (config) or `fail_with` (attribute) simulate outages.
    """

    type = "memory"
    description = "Keep results in memory (tests only)."
    config_model = MemorySinkConfig
    instances: list[MemorySink] = []

    def __init__(self, config: MemorySinkConfig, *, pipeline: str, sink_id: str) -> None:
        super().__init__(config, pipeline=pipeline, sink_id=sink_id)
        self.records: dict[RecordKey, ResultRecord] = {}
        self.deliveries = 0
        self.opened = False
        self.closed = False
        self.fail_with: Callable[[ResultRecord], Exception | None] | None = None
        self._failures_left = config.fail_times
        self._lock = threading.Lock()
        MemorySink.instances.append(self)

    def open(self) -> None:
        """Mark the sink open."""
        self.opened = True

    def deliver(self, record: ResultRecord) -> Receipt:
        """Store the record under its key, unless a simulated failure applies."""
        with self._lock:
            self.deliveries += 1
            if self._failures_left > 0:
                self._failures_left -= 1
                raise SinkError("simulated outage")
            if self.fail_with is not None:
                error = self.fail_with(record)
                if error is not None:
                    raise error
            self.records[record.key] = record
        return f"memory:{record.document.sha256[:12]}:{record.step_id}"

    def close(self) -> None:
        """Mark the sink closed."""
        self.closed = True


class MemorySinkPlugin:
    """A plugin object registering `MemorySink` (`pm.register(MemorySinkPlugin())`)."""

    from docutray_watch.hookspecs import hookimpl as _hookimpl

    @_hookimpl
    def register_sink_types(self, register: Callable[[type[Sink[Any]]], None]) -> None:
        """Register the memory sink."""
        register(MemorySink)
