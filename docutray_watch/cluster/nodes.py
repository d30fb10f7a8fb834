"""The node registry (`docutray_cluster.nodes`): who has joined, who is alive, and this node's
heartbeat.

A node name is held by one live instance at a time. `register_node` refuses a name whose holder
is alive (`NodeNameInUseError`, exit 78) and takes over one whose last heartbeat is older than
the stalled timeout, or whose holder was this very host's process that has since died (a crash
followed by systemd's restart must not be refused for half a minute, since exit 78 stops the
restarts). Ages are measured on the database's clock, so skewed host clocks do not matter.

`Heartbeat` keeps the row fresh from an asyncio task and knows whether this node may still act:
`healthy()` is false once the last successful heartbeat is older than half the stalled timeout
(other nodes will soon think this one dead and retry its jobs, so it must start no POST, move or
delete), and `lost` is set when another instance took the name over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, LiteralString

import psycopg
import structlog
from psycopg.conninfo import make_conninfo

from docutray_watch._version import __version__
from docutray_watch.cluster._db import (
    CONNECT_TIMEOUT_S,
    NODES_LOCK,
    connect,
    take_lock,
)
from docutray_watch.cluster.app import libpq_url
from docutray_watch.cluster.errors import NodeNameInUseError
from docutray_watch.cluster.outages import Outages
from docutray_watch.journal.postgres.connection import application_name

__all__ = [
    "Heartbeat",
    "NodeInfo",
    "NodeState",
    "Registration",
    "deregister_node",
    "list_nodes",
    "list_nodes_on",
    "node_info",
    "register_node",
]

log = structlog.get_logger(__name__)

NodeState = Literal["alive", "stalled", "stopped"]

_SELECT: LiteralString = """
SELECT name, host, boot_id, pid, version, started_at, last_heartbeat, stopped_at,
       extract(epoch FROM clock_timestamp() - last_heartbeat)::float8 AS heartbeat_age
FROM docutray_cluster.nodes
"""


@dataclass(frozen=True)
class NodeInfo:
    """One row of the registry, with its state at the time it was read."""

    name: str
    host: str
    boot_id: str
    pid: int
    version: str
    started_at: datetime
    last_heartbeat: datetime
    stopped_at: datetime | None
    heartbeat_age: float
    """Seconds since the last heartbeat, on the database's clock."""
    state: NodeState


@dataclass(frozen=True)
class Registration:
    """This process's hold on a node name."""

    url: str
    name: str
    instance: uuid.UUID
    registered_at: float
    """`time.monotonic()` just before the registering transaction: its heartbeat is no older."""
    took_over: NodeInfo | None
    """The previous holder of the name, when there was one (stalled or stopped)."""


def _info(row: tuple[Any, ...], stalled_timeout: float) -> NodeInfo:
    name, host, boot_id, pid, version, started_at, last_heartbeat, stopped_at, age = row
    state: NodeState
    if stopped_at is not None:
        state = "stopped"
    elif age >= stalled_timeout:
        state = "stalled"
    else:
        state = "alive"
    return NodeInfo(
        name, host, boot_id, pid, version, started_at, last_heartbeat, stopped_at, age, state
    )


def list_nodes(url: str, *, stalled_timeout: float) -> list[NodeInfo]:
    """Every node that ever joined, by name."""
    with connect(url) as conn:
        rows = conn.execute(_SELECT + " ORDER BY name").fetchall()
    return [_info(row, stalled_timeout) for row in rows]


async def list_nodes_on(
    conn: psycopg.AsyncConnection[Any], *, stalled_timeout: float
) -> list[NodeInfo]:
    """`list_nodes` on a connection the caller holds (a running node's journal's)."""
    rows = await (await conn.execute(_SELECT + " ORDER BY name")).fetchall()
    return [_info(row, stalled_timeout) for row in rows]


def node_info(
    conn: psycopg.Connection[Any], name: str, *, stalled_timeout: float, lock: bool = False
) -> NodeInfo | None:
    """The registry's row of `name` (locked for this transaction with `lock`), if any."""
    query = _SELECT + " WHERE name = %s" + (" FOR UPDATE" if lock else "")
    row = conn.execute(query, (name,)).fetchone()
    return _info(row, stalled_timeout) if row else None


def _boot_id() -> str:
    # Differs per machine and per boot: with the host name, tells "this machine, this boot".
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _our_dead_predecessor(holder: NodeInfo, host: str, boot_id: str) -> bool:
    """The holder ran on this machine in this boot, and its process is gone."""
    return (
        bool(boot_id)
        and holder.host == host
        and holder.boot_id == boot_id
        and holder.pid != os.getpid()
        and not _process_exists(holder.pid)
    )


