"""Tests of `docutray_watch.ratelimit.RateLimiter` with a fake clock (no real waiting)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from docutray_watch import ratelimit
from docutray_watch.ratelimit import RateLimiter


class FakeTime:
    """A monotonic clock plus an asyncio.sleep that advances it instead of waiting."""

    def __init__(self, start: float = 500.0) -> None:
        self.now = start
        self.advance = True  # False: sleeps are only recorded (concurrent sleepers)
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], None] | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            hook, self.on_sleep = self.on_sleep, None
            hook()
        if self.advance:
            self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture(name="clock")
def clock_fixture(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """A fake clock; the limiter's asyncio.sleep advances it."""
    fake = FakeTime()
    monkeypatch.setattr(ratelimit, "asyncio", SimpleNamespace(sleep=fake.sleep))
    return fake


class TestReserve:
    def test_rate_must_be_positive(self) -> None:
        """A zero or negative rate is refused."""
        with pytest.raises(ValueError, match="positive"):
            RateLimiter(0)

    def test_burst_is_free_from_the_start(self, clock: FakeTime) -> None:
        """The first `burst` requests go at once, the next ones one interval apart."""
        limiter = RateLimiter(10, burst=5, clock=clock)
        delays = [limiter.reserve() for _ in range(8)]
        assert delays[:5] == pytest.approx([0.0] * 5, abs=1e-9)
        assert delays[5:] == pytest.approx([0.1, 0.2, 0.3])

    def test_default_burst_is_one_second_of_requests(self, clock: FakeTime) -> None:
        """Without `burst`, a second's worth of requests may go at once."""
        limiter = RateLimiter(4, clock=clock)
        assert [limiter.reserve() for _ in range(5)] == pytest.approx([0, 0, 0, 0, 0.25], abs=1e-9)

    def test_steady_rate(self, clock: FakeTime) -> None:
        """Requests spread over time never exceed `rate` per second after the burst."""
        limiter = RateLimiter(5, burst=1, clock=clock)
        sent = []
        for _ in range(50):
            clock.now += limiter.reserve()  # each caller waits its turn, then sends
            sent.append(clock.now)
        span = sent[-1] - sent[0]
        assert span == pytest.approx(49 / 5)
        assert all(b - a == pytest.approx(0.2) for a, b in itertools.pairwise(sent))

    def test_idle_time_refills_the_burst(self, clock: FakeTime) -> None:
        """After a quiet period the full burst is available again, but never more."""
        limiter = RateLimiter(10, burst=3, clock=clock)
        for _ in range(3):
            limiter.reserve()
        assert limiter.reserve() > 0
        clock.now += 60
        assert [limiter.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1], abs=1e-9)

    def test_set_rate(self, clock: FakeTime) -> None:
        """A new rate applies to the next slots handed out."""
        limiter = RateLimiter(10, burst=1, clock=clock)
        limiter.reserve()
        limiter.set_rate(1, burst=1)
        assert limiter.reserve() == pytest.approx(0.1)
        assert limiter.reserve() == pytest.approx(1.1)


