"""`docutray-watch cluster init|nodes`: output and exit codes (0, 1, 69, 78)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from docutray_watch.cli import cli
from docutray_watch.cluster.app import libpq_url
from docutray_watch.cluster.nodes import register_node
from docutray_watch.cluster.schema import SCHEMA_VERSION
from tests.cluster.conftest import WriteConfig

pytestmark = pytest.mark.postgres

UNREACHABLE = "postgresql+psycopg://postgres:pw-hidden@127.0.0.1:9/nothing"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["cluster", *map(str, args)])


def _execute(url: str, sql: str, *params: Any) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(sql, params or None)


def test_init_then_init_again(cluster_url: str, write_config: WriteConfig) -> None:
    """init exits 0 saying what it applied; a second run says everything is up to date."""
    config = write_config(cluster_url)
    first = invoke("init", "-c", config)
    assert first.exit_code == 0, first.output + first.stderr
    assert "procrastinate schema: applied" in first.output
    assert f"docutray_cluster schema: created (version {SCHEMA_VERSION})" in first.output
    assert "configuration: stored as the cluster's" in first.output
    second = invoke("init", "-c", config)
    assert second.exit_code == 0
    assert "procrastinate schema: up to date" in second.output
    assert "configuration: the same as the cluster's" in second.output


def test_no_cluster_block_exits_78(write_config: WriteConfig) -> None:
    """A config without `cluster:` cannot be used by the cluster commands."""
    config = write_config("unused", cluster=None)
    result = invoke("nodes", "-c", config)
    assert result.exit_code == 78
    assert "cluster: the configuration has no cluster block" in result.stderr


def test_unreachable_database_exits_69(write_config: WriteConfig) -> None:
    """A database nobody answers for exits 69 (may come back), its password not shown."""
    result = invoke("init", "-c", write_config(UNREACHABLE))
    assert result.exit_code == 69
    assert "cannot reach the cluster database postgresql://postgres@127.0.0.1:9" in result.stderr
    assert "pw-hidden" not in result.stderr + result.output


def test_nodes_on_uninitialised_database_exits_78(
    cluster_url: str, write_config: WriteConfig
) -> None:
    """Listing nodes of a database `cluster init` never prepared says to run it."""
    result = invoke("nodes", "-c", write_config(cluster_url))
    assert result.exit_code == 78
    assert "cluster.database: the cluster database" in result.stderr
    assert "not initialised" in result.stderr


def test_newer_schema_exits_78(initialised_url: str, write_config: WriteConfig) -> None:
    """A database a newer docutray-watch upgraded is refused by init too."""
    _execute(initialised_url, "UPDATE docutray_cluster.cluster_meta SET schema_version = 99")
    result = invoke("init", "-c", write_config(initialised_url))
    assert result.exit_code == 78
    assert "newer than this docutray-watch knows" in result.stderr


def test_config_mismatch_exits_78_naming_keys(cluster_url: str, write_config: WriteConfig) -> None:
    """init with a config that differs from the stored one exits 78 naming the keys;
    --adopt-config makes it the cluster's."""
    assert invoke("init", "-c", write_config(cluster_url)).exit_code == 0
    changed = write_config(cluster_url, name="changed.yaml", pipelines__0__steps=["x", "y"])
    result = invoke("init", "-c", changed)
    assert result.exit_code == 78
    assert f"config error: {changed}: this node's configuration differs" in result.stderr
    assert "pipelines[invoices].steps" in result.stderr
    adopted = invoke("init", "--adopt-config", "-c", changed)
    assert adopted.exit_code == 0
    assert "adopted as the cluster's" in adopted.output


def test_nodes_lists_names_states_and_ages(initialised_url: str, write_config: WriteConfig) -> None:
    """`cluster nodes` prints one line per node with its state and heartbeat age; --json too."""
    config = write_config(initialised_url)
    empty = invoke("nodes", "-c", config)
    assert (empty.exit_code, empty.output.strip()) == (0, "No node has joined the cluster yet.")
    register_node(initialised_url, "node-a", stalled_timeout=30)
    register_node(initialised_url, "node-b", stalled_timeout=30)
    _execute(
        initialised_url,
        "UPDATE docutray_cluster.nodes SET last_heartbeat = clock_timestamp()"
        " - interval '10 minutes' WHERE name = 'node-b'",
    )
    table = invoke("nodes", "-c", config)
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[0].split()[:3] == ["NODE", "STATE", "LAST"]
    assert lines[1].split()[:4] == ["node-a", "alive", "0", "s"]
    assert lines[2].split()[:4] == ["node-b", "stalled", "10", "min"]
    listed = json.loads(invoke("nodes", "--json", "-c", config).output)
    assert [(n["name"], n["state"]) for n in listed["nodes"]] == [
        ("node-a", "alive"),
        ("node-b", "stalled"),
    ]


def test_reassign_exit_codes(initialised_url: str, write_config: WriteConfig) -> None:
    """--reassign exits 1 while OLD is alive, 0 once it is dead, saying how many jobs moved."""
    config = write_config(initialised_url)
    register_node(initialised_url, "old", stalled_timeout=30)
    register_node(initialised_url, "new", stalled_timeout=30)
    _execute(
        initialised_url,
        "INSERT INTO procrastinate_jobs (queue_name, task_name) VALUES ('node.old', 't')",
    )
    refused = invoke("nodes", "-c", config, "--reassign", "old", "new")
    assert refused.exit_code == 1
    assert "not reassigned: node 'old' is alive" in refused.stderr
    _execute(
        initialised_url,
        "UPDATE docutray_cluster.nodes SET host = 'gone', last_heartbeat = clock_timestamp()"
        " - interval '1 hour' WHERE name = 'old'",
    )
    done = invoke("nodes", "-c", config, "--reassign", "old", "new")
    assert done.exit_code == 0, done.stderr
    assert "moved 1 waiting job(s) from node.old to node.new" in done.output


def test_process_is_refused_in_a_cluster(write_config: WriteConfig) -> None:
    """`process` with a cluster block exits 78 and says what to run instead: one pass on a local
    journal would bypass the cluster's once-ever claims."""
    config = write_config(UNREACHABLE)
    for extra in ([], ["--dry-run"]):
        result = CliRunner().invoke(cli, ["process", "-c", str(config), *extra])
        assert result.exit_code == 78
        assert "cluster: `process` is for a single node" in result.stderr
        assert "docutray-watch run" in result.stderr
