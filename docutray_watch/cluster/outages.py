"""When this node could not reach the cluster database: a pause, as the engine's `Pauses` are.

The heartbeat reports each beat (`down` on a failed one, `up` on the next that succeeds), so an
outage is known to within one heartbeat interval. Its wall-clock spans are kept so that a job
can add to a deadline the time the database was away since that deadline's start
(`paused_between`): no `poll.timeout` runs out because PostgreSQL was restarted, since no job of
the document could run meanwhile (and the execution keeps going at the API). `/readyz` says why
the node is not ready while one lasts (`reason`).

The spans are this node's view: a node started after an outage does not know of it (its jobs
count from the step's first try, as before).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

__all__ = ["Outages"]

log = structlog.get_logger(__name__)

_KEEP = 256  # spans remembered (older ones lie far before any deadline still running)


class Outages:
    """Spans of time this node could not reach the cluster database."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._spans: deque[tuple[float, float]] = deque(maxlen=_KEEP)
        self._down_since: float | None = None
        self._error = ""
        self.came_back = asyncio.Event()
        """Set when an outage ends (the job worker starts again at once, not after its
        backoff); whoever waits on it clears it first."""

    def down(self, error: str) -> None:
        """A connection or a statement failed: the outage starts now (unless it had)."""
        self._error = error
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning("cluster_database_lost", error=error, note="deadlines are paused")

    def up(self) -> None:
        """The database answered again: the outage (if any) ends now."""
        if self._down_since is None:
            return
        start, end = self._down_since, self._clock()
        self._spans.append((start, end))
        self._down_since = None
        self.came_back.set()
        log.info("cluster_database_back", outage_s=round(end - start, 1))

    @property
    def reason(self) -> str | None:
        """Why the node is not ready while an outage lasts (None otherwise)."""
        if self._down_since is None:
            return None
        return (
            f"cannot reach the cluster database since {_iso(self._down_since)} "
            f"({self._error}); waiting, deadlines paused"
        )

    def paused_between(self, since: float, until: float | None = None) -> float:
        """Seconds of outage between the wall-clock times `since` and `until` (now)."""
        end = self._clock() if until is None else until
        spans = list(self._spans)
        if self._down_since is not None:
            spans.append((self._down_since, end))
        return sum(max(0.0, min(b, end) - max(a, since)) for a, b in spans)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
