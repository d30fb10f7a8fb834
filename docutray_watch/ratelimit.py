"""One request rate for the whole daemon, which a 429 answer slows down for everyone.

`RateLimiter.acquire()` hands out request slots at `rate` per second (bursts up to `burst`),
computed from a "next free slot" time rather than a refilling loop (the generic cell rate
algorithm), so each call is O(1) and needs no background task. `pause(seconds)` — called when the
service answers 429 with a Retry-After — holds every caller until the pause is over, so one
throttled request slows down all pipelines instead of each retrying on its own.

`acquire(yield_to_others=True)` is for new work (a submission): it takes only a slot nobody has
reserved, so reads of executions already running go first. Under a rate limit results are then
noticed when they are ready instead of behind a queue of uploads, and the slot an execution holds
is given back sooner; the submissions use what is left, which is all of it once the reads are
done (their number is bounded by the executions in flight, so submissions are never starved).
"""

from __future__ import annotations

import asyncio
import time
from asyncio import AbstractEventLoop, Lock, get_running_loop
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """A token bucket shared by every API request of the engine."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock = clock
        self._interval = 1.0 / rate
        # Start with a full bucket: the first `burst` requests need not wait.
        self._next_free = float("-inf")
        self._paused_until = float("-inf")
        self.paused_total = 0.0
        self._yielding: tuple[AbstractEventLoop, Lock] | None = None

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        """Change the rate (a config reload); slots already handed out keep their times."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._interval = 1.0 / rate

    def _earliest(self, now: float) -> float:
        # A slot can be used up to `burst` intervals ahead of the steady rate.
        return max(self._next_free, now - (self.burst - 1) * self._interval, self._paused_until)

    def reserve(self) -> float:
        """Take the next slot and return how long to wait for it (0 when it is free now)."""
        now = self._clock()
        earliest = self._earliest(now)
        self._next_free = earliest + self._interval
        return max(0.0, earliest - now)

    def _line(self) -> Lock:
        """The lock that yielding callers queue on, one per event loop (a lock is bound to the
        loop it first waited on)."""
        loop = get_running_loop()
        if self._yielding is None or self._yielding[0] is not loop:
            self._yielding = (loop, Lock())
        return self._yielding[1]

    async def acquire(self, *, yield_to_others: bool = False) -> None:
        """Wait for a request slot, and past any pause that began while waiting for it.

        With `yield_to_others` the call waits until a slot is free that no other caller has
        reserved, and only then takes it; such callers wait one at a time, in arrival order.
        """
        if yield_to_others:
            async with self._line():
                while True:
                    now = self._clock()
                    free_in = self._earliest(now) - now
                    if free_in <= 0:
                        break
                    # Others may reserve that slot while this caller sleeps: then it waits on.
                    await asyncio.sleep(free_in)
                await self.acquire()  # the slot is free now: taken without waiting
            return
        delay = self.reserve()
        while delay > 0:
            await asyncio.sleep(delay)
            # A 429 seen by another request while this one slept holds this one too.
            delay = self.reserve() if self._clock() < self._paused_until else 0.0

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` from now (a 429's Retry-After)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._paused_until:
            self.paused_total += until - max(self._paused_until, self._clock())
            self._paused_until = until

    @property
    def paused_until(self) -> float:
        """Monotonic time until which requests are held (in the past when not paused)."""
        return self._paused_until
