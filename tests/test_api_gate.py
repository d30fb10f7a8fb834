"""`ApiGate`: the engine's shared pauses, their probe, trials and paused-time accounting."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from docutray_watch.engine.errors import Failure
from docutray_watch.engine.gate import ApiGate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gate_with(
    outcomes: list[Failure | None], interval: float = 0.01, clock: Clock | None = None
) -> tuple[ApiGate, asyncio.Queue[None]]:
    """A gate whose probe answers `outcomes` in turn (then "works"), and a queue of its calls."""
    probed = asyncio.Queue[None]()

    async def probe() -> Failure | None:
        probed.put_nowait(None)
        return outcomes.pop(0) if outcomes else None

    gate = ApiGate(probe=probe, probe_interval=interval, clock=clock or time.monotonic)
    return gate, probed


def test_a_refused_key_is_logged_once_per_minute_however_many_documents_meet_it() -> None:
    """Ten 401s within a minute: one `api_key_rejected` line; a minute later, one more."""
    clock = Clock()

    async def scenario() -> list[str]:
        gate, _ = gate_with([], interval=3600, clock=clock)
        with capture_logs() as logs:
            for _ in range(10):
                gate.report(Failure.CREDENTIALS, pipeline="p", error="HTTP 401", retry_after=None)
            clock.now += 61
            gate.report(Failure.CREDENTIALS, pipeline="p", error="HTTP 401", retry_after=None)
        await gate.close()
        return [entry["event"] for entry in logs]

    assert asyncio.run(scenario()).count("api_key_rejected") == 2


def test_the_probe_keeps_the_pause_while_401_and_ends_it_at_the_first_other_answer() -> None:
    """Probe: 401 → still paused; then a 5xx (the API answers, not with 401) → resumed."""

    async def scenario() -> None:
        gate, probed = gate_with([Failure.CREDENTIALS, Failure.NOT_ACCEPTED])
        gate.report(Failure.CREDENTIALS, pipeline="p", error="HTTP 401", retry_after=None)
        async with asyncio.timeout(5):
            await probed.get()
            assert gate.credentials is not None
            await probed.get()
            while gate.credentials is not None:
                await gate.wait_changed(0.1)
        assert gate.blocked("p") is None
        await gate.close()

    asyncio.run(scenario())


def test_an_unreachable_api_whose_probe_gets_a_401_becomes_a_key_pause() -> None:
    """Back, but refusing the key: the pause says so (and stays)."""

    async def scenario() -> None:
        gate, probed = gate_with([Failure.CREDENTIALS] * 100)
        gate.report(Failure.UNREACHABLE, pipeline="p", error="refused", retry_after=None)
        async with asyncio.timeout(5):
            await probed.get()
            while gate.credentials is None:
                await gate.wait_changed(0.1)
        assert gate.unreachable is None
        assert gate.reasons() == ["paused: the DocuTray API refused the API key (401)"]
        await gate.close()

    asyncio.run(scenario())


def test_a_pipeline_pause_lets_one_submission_try_per_interval_and_status_reads_pass() -> None:
    """403/404 on submit: that pipeline's submissions wait; after the interval exactly one goes;
    its status reads and the other pipelines are not held."""
    clock = Clock()

    async def scenario() -> None:
        gate, _ = gate_with([], interval=30, clock=clock)
        gate.report(Failure.PIPELINE, pipeline="bad", error="HTTP 404", retry_after=None)
        assert gate.blocked("bad") is not None
        assert gate.blocked("good") is None
        async with asyncio.timeout(1):
            await gate.wait_open("bad")  # a status read
            await gate.wait_open("good", submission=True)
        clock.now += 30
        async with asyncio.timeout(1):
            await gate.wait_open("bad", submission=True)  # the trial
        assert gate.blocked("bad") is not None  # the next one waits for another interval
        gate.answered("bad")  # the trial was accepted
        assert gate.pipelines == {}
        await gate.close()

    asyncio.run(scenario())


def test_paused_seconds_grow_only_while_paused() -> None:
    """Key pause 5 s, then 429 for 3 s, then a pipeline pause 2 s: 10 s for that pipeline."""
    clock = Clock()

    async def scenario() -> tuple[float, float]:
        gate, _ = gate_with([], interval=3600, clock=clock)
        gate.report(Failure.CREDENTIALS, pipeline="p", error="HTTP 401", retry_after=None)
        clock.now += 5
        gate.answered()
        clock.now += 100  # running normally
        gate.report(Failure.THROTTLED, pipeline="p", error="HTTP 429", retry_after=3.0)
        assert gate.blocked("p") == "rate limited (429)"
        clock.now += 3
        assert gate.blocked("p") is None
        gate.report(Failure.PIPELINE, pipeline="p", error="HTTP 403", retry_after=None)
        clock.now += 2
        gate.answered("p")
        clock.now += 50
        await gate.close()
        return gate.paused_seconds("p"), gate.paused_seconds("other")

    assert asyncio.run(scenario()) == (10.0, 8.0)


def test_a_reload_ends_the_key_and_pipeline_pauses_at_once() -> None:
    """`reset()` (SIGHUP) lets every request try again without waiting for the probe."""

    async def scenario() -> None:
        gate, _ = gate_with([], interval=3600)
        gate.report(Failure.CREDENTIALS, pipeline="p", error="HTTP 401", retry_after=None)
        gate.report(Failure.PIPELINE, pipeline="q", error="HTTP 403", retry_after=None)
        waiter = asyncio.ensure_future(gate.wait_open("p", submission=True))
        await asyncio.sleep(0)
        assert not waiter.done()
        gate.reset()
        async with asyncio.timeout(1):
            await waiter
        assert not gate.paused
        await gate.close()

    asyncio.run(scenario())


def test_paused_between_counts_only_the_pauses_since_a_wall_clock_time() -> None:
    """A key pause of 5 s, then a 429 for 3 s, then a pipeline pause of 2 s: since before them
    all, 10 s for that pipeline and 8 s for another; since the middle of the 429, 1.5 s + 2 s;
    a pause still on counts up to now (what a multi-node job adds to its deadline)."""
    clock = Clock()

    async def scenario() -> None:
        gate, _ = gate_with([], interval=3600, clock=clock)
        gate._wall = clock  # one clock for both: the test moves time by hand
        start = clock.now
        gate.report(Failure.CREDENTIALS, pipeline="p", error="HTTP 401", retry_after=None)
        clock.now += 5
        gate.answered()
        clock.now += 100
        gate.report(Failure.THROTTLED, pipeline="p", error="HTTP 429", retry_after=3.0)
        clock.now += 1.5
        middle = clock.now
        clock.now += 1.5
        gate.report(Failure.PIPELINE, pipeline="p", error="HTTP 403", retry_after=None)
        clock.now += 2
        gate.answered("p")
        clock.now += 50
        assert gate.paused_between("p", start) == 10.0
        assert gate.paused_between("other", start) == 8.0
        assert gate.paused_between("p", middle) == 3.5
        assert gate.paused_between("p", clock.now) == 0.0
        gate.report(Failure.UNREACHABLE, pipeline="p", error="connect", retry_after=None)
        clock.now += 7
        assert gate.paused_between("other", clock.now - 10) == 7.0
        await gate.close()

    asyncio.run(scenario())
