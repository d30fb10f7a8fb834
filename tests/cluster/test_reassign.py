"""`reassign_queue`: a dead node's waiting jobs move to another node's queue."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from docutray_watch.cluster.app import libpq_url
from docutray_watch.cluster.nodes import deregister_node, register_node
from docutray_watch.cluster.reassign import ReassignRefusedError, reassign_queue

pytestmark = pytest.mark.postgres

STALLED = 30.0


def _execute(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []


def _add_jobs(url: str, queue: str, status: str, count: int) -> None:
    for _ in range(count):
        _execute(
            url,
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status) VALUES (%s, 't', %s)",
            queue,
            status,
        )


def _queues(url: str) -> dict[tuple[str, str], int]:
    rows = _execute(
        url,
        "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs GROUP BY 1, 2",
    )
    return {(queue, status): count for queue, status, count in rows}


def _dead(url: str, name: str) -> None:
    """Register `name` on another host and age it past the stalled timeout."""
    register_node(url, name, stalled_timeout=STALLED)
    _execute(
        url,
        "UPDATE docutray_cluster.nodes SET host = 'gone', last_heartbeat ="
        " clock_timestamp() - interval '1 hour' WHERE name = %s",
        name,
    )


def test_moves_waiting_jobs_only(initialised_url: str) -> None:
    """Waiting jobs of the dead node move; running and finished ones and other queues stay."""
    _dead(initialised_url, "old")
    register_node(initialised_url, "new", stalled_timeout=STALLED)
    _add_jobs(initialised_url, "node.old", "todo", 3)
    _add_jobs(initialised_url, "node.old", "doing", 1)
    _add_jobs(initialised_url, "node.old", "succeeded", 2)
    _add_jobs(initialised_url, "node.other", "todo", 1)
    result = reassign_queue(initialised_url, "old", "new", stalled_timeout=STALLED)
    assert (result.moved, result.still_running) == (3, 1)
    assert _queues(initialised_url) == {
        ("node.new", "todo"): 3,
        ("node.old", "doing"): 1,
        ("node.old", "succeeded"): 2,
        ("node.other", "todo"): 1,
    }


def test_a_stopped_node_can_be_reassigned(initialised_url: str) -> None:
    """A node that stopped cleanly is not alive: its queue may move."""
    deregister_node(register_node(initialised_url, "old", stalled_timeout=STALLED))
    register_node(initialised_url, "new", stalled_timeout=STALLED)
    _add_jobs(initialised_url, "node.old", "todo", 2)
    assert reassign_queue(initialised_url, "old", "new", stalled_timeout=STALLED).moved == 2


def test_refuses_a_live_node(initialised_url: str) -> None:
    """While OLD heartbeats, nothing moves."""
    register_node(initialised_url, "old", stalled_timeout=STALLED)
    register_node(initialised_url, "new", stalled_timeout=STALLED)
    _add_jobs(initialised_url, "node.old", "todo", 2)
    with pytest.raises(ReassignRefusedError, match="'old' is alive"):
        reassign_queue(initialised_url, "old", "new", stalled_timeout=STALLED)
    assert _queues(initialised_url) == {("node.old", "todo"): 2}


def test_refuses_an_unknown_new_node(initialised_url: str) -> None:
    """A NEW that never joined (a typo) would strand the jobs: refused."""
    _dead(initialised_url, "old")
    _add_jobs(initialised_url, "node.old", "todo", 1)
    with pytest.raises(ReassignRefusedError, match="never joined"):
        reassign_queue(initialised_url, "old", "nwe", stalled_timeout=STALLED)
    assert _queues(initialised_url) == {("node.old", "todo"): 1}


def test_refuses_the_same_node(initialised_url: str) -> None:
    """OLD and NEW must differ."""
    with pytest.raises(ReassignRefusedError, match="same node"):
        reassign_queue(initialised_url, "a", "a", stalled_timeout=STALLED)
