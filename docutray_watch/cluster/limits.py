"""The engine's limits for a whole cluster, in PostgreSQL rows (not in any node's memory).

- **Execution slots** (`ClusterSlots`): an execution keeps running at the service after its node
  dies, so a slot is not a session (a session advisory lock would free itself with the
  connection). A step takes one by count-and-claim in one transaction, serialised by
  `pg_advisory_xact_lock` (its first statement): steps in `submitting`/`polling` plus the
  `pending` ones holding a `slots` row, under `api.max_in_flight` for the cluster and
  `cluster.node_max_in_flight` for the node. A slot ends when its step leaves those states (the
  count joins on the step's state), so a dead node's executions hold theirs until another node
  finishes polling them, and nothing has to be "given back" for the count to be right.
- **Request rate** (`ClusterRate`): one row (`docutray_cluster.rate`) holds the rate, a token
  bucket and `pause_until`. A 429 on any node lowers the rate and pauses every node; a periodic
  task raises it (`raise_rate`); a number in `api.requests_per_second` caps the total.

Jobs never wait inside a job: they call the non-blocking `try_take` / `try_acquire` /
`paused_for` and reschedule themselves. The `SlotPool`/`RequestRate` protocol methods exist
for the phases and the API client (a status read waits at most for its token).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random

from docutray_watch.cluster._db import LOCK_NAMESPACE
from docutray_watch.journal.postgres.connection import application_name

__all__ = ["SLOTS_LOCK", "ClusterRate", "ClusterSlots", "StepSlot", "retrying"]

log = structlog.get_logger(__name__)

SLOTS_LOCK = 16
"""The advisory-lock key (in `LOCK_NAMESPACE`) that serialises slot claims."""

INITIAL_RATE = 16.0  # requests/s of an adaptive cluster before anything was learned
MIN_RATE = 0.5  # a 429 never takes the rate below this
DECREASE = 0.5  # a 429 multiplies the cluster's rate by this
INCREASE = 1.1  # each quiet period multiplies it by this (`raise_rate`)

T = TypeVar("T")

_RETRIED = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


async def retrying(work: Callable[[], Awaitable[T]]) -> T:
    """Run a transaction again when PostgreSQL picked it as a deadlock or serialization victim
    (SQLSTATE 40P01, 40001): it wrote nothing, and a second try usually goes through."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(_RETRIED),
        stop=stop_after_attempt(5),
        wait=wait_random(0.01, 0.2),
        reraise=True,
    ):
        with attempt:
            return await work()
    raise AssertionError("unreachable")  # pragma: no cover - AsyncRetrying reraises


