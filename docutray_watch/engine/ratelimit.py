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

**Adaptive mode** (`RateLimiter.adaptive_rate()`, `requests_per_second: auto`): the service's
limit is not published, so the limiter learns it the way TCP learns a path's capacity (AIMD).
The engine reports every answer: `accepted(sent_at)` for any answer but 429, and
`throttled(wait, sent_at)` for a 429. The rate is a window of `rate` requests per second with a
burst of one second's worth:

- *slow start*: it begins at `INITIAL_RATE`: that many requests may go at once (TCP's initial
  window, RFC 6928: no service limits a client below a few requests a second), the rest are
  paced (one interval of the current rate apart) instead of a whole backlog going out at t=0;
  while requests come as fast as the slots (the bucket stays empty), every accepted answer adds
  `SLOW_START_GAIN` requests/s, and slots already handed out keep their times, so growing sends
  no burst either: a backlog that reaches the limiter at once is spread out, and the first 429
  comes when the rate first exceeds what the service accepts, not after a burst far beyond
  it. Only idle time fills the bucket (up to one second's worth);
- *decrease*: a 429 sets the rate to `DECREASE` * the rate that drew it and empties the burst.
  That rate is the window while it is in use; in slow start (the window has outgrown what was
  tried) and while it is not in use (the daemon sent less), the accepted rate measured over the
  last second — in slow start revised upwards as the rest of its burst is answered, otherwise at
  least half the window (the window is at most halved by one 429, as TCP's is). 429s of requests
  sent before that decrease belong to the same event and only pause (TCP reacts once per window
  too); callers waiting for a slot reserved at the old rate take one again at the new rate;
- *additive increase*: then each accepted answer adds `step / rate`, so a window in use grows by
  `step` requests per second each second without 429 (`step` = `INCREASE` * the rate before the
  decrease, at least `MIN_STEP`), until the next 429 or `max_rate`.

The window grows only while it is at least half in use (RFC 7661): an idle daemon does not
"learn" a rate it never tried. Every step is O(1) on the caller's own path; there is no task.
"""

from __future__ import annotations

import asyncio
import math
import time
from asyncio import AbstractEventLoop, Lock, get_running_loop
from collections.abc import Callable

__all__ = ["RateLimiter"]

INITIAL_RATE = 16.0  # requests/s (and burst) of slow start's first window
DECREASE = 0.9  # a 429 sets the rate this far below the rate that drew it
INCREASE = 0.005  # additive increase per second, as a share of the rate before the decrease
MIN_STEP = 0.02  # requests/s gained per second at least, however low the rate
MIN_RATE = 0.5  # requests/s: a decrease never goes below this
ESTIMATE_WINDOW = 1.0  # seconds over which the accepted rate is measured
SLOW_START_GAIN = 4.0  # requests/s added per accepted answer in slow start (paced: no burst)


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
        # Adaptive mode (see the module docstring); off for a fixed rate.
        self.adaptive = False
        self.max_rate: float | None = None
        self.slow_start = False
        self.decreases = 0
        self.epoch = 0  # counts decreases: slots reserved before one are taken again
        self._step = MIN_STEP
        self._decreased_at = float("-inf")
        self._accepted = 0.0  # accepted answers, decayed over ESTIMATE_WINDOW
        self._accepted_at = float("-inf")
        self._event_accepted: float | None = None  # see `accepted`, after slow start ended
        self._busy = False  # the last request found the bucket (nearly) empty

    @classmethod
    def adaptive_rate(
        cls, *, max_rate: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> RateLimiter:
        """A limiter that learns the service's rate from its 429 answers (slow start first)."""
        limiter = cls(_capped(INITIAL_RATE, max_rate), clock=clock)
        limiter.adaptive, limiter.max_rate, limiter.slow_start = True, max_rate, True
        return limiter

    def resume(self, rate: float, *, slow_start: bool) -> None:
        """Start from what an earlier run learned of the same API (kept in the journal), as TCP
        reuses a destination's cached window (RFC 2140) instead of learning it again.

        A rate lowered by a 429 is taken as it is, out of slow start: the service refused more,
        and starting from `INITIAL_RATE` would draw the 429s again. A rate that slow start
        reached without a 429 only says what was accepted, not what the service allows now, so
        slow start goes on from half of it (as an idle TCP window decays, RFC 2861), its first
        `INITIAL_RATE` requests at once as at any start; a learned rate is paced from its first
        request, never a burst. A fixed-rate limiter ignores it."""
        if not self.adaptive or rate <= 0:
            return
        start = max(INITIAL_RATE, rate / 2) if slow_start else max(MIN_RATE, rate)
        self.slow_start = slow_start
        if not slow_start:
            self._step = max(MIN_STEP, INCREASE * start)
        self.set_rate(_capped(start, self.max_rate))

    def configure(self, rate: float | None, max_rate: float | None = None) -> None:
        """Apply `api.requests_per_second` (None: auto) and `api.max_requests_per_second` (a
        config reload). A fixed rate applies as `set_rate`; an adaptive limiter keeps what it
        learned, within the new cap; a fixed one made adaptive starts with slow start."""
        if rate is not None:
            self.adaptive, self.max_rate = False, None
            self.set_rate(rate)
            return
        if not self.adaptive:
            self.adaptive, self.slow_start = True, True
            self._decreased_at = float("-inf")
            self._resize(INITIAL_RATE)
        self.max_rate = max_rate
        self._resize(_capped(self.rate, max_rate))

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

    def _in_use(self, now: float) -> float:
        """Slots of the current burst taken (0: the bucket is full)."""
        return max(0.0, (self._next_free - now) / self._interval + self.burst - 1)

    def _resize(self, rate: float) -> None:
        """Adaptive change of the window that keeps the slots in use: a larger burst frees its
        extra slots at once (as a larger TCP window does). In slow start the slots are paced
        (no burst) and those already handed out keep their times: the new spacing applies to
        the next ones, so growing never sends a burst."""
        if self.slow_start:
            self.set_rate(rate)
            return
        now = self._clock()
        in_use = self._in_use(now)
        self.set_rate(rate)
        if self._next_free != float("-inf"):
            self._next_free = now + (in_use - self.burst + 1) * self._interval

    def reserve(self) -> float:
        """Take the next slot and return how long to wait for it (0 when it is free now)."""
        now = self._clock()
        earliest = self._earliest(now)
        # The bucket is (nearly) empty: requests come at least as fast as the rate.
        self._busy = earliest >= now - self._interval
        if self.adaptive and self._next_free == float("-inf"):
            # Slow start's first window: INITIAL_RATE slots at once (TCP's initial window, RFC
            # 6928), the rest paced; a rate a 429 taught an earlier run (no slow start): all paced.
            window = min(INITIAL_RATE, self.burst) if self.slow_start else 0.0
            earliest = now - (window - 1) * self._interval if window >= 1 else now
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
            epoch = self.epoch
            await asyncio.sleep(delay)
            # A 429 seen by another request while this one slept holds this one too, and after
            # a decrease every slot is handed out again at the new rate.
            held = self._clock() < self._paused_until or epoch != self.epoch
            delay = self.reserve() if held else 0.0

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

    # -- what the service answered ---------------------------------------------------------

    def accepted_rate(self) -> float:
        """Answers other than 429 per second, measured over about the last second."""
        return self._decayed(self._clock()) / ESTIMATE_WINDOW

    def _decayed(self, now: float) -> float:
        if self._accepted == 0.0:
            return 0.0
        return self._accepted * math.exp(-(now - self._accepted_at) / ESTIMATE_WINDOW)

    def accepted(self, sent_at: float | None = None) -> None:
        """The service took a request (any answer but 429): measure it, and grow the window
        if it is in use (by one request in slow start, by `step / rate` afterwards)."""
        now = self._clock()
        self._accepted = self._decayed(now) + 1.0
        self._accepted_at = now
        if not self.adaptive:
            return
        event = self._event_accepted
        if event is not None and sent_at is not None and sent_at < self._decreased_at:
            # Slow start's burst is still being answered: the rate it was accepted at is known
            # only once every request of it is, so the decrease is revised upwards meanwhile.
            self._event_accepted = event = event + 1.0
            revised = _capped(DECREASE * event / ESTIMATE_WINDOW, self.max_rate)
            if revised > self.rate:
                old_interval = self._interval
                self.set_rate(revised)
                # The first slot after the decrease comes one interval of the revised rate
                # after it (answers of the burst arrive before much else is reserved).
                self._next_free += self._interval - old_interval
            return
        if not self._window_in_use(now):
            return
        grown = self.rate + (SLOW_START_GAIN if self.slow_start else self._step / self.rate)
        grown = _capped(grown, self.max_rate)
        if grown > self.rate:
            self._resize(grown)

    def _window_in_use(self, now: float) -> bool:
        """At least half the window is used: in slow start (paced, no burst to measure it by)
        the last request found the bucket (nearly) empty: requests come as fast as the slots."""
        if self.slow_start:
            return self._busy
        return self._in_use(now) >= self.burst / 2

    def throttled(self, seconds: float, sent_at: float | None = None) -> None:
        """A 429: pause everyone for `seconds` (its Retry-After) and, in adaptive mode, set the
        rate a little below the rate that drew it — once per event: a 429 of a request sent
        before the last decrease only pauses."""
        self.pause(seconds)
        if not self.adaptive:
            return
        now = self._clock()
        if sent_at is not None and sent_at < self._decreased_at:
            return
        measured = self._decayed(now)
        self._event_accepted = measured if self.slow_start else None  # see `accepted`
        if self.slow_start:
            drew = min(self.rate, measured / ESTIMATE_WINDOW)
        elif self._in_use(now) >= self.burst / 2:
            drew = self.rate  # exact, where the measure has the noise of a few answers
        else:
            drew = min(self.rate, max(measured / ESTIMATE_WINDOW, self.rate / 2))
        self._step = max(MIN_STEP, INCREASE * self.rate)
        self.slow_start = False
        self.decreases += 1
        self.epoch += 1
        self._decreased_at = now
        self.set_rate(_capped(max(MIN_RATE, DECREASE * drew), self.max_rate))
        # The service's bucket is empty, and every waiting caller takes its slot again (see
        # `acquire`): the window restarts empty, from now, at the new rate.
        self._next_free = now + self._interval


def _capped(rate: float, max_rate: float | None) -> float:
    return rate if max_rate is None else min(rate, max_rate)
