"""Moving a dead node's local queue to another node (`cluster nodes --reassign OLD NEW`).

Jobs in `node.OLD` touch files on OLD's disk (or a copy of them the operator has moved to NEW:
that part is theirs to do); once OLD is gone for good, its waiting jobs are handed to NEW by
renaming their queue. Only jobs waiting (`todo`) move: a job OLD was running when it died stays
`doing` until the stalled-job recovery retries it, back into `node.OLD`, so the report says how
many there are and the command can be run again afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from docutray_watch.cluster._db import NODES_LOCK, connect, take_lock
from docutray_watch.cluster.app import node_queue
from docutray_watch.cluster.nodes import NodeInfo, node_info

__all__ = ["ReassignRefusedError", "Reassignment", "reassign_queue"]


class ReassignRefusedError(Exception):
    """The queue was not moved: OLD is alive, or NEW is not a known node (exit 1)."""


@dataclass(frozen=True)
class Reassignment:
    """What `reassign_queue` did."""

    moved: int
    """Waiting jobs moved from `node.OLD` to `node.NEW`."""
    still_running: int
    """Jobs of `node.OLD` still marked running (`doing`), left for the stalled-job recovery."""
    old: NodeInfo | None
    new: NodeInfo


def reassign_queue(url: str, old: str, new: str, *, stalled_timeout: float) -> Reassignment:
    """Move the waiting jobs of node `old`'s queue to node `new`'s; refuse while `old` is alive."""
    if old == new:
        raise ReassignRefusedError("OLD and NEW are the same node")
    with connect(url) as conn, conn.transaction():
        # The registry's lock: `old` cannot register again until the move is committed.
        take_lock(conn, NODES_LOCK)
        old_info = node_info(conn, old, stalled_timeout=stalled_timeout, lock=True)
        if old_info is not None and old_info.state == "alive":
            raise ReassignRefusedError(
                f"node {old!r} is alive (host {old_info.host}, last heartbeat "
                f"{old_info.heartbeat_age:.0f} s ago): only a dead node's queue is moved; stop "
                f"it first, or wait until it has been silent for {stalled_timeout:g} s"
            )
        new_info = node_info(conn, new, stalled_timeout=stalled_timeout)
        if new_info is None:
            raise ReassignRefusedError(
                f"node {new!r} has never joined the cluster (see `docutray-watch cluster "
                "nodes`): start it once first"
            )
        moved = conn.execute(
            "UPDATE procrastinate_jobs SET queue_name = %s"
            " WHERE queue_name = %s AND status = 'todo'",
            (node_queue(new), node_queue(old)),
        ).rowcount
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s AND status = 'doing'",
            (node_queue(old),),
        ).fetchone()
    return Reassignment(moved, int(row[0]) if row else 0, old_info, new_info)
