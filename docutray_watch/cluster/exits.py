"""How the cluster's commands end: their exit codes, the errors turned into one line on stderr,
and how they write a node's heartbeat age. Shared by `docutray-watch cluster …` and by `status`,
`retry`, `prune` in cluster mode (imports nothing of `docutray_watch.cli`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from docutray_watch.config import EX_CONFIG

__all__ = [
    "EX_REFUSED",
    "EX_TEMPFAIL",
    "EX_UNAVAILABLE",
    "cluster_errors",
    "fail",
    "node_age",
]

EX_UNAVAILABLE = 69
EX_REFUSED = 1
EX_TEMPFAIL = 75  # `import` while the single-node daemon runs on the journal
_EXTRA_HINT = "multi-node mode needs `pip install 'docutray-watch[cluster]'`"


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr, then exit with `code`."""
    click.echo(f"docutray-watch: {message}", err=True)
    sys.exit(code)


@contextmanager
def cluster_errors(config_path: str | None) -> Iterator[None]:
    """Turn the cluster's errors into one line on stderr and the documented exit code."""
    try:
        from docutray_watch.cluster.errors import ClusterConfigError, ClusterUnreachableError
        from docutray_watch.journal.postgres import SchemaNotReady
    except ImportError:  # psycopg missing: the `cluster` extra is not installed
        fail(f"config error: cluster: {_EXTRA_HINT}", EX_CONFIG)
    try:
        yield
    except ClusterConfigError as exc:
        where = f"{config_path}: {exc.key}" if exc.key else str(config_path)
        fail(f"config error: {where}: {exc}", EX_CONFIG)
    except SchemaNotReady as exc:  # the journal's tables, older than this version or missing
        fail(f"config error: {config_path}: cluster.database: {exc}", EX_CONFIG)
    except ClusterUnreachableError as exc:
        fail(str(exc), EX_UNAVAILABLE)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("procrastinate", "psycopg", "psycopg_pool"):
            fail(f"config error: cluster: {_EXTRA_HINT}", EX_CONFIG)
        raise


def node_age(seconds: float) -> str:
    """`3 s ago`, `6 min ago`, `2 h ago`, `4 days ago`."""
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"
