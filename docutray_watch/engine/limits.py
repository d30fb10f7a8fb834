"""What bounds the work: execution slots, the request rate and the API pauses, behind `Limits`.

The phases never count anything by hand: a step takes a slot before its submission and gives it
back when its execution ends (`SlotPool`), every request waits for its turn in the shared rate
(`RequestRate`) and for the API to be usable (`Pauses`). `LocalLimits` holds the in-memory
implementations a single daemon uses; multi-node mode puts rows of PostgreSQL behind the same
three protocols, so the phases stay as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from docutray_watch.config import Config
from docutray_watch.engine.errors import Failure
from docutray_watch.engine.gate import ApiGate, Probe
from docutray_watch.engine.ratelimit import RateLimiter

__all__ = ["Limits", "LocalLimits", "Pauses", "RequestRate", "SlotPool", "Slots", "fixed_rate"]


class SlotPool(Protocol):
    """Executions in flight under `api.max_in_flight`."""

    @property
    def used(self) -> int:
        """Slots held now (resumed executions may hold more than the capacity)."""
        ...

    async def acquire(self) -> None:
        """Wait for a free slot (first come, first served) and hold it."""
        ...

    def take(self) -> None:
        """Hold a slot at once, over the capacity if need be: an execution already running at
        the service (resumed after a restart) is counted whatever the cap."""
        ...

    def release(self) -> None:
        """Give a slot back: the longest waiter gets it."""
        ...

    def resize(self, capacity: int) -> None:
        """A new `max_in_flight` (reload)."""
        ...


class RequestRate(Protocol):
    """The shared request rate (fixed, or learned from the service's 429s)."""

    async def acquire(self, *, yield_to_others: bool = False) -> None:
        """Wait for this request's turn."""
        ...

    def accepted(self, sent_at: float | None = None) -> None:
        """An answer that was not a 429."""
        ...

    def throttled(self, seconds: float, sent_at: float | None = None) -> None:
        """A 429: hold every request for `seconds`, and slow down."""
        ...


class Pauses(Protocol):
    """When the API cannot be used (key refused, unreachable, 429, a pipeline's step refused)."""

    def blocked(self, pipeline: str) -> str | None:
        """Why this pipeline's submissions wait now, or None."""
        ...

    async def wait_open(self, pipeline: str, *, submission: bool = False) -> None:
        """Wait until requests of this pipeline may go."""
        ...

    def report(
        self,
        failure: Failure,
        *,
        pipeline: str,
        error: str,
        retry_after: float | None,
    ) -> None:
        """A failure that pauses work (see `engine.errors`)."""
        ...

    def answered(self, pipeline: str | None = None) -> None:
        """The API answered (a pause this answer disproves ends)."""
        ...

    def paused_seconds(self, pipeline: str) -> float:
        """Seconds this pipeline has been paused in all (deadlines add what grew meanwhile)."""
        ...

    def paused_between(self, pipeline: str, since: float) -> float:
        """Seconds this pipeline was paused since the wall-clock time `since` (for deadlines
        of jobs that keep nothing in memory: multi-node mode)."""
        ...


class Limits(Protocol):
    """The three limits together: what the engine's phases are given."""

    @property
    def slots(self) -> SlotPool:
        """Executions in flight."""
        ...

    @property
    def rate(self) -> RequestRate:
        """The shared request rate."""
        ...

    @property
    def pauses(self) -> Pauses:
        """The API pauses."""
        ...


class Slots:
    """A counting semaphore that wakes exactly one waiter per released slot (in arrival order)
    and that resumed work may overfill."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.used < self.capacity and not self._waiters:
            self.used += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # `_wake` counted the slot for us before waking us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # woken and cancelled at once: pass the slot on
            else:
                with contextlib.suppress(ValueError):  # `_wake` may have dropped it already
                    self._waiters.remove(waiter)
            raise

    def take(self) -> None:
        self.used += 1

    def release(self) -> None:
        self.used -= 1
        self._wake()

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += 1
                waiter.set_result(None)


def fixed_rate(config: Config) -> float | None:
    """`api.requests_per_second` as a number, or None for `auto`."""
    rate = config.api.requests_per_second
    return None if rate == "auto" else rate


@dataclass
class LocalLimits:
    """The limits of one daemon, in memory."""

    slots: Slots
    rate: RateLimiter
    pauses: ApiGate

    @classmethod
    def of(
        cls, config: Config, *, probe: Probe, on_pause_change: Callable[[], None]
    ) -> LocalLimits:
        """The limits a config asks for; `probe` proves the API usable again after a pause."""
        rate = fixed_rate(config)
        limiter = (
            RateLimiter.adaptive_rate(max_rate=config.api.max_requests_per_second)
            if rate is None
            else RateLimiter(rate)
        )
        gate = ApiGate(
            probe=probe,
            probe_interval=config.api.pause_probe_interval,
            on_change=on_pause_change,
        )
        return cls(slots=Slots(config.api.max_in_flight), rate=limiter, pauses=gate)

    def reconfigure(self, config: Config) -> None:
        """A reload changed the `api` block: new cap and rate at once."""
        self.rate.configure(fixed_rate(config), config.api.max_requests_per_second)
        self.slots.resize(config.api.max_in_flight)
