"""One emulated step execution, whose status follows from the clock alone (no timers); the
clock rule is shared with identifications."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from docutray_watch.emulator._documents import Document
from docutray_watch.emulator._timestamps import iso_utc
from docutray_watch.emulator.stats import ExecutionStats

Status = Literal["ENQUEUED", "PROCESSING", "SUCCESS", "ERROR"]
Outcome = Literal["SUCCESS", "ERROR"]

ENQUEUED_SHARE = 0.1
"""Share of the latency an execution spends ENQUEUED before it turns PROCESSING."""

EMULATOR_FIELD = {"version": 1}
"""An extra field in status answers, so clients are tested on keeping unknown fields."""


def status_at(created_at: float, latency: float, outcome: Outcome, now: float) -> Status:
    """The status of a job created at `created_at` that takes `latency`, at clock time `now`."""
    elapsed = now - created_at
    if elapsed >= latency:
        return outcome
    if elapsed < latency * ENQUEUED_SHARE:
        return "ENQUEUED"
    return "PROCESSING"


@dataclass(slots=True)
class Execution:
    """An execution and its bookkeeping; mutated only under the emulator state's lock."""

    execution_id: str
    step_id: str
    document: Document
    created_at: float
    created_at_wall: float
    latency: float
    outcome: Outcome
    error_message: str | None = None
    status_reads: int = 0
    first_terminal_read_at: float | None = None
    first_terminal_read_at_wall: float | None = None

    @property
    def completes_at(self) -> float:
        """Clock time at which the execution reaches its outcome."""
        return self.created_at + self.latency

    def status_at(self, now: float) -> Status:
        """The status the execution has at clock time `now`."""
        return status_at(self.created_at, self.latency, self.outcome, now)

    def record_read(self, now: float, now_wall: float) -> Status:
        """Count a status read at `now` and return the status it saw."""
        status = self.status_at(now)
        self.status_reads += 1
        if status in ("SUCCESS", "ERROR") and self.first_terminal_read_at is None:
            self.first_terminal_read_at = now
            self.first_terminal_read_at_wall = now_wall
        return status

    def accepted_body(self) -> dict[str, Any]:
        """The answer to the submission."""
        return {
            "execution_id": self.execution_id,
            "status": "ENQUEUED",
            "step_id": self.step_id,
            "original_filename": self.document.original_filename,
            "request_timestamp": iso_utc(self.created_at_wall),
        }

    def status_body(self, status: Status) -> dict[str, Any]:
        """The answer to a status read that saw `status`."""
        terminal = status in ("SUCCESS", "ERROR")
        return {
            "execution_id": self.execution_id,
            "status": status,
            "step_id": self.step_id,
            "original_filename": self.document.original_filename,
            "request_timestamp": iso_utc(self.created_at_wall),
            "response_timestamp": (
                iso_utc(self.created_at_wall + self.latency) if terminal else None
            ),
            "data": self.result_data() if status == "SUCCESS" else None,
            "error": self.error_message if status == "ERROR" else None,
            "document_metadata": self.document.metadata,
            "emulator": dict(EMULATOR_FIELD),
        }

    def result_data(self) -> dict[str, Any]:
        """The deterministic extraction result: a description of the document received."""
        return {
            "sha256": self.document.sha256,
            "size": self.document.size,
            "content_type": self.document.content_type,
            "step_id": self.step_id,
            "original_filename": self.document.original_filename,
            "document_metadata": self.document.metadata,
        }

    def snapshot(self) -> ExecutionStats:
        """The execution's statistics."""
        return ExecutionStats(
            execution_id=self.execution_id,
            step_id=self.step_id,
            sha256=self.document.sha256,
            size=self.document.size,
            content_type=self.document.content_type,
            original_filename=self.document.original_filename,
            outcome=self.outcome,
            latency=self.latency,
            created_at=self.created_at,
            created_at_wall=self.created_at_wall,
            completes_at=self.completes_at,
            completes_at_wall=self.created_at_wall + self.latency,
            status_reads=self.status_reads,
            first_terminal_read_at=self.first_terminal_read_at,
            first_terminal_read_at_wall=self.first_terminal_read_at_wall,
        )