def register_node(url: str, name: str, *, stalled_timeout: float) -> Registration:
    """Take the name `name` for this process; `NodeNameInUseError` if a live node holds it."""
    host, boot_id, pid = socket.gethostname(), _boot_id(), os.getpid()
    instance = uuid.uuid4()
    started = time.monotonic()
    with connect(url) as conn, conn.transaction():
        take_lock(conn, NODES_LOCK)
        holder = node_info(conn, name, stalled_timeout=stalled_timeout, lock=True)
        if (
            holder is not None
            and holder.state == "alive"
            and not _our_dead_predecessor(holder, host, boot_id)
        ):
            raise NodeNameInUseError(
                f"node name {name!r} is in use by a live node (host {holder.host}, pid "
                f"{holder.pid}, last heartbeat {holder.heartbeat_age:.0f} s ago): give this node "
                "its own cluster.node, or stop the other one; a name whose node has been silent "
                f"for cluster.stalled_timeout ({stalled_timeout:g} s) may be taken over"
            )
        conn.execute(
            (
                "INSERT INTO docutray_cluster.nodes (name, instance, host, boot_id, pid, version,"
                " started_at, last_heartbeat) VALUES (%s, %s, %s, %s, %s, %s,"
                " clock_timestamp(), clock_timestamp()) ON CONFLICT (name) DO UPDATE SET"
                " instance = EXCLUDED.instance, host = EXCLUDED.host,"
                " boot_id = EXCLUDED.boot_id, pid = EXCLUDED.pid, version = EXCLUDED.version,"
                " started_at = EXCLUDED.started_at, last_heartbeat = EXCLUDED.last_heartbeat,"
                " stopped_at = NULL"
            ),
            (name, instance, host, boot_id, pid, __version__),
        )
    if holder is not None:
        log.info(
            "cluster_node_name_taken_over",
            node=name,
            previous_host=holder.host,
            previous_pid=holder.pid,
            previous_state=holder.state,
            heartbeat_age_s=round(holder.heartbeat_age, 1),
        )
    return Registration(url, name, instance, started, holder)


def deregister_node(registration: Registration) -> bool:
    """Mark the node stopped (a clean stop); false if the name was taken over meanwhile."""
    with connect(registration.url) as conn, conn.transaction():
        cursor = conn.execute(
            (
                "UPDATE docutray_cluster.nodes SET stopped_at = clock_timestamp()"
                " WHERE name = %s AND instance = %s"
            ),
            (registration.name, registration.instance),
        )
        return cursor.rowcount == 1


class Heartbeat:
    """Refreshes this node's `last_heartbeat` every `interval` seconds until `stop()`.

    Uses a connection of its own (not procrastinate's pool, which busy jobs may exhaust); a
    failed beat is logged and the connection opened again at the next one.
    """

    def __init__(
        self,
        registration: Registration,
        *,
        interval: float,
        stalled_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        outages: Outages | None = None,
    ) -> None:
        self._registration = registration
        self.outages = outages
        """Told of each failed beat and of the next good one (deadlines pause meanwhile)."""
        self._interval = interval
        self._stalled_timeout = stalled_timeout
        self._clock = clock
        self._last_success: float | None = registration.registered_at
        self._connected_since: float | None = registration.registered_at
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._stopping = asyncio.Event()
        self.lost = asyncio.Event()
        """Set when another instance took this node's name: this process must stop working."""
        self.beats = 0
        """Successful heartbeats so far (for tests and metrics)."""

    def healthy(self) -> bool:
        """Whether this node may start a POST, a move or a delete: its last successful heartbeat
        is younger than half the stalled timeout and it still holds its name."""
        if self.lost.is_set() or self._last_success is None:
            return False
        return self._clock() - self._last_success < self._stalled_timeout / 2

    def connected_for(self) -> float:
        """Seconds since the heartbeats last started succeeding without a failure in between
        (0 while they fail): a node that was cut off must not judge others stale at once."""
        if self._connected_since is None:
            return 0.0
        return self._clock() - self._connected_since

    async def run(self) -> None:
        """Beat until `stop()` or until the name is lost."""
        try:
            while not self._stopping.is_set() and not self.lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._interval)
                if not self._stopping.is_set():
                    await self.beat()
        finally:
            await self._close()

    def stop(self) -> None:
        """End `run()` (after the beat in progress, if any)."""
        self._stopping.set()

    async def beat(self) -> bool:
        """One heartbeat; true when it was written."""
        attempt_started = self._clock()
        try:
            async with asyncio.timeout(max(self._interval, 1.0)):
                conn = await self._connection()
                cursor = await conn.execute(
                    (
                        "UPDATE docutray_cluster.nodes SET last_heartbeat = clock_timestamp()"
                        " WHERE name = %s AND instance = %s AND stopped_at IS NULL"
                    ),
                    (self._registration.name, self._registration.instance),
                )
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._connected_since = None
            await self._close()
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if self.outages is not None:
                self.outages.down(error)
            log.warning(
                "cluster_heartbeat_failed",
                node=self._registration.name,
                error=error,
                healthy=self.healthy(),
            )
            return False
        if cursor.rowcount != 1:
            self.lost.set()
            log.error(
                "cluster_node_name_lost",
                node=self._registration.name,
                reason="another instance took this node's name over (this node was silent for "
                "longer than the stalled timeout)",
            )
            return False
        if self.outages is not None:
            self.outages.up()
        # The row was written after the attempt started: counting from then is conservative.
        self._last_success = attempt_started
        if self._connected_since is None:
            self._connected_since = attempt_started
        self.beats += 1
        return True

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                make_conninfo(libpq_url(self._registration.url), connect_timeout=CONNECT_TIMEOUT_S),
                autocommit=True,
                application_name=f"{application_name(self._registration.name)} heartbeat",
            )
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
