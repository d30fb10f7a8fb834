"""What a cluster node's jobs share: the queue names and priorities, and the node's services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from docutray_watch.cluster.limits import ClusterRate, ClusterSlots
from docutray_watch.cluster.outages import Outages
from docutray_watch.engine.context import Context
from docutray_watch.engine.ratelimit import RateLimiter
from docutray_watch.journal import DocumentRow, StepRow
from docutray_watch.journal.postgres import PostgresStore

if TYPE_CHECKING:
    from docutray_watch.engine.discovery import Discovery
    from docutray_watch.engine.source_intake import SourceIntake

__all__ = [
    "OLD_JOBS_HOURS",
    "PRIORITY_DRAIN",
    "PRIORITY_SUBMIT",
    "RETRY_S",
    "SHARED_QUEUE",
    "Jobs",
    "NodeServices",
]

SHARED_QUEUE = "shared"
PRIORITY_DRAIN = 10  # poll, deliver, finalize, intake: fetched before any submit
PRIORITY_SUBMIT = 0
RETRY_S = 1.0  # a submit that found no slot, no token or an unhealthy node looks again after this
OLD_JOBS_HOURS = 24  # failed and cancelled jobs kept this long for an operator to read


@dataclass
class NodeServices:
    """What the jobs of one node use (built by `runtime.ClusterNode`)."""

    ctx: Context  # the engine's context: its store is the `PostgresStore`
    store: PostgresStore
    slots: ClusterSlots
    rate: ClusterRate
    node: str
    discovery: Discovery
    local_rate: RateLimiter  # the API client's own limiter: how a 429 on this node is noticed
    healthy: Callable[[], bool] = lambda: True
    connected_for: Callable[[], float] = lambda: float("inf")
    stalled_timeout: float = 30.0
    write_timeout: float = 60.0
    scan_period: int = 2
    sources: SourceIntake | None = None  # the engine's sources (buckets…), listed periodically
    outages: Outages = field(default_factory=Outages)
    """When this node could not reach the database: added to the steps' deadlines."""
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]] = asyncio.ensure_future


class Jobs(Protocol):
    """What the handoff and the periodic tasks use of `jobs.ClusterJobs` (no import cycle)."""

    svc: NodeServices
    app: Any
    intake: Any

    def holder_of(self, pipeline: str) -> str | None: ...

    async def defer_job(
        self,
        task: Any,
        *,
        queue: str,
        priority: int,
        key: str,
        schedule_in: float = 0.0,
        connection: Any = None,
        **kwargs: Any,
    ) -> None: ...

    async def defer_submit(
        self, doc: DocumentRow, step: StepRow, holder: str | None, **kwargs: Any
    ) -> None: ...

    async def defer_finalize(
        self,
        doc: DocumentRow,
        holder: str | None,
        *,
        connection: Any = None,
        schedule_in: float = 0.0,
    ) -> None: ...

    async def hand_on(self, doc: DocumentRow) -> None:
        """Defer a journaled document's next job (again: a waiting one is kept)."""
        ...
