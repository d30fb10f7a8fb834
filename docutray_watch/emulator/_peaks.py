"""Peak counters for the emulator's statistics: the most executions running at one instant, and
the most requests that arrived within any one second.

Both are kept as events happen (O(log n) / amortised O(1) each), so a stats read stays cheap
however many executions a long test created. Times come from the emulator's monotonic clock.
"""

from __future__ import annotations

import heapq
from collections import deque


class RunningPeak:
    """The most executions running at once, an execution running from its creation until it
    completes (`completes_at`). An execution starts "now", so the peak can only rise at a
    creation: counting the ones not yet complete at that instant is enough."""

    def __init__(self) -> None:
        self._completions: list[float] = []  # a heap of the running executions' ends
        self.peak = 0

    def started(self, now: float, completes_at: float) -> None:
        """An execution created at `now` that completes at `completes_at`."""
        while self._completions and self._completions[0] <= now:
            heapq.heappop(self._completions)
        if completes_at > now:
            heapq.heappush(self._completions, completes_at)
        self.peak = max(self.peak, len(self._completions))


class WindowPeak:
    """The most events within any window of `width` seconds (a sliding window: 10 requests at
    0.6 s and 10 at 1.4 s count 20, which per-calendar-second buckets would split)."""

    def __init__(self, width: float = 1.0) -> None:
        self._width = width
        self._recent: deque[float] = deque()
        self.peak = 0

    def arrived(self, now: float) -> None:
        """An event at `now` (times never go backwards)."""
        self._recent.append(now)
        while self._recent[0] <= now - self._width:
            self._recent.popleft()
        self.peak = max(self.peak, len(self._recent))
