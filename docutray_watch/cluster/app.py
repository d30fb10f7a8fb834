"""The procrastinate application of a cluster: one App per process, over psycopg 3.

Only the factory and the naming of queues live here; the jobs (submit, poll, deliver, finalize)
and the periodic tasks are registered on the App by the modules that define them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from docutray_watch.config import ClusterConfig

if TYPE_CHECKING:
    import procrastinate

__all__ = ["NODE_QUEUE_PREFIX", "create_app", "libpq_url", "node_queue"]

NODE_QUEUE_PREFIX = "node."

_SQLALCHEMY_DRIVER = "postgresql+psycopg://"


def libpq_url(url: str) -> str:
    """The config's SQLAlchemy-style URL as libpq (psycopg) takes it: without `+psycopg`."""
    if url.startswith(_SQLALCHEMY_DRIVER):
        return "postgresql://" + url[len(_SQLALCHEMY_DRIVER) :]
    return url


def node_queue(name: str) -> str:
    """The queue of the jobs only node `name` may run (they touch its local files)."""
    return f"{NODE_QUEUE_PREFIX}{name}"


def create_app(
    cluster: ClusterConfig,
    *,
    import_paths: Iterable[str] = (),
    max_connections: int = 10,
) -> procrastinate.App:
    """A procrastinate App on the cluster's database (not opened yet: `await app.open_async()`).

    Its workers heartbeat every `heartbeat_interval` and count a worker as stalled after
    `stalled_timeout`, the same figures the node registry uses, so "dead" means one thing.
    Its connections say `docutray-watch/<node>` in `pg_stat_activity`: `max_connections` in its
    pool, and a worker's LISTEN connection besides (procrastinate opens that one on its own).
    """
    import procrastinate  # the `cluster` extra; single-node installs never import it
    from psycopg.conninfo import make_conninfo

    from docutray_watch.journal.postgres.connection import application_name

    connector = procrastinate.PsycopgConnector(
        conninfo=make_conninfo(
            libpq_url(cluster.database.get_secret_value()),
            application_name=application_name(cluster.node_name),
        ),
        min_size=1,
        max_size=max_connections,
    )
    return procrastinate.App(
        connector=connector,
        import_paths=list(import_paths),
        worker_defaults={
            "update_heartbeat_interval": cluster.heartbeat_interval,
            "stalled_worker_timeout": cluster.stalled_timeout,
            # Our own signal handling (daemon.py) drains the node; procrastinate must not.
            "install_signal_handlers": False,
        },
    )
