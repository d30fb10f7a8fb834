"""Poll a job (step execution, identification) until it is terminal: the interval schedule and
the sync/async loops.

The API reference suggests polling every 1-2 s for small documents and every 3-5 s for large
ones and PDFs, so with no explicit interval the schedule starts at the low end for the kind of
document that was uploaded and grows towards the high end. No sleep runs past the deadline: the
last poll happens at the deadline, then ``APITimeoutError``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from docutray_watch.client._exceptions import APITimeoutError

__all__ = [
    "DEFAULT_POLL_TIMEOUT",
    "LARGE_DOCUMENT_SIZE",
    "LARGE_SCHEDULE",
    "SMALL_SCHEDULE",
    "PollSchedule",
    "poll_intervals",
    "poll_until_complete",
    "poll_until_complete_async",
]

DEFAULT_POLL_TIMEOUT = 300.0
"""Seconds ``wait()`` polls before giving up (as in the official SDK)."""

LARGE_DOCUMENT_SIZE = 5 * 1024 * 1024
"""Uploads above this many bytes are polled on the large-document schedule."""

# Looked up at call time so tests can substitute a fake clock.
_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep
_async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


@dataclass(frozen=True)
class PollSchedule:
    """Intervals that start at ``first`` seconds and grow by ``growth`` up to ``ceiling``."""

    first: float
    ceiling: float
    growth: float = 1.5

    def intervals(self) -> Iterator[float]:
        """The endless sequence of intervals."""
        interval = self.first
        while True:
            yield interval
            interval = min(self.ceiling, interval * self.growth)


SMALL_SCHEDULE = PollSchedule(first=1.0, ceiling=2.0)
"""Small images (and documents of unknown kind): 1 s growing to 2 s."""

LARGE_SCHEDULE = PollSchedule(first=3.0, ceiling=5.0)
"""PDFs and documents over 5 MB: 3 s growing to 5 s."""


def poll_intervals(
    poll_interval: float | None, *, content_type: str | None, size: int | None
) -> Iterator[float]:
    """A fixed ``poll_interval`` when given, else the schedule for the uploaded document."""
    if poll_interval is not None:
        if poll_interval <= 0:  # 0 would poll the service in a busy loop
            raise ValueError("poll_interval must be > 0")
        return itertools.repeat(poll_interval)
    large = content_type == "application/pdf" or (size or 0) > LARGE_DOCUMENT_SIZE
    return (LARGE_SCHEDULE if large else SMALL_SCHEDULE).intervals()


class _Pollable(Protocol):
    def _poll_name(self) -> str: ...

    def is_complete(self) -> bool: ...


S = TypeVar("S", bound=_Pollable)


def _deadline(timeout_s: float | None) -> tuple[float, float]:
    limit = DEFAULT_POLL_TIMEOUT if timeout_s is None else timeout_s
    if limit < 0:
        raise ValueError("timeout must be >= 0")
    return limit, _clock() + limit


def _timed_out(status: _Pollable, limit: float) -> APITimeoutError:
    return APITimeoutError(
        f"{status._poll_name()} did not complete within {limit:g} seconds "
        f"(last status: {getattr(status, 'status', '?')})"
    )


def poll_until_complete(
    status: S,
    fetch: Callable[[], S],
    *,
    intervals: Iterator[float],
    timeout_s: float | None,
    on_status: Callable[[S], object] | None,
) -> S:
    """Sleep, ``fetch``, repeat until the status is complete or the deadline passes."""
    limit, deadline = _deadline(timeout_s)
    current = status
    while not current.is_complete():
        remaining = deadline - _clock()
        if remaining <= 0:
            raise _timed_out(current, limit)
        _sleep(min(next(intervals), remaining))
        current = fetch()
        if on_status is not None:
            on_status(current)
    return current


async def poll_until_complete_async(
    status: S,
    fetch: Callable[[], Awaitable[S]],
    *,
    intervals: Iterator[float],
    timeout_s: float | None,
    on_status: Callable[[S], object] | None,
) -> S:
    """The async twin of ``poll_until_complete``; ``on_status`` may be sync or async."""
    limit, deadline = _deadline(timeout_s)
    current = status
    while not current.is_complete():
        remaining = deadline - _clock()
        if remaining <= 0:
            raise _timed_out(current, limit)
        await _async_sleep(min(next(intervals), remaining))
        current = await fetch()
        if on_status is not None:
            outcome = on_status(current)
            if inspect.isawaitable(outcome):
                await outcome
    return current