class TestPause:
    def test_pause_holds_every_new_request(self, clock: FakeTime) -> None:
        """After pause(5), no slot is before the end of the pause, then the rate applies."""
        limiter = RateLimiter(10, burst=10, clock=clock)
        limiter.pause(5)
        assert limiter.paused_until == clock.now + 5
        delays = [limiter.reserve() for _ in range(3)]
        assert delays == pytest.approx([5.0, 5.1, 5.2])

    def test_pause_never_shortens_an_existing_pause(self, clock: FakeTime) -> None:
        """A shorter Retry-After does not end a longer pause early; a longer one extends it."""
        limiter = RateLimiter(10, clock=clock)
        limiter.pause(30)
        limiter.pause(2)
        assert limiter.paused_until == clock.now + 30
        clock.now += 10
        limiter.pause(40)
        assert limiter.paused_until == clock.now + 40
        assert limiter.paused_total == pytest.approx(50)

    def test_negative_pause_is_ignored(self, clock: FakeTime) -> None:
        """A negative Retry-After does not move the pause into the past or count time."""
        limiter = RateLimiter(10, clock=clock)
        limiter.pause(-3)
        assert limiter.reserve() == 0.0
        assert limiter.paused_total == 0.0

    async def test_acquire_waits_for_the_pause(self, clock: FakeTime) -> None:
        """acquire() after a pause sleeps until the pause is over."""
        limiter = RateLimiter(10, clock=clock)
        start = clock.now
        limiter.pause(3)
        await limiter.acquire()
        assert clock.now == pytest.approx(start + 3)

    async def test_pause_holds_callers_already_waiting(self, clock: FakeTime) -> None:
        """A caller sleeping for its slot when a 429 arrives still waits out the pause."""
        limiter = RateLimiter(10, burst=1, clock=clock)
        start = clock.now
        await limiter.acquire()  # uses the free slot
        clock.on_sleep = lambda: limiter.pause(4)  # the 429 arrives while the next one sleeps
        await limiter.acquire()
        assert clock.now >= start + 4
        assert len(clock.sleeps) >= 2

    async def test_many_callers_are_spread_out(self, clock: FakeTime) -> None:
        """Concurrent acquire() calls are released one interval apart after the burst."""
        limiter = RateLimiter(20, burst=2, clock=clock)
        clock.advance = False  # they all sleep at the same time
        await asyncio.gather(*(limiter.acquire() for _ in range(6)))
        assert sorted(s for s in clock.sleeps if s > 1e-9) == pytest.approx([0.05, 0.1, 0.15, 0.2])


class TestYieldToOthers:
    """`acquire(yield_to_others=True)`: a submission takes only slots nobody has reserved."""

    async def test_a_yielding_caller_takes_the_first_unreserved_slot(self, clock: FakeTime) -> None:
        """With two slots reserved, it waits for the third and takes it; the next is after it."""
        limiter = RateLimiter(1, burst=1, clock=clock)
        start = clock.now
        limiter.reserve()  # a status read, now
        limiter.reserve()  # another, one interval later
        await limiter.acquire(yield_to_others=True)
        assert clock.now == pytest.approx(start + 2)
        assert limiter.reserve() == pytest.approx(1.0)  # the slot after the submission's

    async def test_a_status_read_arriving_meanwhile_goes_first(self, clock: FakeTime) -> None:
        """A read that reserves the slot a waiting submission slept for pushes it one slot on."""
        limiter = RateLimiter(1, burst=1, clock=clock)
        start = clock.now
        limiter.reserve()  # the slot of now is taken
        clock.on_sleep = limiter.reserve  # a read reserves the next slot while the POST sleeps
        await limiter.acquire(yield_to_others=True)
        assert clock.sleeps == pytest.approx([1.0, 1.0])
        assert clock.now == pytest.approx(start + 2)

    async def test_without_contention_it_does_not_wait(self, clock: FakeTime) -> None:
        """A free slot is taken at once, and counts against the rate like any other."""
        limiter = RateLimiter(1, burst=1, clock=clock)
        await limiter.acquire(yield_to_others=True)
        assert clock.sleeps == []
        assert limiter.reserve() == pytest.approx(1.0)

    async def test_a_pause_holds_a_yielding_caller(self, clock: FakeTime) -> None:
        """A 429's pause holds submissions too."""
        limiter = RateLimiter(10, clock=clock)
        start = clock.now
        limiter.pause(3)
        await limiter.acquire(yield_to_others=True)
        assert clock.now == pytest.approx(start + 3)

    async def test_yielding_callers_are_served_in_arrival_order(self, clock: FakeTime) -> None:
        """Two waiting submissions go one after the other, first come first served, each
        behind the reads reserved before them."""
        limiter = RateLimiter(1, burst=1, clock=clock)
        start = clock.now
        limiter.reserve()
        done: list[tuple[str, float]] = []

        async def submit(name: str) -> None:
            await limiter.acquire(yield_to_others=True)
            done.append((name, clock.now - start))

        await asyncio.gather(submit("first"), submit("second"))
        assert [name for name, _ in done] == ["first", "second"]
        assert [at for _, at in done] == pytest.approx([1.0, 2.0])
