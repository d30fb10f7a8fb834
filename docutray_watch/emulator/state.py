"""Everything the emulator remembers: configuration, executions, fault dice and statistics.

One lock guards it all, so the server's event loop and other threads (tests reading stats,
changing the configuration) can use it at the same time. Nothing awaits while holding it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from docutray_watch.emulator._documents import Document
from docutray_watch.emulator._executions import Execution, Outcome, Status
from docutray_watch.emulator._identifications import Identification, classify
from docutray_watch.emulator._peaks import LatestRunningPeak, RunningPeak, WindowPeak
from docutray_watch.emulator._ratelimit import TokenBucket
from docutray_watch.emulator.config import EmulatorConfig
from docutray_watch.emulator.stats import (
    EmulatorStats,
    ExecutionStats,
    FaultKind,
    RetryAfterViolation,
)

Clock = Callable[[], float]
"""A monotonic clock in seconds, like `time.monotonic`."""

_MIB = 1024 * 1024


class EmulatorState:
    """Configuration, executions and statistics of one emulator."""

    def __init__(self, config: EmulatorConfig | None = None, *, clock: Clock | None = None) -> None:
        self._lock = threading.Lock()
        self._clock: Clock = clock or time.monotonic
        self._config = config or EmulatorConfig()
        self._random = random.Random(self._config.seed)  # noqa: S311 - fault dice, not secrets
        self._bucket = self._new_bucket()
        self._executions: dict[str, Execution] = {}
        self._identifications: dict[str, Identification] = {}
        self._aliases: dict[str, str] = {}
        self._posts = 0
        self._status_gets = 0
        self._client_disconnects = 0
        self._responses: Counter[int] = Counter()
        self._by_second: defaultdict[int, Counter[int]] = defaultdict(Counter)
        self._faults: Counter[str] = Counter()
        self._submissions: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._retry_not_before: dict[str, float] = {}
        self._violations: list[RetryAfterViolation] = []
        self._running_peak = RunningPeak()
        self._latest_peak = LatestRunningPeak()
        self._request_peak = WindowPeak(1.0)

    # -- configuration -------------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        """The configuration in force."""
        return self._config

    def now(self) -> float:
        """The emulator's clock."""
        return self._clock()

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Apply configuration changes at once and return the new configuration."""
        with self._lock:
            old = self._config
            self._config = old.with_changes(**changes)
            if self._config.seed != old.seed:
                self._random.seed(self._config.seed)
            if self._config.rate_limit_rps != old.rate_limit_rps:
                self._bucket = self._new_bucket()
            return self._config

    def reset(self) -> None:
        """Forget every execution and statistic (the configuration stays)."""
        with self._lock:
            self._executions.clear()
            self._identifications.clear()
            self._aliases.clear()
            self._posts = 0
            self._status_gets = 0
            self._client_disconnects = 0
            self._responses.clear()
            self._by_second.clear()
            self._faults.clear()
            self._submissions.clear()
            self._retry_not_before.clear()
            self._violations.clear()
            self._running_peak = RunningPeak()
            self._latest_peak = LatestRunningPeak()
            self._request_peak = WindowPeak(1.0)
            self._random.seed(self._config.seed)
            self._bucket = self._new_bucket()

    def _new_bucket(self) -> TokenBucket | None:
        rate = self._config.rate_limit_rps
        return None if rate is None else TokenBucket(rate, self._clock())

    # -- statistics ----------------------------------------------------------------------------

    def stats(self, *, include_executions: bool = True) -> EmulatorStats:
        """A consistent snapshot of the statistics."""
        with self._lock:
            now = self._clock()
            in_flight = sum(
                1
                for e in self._executions.values()
                if e.status_at(now) in ("ENQUEUED", "PROCESSING")
            )
            executions: dict[str, ExecutionStats] | None = None
            if include_executions:
                executions = {key: e.snapshot() for key, e in self._executions.items()}
            return EmulatorStats(
                posts=self._posts,
                status_gets=self._status_gets,
                client_disconnects=self._client_disconnects,
                responses_by_status=dict(self._responses),
                responses_by_second={t: dict(c) for t, c in self._by_second.items()},
                faults=dict(self._faults),
                executions_created=len(self._executions),
                executions_in_flight=in_flight,
                peak_executions_running=self._running_peak.peak,
                peak_latest_executions_running=self._latest_peak.peak,
                peak_requests_per_second=self._request_peak.peak,
                identifications_created=len(self._identifications),
                submissions={step: dict(docs) for step, docs in self._submissions.items()},
                retry_after_violations=len(self._violations),
                retry_after_violation_details=list(self._violations),
                executions=executions,
            )

    def count_post(self) -> None:
        """Count a submission request."""
        with self._lock:
            self._posts += 1
            self._request_peak.arrived(self._clock())

    def count_status_get(self) -> None:
        """Count a status request."""
        with self._lock:
            self._status_gets += 1
            self._request_peak.arrived(self._clock())

    def count_client_disconnect(self) -> None:
        """Count a request the client abandoned before its answer."""
        with self._lock:
            self._client_disconnects += 1

    def count_response(self, status: int) -> None:
        """Count an API answer by status code."""
        with self._lock:
            self._responses[status] += 1
            self._by_second[int(time.time())][status] += 1

    def count_fault(self, kind: FaultKind) -> None:
        """Count an injected fault."""
        with self._lock:
            self._faults[kind.value] += 1

    # -- fault dice and limits -----------------------------------------------------------------

    def roll(self, rate: float) -> bool:
        """True with probability `rate` (the dice are not thrown for a rate of 0)."""
        if rate <= 0.0:
            return False
        with self._lock:
            return self._random.random() < rate

    def roll_server_error(self, config: EmulatorConfig) -> int | None:
        """A status from `server_error_statuses` with probability `server_error_rate`."""
        if config.server_error_rate <= 0.0:
            return None
        with self._lock:
            if self._random.random() >= config.server_error_rate:
                return None
            return self._random.choice(config.server_error_statuses)

    def take_token(self, now: float) -> float:
        """Take a rate-limiter token; 0.0 if granted, else the seconds until one is free."""
        with self._lock:
            return 0.0 if self._bucket is None else self._bucket.take(now)

    def check_retry_after(self, identity: str, arrived_at: float) -> None:
        """Count a violation if `identity` comes back before its last Retry-After elapsed."""
        with self._lock:
            not_before = self._retry_not_before.get(identity)
            if not_before is None:
                return
            if arrived_at < not_before:
                self._violations.append(
                    RetryAfterViolation(identity=identity, early_by=not_before - arrived_at)
                )
            else:
                del self._retry_not_before[identity]

    def note_retry_after(self, identity: str, seconds: float) -> None:
        """Remember that `identity` was told to wait `seconds` from now."""
        with self._lock:
            self._retry_not_before[identity] = self._clock() + seconds

    # -- executions ----------------------------------------------------------------------------

    def _roll_outcome(
        self, document: Document, config: EmulatorConfig
    ) -> tuple[Outcome, str | None]:
        # Called under the lock: the ERROR marker, else the error_rate dice.
        if document.markers.force_error:
            return "ERROR", "Emulated failure: the document carries the ERROR marker"
        if config.error_rate > 0.0 and self._random.random() < config.error_rate:
            self._faults[FaultKind.EXECUTION_ERROR.value] += 1
            return "ERROR", "Emulated failure (error_rate)"
        return "SUCCESS", None

    def create_execution(self, step_id: str, document: Document) -> Execution:
        """Start an execution of `step_id` on `document`."""
        config = self._config
        with self._lock:
            now = self._clock()
            outcome, error_message = self._roll_outcome(document, config)
            execution = Execution(
                execution_id=f"exec_{uuid.uuid4().hex}",
                step_id=step_id,
                document=document,
                created_at=now,
                created_at_wall=time.time(),
                latency=self._latency_for(document, config),
                outcome=outcome,
                error_message=error_message,
            )
            self._executions[execution.execution_id] = execution
            self._running_peak.started(now, execution.completes_at)
            self._latest_peak.started(
                now,
                execution.completes_at,
                (step_id, document.sha256),
                execution.execution_id,
            )
            self._submissions[step_id][document.sha256] += 1
            return execution

    def create_identification(self, document: Document) -> Identification:
        """Start an identification of `document` (its answer is decided now; 400 for unknown
        candidate codes)."""
        config = self._config
        result = classify(document, config)
        with self._lock:
            outcome, error_message = self._roll_outcome(document, config)
            identification = Identification(
                identification_id=f"idn_{uuid.uuid4().hex}",
                document=document,
                created_at=self._clock(),
                created_at_wall=time.time(),
                latency=self._latency_for(document, config),
                outcome=outcome,
                result=result,
                error_message=error_message,
            )
            self._identifications[identification.identification_id] = identification
            return identification

    def read_identification(
        self, identification_id: str, now: float
    ) -> tuple[Identification, Status] | None:
        """Record a status read of `identification_id` at `now`; None if it is unknown."""
        with self._lock:
            identification = self._identifications.get(identification_id)
            if identification is None:
                return None
            identification.status_reads += 1
            return identification, identification.status_at(now)

    def _latency_for(self, document: Document, config: EmulatorConfig) -> float:
        if document.markers.latency is not None:
            return document.markers.latency
        latency = config.latency
        if config.latency_jitter > 0.0:
            latency *= 1.0 + self._random.uniform(-config.latency_jitter, config.latency_jitter)
        return latency + config.latency_per_mb * document.size / _MIB

    def alias_execution(self, alias: str, execution_id: str) -> None:
        """Let status reads of `alias` answer for `execution_id` (e.g. an id from the docs)."""
        with self._lock:
            if execution_id not in self._executions:
                raise KeyError(execution_id)
            self._aliases[alias] = execution_id

    def read_status(self, execution_id: str, now: float) -> tuple[Execution, Status] | None:
        """Record a status read of `execution_id` at `now`; None if it is unknown."""
        with self._lock:
            execution_id = self._aliases.get(execution_id, execution_id)
            execution = self._executions.get(execution_id)
            if execution is None:
                return None
            return execution, execution.record_read(now, time.time())
