"""The cluster's limits in PostgreSQL rows: slots capped across nodes, the shared rate row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from docutray_watch.cluster.app import libpq_url
from docutray_watch.cluster.limits import ClusterRate, ClusterSlots, open_pool
from docutray_watch.journal.postgres import PostgresStore

pytestmark = pytest.mark.postgres


@pytest.fixture(name="store")
async def store_fixture(initialised_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(initialised_url, node="node-a", migrate=False)
    await store.open()
    yield store
    await store.close()


@pytest.fixture(name="pool")
async def pool_fixture(initialised_url: str) -> AsyncIterator[Any]:
    async with open_pool(libpq_url(initialised_url)) as pool:
        yield pool


async def _steps(store: PostgresStore, count: int) -> list[int]:
    """`count` queued documents of one step each; their step rows."""
    rows = []
    for i in range(count):
        _doc, steps = await store.add_queued(
            "invoices",
            f"/in/{i}.pdf",
            f"{i}.pdf",
            sha256=f"{i:064x}",
            content_type="application/pdf",
            size=10,
            mtime_ns=i,
            steps=["stp_a"],
        )
        rows.append(steps[0].id)
    return rows


async def test_the_cluster_cap_holds_across_nodes(store: PostgresStore, pool: Any) -> None:
    """Two nodes claiming at once never hold more slots together than max_in_flight, and each
    stays under its own node cap."""
    node_a = ClusterSlots(pool, node="node-a", cluster_cap=3, node_cap=2)
    node_b = ClusterSlots(pool, node="node-b", cluster_cap=3, node_cap=2)
    rows = await _steps(store, 8)
    taken = await asyncio.gather(
        *(node.try_take(row) for row, node in zip(rows, [node_a, node_b] * 4, strict=True))
    )
    assert sum(taken) == 3
    assert await node_a.in_flight() in ((3, 1), (3, 2))
    assert max(node_a.last_count[1], (await node_b.in_flight())[1]) == 2


async def test_a_step_holding_a_slot_takes_it_again(store: PostgresStore, pool: Any) -> None:
    """A job run again after a crash finds its slot still held (no second slot taken)."""
    slots = ClusterSlots(pool, node="node-a", cluster_cap=1)
    [row] = await _steps(store, 1)
    assert await slots.try_take(row)
    assert await slots.try_take(row)
    assert await slots.in_flight() == (1, 1)


async def test_a_slot_ends_with_its_step(store: PostgresStore, pool: Any) -> None:
    """A step that ended frees its slot from the count, even if its row was not deleted."""
    slots = ClusterSlots(pool, node="node-a", cluster_cap=1)
    first, second = await _steps(store, 2)
    assert await slots.try_take(first)
    assert not await slots.try_take(second)
    await store.step_submitting(first)
    await store.step_accepted(first, "exe_1", "ENQUEUED")
    assert not await slots.try_take(second)  # polling: still running at the service
    await store.finish_step(first, state="failed", error="gone")
    assert await slots.try_take(second)
    assert await slots.tidy() == 1


async def test_executions_without_a_slot_row_count(store: PostgresStore, pool: Any) -> None:
    """An execution polled from rows alone (imported, or resumed) still takes up the cap."""
    first, second = await _steps(store, 2)
    await store.step_submitting(first)
    await store.step_accepted(first, "exe_1", "ENQUEUED")
    slots = ClusterSlots(pool, node="node-b", cluster_cap=1)
    assert not await slots.try_take(second)


async def test_a_429_pauses_and_slows_every_node(pool: Any) -> None:
    """A 429 on one node lowers the shared rate and pauses the other node's requests too."""
    node_a = ClusterRate(pool, fixed=None)
    node_b = ClusterRate(pool, fixed=None)
    assert await node_b.try_acquire() == 0.0
    await node_a.lower(5.0)
    row = await node_b.read()
    assert row.rate < 16.0
    assert 4.0 < row.paused_for <= 5.0
    assert 4.0 < await node_b.try_acquire() <= 5.0


async def test_a_fixed_rate_caps_the_cluster_total(pool: Any) -> None:
    """With requests_per_second: 2, two nodes together get about two tokens at once, not four."""
    nodes = [ClusterRate(pool, fixed=2.0), ClusterRate(pool, fixed=2.0)]
    waits = [await node.try_acquire() for node in nodes * 2]
    assert waits[:2] == [0.0, 0.0]
    assert all(wait > 0.0 for wait in waits[2:])


async def test_the_periodic_raise_waits_for_a_quiet_period(pool: Any) -> None:
    """The rate is raised only when no 429 came within the quiet period, and never above the
    configured ceiling."""
    rate = ClusterRate(pool, fixed=None, max_rate=10.0)
    await rate.lower(0.0)
    lowered = (await rate.read()).rate
    await rate.raise_rate(quiet_seconds=60.0)
    assert (await rate.read()).rate == lowered
    await rate.raise_rate(quiet_seconds=0.0)
    assert lowered < (await rate.read()).rate <= 10.0
