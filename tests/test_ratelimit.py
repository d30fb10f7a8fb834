"""Tests of `docutray_watch.engine.ratelimit.RateLimiter` with a fake clock (no real waiting)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from docutray_watch.engine import ratelimit
from docutray_watch.engine.ratelimit import RateLimiter


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


def in_slow_start(clock: FakeTime, **kwargs: float) -> RateLimiter:
    return RateLimiter.adaptive_rate(clock=clock, **kwargs)


def after_a_decrease(clock: FakeTime, to: float) -> RateLimiter:
    """An adaptive limiter past slow start, at `to` requests/s: 10/0.9·to sent, 429, then the
    burst answered (so the event is over)."""
    limiter = in_slow_start(clock)
    limiter.set_rate(to / ratelimit.DECREASE)
    sent_at = clock.now
    limiter._accepted, limiter._accepted_at = 10 * to / ratelimit.DECREASE, clock.now
    limiter.throttled(0.0, sent_at=sent_at)
    assert limiter.rate == pytest.approx(to)
    clock.now += 1.0
    return limiter


class TestAdaptive:
    """`RateLimiter.adaptive_rate()`: slow start, then AIMD driven by 429 answers."""

    def test_slow_start_sends_its_initial_window_then_paces(self, clock: FakeTime) -> None:
        """Slow start sends INITIAL_RATE requests at once (TCP's initial window), then one
        slot of the rate apart: no larger burst."""
        limiter = in_slow_start(clock)
        window = int(ratelimit.INITIAL_RATE)
        delays = [limiter.reserve() for _ in range(window + 3)]
        interval = 1 / ratelimit.INITIAL_RATE
        assert delays == pytest.approx([0.0] * window + [interval * i for i in (1, 2, 3)])
        assert limiter.slow_start

    async def test_a_backlog_of_submissions_is_paced_not_burst(self, clock: FakeTime) -> None:
        """60 submissions arriving at once (a batched intake): the initial window at t=0, the
        rest one slot of the current rate apart, not all 60 at once."""
        limiter = in_slow_start(clock)
        start = clock.now
        sent: list[float] = []

        async def submit() -> None:
            await limiter.acquire(yield_to_others=True)
            sent.append(clock.now - start)

        await asyncio.gather(*(submit() for _ in range(60)))
        window = int(ratelimit.INITIAL_RATE)
        interval = 1 / ratelimit.INITIAL_RATE
        paced = [i * interval for i in range(1, 60 - window + 1)]
        assert sent == pytest.approx([0.0] * window + paced, abs=1e-9)

    def test_each_accepted_answer_grows_the_rate_while_the_bucket_is_empty(
        self, clock: FakeTime
    ) -> None:
        """Slow start: while requests come as fast as the slots (its bucket empty), each
        accepted answer adds SLOW_START_GAIN requests/s; a sender at the full rate has doubled
        it within half a second, still paced."""
        limiter = in_slow_start(clock)
        for _ in range(int(ratelimit.INITIAL_RATE)):
            assert limiter.reserve() == 0.0  # the initial window, sent at once (not answered)
        start = clock.now
        rates: list[float] = []
        sent: list[float] = []
        while clock.now - start < 0.5:
            clock.now += limiter.reserve()  # sent when its slot comes
            sent.append(clock.now)
            limiter.accepted(sent_at=clock.now)  # answered at once
            rates.append(limiter.rate)
        assert all(b - a == ratelimit.SLOW_START_GAIN for a, b in itertools.pairwise(rates))
        assert limiter.rate >= 2 * ratelimit.INITIAL_RATE
        # paced: each request one interval of the rate in force after the previous one
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        before = [ratelimit.INITIAL_RATE, *rates[:-2]]  # the rate when each slot was taken
        assert gaps == pytest.approx([1 / rate for rate in before])
        assert limiter.slow_start

    def test_growing_frees_no_slots_at_once(self, clock: FakeTime) -> None:
        """Answers that grow the window space the next slots closer; slots already handed out
        keep their times, and nothing is free before the last one (no burst)."""
        limiter = in_slow_start(clock)
        reserved = [limiter.reserve() for _ in range(17)]
        for _ in range(17):
            limiter.accepted(sent_at=clock.now)
        rate = ratelimit.INITIAL_RATE + 17 * ratelimit.SLOW_START_GAIN
        assert limiter.rate == pytest.approx(rate)
        assert reserved == pytest.approx([0.0] * 16 + [1 / 16])  # the initial window, then paced
        following = [limiter.reserve() for _ in range(3)]
        assert following == pytest.approx([2 / 16, 2 / 16 + 1 / rate, 2 / 16 + 2 / rate])

    def test_a_window_not_in_use_does_not_grow(self, clock: FakeTime) -> None:
        """Answers while the bucket is more than half full leave the rate alone (RFC 7661)."""
        limiter = in_slow_start(clock)
        for _ in range(50):
            limiter.reserve()
            limiter.accepted(sent_at=clock.now)
            clock.now += 0.5  # 2 requests/s: far below the window
        assert limiter.rate == ratelimit.INITIAL_RATE

    def test_the_first_429_sets_the_rate_below_the_accepted_rate(self, clock: FakeTime) -> None:
        """16 sent at once, 5 accepted, then 429s: the rate becomes 0.9 * 5 = 4.5/s, once."""
        limiter = in_slow_start(clock)
        sent_at = clock.now
        for _ in range(16):
            limiter.reserve()
        clock.now += 0.01
        for _ in range(5):
            limiter.accepted(sent_at=sent_at)
        for _ in range(11):
            limiter.throttled(0.2, sent_at=sent_at)
        assert limiter.rate == pytest.approx(0.9 * 5, rel=0.02)
        assert limiter.decreases == 1
        assert not limiter.slow_start

    def test_late_answers_of_the_burst_revise_the_decrease_upwards(self, clock: FakeTime) -> None:
        """A 429 answered before the accepted ones: the rate follows as they arrive."""
        limiter = in_slow_start(clock)
        sent_at = clock.now
        for _ in range(16):
            limiter.reserve()
        clock.now += 0.01
        limiter.throttled(0.2, sent_at=sent_at)
        assert limiter.rate == ratelimit.MIN_RATE
        for _ in range(5):
            limiter.accepted(sent_at=sent_at)
        assert limiter.rate == pytest.approx(4.5)
        clock.now += 1.0
        limiter.accepted(sent_at=clock.now)  # a request sent after the 429: no revision
        assert limiter.rate == pytest.approx(4.5)

    def test_a_429_after_slow_start_decreases_from_the_window(self, clock: FakeTime) -> None:
        """With the window in use, a 429 of a later request sets 0.9 * the window."""
        limiter = after_a_decrease(clock, 20)
        for _ in range(40):
            limiter.reserve()  # in use: a queue of requests
        limiter.throttled(0.0, sent_at=clock.now)
        assert limiter.rate == pytest.approx(18)
        assert limiter.decreases == 2

    def test_a_429_below_the_window_decreases_from_the_accepted_rate(self, clock: FakeTime) -> None:
        """The daemon sends 10/s under a window of 100: each 429 at most halves the window
        (100 -> 45 -> 20.25), then it comes down to 0.9 * the accepted rate."""
        limiter = after_a_decrease(clock, 100)
        for _ in range(3):
            for _ in range(30):  # 3 s at 10 requests/s, all accepted
                limiter.reserve()
                limiter.accepted(sent_at=clock.now)
                clock.now += 0.1
            limiter.throttled(0.0, sent_at=clock.now)
        assert limiter.decreases == 4
        assert limiter.rate == pytest.approx(0.9 * limiter.accepted_rate(), rel=0.1)
        assert 8 < limiter.rate < 10

    def test_additive_increase_per_second_without_429(self, clock: FakeTime) -> None:
        """Past slow start, a window in use gains `step` requests/s per second's worth of
        answers, where step = INCREASE * the rate before the decrease (at least MIN_STEP)."""
        limiter = after_a_decrease(clock, 90)
        step = max(ratelimit.MIN_STEP, ratelimit.INCREASE * 100)
        for second in range(1, 11):
            for _ in range(round(limiter.rate)):
                clock.now += limiter.reserve()  # sent when its slot comes: the window is full
                limiter.accepted(sent_at=clock.now)
            assert limiter.rate == pytest.approx(90 + second * step, rel=0.01)

    def test_additive_step_has_a_floor(self, clock: FakeTime) -> None:
        """At a low rate the window still grows by MIN_STEP per second's worth of answers."""
        limiter = after_a_decrease(clock, 1.8)
        for _ in range(2):
            clock.now += limiter.reserve()
            limiter.accepted(sent_at=clock.now)
        assert limiter.rate == pytest.approx(1.8 + ratelimit.MIN_STEP, rel=0.05)

    def test_a_decrease_never_goes_below_the_minimum(self, clock: FakeTime) -> None:
        """Repeated 429s with nothing accepted stop at MIN_RATE."""
        limiter = after_a_decrease(clock, 1.0)
        for _ in range(30):
            limiter.reserve()
            limiter.throttled(0.0, sent_at=clock.now)
            clock.now += 0.1
        assert limiter.rate == ratelimit.MIN_RATE

    def test_retry_after_pauses_every_request_in_fractions_of_a_second(
        self, clock: FakeTime
    ) -> None:
        """A 429 with Retry-After 0.25 holds the next request 0.25 s, then the new rate."""
        limiter = after_a_decrease(clock, 10)
        limiter.throttled(0.25, sent_at=clock.now)
        assert limiter.reserve() == pytest.approx(0.25)
        assert limiter.reserve() == pytest.approx(0.25 + 1 / 9)
        limiter.throttled(0.01, sent_at=clock.now - 0.01)  # sent before it: only a pause
        assert limiter.rate == pytest.approx(9)

    async def test_acquire_waits_out_a_fractional_pause(self, clock: FakeTime) -> None:
        """acquire() after a 429 with Retry-After 0.3 returns 0.3 s later."""
        limiter = after_a_decrease(clock, 10)
        start = clock.now
        limiter.throttled(0.3, sent_at=start - 2)  # of the last event: a pause, no decrease
        await limiter.acquire()
        assert clock.now == pytest.approx(start + 0.3)

    async def test_callers_waiting_for_a_slot_take_it_again_after_a_decrease(
        self, clock: FakeTime
    ) -> None:
        """A caller that reserved its slot at the old rate waits for one at the new rate."""
        limiter = after_a_decrease(clock, 10)
        for _ in range(10):
            limiter.reserve()  # the burst
        start = clock.now
        clock.on_sleep = lambda: limiter.throttled(0.0, sent_at=start)  # 10 → 9 per second
        await limiter.acquire()
        assert len(clock.sleeps) == 2
        assert clock.now == pytest.approx(start + 1 / 9)  # one new interval after the 429

    def test_the_cap_bounds_slow_start_and_increase(self, clock: FakeTime) -> None:
        """max_rate: slow start starts at most there, and never grows past it."""
        assert in_slow_start(clock, max_rate=8).rate == 8
        limiter = in_slow_start(clock, max_rate=20)
        for _ in range(100):
            limiter.reserve()
            limiter.accepted(sent_at=clock.now)
        assert limiter.rate == 20

    async def test_reads_still_go_first(self, clock: FakeTime) -> None:
        """Adaptive mode keeps the order: a submission waits behind reads already reserved."""
        limiter = after_a_decrease(clock, 1)
        start = clock.now
        limiter.reserve()  # the burst's one slot: a read, now
        limiter.reserve()  # another read, one second later
        await limiter.acquire(yield_to_others=True)
        assert clock.now == pytest.approx(start + 2)

    def test_a_fixed_rate_is_never_adapted(self, clock: FakeTime) -> None:
        """RateLimiter(rate): a 429 only pauses; answers never change the rate."""
        limiter = RateLimiter(10, clock=clock)
        for _ in range(30):
            limiter.reserve()
            limiter.accepted(sent_at=clock.now)
        limiter.throttled(2.0, sent_at=clock.now)
        assert limiter.rate == 10
        assert limiter.paused_until == clock.now + 2.0

    def test_configure_switches_modes_and_keeps_what_was_learned(self, clock: FakeTime) -> None:
        """A reload: a number makes it fixed; auto starts slow start; a new cap keeps the
        learned rate when it is below the cap and lowers it otherwise."""
        limiter = after_a_decrease(clock, 30)
        limiter.configure(None, max_rate=50)
        assert (limiter.adaptive, limiter.rate) == (True, pytest.approx(30))
        limiter.configure(None, max_rate=25)
        assert limiter.rate == 25
        limiter.configure(7)
        assert (limiter.adaptive, limiter.rate) == (False, 7)
        limiter.configure(None)
        assert (limiter.adaptive, limiter.slow_start) == (True, True)
        assert limiter.rate == ratelimit.INITIAL_RATE


class TestResume:
    """`RateLimiter.resume`: a restart starts from what the last run learned of the API."""

    def test_a_rate_lowered_by_a_429_is_resumed_as_it_is_and_paced(self, clock: FakeTime) -> None:
        """A learned 4.5/s starts at 4.5/s out of slow start, its first slots paced."""
        limiter = in_slow_start(clock)
        limiter.resume(4.5, slow_start=False)
        assert limiter.rate == pytest.approx(4.5)
        assert not limiter.slow_start
        delays = [limiter.reserve() for _ in range(3)]
        assert delays == pytest.approx([0.0, 1 / 4.5, 2 / 4.5])

    def test_a_rate_slow_start_reached_resumes_slow_start_from_half(self, clock: FakeTime) -> None:
        """A rate never refused is no limit the service gave: slow start goes on from half of
        it (never below INITIAL_RATE), paced after its initial window."""
        limiter = in_slow_start(clock)
        limiter.resume(272.0, slow_start=True)
        assert limiter.slow_start
        assert limiter.rate == pytest.approx(136.0)
        window = int(ratelimit.INITIAL_RATE)  # sent at once, as at any start; then paced
        delays = [limiter.reserve() for _ in range(window + 1)]
        assert delays == pytest.approx([0.0] * window + [1 / 136])
        low = in_slow_start(clock)
        low.resume(20.0, slow_start=True)
        assert low.rate == ratelimit.INITIAL_RATE

    def test_the_cap_still_holds(self, clock: FakeTime) -> None:
        """`max_requests_per_second` caps a resumed rate."""
        limiter = in_slow_start(clock, max_rate=10.0)
        limiter.resume(40.0, slow_start=False)
        assert limiter.rate == 10.0

    def test_a_fixed_rate_ignores_it(self, clock: FakeTime) -> None:
        """`requests_per_second: N` is what the operator asked for: nothing learned applies."""
        limiter = RateLimiter(7.0, clock=clock)
        limiter.resume(50.0, slow_start=False)
        assert limiter.rate == 7.0
