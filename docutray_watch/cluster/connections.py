"""How many PostgreSQL connections a cluster node opens: each pool sized from the jobs the node
runs at once, the total capped by `cluster.node_max_connections`.

A node holds at most `ConnectionBudget.total` connections:

- the journal's pool (SQLAlchemy): every phase of a job is a few short transactions here, and a
  job spends most of its time at the API or a sink, so one connection per 8 jobs running at
  once, plus one for the node's own work (its folders' scans and handoffs, the status page);
- procrastinate's pool: fetching a job (one fetch at a time), marking it finished, the jobs'
  defers, the worker's heartbeat and abort polling; one per 16 jobs, plus one;
- the shared limits' pool: two (a slot claim waits, connection in hand, for the cluster-wide
  advisory lock and a token for the one rate row, so more would only move the queue from this
  pool to PostgreSQL's locks);
- one each outside any pool: procrastinate's LISTEN connection and the heartbeat's.

No pool can deadlock the node however small it is: nothing waits for a connection while it
holds another one. A store call is one transaction on one connection; the transactions that
defer a job together with their writes (the handoff, a shared folder's scan, a source's listing)
defer it on their own connection (procrastinate's `connection=`), not from procrastinate's pool;
a limit's transaction uses only its own; and procrastinate holds none while a job runs (fetching
and finishing are separate queries). So a pool of one only makes work queue. The floor of two
per pool is about that wait: a long transaction (a shared scan recording a big listing, the
stalled-job recovery, a slot claim waiting for another node's) must not hold up every other
job, because a caller waits for a connection 30 s at most (every pool's timeout) and then fails
— a job is retried later, but procrastinate stops its worker when its heartbeat or abort polling
fails. The journal's and procrastinate's ceilings are their former fixed sizes: never more than
before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from docutray_watch.config import Config

__all__ = ["DEDICATED", "ConnectionBudget", "connection_budget", "worker_concurrency"]

MIN_CONCURRENCY = 4  # jobs a node's worker runs at once, at least
DEDICATED = 2  # procrastinate's LISTEN connection (its own, outside its pool) and the heartbeat
_FLOOR = 2  # connections of a pool the node's work asks for, at least (see the docstring)
_JOURNAL_MAX = 15  # the former sizes: SQLAlchemy's default pool (5 + 10 overflow) …
_QUEUE_MAX = 10  # … and procrastinate's 10
_LIMITS = 2
_JOBS_PER_JOURNAL = 8
_JOBS_PER_QUEUE = 16


@dataclass(frozen=True)
class ConnectionBudget:
    """The most connections each of a node's pools opens (each opens them as work needs them)."""

    journal: int
    queue: int
    limits: int

    @property
    def total(self) -> int:
        """All of the node's connections at most, the LISTEN one and the heartbeat's with them."""
        return self.journal + self.queue + self.limits + DEDICATED


def worker_concurrency(config: Config) -> int:
    """How many jobs the node's procrastinate worker runs at once: poll jobs of any node's
    executions run on every node, so as many as the cluster may have in flight."""
    return max(MIN_CONCURRENCY, config.api.max_in_flight)


def connection_budget(config: Config) -> ConnectionBudget:
    """The pools' sizes for this node: from its worker's concurrency, then shrunk one connection
    at a time (the largest pool's) until the total fits `cluster.node_max_connections`."""
    assert config.cluster is not None
    jobs = worker_concurrency(config)
    sizes = [
        min(_JOURNAL_MAX, max(_FLOOR, 1 + math.ceil(jobs / _JOBS_PER_JOURNAL))),
        min(_QUEUE_MAX, max(_FLOOR, 1 + math.ceil(jobs / _JOBS_PER_QUEUE))),
        _LIMITS,
    ]
    cap = config.cluster.node_max_connections
    if cap is not None:
        while sum(sizes) + DEDICATED > cap:
            # The largest; of equal ones the limits first, the journal (the busiest) last.
            largest = max(reversed(range(len(sizes))), key=lambda i: sizes[i])
            assert sizes[largest] > 1, "the config refuses a cap below one connection per pool"
            sizes[largest] -= 1
    return ConnectionBudget(*sizes)
