"""The engine's shared pauses: when the API cannot be used, nobody uses it, and nothing fails.

Four pauses, each set by `ApiGate.report` from what `engine.errors.classify` said:

- **credentials** (401): every submission and status read waits. Logged as `api_key_rejected`
  at most once per minute, however many documents are waiting.
- **unreachable** (no connection could be opened): every request waits.
- **throttled** (429): every request waits for the answer's Retry-After (1 s when it has none).
- **pipeline** (403 or 404 to a submission): that pipeline's submissions wait, with the reason;
  the other pipelines go on.

How a pause ends. While the key is refused or the API unreachable, a probe runs every
`api.pause_probe_interval` seconds: a status read of an execution id that cannot exist. The
service authenticates before it looks the id up, so `404` proves both that the API answers and
that it accepts the key, without starting (and paying for) an execution; `401` means the key is
still refused, no connection means still unreachable. Any other outcome (a 5xx, a slow answer)
ends the pause too: the real requests that follow tell the rest, and a key still refused pauses
again at the first 401. A reload (SIGHUP) with a new key ends the
credentials pause at once. A pipeline pause cannot be probed without a submission, so after each
interval one submission of that pipeline is let through as a trial: a 403/404 answer starts no
execution, and a success ends the pause. A throttle ends by itself.

Paused time is not the documents' fault: `paused_seconds(pipeline)` only grows while that
pipeline is paused, and the engine adds its growth to each step's `poll.timeout` deadline. A
job of multi-node mode keeps nothing in memory between two runs, so it asks instead how long
the pipeline was paused since a wall-clock time (`paused_between`, from the spans kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from docutray_watch.engine.errors import Failure

__all__ = ["PROBE_EXECUTION_ID", "ApiGate", "Pause"]

log = structlog.get_logger(__name__)

PROBE_EXECUTION_ID = "docutray-watch-probe-not-an-execution"
KEY_LOG_INTERVAL = 60.0  # seconds between two `api_key_rejected` lines
_SPANS_KEPT = 1024  # ended pauses remembered for `paused_between` (older ones end no deadline)

Probe = Callable[[], Awaitable[Failure | None]]
"""A cheap request proving the key works and the API answers: None when it does."""


@dataclass
class Pause:
    """One pause: its kind, why, and since when (wall clock for people, monotonic for sums)."""

    kind: str
    reason: str
    since_wall: float
    since: float
    trial_at: float = 0.0  # pipeline pauses: when the next trial submission may go


class ApiGate:
    """Shared pause state of one engine (see the module docstring)."""

    def __init__(
        self,
        *,
        probe: Probe,
        probe_interval: float,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._probe = probe
        self.probe_interval = probe_interval
        self._on_change = on_change
        self._clock = clock
        self.credentials: Pause | None = None
        self.unreachable: Pause | None = None
        self.throttled_until = 0.0
        self.pipelines: dict[str, Pause] = {}
        self._changed = asyncio.Event()
        self._probe_task: asyncio.Task[None] | None = None
        self._last_key_log = -KEY_LOG_INTERVAL * 2
        # Seconds every request was paused (credentials, unreachable, throttled), and per pipeline.
        self._global_total = 0.0
        self._global_since: float | None = None
        self._throttle_total = 0.0
        self._pipeline_total: dict[str, float] = {}
        # The same pauses as wall-clock spans (pipeline, or None for every request).
        self._wall = wall
        self._global_since_wall = 0.0
        self._spans: deque[tuple[str | None, float, float]] = deque(maxlen=_SPANS_KEPT)

    # -- what the engine asks ----------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """Whether any pause is on (the watchdog counts a deliberate pause as progress)."""
        return bool(
            self.credentials
            or self.unreachable
            or self.pipelines
            or self.throttled_until > self._clock()
        )

    def state(self) -> str:
        """One word for dashboards: `key_refused`, `unreachable`, `paused` (a 429's Retry-After
        holds every request) or `ok` (a pipeline's own pause is in `reasons`, not here)."""
        if self.credentials is not None:
            return "key_refused"
        if self.unreachable is not None:
            return "unreachable"
        return "paused" if self.throttled_until > self._clock() else "ok"

    def reasons(self) -> list[str]:
        """Why work is paused, one line per pause (for /readyz and `status`); throttling is
        left out: it ends by itself within seconds."""
        lines = []
        if self.credentials is not None:
            lines.append(f"paused: {self.credentials.reason}")
        if self.unreachable is not None:
            lines.append(f"paused: {self.unreachable.reason}")
        for name, pause in sorted(self.pipelines.items()):
            lines.append(f"pipeline {name} paused: {pause.reason}")
        return lines

    def blocked(self, pipeline: str) -> str | None:
        """Why `pipeline` may not send a request now (None: it may)."""
        now = self._clock()
        if self.credentials is not None:
            return self.credentials.reason
        if self.unreachable is not None:
            return self.unreachable.reason
        if self.throttled_until > now:
            return "rate limited (429)"
        pause = self.pipelines.get(pipeline)
        if pause is not None and now < pause.trial_at:
            return pause.reason
        return None

    def paused_seconds(self, pipeline: str) -> float:
        """Seconds requests of `pipeline` have been paused so far (only ever grows)."""
        now = self._clock()
        total = self._global_total + self._throttle_total + self._pipeline_total.get(pipeline, 0.0)
        if self._global_since is not None:
            total += now - self._global_since
        pause = self.pipelines.get(pipeline)
        if pause is not None:
            total += now - pause.since
        return total

    def paused_between(self, pipeline: str, since: float) -> float:
        """Seconds requests of `pipeline` were paused since the wall-clock time `since`."""
        now = self._wall()
        spans = [(start, end) for key, start, end in self._spans if key in (None, pipeline)]
        if self._global_since is not None:
            spans.append((self._global_since_wall, now))
        pause = self.pipelines.get(pipeline)
        if pause is not None:
            spans.append((pause.since_wall, now))
        return sum(max(0.0, min(end, now) - max(start, since)) for start, end in spans)

    async def wait_open(self, pipeline: str, *, submission: bool = False) -> None:
        """Wait until `pipeline` may send a request; a submission may be a pipeline's trial."""
        while True:
            reason = self.blocked(pipeline)
            if reason is None:
                pause = self.pipelines.get(pipeline)
                if pause is not None:
                    if not submission:
                        return  # status reads are not what the pipeline pause is about
                    pause.trial_at = self._clock() + self.probe_interval  # one trial per interval
                return
            if not submission and self._only_pipeline_paused(pipeline):
                return
            await self.wait_changed(self._next_deadline(pipeline))

    async def wait_changed(self, within: float | None) -> None:
        """Wait until a pause starts or ends, or `within` seconds (None: no limit)."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), within)

    # -- what the engine tells ---------------------------------------------------------------

    def report(
        self, failure: Failure, *, pipeline: str, error: str, retry_after: float | None
    ) -> None:
        """A request failed with a pausing `failure`: pause what it concerns."""
        now = self._clock()
        if failure is Failure.CREDENTIALS:
            if self.credentials is None:
                self.credentials = Pause(
                    "credentials",
                    "the DocuTray API refused the API key (401)",
                    self._wall(),
                    now,
                )
                self._global_started()
                self._changed_now()
            self._log_key_rejected(error)
        elif failure is Failure.UNREACHABLE:
            if self.unreachable is None:
                self.unreachable = Pause(
                    "unreachable",
                    f"the DocuTray API cannot be reached ({error})",
                    self._wall(),
                    now,
                )
                self._global_started()
                log.error("api_unreachable", error=error, note="pausing until it answers again")
                self._changed_now()
        elif failure is Failure.THROTTLED:
            until = now + (retry_after if retry_after is not None else 1.0)
            if until > self.throttled_until:
                self._throttle_total += until - max(now, self.throttled_until)
                wall = self._wall()
                start = wall + max(0.0, self.throttled_until - now)
                self._spans.append((None, start, wall + until - now))
                self.throttled_until = until
                self._changed_now()
        elif failure is Failure.PIPELINE:
            pause = self.pipelines.get(pipeline)
            if pause is None:
                pause = self.pipelines[pipeline] = Pause(
                    "pipeline", f"the API refused its step ({error})", self._wall(), now
                )
                log.error(
                    "pipeline_paused",
                    pipeline=pipeline,
                    reason=pause.reason,
                    retry_in_s=self.probe_interval,
                )
                self._changed_now()
            pause.trial_at = now + self.probe_interval
        if self.credentials is not None or self.unreachable is not None:
            self._ensure_probe()

    def answered(self, pipeline: str | None = None) -> None:
        """A request succeeded: the key works and the API answers (and, for a submission of
        `pipeline`, that pipeline's step works)."""
        changed = False
        if self.credentials is not None or self.unreachable is not None:
            log.info(
                "api_resumed",
                paused_s=round(self._clock() - (self._global_since or self._clock()), 1),
            )
            self.credentials = self.unreachable = None
            self._global_stopped()
            changed = True
        if pipeline is not None and pipeline in self.pipelines:
            self._end_pipeline_pause(pipeline)
            changed = True
        if changed:
            self._changed_now()

    def reset(self) -> None:
        """The configuration changed (a reload, maybe a new key): end the credentials and
        pipeline pauses so everything tries again at once; a still bad key pauses again."""
        changed = self.credentials is not None or bool(self.pipelines)
        if self.credentials is not None:
            self.credentials = None
            if self.unreachable is None:
                self._global_stopped()
        for name in list(self.pipelines):
            self._end_pipeline_pause(name)
        if changed:
            log.info("api_pause_reset", note="configuration reloaded: trying the API again")
            self._changed_now()

    async def close(self) -> None:
        """Stop probing."""
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe_task
            self._probe_task = None

    # -- inside --------------------------------------------------------------------------------

    def _only_pipeline_paused(self, pipeline: str) -> bool:
        now = self._clock()
        return (
            self.credentials is None
            and self.unreachable is None
            and self.throttled_until <= now
            and pipeline in self.pipelines
        )

    def _next_deadline(self, pipeline: str) -> float | None:
        now = self._clock()
        waits = []
        if self.throttled_until > now:
            waits.append(self.throttled_until - now)
        pause = self.pipelines.get(pipeline)
        if pause is not None and pause.trial_at > now:
            waits.append(pause.trial_at - now)
        return min(waits) if waits else None

    def _end_pipeline_pause(self, pipeline: str) -> None:
        pause = self.pipelines.pop(pipeline)
        self._pipeline_total[pipeline] = self._pipeline_total.get(pipeline, 0.0) + (
            self._clock() - pause.since
        )
        self._spans.append((pipeline, pause.since_wall, self._wall()))
        log.info("pipeline_resumed", pipeline=pipeline)

    def _global_started(self) -> None:
        if self._global_since is None:
            self._global_since = self._clock()
            self._global_since_wall = self._wall()

    def _global_stopped(self) -> None:
        if self._global_since is not None:
            self._global_total += self._clock() - self._global_since
            self._global_since = None
            self._spans.append((None, self._global_since_wall, self._wall()))

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        if self._on_change is not None:
            self._on_change()

    def _log_key_rejected(self, error: str) -> None:
        now = self._clock()
        if now - self._last_key_log >= KEY_LOG_INTERVAL:
            self._last_key_log = now
            log.error(
                "api_key_rejected",
                status=401,
                error=error,
                note="pausing every submission and status read until the key works "
                "(fix it and reload, or wait for the probe)",
            )

    def _ensure_probe(self) -> None:
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.ensure_future(self._probe_loop())

    async def _probe_loop(self) -> None:
        """Every interval while the key is refused or the API unreachable: is it back?"""
        while self.credentials is not None or self.unreachable is not None:
            due = self._clock() + self.probe_interval
            while (left := due - self._clock()) > 0:
                await self.wait_changed(left)  # a reload or a success may end the pause sooner
                if self.credentials is None and self.unreachable is None:
                    return
            try:
                outcome = await self._probe()
            except Exception as exc:  # noqa: BLE001 - a failed probe is just "not yet"
                log.warning("api_probe_failed", error=str(exc))
                continue
            if outcome is None or outcome not in (Failure.CREDENTIALS, Failure.UNREACHABLE):
                # Answered, and not with a 401 (a 5xx or a timeout proves less than a 404, but the
                # next real request tells: a key still refused pauses again at once).
                self.answered()
            elif outcome is Failure.CREDENTIALS:
                if self.unreachable is not None:
                    self.unreachable = None
                self.report(outcome, pipeline="", error="probe: 401", retry_after=None)
            elif outcome is Failure.UNREACHABLE and self.unreachable is None:
                self.report(outcome, pipeline="", error="probe: no connection", retry_after=None)