class ClusterSlots:
    """Executions in flight for the whole cluster, counted from rows (see the module docstring)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        node: str,
        cluster_cap: int,
        node_cap: int | None = None,
        journal_schema: str = "docutray",
    ) -> None:
        self.pool = pool
        self.node = node
        self.cluster_cap = cluster_cap
        self.node_cap = node_cap if node_cap is not None else cluster_cap
        steps = self._steps = sql.Identifier(journal_schema, "steps")
        # Executions the service may be running (from any node, also imported or resumed ones),
        # plus steps that took a slot and are about to submit.
        self._count_sql = sql.SQL(
            "SELECT (SELECT count(*) FROM {steps} WHERE state IN ('submitting', 'polling'))"
            " + (SELECT count(*) FROM docutray_cluster.slots s JOIN {steps} st"
            "     ON st.id = s.step_row WHERE st.state = 'pending'),"
            " (SELECT count(*) FROM docutray_cluster.slots s"
            "   JOIN {steps} st ON st.id = s.step_row"
            "   WHERE s.node = %s AND st.state IN ('pending', 'submitting', 'polling'))"
        ).format(steps=steps)
        self._held_sql = sql.SQL(
            "SELECT 1 FROM docutray_cluster.slots WHERE step_row = %s"
            " UNION ALL SELECT 1 FROM {steps}"
            " WHERE id = %s AND state IN ('submitting', 'polling')"
        ).format(steps=steps)
        self.last_count = (0, 0)

    async def in_flight(self) -> tuple[int, int]:
        """(the cluster's, this node's) slots in use now."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(self._count_sql, (self.node,))).fetchone()
        assert row is not None
        self.last_count = (int(row[0]), int(row[1]))
        return self.last_count

    async def try_take(self, step_row: int) -> bool:
        """Claim a slot for this step if the caps allow; True when it holds one (also when it
        held one already: a job run again after a crash)."""

        async def claim() -> bool:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, SLOTS_LOCK)
                )
                held = await (await conn.execute(self._held_sql, (step_row, step_row))).fetchone()
                if held is not None:
                    return True  # its row, or its execution counts already (a run after a crash)
                row = await (await conn.execute(self._count_sql, (self.node,))).fetchone()
                assert row is not None
                self.last_count = (int(row[0]), int(row[1]))
                if self.last_count[0] >= self.cluster_cap or self.last_count[1] >= self.node_cap:
                    return False
                await conn.execute(
                    "INSERT INTO docutray_cluster.slots (step_row, node) VALUES (%s, %s)",
                    (step_row, self.node),
                )
                return True

        return await retrying(claim)

    async def give_back(self, step_row: int) -> None:
        """Drop the step's slot row (its step ended, or waits for another try). Tidiness only:
        a step out of pending/submitting/polling no longer counts anyway."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "DELETE FROM docutray_cluster.slots WHERE step_row = %s", (step_row,)
            )

    async def tidy(self) -> int:
        """Delete the rows of steps that ended (a node died between the end and `give_back`)."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL(
                    "DELETE FROM docutray_cluster.slots s WHERE NOT EXISTS (SELECT 1 FROM {steps}"
                    " st WHERE st.id = s.step_row"
                    " AND st.state IN ('pending', 'submitting', 'polling'))"
                ).format(steps=self._steps)
            )
            return int(cursor.rowcount)

    def for_step(self, step_row: int) -> StepSlot:
        """The `SlotPool` a phase is given for one step."""
        return StepSlot(self, step_row)


class StepSlot:
    """One step's view of the cluster's slots, as the phases' `SlotPool` (via `HeldSlot`).

    Its `release` only forgets: the slot ends with its step's state (see `ClusterSlots`), and
    the job that ran the phase deletes the row afterwards.
    """

    def __init__(self, slots: ClusterSlots, step_row: int) -> None:
        self.slots = slots
        self.step_row = step_row
        self.held = False

    @property
    def used(self) -> int:
        return self.slots.last_count[0]

    async def acquire(self) -> None:
        # A row in another process's database: no event to wait on, so look again.
        while not await self.slots.try_take(self.step_row):  # noqa: ASYNC110
            await asyncio.sleep(1.0)  # not used by jobs (they reschedule): the protocol's wait
        self.held = True

    def take(self) -> None:
        self.held = True  # an execution already running: it counts from its step's state

    def release(self) -> None:
        self.held = False

    def resize(self, capacity: int) -> None:
        self.slots.cluster_cap = capacity


@dataclass(frozen=True)
class RateRow:
    """The `rate` row as read: the rate in force and the pause every node honours."""

    rate: float
    paused_for: float


