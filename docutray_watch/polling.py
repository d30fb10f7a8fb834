"""When to ask for an execution's status: learned from how long each step takes.

Fixed-interval polling either asks too often (wasted requests) or notices completion late. The
engine instead keeps, per step ID and size class, an exponentially weighted mean and variance of
the processing time the service reports (`response_timestamp - request_timestamp`), and schedules
the first status read just after the expected completion (mean + 2 standard deviations + a small
margin). If the execution is not done by then, reads follow every `poll.initial` seconds at first,
growing by half each time up to `poll.max`. While nothing is known about a step yet, one
execution ("the probe") polls on that schedule and the others wait for what it learns, so a cold
start does not multiply status requests. Estimates are saved in the journal, so a restart starts
warm.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

__all__ = ["LatencyModel", "PollSchedule", "size_class"]

_ALPHA = 0.2  # weight of the newest observation in the moving mean/variance
_MARGIN = 0.05  # seconds added to every prediction: a status read is cheaper than a late one


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
    """The status-read schedule of one execution after its first read."""

    initial: float
    maximum: float
    _next: float = 0.0

    def __post_init__(self) -> None:
        self._next = self.initial

    def next_interval(self) -> float:
        """The wait before the next read; grows by half each time up to the maximum."""
        interval = self._next
        self._next = min(self.maximum, self._next * 1.5)
        return interval
