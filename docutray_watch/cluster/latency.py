"""The latency model across a cluster: one estimate per (step ID, size class) for every node, in
the journal's `step_latency` table, so a poll job on any node aims at what any node learned.

Single-node mode keeps the model in memory, loads it at start and saves it at stop. In a cluster
the execution polled on node A may have been submitted on node B, and both run for days:

- `adopt(ctx)` makes the node's model a `ClusterLatency` (the same estimates), which remembers
  each observation (a status read that found an execution ended) until it is shared;
- `share(store, model)`, after each poll job, merges every pending observation into its row —
  the same moving mean and variance as `LatencyModel`, in one transaction holding the row's
  lock, so two nodes learning at once both count — and takes the merged row back into the
  node's model;
- `first_wait(store, ctx, doc, step)`, after a submission, reads the cluster's estimate for
  that step and size from the journal and says when the first status read is worth making:
  just after the expected completion (`LatencyModel.first_read`), or `poll.initial` while
  nothing is known.

`ClusterLatency.export()` is empty: the engine's save at stop would write this node's view over
what other nodes learned since (every observation is in the journal already).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql

from docutray_watch.engine.context import Context
from docutray_watch.journal import DocumentRow, StepRow
from docutray_watch.journal.postgres import PostgresStore
from docutray_watch.journal.postgres.tables import step_latency
from docutray_watch.polling import LatencyModel, size_class

__all__ = ["MAX_PENDING", "ClusterLatency", "adopt", "first_wait", "refresh", "share"]

log = structlog.get_logger("docutray_watch.cluster")

MAX_PENDING = 1000  # observations kept while the database is away (the oldest are dropped)


@dataclass
class ClusterLatency(LatencyModel):
    """The engine's latency model, remembering observations until `share` writes them."""

    pending: list[tuple[str, int, float]] = field(default_factory=list)
    """(step ID, document size, seconds) observed here and not yet in the journal."""

    def observe(self, step_id: str, size: int, seconds: float) -> None:
        super().observe(step_id, size, seconds)
        if math.isfinite(seconds) and seconds >= 0:
            self.pending.append((step_id, size, seconds))
            del self.pending[:-MAX_PENDING]

    def export(self) -> list[tuple[str, int, int, float, float]]:
        """Nothing: every observation was merged into the journal's rows already (`share`)."""
        return []


def adopt(ctx: Context) -> ClusterLatency:
    """Make the context's model a `ClusterLatency` holding the estimates it has."""
    model = ctx.latency
    if not isinstance(model, ClusterLatency):
        shared = ClusterLatency()
        shared.load(model.export())
        ctx.latency = model = shared
    return model


async def share(store: PostgresStore, model: LatencyModel) -> None:
    """Merge this node's pending observations into the journal's rows (never raises: what
    could not be written waits for the next call)."""
    if not isinstance(model, ClusterLatency):
        return
    while model.pending:
        step_id, size, seconds = model.pending[0]
        try:
            merged = await _merge(store, step_id, size, seconds)
        except Exception as exc:  # noqa: BLE001 - a poll job never fails for its statistics
            log.warning("latency_share_failed", error=f"{type(exc).__name__}: {exc}")
            return
        model.pending.pop(0)
        model.load([merged])


async def _merge(
    store: PostgresStore, step_id: str, size: int, seconds: float
) -> tuple[str, int, int, float, float]:
    key = (step_latency.c.step_id == step_id) & (step_latency.c.size_class == size_class(size))
    async with store.transaction() as conn:
        await conn.execute(
            postgresql.insert(step_latency)
            .values(step_id=step_id, size_class=size_class(size), count=0, mean=0.0, variance=0.0)
            .on_conflict_do_nothing()
        )
        row = (
            await conn.execute(
                sa.select(step_latency.c.count, step_latency.c.mean, step_latency.c.variance)
                .where(key)
                .with_for_update()
            )
        ).one()
        scratch = LatencyModel()
        scratch.load([(step_id, size_class(size), int(row[0]), float(row[1]), float(row[2]))])
        scratch.observe(step_id, size, seconds)
        [merged] = scratch.export()
        _, _, count, mean, variance = merged
        await conn.execute(
            sa.update(step_latency).where(key).values(count=count, mean=mean, variance=variance)
        )
    return merged


async def refresh(store: PostgresStore, model: LatencyModel, step_id: str, size: int) -> None:
    """Take the cluster's estimate for this step and size into the node's model."""
    key = (step_latency.c.step_id == step_id) & (step_latency.c.size_class == size_class(size))
    async with store.transaction() as conn:
        row = (
            await conn.execute(
                sa.select(step_latency.c.count, step_latency.c.mean, step_latency.c.variance)
                .where(key)
                .where(step_latency.c.count > 0)
            )
        ).one_or_none()
    if row is not None:
        model.load([(step_id, size_class(size), int(row[0]), float(row[1]), float(row[2]))])


async def first_wait(store: PostgresStore, ctx: Context, doc: DocumentRow, step: StepRow) -> float:
    """Seconds from now until the first status read of a step just submitted: just after its
    expected completion by the cluster's estimate, else `poll.initial`."""
    size = doc.size or 0
    try:
        await refresh(store, ctx.latency, step.step_id, size)
    except Exception as exc:  # noqa: BLE001 - the node's own estimate will do
        log.warning("latency_refresh_failed", error=f"{type(exc).__name__}: {exc}")
    expected = ctx.latency.first_read(step.step_id, size)
    if expected is None:
        return ctx.pipelines[doc.pipeline].config.poll.initial
    submitted = step.submitted_at or time.time()
    return max(0.0, submitted + expected - time.time())