class ClusterRate:
    """The cluster's request rate: one row shared by every node (see the module docstring)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        fixed: float | None,
        max_rate: float | None = None,
        spawn: Callable[[Awaitable[object]], object] | None = None,
    ) -> None:
        self.pool = pool
        self.fixed = fixed
        self.max_rate = max_rate
        self._spawn = spawn or _background
        self.rate = fixed if fixed is not None else INITIAL_RATE

    def _effective(self, stored: float | None) -> float:
        rate = stored if stored is not None else (self.fixed or INITIAL_RATE)
        if self.fixed is not None:
            rate = min(rate, self.fixed)  # the configured number caps the cluster's total
        if self.max_rate is not None:
            rate = min(rate, self.max_rate)
        return max(rate, min(MIN_RATE, self.fixed or MIN_RATE))

    async def try_acquire(self) -> float:
        """Take one request's token: 0.0 when taken, else the seconds until one may be (a
        pause, or an empty bucket)."""

        async def take() -> float:
            async with self.pool.connection() as conn, conn.transaction():
                row = await (
                    await conn.execute(
                        "SELECT rate, tokens, EXTRACT(EPOCH FROM clock_timestamp() - refilled_at),"
                        " EXTRACT(EPOCH FROM pause_until - clock_timestamp())"
                        " FROM docutray_cluster.rate FOR UPDATE"
                    )
                ).fetchone()
                assert row is not None, "cluster init creates the rate row"
                stored, tokens, elapsed, pause = row
                rate = self.rate = self._effective(stored)
                if pause is not None and float(pause) > 0:
                    return float(pause)
                burst = max(1.0, rate)
                level = burst if tokens is None else float(tokens)
                level = min(burst, level + rate * float(elapsed or 0.0))
                if level < 1.0:
                    await conn.execute(
                        "UPDATE docutray_cluster.rate SET tokens = %s,"
                        " refilled_at = clock_timestamp()",
                        (level,),
                    )
                    return (1.0 - level) / rate
                await conn.execute(
                    "UPDATE docutray_cluster.rate SET tokens = %s, refilled_at = clock_timestamp()",
                    (level - 1.0,),
                )
                return 0.0

        return await retrying(take)

    async def paused_for(self) -> float:
        """Seconds until the cluster's 429 pause ends (0: not paused)."""
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT EXTRACT(EPOCH FROM pause_until - clock_timestamp())"
                    " FROM docutray_cluster.rate"
                )
            ).fetchone()
        return max(0.0, float(row[0])) if row and row[0] is not None else 0.0

    async def read(self) -> RateRow:
        """The rate in force and the pause, for `status` and tests."""
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT rate, EXTRACT(EPOCH FROM pause_until - clock_timestamp())"
                    " FROM docutray_cluster.rate"
                )
            ).fetchone()
        assert row is not None
        return RateRow(self._effective(row[0]), max(0.0, float(row[1] or 0.0)))

    async def lower(self, pause_seconds: float) -> None:
        """A 429 on this node: every node slows down and waits `pause_seconds`."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE docutray_cluster.rate SET"
                " rate = GREATEST(%s, COALESCE(rate, %s) * %s), tokens = 0,"
                " pause_until = GREATEST(COALESCE(pause_until, clock_timestamp()),"
                "   clock_timestamp() + make_interval(secs => %s)),"
                " throttled_at = clock_timestamp(), updated_at = clock_timestamp()",
                (MIN_RATE, self._effective(None), DECREASE, pause_seconds),
            )
        log.info("cluster_rate_lowered", pause_s=pause_seconds)

    async def raise_rate(self, quiet_seconds: float) -> None:
        """The periodic raise: when no 429 came for `quiet_seconds`, a little faster (up to the
        configured number or `api.max_requests_per_second`). Nothing to learn with a fixed
        rate that was never lowered."""
        ceiling = self.fixed if self.fixed is not None else self.max_rate
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE docutray_cluster.rate SET rate = LEAST(COALESCE(%s, rate * %s),"
                " rate * %s), updated_at = clock_timestamp()"
                " WHERE rate IS NOT NULL AND (throttled_at IS NULL"
                "  OR throttled_at < clock_timestamp() - make_interval(secs => %s))",
                (ceiling, INCREASE, INCREASE, quiet_seconds),
            )

    # -- the `RequestRate` protocol (the API client's requests) -------------------------------

    async def acquire(self, *, yield_to_others: bool = False) -> None:
        """Wait for this request's token (a short wait: at most a token's interval, or the
        cluster's pause)."""
        while (wait := await self.try_acquire()) > 0:  # noqa: ASYNC110 - a row, not an event
            await asyncio.sleep(min(wait, 5.0))

    def accepted(self, sent_at: float | None = None) -> None:
        """Nothing to do: the rate is raised by the periodic task, not per answer."""

    def throttled(self, seconds: float, sent_at: float | None = None) -> None:
        self._spawn(self.lower(seconds))


_BACKGROUND: set[asyncio.Task[object]] = set()


def _background(work: Awaitable[object]) -> object:
    async def logged() -> None:
        try:
            await work
        except psycopg.Error as exc:
            log.warning("cluster_rate_not_lowered", error=str(exc))

    task: asyncio.Task[object] = asyncio.ensure_future(logged())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


@contextlib.asynccontextmanager
async def open_pool(conninfo: str, *, max_size: int = 4, node: str | None = None) -> Any:
    """A small psycopg pool for the limits' short transactions (apart from the job pool); its
    connections say `docutray-watch/<node>` in `pg_stat_activity`."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True, "application_name": application_name(node)},
    )
    await pool.open(wait=True, timeout=30)
    try:
        yield pool
    finally:
        await pool.close()
