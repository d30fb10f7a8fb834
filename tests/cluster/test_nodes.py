"""The node registry and heartbeat on a real PostgreSQL database of each test's own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from docutray_watch.cluster.app import libpq_url
from docutray_watch.cluster.errors import NodeNameInUseError
from docutray_watch.cluster.nodes import (
    Heartbeat,
    deregister_node,
    list_nodes,
    register_node,
)
from docutray_watch.testing import ManualClock

pytestmark = pytest.mark.postgres

STALLED = 30.0


def _execute(url: str, sql: str, *params: Any) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(sql, params or None)


def _age_heartbeat(url: str, name: str, seconds: float) -> None:
    """Make the last heartbeat of `name` that many seconds old (no waiting in tests)."""
    _execute(
        url,
        "UPDATE docutray_cluster.nodes SET last_heartbeat = clock_timestamp()"
        " - make_interval(secs => %s) WHERE name = %s",
        seconds,
        name,
    )


def _as_other_host(url: str, name: str) -> None:
    _execute(url, "UPDATE docutray_cluster.nodes SET host = 'elsewhere' WHERE name = %s", name)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _states(url: str) -> dict[str, str]:
    return {node.name: node.state for node in list_nodes(url, stalled_timeout=STALLED)}


def test_register_lists_the_node_alive(initialised_url: str) -> None:
    """A registered node is listed alive, with this host and process."""
    registration = register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    (node,) = list_nodes(initialised_url, stalled_timeout=STALLED)
    assert (node.name, node.state, node.pid) == ("node-a", "alive", os.getpid())
    assert node.heartbeat_age < 5
    assert registration.took_over is None


def test_second_live_node_with_the_same_name_is_refused(initialised_url: str) -> None:
    """A live node elsewhere holding the name makes a second registration fail, naming it."""
    first = register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    _as_other_host(initialised_url, "node-a")
    with pytest.raises(NodeNameInUseError, match=r"'node-a' is in use by a live node"):
        register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    rows = list_nodes(initialised_url, stalled_timeout=STALLED)
    assert [row.host for row in rows] == ["elsewhere"]
    assert deregister_node(first)  # the first holder still holds it


def test_this_process_cannot_hold_a_name_twice(initialised_url: str) -> None:
    """The same process registering the same name again is refused too (it is alive)."""
    register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    with pytest.raises(NodeNameInUseError):
        register_node(initialised_url, "node-a", stalled_timeout=STALLED)


def test_stale_name_is_taken_over(initialised_url: str) -> None:
    """A name whose heartbeat is older than the stalled timeout goes to the new node; the old
    holder can no longer deregister it."""
    old = register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    _as_other_host(initialised_url, "node-a")
    _age_heartbeat(initialised_url, "node-a", STALLED + 1)
    assert _states(initialised_url) == {"node-a": "stalled"}
    new = register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    assert new.took_over is not None
    assert new.took_over.state == "stalled"
    assert _states(initialised_url) == {"node-a": "alive"}
    assert not deregister_node(old)
    assert deregister_node(new)


def test_name_of_a_dead_process_of_this_host_is_taken_over(initialised_url: str) -> None:
    """After a crash on this host (its pid is gone), the restart takes the name at once."""
    register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    _execute(initialised_url, "UPDATE docutray_cluster.nodes SET pid = %s", _dead_pid())
    again = register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    assert again.took_over is not None
    assert again.took_over.state == "alive"


def test_stopped_name_is_free(initialised_url: str) -> None:
    """After a clean stop the node is listed stopped and its name can be registered again."""
    registration = register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    assert deregister_node(registration)
    assert _states(initialised_url) == {"node-a": "stopped"}
    register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    assert _states(initialised_url) == {"node-a": "alive"}


async def test_heartbeat_refreshes_the_row(initialised_url: str) -> None:
    """Each beat moves last_heartbeat forward on the database's clock."""
    registration = register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    _age_heartbeat(initialised_url, "node-a", 20)
    heartbeat = Heartbeat(registration, interval=1.0, stalled_timeout=STALLED)
    try:
        assert await heartbeat.beat()
    finally:
        heartbeat.stop()
        await heartbeat.run()  # closes its connection
    (node,) = list_nodes(initialised_url, stalled_timeout=STALLED)
    assert node.heartbeat_age < 5
    assert heartbeat.beats == 1


class _StopAfterThree(Heartbeat):
    async def beat(self) -> bool:
        written = await super().beat()
        if self.beats >= 3:
            self.stop()
        return written


async def test_run_beats_until_stopped(initialised_url: str) -> None:
    """`run()` beats every interval until `stop()`, then returns."""
    registration = register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    heartbeat = _StopAfterThree(registration, interval=0.05, stalled_timeout=STALLED)
    await asyncio.wait_for(heartbeat.run(), 10)
    assert heartbeat.beats == 3
    assert heartbeat.healthy()


async def test_healthy_follows_the_last_successful_beat(initialised_url: str) -> None:
    """Healthy while the last success is younger than half the stalled timeout; a failing beat
    does not refresh it, and a later success makes the node healthy again."""
    clock = ManualClock()
    registration = register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    registration = type(registration)(
        registration.url, registration.name, registration.instance, clock(), None
    )
    heartbeat = Heartbeat(registration, interval=1.0, stalled_timeout=STALLED, clock=clock)
    assert heartbeat.healthy()
    clock.advance(STALLED / 2 - 0.1)
    assert heartbeat.healthy()
    clock.advance(0.2)
    assert not heartbeat.healthy()
    assert await heartbeat.beat()
    assert heartbeat.healthy()
    # The database goes away: the beat fails, health runs out, connected_for drops to 0.
    broken = type(registration)(
        "postgresql+psycopg://postgres@127.0.0.1:9/none",
        registration.name,
        registration.instance,
        registration.registered_at,
        None,
    )
    heartbeat._registration = broken
    await heartbeat._close()
    clock.advance(STALLED / 2 + 0.1)
    assert not await heartbeat.beat()
    assert not heartbeat.healthy()
    assert heartbeat.connected_for() == 0.0
    heartbeat._registration = registration
    assert await heartbeat.beat()
    assert heartbeat.healthy()
    clock.advance(4.0)
    assert heartbeat.connected_for() == pytest.approx(4.0)
    await heartbeat._close()


async def test_heartbeat_notices_the_name_was_taken_over(initialised_url: str) -> None:
    """Once another instance took the name, a beat sets `lost` and the node is not healthy."""
    old = register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    _as_other_host(initialised_url, "node-a")
    _age_heartbeat(initialised_url, "node-a", STALLED + 1)
    register_node(initialised_url, "node-a", stalled_timeout=STALLED)
    heartbeat = Heartbeat(old, interval=1.0, stalled_timeout=STALLED)
    assert not await heartbeat.beat()
    assert heartbeat.lost.is_set()
    assert not heartbeat.healthy()
    await asyncio.wait_for(heartbeat.run(), 5)  # returns at once: the name is lost


def test_list_shows_every_state(initialised_url: str) -> None:
    """alive, stalled and stopped nodes are listed by name."""
    register_node(initialised_url, "a-alive", stalled_timeout=STALLED)
    register_node(initialised_url, "b-stalled", stalled_timeout=STALLED)
    _age_heartbeat(initialised_url, "b-stalled", STALLED * 10)
    deregister_node(register_node(initialised_url, "c-stopped", stalled_timeout=STALLED))
    assert _states(initialised_url) == {
        "a-alive": "alive",
        "b-stalled": "stalled",
        "c-stopped": "stopped",
    }
