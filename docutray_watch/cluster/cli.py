"""`docutray-watch cluster …`: prepare the cluster database, list the nodes, move a dead node's
queue, import a single-node journal.

Exit codes: 0 done; 1 `--reassign` refused (OLD is alive, NEW unknown), or `import` found no
journal; 75 (EX_TEMPFAIL) `import` while a single-node daemon runs on the journal; 69
(EX_UNAVAILABLE) the cluster database cannot be reached; 78 (EX_CONFIG) the config has no
`cluster` block, the database is not initialised or newer than this version, or this node's
config differs from the cluster's.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from docutray_watch.cli import _config_option, _load
from docutray_watch.cluster.exits import (
    EX_REFUSED,
    EX_TEMPFAIL,
    cluster_errors,
    fail,
    node_age,
)
from docutray_watch.config import EX_CONFIG, ClusterConfig, Config

if TYPE_CHECKING:
    from docutray_watch.cluster.nodes import NodeInfo

__all__ = ["cluster_group"]


def _cluster_config(config_path: str | None) -> tuple[Config, ClusterConfig, str]:
    config = _load(config_path, need_secrets=False)
    if config.cluster is None:
        fail(
            f"config error: {config_path}: cluster: the configuration has no cluster block "
            "(see docs/cluster-setup.md)",
            EX_CONFIG,
        )
    assert config.cluster is not None
    return config, config.cluster, config.cluster.database.get_secret_value()


@click.group("cluster")
def cluster_group() -> None:
    """Multi-node mode: prepare the cluster database, list and manage its nodes."""


@cluster_group.command("init")
@_config_option
@click.option(
    "--adopt-config",
    is_flag=True,
    help="Make this file's configuration the cluster's, replacing a different one.",
)
def init_command(config_path: str | None, adopt_config: bool) -> None:
    """Prepare the cluster database: procrastinate's schema, ours, the journal's tables.

    Idempotent and safe to run from every node at once; run it again after an upgrade (with
    every node stopped). Also stores this file's configuration as the cluster's, when it has
    none yet: nodes whose configuration differs then refuse to start and name the keys.
    """
    config, cluster, url = _cluster_config(config_path)
    with cluster_errors(config_path):
        from docutray_watch.cluster.fingerprint import check_config
        from docutray_watch.cluster.schema import init_schema

        report = init_schema(url)
        for line in report.lines():
            click.echo(line)
        checked = check_config(url, config, node=cluster.node_name, adopt=adopt_config)
        what = {
            "stored": "stored as the cluster's",
            "same": "the same as the cluster's",
            "adopted": "adopted as the cluster's (it replaced a different one)",
        }[checked.outcome]
        click.echo(f"configuration: {what} (fingerprint {checked.fingerprint[:12]})")


@cluster_group.command("nodes")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--reassign",
    nargs=2,
    metavar="OLD NEW",
    default=None,
    help="Move the waiting jobs of dead node OLD's local queue to node NEW.",
)
def nodes_command(config_path: str | None, as_json: bool, reassign: tuple[str, str] | None) -> None:
    """List the cluster's nodes (name, last heartbeat, state), or move a dead node's queue.

    A node is alive while its heartbeats are younger than cluster.stalled_timeout, stalled
    after that (dead: its name may be taken over), stopped after a clean stop. --reassign
    refuses a live OLD and an unknown NEW (exit 1).
    """
    _config, cluster, url = _cluster_config(config_path)
    with cluster_errors(config_path):
        from docutray_watch.cluster.nodes import list_nodes
        from docutray_watch.cluster.schema import check_schema

        check_schema(url)
        if reassign is not None:
            _reassign(url, cluster, *reassign, as_json=as_json)
            return
        nodes = list_nodes(url, stalled_timeout=cluster.stalled_timeout)
    if as_json:
        click.echo(json.dumps({"nodes": [_node_json(node) for node in nodes]}, indent=2))
        return
    if not nodes:
        click.echo("No node has joined the cluster yet.")
        return
    rows = [
        (
            node.name,
            node.state,
            node_age(node.heartbeat_age),
            node.host,
            str(node.pid),
            node.version,
        )
        for node in nodes
    ]
    header = ("NODE", "STATE", "LAST HEARTBEAT", "HOST", "PID", "VERSION")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


@cluster_group.command("import")
@_config_option
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="The SQLite journal to import (default: the config's state_dir journal).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be imported; change nothing.")
def import_command(config_path: str | None, journal_path: str | None, dry_run: bool) -> None:
    """Move a single-node journal's documents into the cluster's journal.

    Unfinished documents keep their execution ids (the nodes poll them, never POST them again),
    finished ones keep deduplicating, deliveries keep their states. Documents of local folders
    belong to this config's cluster.node. Safe to run again: documents imported before are
    left as they are. Stop the single-node daemon first (the import refuses while it runs).
    """
    from pathlib import Path

    config, _cluster, url = _cluster_config(config_path)
    with cluster_errors(config_path):
        from docutray_watch.cluster.importer import import_journal
        from docutray_watch.cluster.schema import check_schema
        from docutray_watch.statelock import AlreadyRunningError

        check_schema(url)
        try:
            report = asyncio.run(
                import_journal(
                    config, Path(journal_path) if journal_path else None, dry_run=dry_run
                )
            )
        except FileNotFoundError as exc:
            fail(f"nothing to import: {exc}", EX_REFUSED)
        except AlreadyRunningError as exc:
            fail(f"not imported: {exc}; stop the single-node daemon first", EX_TEMPFAIL)
    click.echo(f"cluster {safe_target(url)}: importing into the cluster's journal")
    for line in report.lines():
        click.echo(line)
    if dry_run:
        click.echo("dry run: nothing was changed")


def safe_target(url: str) -> str:
    """The cluster database, as the commands name it (never with its password)."""
    from docutray_watch.cluster._db import safe_url

    return safe_url(url)


def _reassign(url: str, cluster: ClusterConfig, old: str, new: str, *, as_json: bool) -> None:
    from docutray_watch.cluster.reassign import ReassignRefusedError, reassign_queue

    try:
        result = reassign_queue(url, old, new, stalled_timeout=cluster.stalled_timeout)
    except ReassignRefusedError as exc:
        fail(f"not reassigned: {exc}", EX_REFUSED)
    if as_json:
        click.echo(
            json.dumps(
                {"old": old, "new": new, "moved": result.moved, "running": result.still_running}
            )
        )
        return
    click.echo(f"moved {result.moved} waiting job(s) from node.{old} to node.{new}")
    if result.old is None:
        click.echo(f"note: no node called {old!r} ever joined; check the name")
    if result.new.state != "alive":
        click.echo(f"note: node {new!r} is {result.new.state}: the jobs wait until it runs")
    if result.still_running:
        click.echo(
            f"note: {result.still_running} job(s) of {old!r} were running when it died; the "
            "stalled-job recovery puts them back in its queue: run this command again after "
            f"{cluster.stalled_timeout:g} s"
        )


def _node_json(node: NodeInfo) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment is not None else None

    return {
        "name": node.name,
        "state": node.state,
        "heartbeat_age_s": round(node.heartbeat_age, 3),
        "last_heartbeat": iso(node.last_heartbeat),
        "started_at": iso(node.started_at),
        "stopped_at": iso(node.stopped_at),
        "host": node.host,
        "pid": node.pid,
        "version": node.version,
    }
