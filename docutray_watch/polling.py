"""When to ask for an execution's status: learned from how long each step takes.

Fixed-interval polling either asks too often (wasted requests) or notices completion late. The
engine instead keeps, per step ID and size class, an exponentially weighted mean and variance of
the processing time the service reports (`response_timestamp - request_timestamp`), and schedules
the first status read just after the expected completion (`first_read`: mean + 2 standard
deviations + a margin of 0.25 % of the mean, at least 5 ms). A read that comes too early is
followed by short re-reads (`recheck_schedule`: the result is due, so a spread of the estimate
at first, doubling up to `poll.max`), not by a full polling interval.

While nothing is known about a step yet, one execution ("the probe") polls and the others wait
for what it learns, so a cold start does not multiply status requests. The probe reads at a
quarter of `poll.initial` after submission and then each time 25 % later than the previous read
(`probe_schedule`), so the first result — which every waiting execution depends on — is noticed
at most about a quarter of its processing time late, for a handful of extra reads once. Estimates
are saved in the journal, so a restart starts warm.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

__all__ = ["LatencyModel", "PollSchedule", "probe_schedule", "size_class"]

_ALPHA = 0.2  # weight of the newest observation in the moving mean/variance
_MARGIN = 0.05  # seconds added to `expected`, the conservative "surely done by now" time
# The first read: a margin that only absorbs timer and clock granularity (an early read costs a
# re-read soon after, see `recheck_schedule`, so it need not be large).
_READ_MARGIN_MIN = 0.005
_READ_MARGIN_SHARE = 0.0025
# Re-reads after an early read start at a spread of the estimate (at least this share of the mean).
_RECHECK_MIN = 0.01
_RECHECK_SHARE = 0.02
# The probe: first read at this share of `poll.initial`, then each read this much later.
_PROBE_FIRST_SHARE = 0.25
_PROBE_GROWTH = 1.25


def size_class(size: int) -> int:
    """0: < 1 MiB, 1: < 10 MiB, 2: larger."""
    if size < 1 << 20:
        return 0
    if size < 10 << 20:
        return 1
    return 2


@dataclass
class _Estimate:
    count: int = 0
    mean: float = 0.0
    variance: float = 0.0

    def add(self, value: float) -> None:
        if self.count == 0:
            self.mean, self.variance = value, 0.0
        else:
            delta = value - self.mean
            self.mean += _ALPHA * delta
            self.variance = (1 - _ALPHA) * (self.variance + _ALPHA * delta * delta)
        self.count += 1


@dataclass
class LatencyModel:
    """Running processing-time estimates per (step ID, size class)."""

    estimates: dict[tuple[str, int], _Estimate] = field(default_factory=dict)
    _learned: dict[tuple[str, int], asyncio.Event] = field(default_factory=dict)
    _probes: set[tuple[str, int]] = field(default_factory=set)

    def observe(self, step_id: str, size: int, seconds: float) -> None:
        """Record that an execution of this step on a document of this size took `seconds`."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        key = (step_id, size_class(size))
        self.estimates.setdefault(key, _Estimate()).add(seconds)
        event = self._learned.pop(key, None)
        if event is not None:
            event.set()
        self._probes.discard(key)

    def expected(self, step_id: str, size: int) -> float | None:
        """Seconds after submission at which the execution is very likely done, if known."""
        estimate = self.estimates.get((step_id, size_class(size)))
        if estimate is None or estimate.count == 0:
            return None
        return estimate.mean + 2.0 * math.sqrt(estimate.variance) + _MARGIN

    def first_read(self, step_id: str, size: int) -> float | None:
        """Seconds after submission at which to read the status first, if anything is known.

        Mean + 2 standard deviations + a margin of 0.25 % of the mean (at least 5 ms): tighter
        than `expected`, because a read that comes too early is followed by a short re-read. The
        clock starts when the service accepted the submission, after it started processing, so
        the margin only absorbs timer granularity.
        """
        estimate = self.estimates.get((step_id, size_class(size)))
        if estimate is None or estimate.count == 0:
            return None
        margin = max(_READ_MARGIN_MIN, _READ_MARGIN_SHARE * estimate.mean)
        return estimate.mean + 2.0 * math.sqrt(estimate.variance) + margin

    def recheck_schedule(self, step_id: str, size: int, maximum: float) -> PollSchedule:
        """Intervals of the reads after one that came before the result was ready.

        The result is due, so the first re-read follows soon (one standard deviation, at least 2 %
        of the mean and 10 ms), then the intervals double up to `maximum`.
        """
        estimate = self.estimates.get((step_id, size_class(size)))
        base = _RECHECK_MIN
        if estimate is not None and estimate.count:
            base = max(base, math.sqrt(estimate.variance), _RECHECK_SHARE * estimate.mean)
        base = min(base, maximum)
        return PollSchedule(base, maximum, growth=2.0)

    def claim_probe(self, step_id: str, size: int) -> bool:
        """True for the one execution that should poll while nothing is known yet."""
        key = (step_id, size_class(size))
        if key in self.estimates or key in self._probes:
            return False
        self._probes.add(key)
        return True

    def release_probe(self, step_id: str, size: int) -> None:
        """The probe ended without a usable observation; let another execution probe."""
        key = (step_id, size_class(size))
        self._probes.discard(key)
        event = self._learned.pop(key, None)
        if event is not None:
            event.set()

    async def wait_learned(self, step_id: str, size: int, patience: float) -> bool:
        """Wait up to `patience` seconds for an estimate (or the probe giving up)."""
        key = (step_id, size_class(size))
        if key in self.estimates:
            return True
        event = self._learned.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), patience)
        except TimeoutError:
            return False
        return True

    def export(self) -> list[tuple[str, int, int, float, float]]:
        """Rows for the journal."""
        return [(s, c, e.count, e.mean, e.variance) for (s, c), e in self.estimates.items()]

    def load(self, rows: list[tuple[str, int, int, float, float]]) -> None:
        """Restore rows saved by `export`."""
        for step_id, cls, count, mean, variance in rows:
            self.estimates[(step_id, cls)] = _Estimate(count, mean, variance)


@dataclass
class PollSchedule:
    """The status-read schedule of one execution after its first read.

    Intervals start at `initial` (or `first`, once, when given) and grow by `growth` each time up
    to `maximum`.
    """

    initial: float
    maximum: float
    growth: float = 1.5
    first: float | None = None
    _next: float = 0.0

    def __post_init__(self) -> None:
        self._next = self.initial

    def next_interval(self) -> float:
        """The wait before the next read; grows by `growth` each time up to the maximum."""
        if self.first is not None:
            interval, self.first = self.first, None
            return interval
        interval = self._next
        self._next = min(self.maximum, self._next * self.growth)
        return interval


def probe_schedule(initial: float, maximum: float) -> PollSchedule:
    """The probe's reads: at `initial / 4` after submission, then each 25 % later than the last.

    Read k happens at `initial / 4 x 1.25^k` seconds (intervals capped at `maximum`), so the first
    result is noticed at most about 25 % of its processing time late.
    """
    first = min(initial * _PROBE_FIRST_SHARE, maximum)
    return PollSchedule(first * (_PROBE_GROWTH - 1.0), maximum, growth=_PROBE_GROWTH, first=first)
