"""Statistics the emulator keeps for tests and benchmarks.

Times named ``*_at`` are read from the emulator's clock (``time.monotonic`` unless a test
injects another), so they compare across processes on one host; ``*_at_wall`` are epoch seconds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field


class FaultKind(StrEnum):
    """Kinds of injected faults counted in `EmulatorStats.faults`."""

    DROP = "drop"
    DROP_AFTER_ACCEPT = "drop_after_accept"
    SERVER_ERROR = "server_error"
    RATE_LIMIT = "rate_limit"
    RATE_LIMITER = "rate_limiter"
    EXECUTION_ERROR = "execution_error"


class ExecutionStats(BaseModel):
    """What the emulator knows about one execution."""

    model_config = ConfigDict(frozen=True)

    execution_id: str
    step_id: str
    sha256: str
    size: int
    content_type: str
    original_filename: str | None
    outcome: Literal["SUCCESS", "ERROR"]
    latency: float
    created_at: float
    created_at_wall: float
    completes_at: float
    completes_at_wall: float
    status_reads: int
    first_terminal_read_at: float | None
    first_terminal_read_at_wall: float | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def detection_delay(self) -> float | None:
        """Seconds between completion and the first status read that saw it, if any."""
        if self.first_terminal_read_at is None:
            return None
        return self.first_terminal_read_at - self.completes_at


class RetryAfterViolation(BaseModel):
    """A request that came back before the Retry-After it was given had elapsed."""

    model_config = ConfigDict(frozen=True)

    identity: str
    early_by: float


class EmulatorStats(BaseModel):
    """A consistent snapshot of the emulator's counters."""

    model_config = ConfigDict(frozen=True)

    posts: int
    status_gets: int
    client_disconnects: int
    """Requests the client abandoned mid-way (e.g. an upload cut by a timeout)."""
    responses_by_status: dict[int, int]
    responses_by_second: dict[int, dict[int, int]] = {}
    """Answers by status in each second (keyed by epoch second), for rates over time."""
    faults: dict[str, int]
    executions_created: int
    executions_in_flight: int
    peak_executions_running: int = 0
    """The most executions running (ENQUEUED or PROCESSING) at one instant since the start or
    the last reset: what a client's cap on executions in flight must keep low."""
    peak_latest_executions_running: int = 0
    """Like `peak_executions_running`, counting for each (step, document) only its latest
    execution at that instant: the running ones a client resubmitted (it could not know its first
    POST got through) are left out, so ``peak_executions_running`` is at most this plus the
    superseded executions still running at that instant (see `_peaks.LatestRunningPeak`)."""
    peak_requests_per_second: int = 0
    """The most API requests (submissions and reads, answered or not) that arrived within any
    one second (a sliding window) since the start or the last reset."""
    identifications_created: int = 0
    """Asynchronous identifications started (POST /api/identify-async)."""
    submissions: dict[str, dict[str, int]]
    """Executions started per step id, then per document sha256."""
    retry_after_violations: int
    retry_after_violation_details: list[RetryAfterViolation]
    executions: dict[str, ExecutionStats] | None = None
    """Per execution, keyed by execution id; None unless asked for."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def resubmissions(self) -> int:
        """Executions started for a (step, document) pair that already had one."""
        return sum(count - 1 for per_doc in self.submissions.values() for count in per_doc.values())
