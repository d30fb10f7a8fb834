"""Connections to the cluster database for the control plane (schema, nodes, config), and the
advisory-lock keys that serialise its writers.

The control plane uses short synchronous transactions of its own (psycopg 3), apart from
procrastinate's pool: `cluster init` and `cluster nodes` run without an event loop, and a node's
registration must not wait behind busy job connections.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from docutray_watch.cluster.app import libpq_url
from docutray_watch.cluster.errors import ClusterUnreachableError

__all__ = [
    "LOCK_NAMESPACE",
    "NODES_LOCK",
    "SCHEMA_LOCK",
    "SCHEMA_NAME",
    "connect",
    "safe_url",
    "take_lock",
]

SCHEMA_NAME = "docutray_cluster"
"""Our tables' PostgreSQL schema, apart from procrastinate's tables and the journal's."""

# pg_advisory_xact_lock(namespace, key): the namespace keeps our keys apart from other users of
# advisory locks in the same database. Other modules of the cluster take keys from 16 up.
LOCK_NAMESPACE = 0x44545721  # "DTW!"
SCHEMA_LOCK = 1
NODES_LOCK = 2
CONFIG_LOCK = 3

CONNECT_TIMEOUT_S = 10


def safe_url(url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        params = conninfo_to_dict(libpq_url(url))
    except psycopg.ProgrammingError:
        return "<an unparsable database URL>"
    params.pop("password", None)
    host = params.get("host", "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    user = f"{params['user']}@" if params.get("user") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname', '')}"


def connect(url: str, **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection to the cluster database; `ClusterUnreachableError` (without the password)
    when it cannot be opened."""
    try:
        return psycopg.connect(
            make_conninfo(libpq_url(url), connect_timeout=CONNECT_TIMEOUT_S),
            application_name="docutray-watch",
            **kwargs,
        )
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ClusterUnreachableError(
            f"cannot reach the cluster database {safe_url(url)}: {reason or type(exc).__name__}"
        ) from None


def take_lock(conn: psycopg.Connection[Any], key: int) -> None:
    """Serialise this transaction with every other one that takes `key`, until it ends.

    The first statement of its transaction, so no snapshot is taken before the lock is held.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, key))
