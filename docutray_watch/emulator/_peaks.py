"""Peak counters for the emulator's statistics: the most executions running at one instant (all
of them, or only the latest of each document), and the most requests that arrived within any one
second.

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


class LatestRunningPeak:
    """The most executions running at once counting, for each (step, document), only its latest
    execution: an earlier one is superseded once a client submitted the same document again
    (it lost track of the first POST: killed, or cut off from its journal) and runs on at the
    service uncounted by the client's cap. So a client that keeps its cap has
    ``peak <= max_in_flight`` here, while the plain `RunningPeak` may exceed it by the
    superseded executions still running at that instant."""

    def __init__(self) -> None:
        self._completions: list[tuple[float, str]] = []  # (end, execution id), lazily pruned
        self._running: set[str] = set()  # running executions that are the latest of their key
        self._latest: dict[tuple[str, str], str] = {}  # (step, sha256) -> latest execution id
        self.peak = 0

    def started(self, now: float, completes_at: float, key: tuple[str, str], ident: str) -> None:
        """Execution `ident` of `key` (step, sha256) created at `now`, completing at
        `completes_at`."""
        while self._completions and self._completions[0][0] <= now:
            self._running.discard(heapq.heappop(self._completions)[1])
        superseded = self._latest.get(key)
        if superseded is not None:
            self._running.discard(superseded)
        self._latest[key] = ident
        if completes_at > now:
            heapq.heappush(self._completions, (completes_at, ident))
            self._running.add(ident)
        self.peak = max(self.peak, len(self._running))


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
