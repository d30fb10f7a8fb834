"""`status`, `retry` and `prune` with a `cluster:` block act on the cluster's PostgreSQL journal
and say so; the node_info metric names the node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from docutray_watch.cli import cli
from docutray_watch.cluster.app import libpq_url
from docutray_watch.cluster.nodes import register_node
from docutray_watch.metrics import Metrics
from tests.cluster.conftest import WriteConfig
from tests.cluster.single_node import PIPELINE, Built, build_journal

pytestmark = pytest.mark.postgres


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [*map(str, args)])


def pg(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(name="cluster")
def cluster_fixture(
    initialised_url: str, write_config: WriteConfig, tmp_path: Path
) -> tuple[Path, Built]:
    """A cluster holding an imported journal (a document in every state), node-a alive and
    node-b silent for ten minutes."""
    built = build_journal(tmp_path / "state" / "journal.sqlite3", tmp_path / "inbox")
    config = write_config(initialised_url)
    imported = invoke("cluster", "import", "-c", config)
    assert imported.exit_code == 0, imported.output + imported.stderr
    register_node(initialised_url, "node-a", stalled_timeout=30)
    register_node(initialised_url, "node-b", stalled_timeout=30)
    pg(
        initialised_url,
        "UPDATE docutray_cluster.nodes SET last_heartbeat = now() - interval '10 minutes'"
        " WHERE name = 'node-b'",
    )
    return config, built


def test_status_shows_the_cluster(cluster: tuple[Path, Built]) -> None:
    """Text: the cluster it reads, every node with its state and heartbeat age, every node's
    documents per pipeline and the oldest unfinished one."""
    config, _built = cluster
    result = invoke("status", "-c", config)
    assert result.exit_code == 0, result.output + result.stderr
    lines = result.output.splitlines()
    assert lines[0].startswith("Cluster postgresql://postgres@127.0.0.1:5432/")
    assert "(this node: node-a): the whole cluster's documents" in lines[0]
    assert any(
        line.startswith("  node node-a: alive, last heartbeat")
        and "10 unfinished document(s)" in line
        for line in lines
    ), result.output
    assert "  node node-b: stalled, last heartbeat 10 min ago, 0 unfinished" in result.output
    assert any(line.startswith(f"{PIPELINE}: 13 document(s): ") for line in lines)
    assert "  waiting 2, in flight 5;" in result.output
    assert "  oldest unfinished document: found " in result.output
    assert "Recent failures:" in result.output


def test_status_json_has_the_cluster_part(cluster: tuple[Path, Built]) -> None:
    """--json: the single-node document's keys, counted over the cluster, plus `cluster`."""
    config, _built = cluster
    result = invoke("status", "-c", config, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.output)
    nodes = {node["name"]: node for node in report["cluster"]["nodes"]}
    assert nodes["node-a"]["state"] == "alive"
    assert nodes["node-b"]["state"] == "stalled"
    assert nodes["node-b"]["heartbeat_age_s"] >= 600
    assert nodes["node-a"]["unfinished_documents"] == 10
    assert report["cluster"]["this_node"] == "node-a"
    assert report["cluster"]["rate"] == {"requests_per_second": None, "paused_until": None}
    counts = report["pipelines"][PIPELINE]
    assert counts["polling"] == 2
    assert counts["success"] == 1
    assert counts["failed"] == 1
    assert report["queue"][PIPELINE] == {"waiting": 2, "in_flight": 5}
    assert report["oldest_pending_age_s"][PIPELINE] > 0
    assert "cluster journal" in report["journal"]
    assert [f["state"] for f in report["failures"]] == ["rejected", "failed"]


def requeued(url: str) -> int:
    rows = pg(url, "SELECT value FROM docutray.meta WHERE key = 'requeued'")
    return int(rows[0][0]) if rows else 0


def test_retry_failed_requeues_in_the_cluster(
    cluster: tuple[Path, Built], initialised_url: str
) -> None:
    """retry --failed requeues the failed document in PostgreSQL and bumps the `requeued`
    counter nodes watch; the output says it acted on the cluster."""
    config, _built = cluster
    assert requeued(initialised_url) == 0
    result = invoke("retry", "-c", config, "--failed")
    # The rejected document's file is not there (the failed one's is).
    assert "rejected.pdf: the file is gone" in result.stderr
    assert "1 document(s) requeued in the cluster's journal" in result.output
    assert result.exit_code == 1
    state = pg(
        initialised_url,
        "SELECT state FROM docutray.documents WHERE relative_path = 'failed.pdf'",
    )
    assert state == [("queued",)]
    assert requeued(initialised_url) == 1


def test_retry_of_another_nodes_file_is_not_checked_here(
    cluster: tuple[Path, Built], initialised_url: str
) -> None:
    """A document of node-b's own folder is requeued without looking for its file here."""
    config, built = cluster
    pg(
        initialised_url,
        "UPDATE docutray.documents SET node = 'node-b' WHERE relative_path = 'rejected.pdf'",
    )
    result = invoke("retry", "-c", config, built.inbox / "rejected.pdf")
    assert result.exit_code == 0, result.output + result.stderr
    assert "1 document(s) requeued in the cluster's journal" in result.output
    assert "1 of them are files of another node's own folder" in result.output
    assert requeued(initialised_url) == 1


def test_retry_force_runs_a_moved_document_again_in_a_new_generation(
    cluster: tuple[Path, Built], initialised_url: str, tmp_path: Path
) -> None:
    """retry --force of a document whose file went to done/: requeued from there, in the next
    generation of its content (the cluster's once-per-generation index lets it run again)."""
    config, _built = cluster
    done = tmp_path / "done" / "archived.pdf"
    done.parent.mkdir()
    done.write_bytes(b"%PDF moved")
    pg(
        initialised_url,
        "UPDATE docutray.documents SET archived_to = %s WHERE relative_path = 'archived.pdf'",
        str(done),
    )
    result = invoke("retry", "-c", config, "--force", done)
    assert result.exit_code == 0, result.output + result.stderr
    assert "1 document(s) requeued in the cluster's journal" in result.output
    row = pg(
        initialised_url,
        "SELECT state, path, generation FROM docutray.documents"
        " WHERE relative_path = 'archived.pdf'",
    )
    # The archived document and the reprocessed one held generations 0 and 1.
    assert row == [("queued", str(done), 2)]


def test_retry_of_a_path_unknown_to_the_cluster_exits_1(cluster: tuple[Path, Built]) -> None:
    """A path no finished document of the cluster has is reported."""
    config, built = cluster
    result = invoke("retry", "-c", config, built.inbox / "nothing.pdf")
    assert result.exit_code == 1
    assert "no finished document with this path in the cluster" in result.stderr


def test_prune_forgets_old_documents_of_the_cluster(
    cluster: tuple[Path, Built], initialised_url: str
) -> None:
    """prune (dry, then for real) on the cluster's journal: the superseded document goes; the
    archived and failed ones kept in their folder stay while their files are there."""
    config, _built = cluster
    dry = invoke("prune", "-c", config, "--older-than", "1", "--dry-run")
    assert dry.exit_code == 0, dry.output + dry.stderr
    assert dry.output.startswith("cluster journal: would forget 1 document(s)")
    assert pg(initialised_url, "SELECT count(*) FROM docutray.documents") == [(13,)]
    done = invoke("prune", "-c", config, "--older-than", "1")
    assert done.output.startswith("cluster journal: forgot 1 document(s)")
    assert "2 kept file(s)" in done.output
    assert pg(initialised_url, "SELECT count(*) FROM docutray.documents") == [(12,)]


def test_prune_keeps_a_kept_file_of_another_node(
    cluster: tuple[Path, Built], initialised_url: str, tmp_path: Path
) -> None:
    """A kept file in another node's own folder cannot be seen from here: its row stays (one of
    this node's whose file is gone would be forgotten)."""
    config, built = cluster
    (built.inbox / "archived.pdf").unlink()
    pg(
        initialised_url,
        "UPDATE docutray.documents SET node = 'node-b' WHERE relative_path = 'archived.pdf'",
    )
    done = invoke("prune", "-c", config, "--older-than", "1")
    assert done.output.startswith("cluster journal: forgot 1 document(s)")
    assert pg(
        initialised_url,
        "SELECT count(*) FROM docutray.documents WHERE relative_path = 'archived.pdf'",
    ) == [(1,)]


@pytest.mark.parametrize(
    "command",
    [("status",), ("retry", "--failed"), ("prune", "--older-than", "1")],
    ids=["status", "retry", "prune"],
)
def test_an_unreachable_cluster_exits_69(
    write_config: WriteConfig, command: tuple[str, ...]
) -> None:
    """The cluster database down: the command says so and exits 69 (never falls back to a
    local file), without the password."""
    config = write_config("postgresql+psycopg://postgres:pw-hidden@127.0.0.1:9/nothing")
    result = invoke(command[0], "-c", config, *command[1:])
    assert result.exit_code == 69, result.output + result.stderr
    assert "cannot reach the cluster database" in result.stderr
    assert "pw-hidden" not in result.stderr + result.output


def test_node_info_metric_names_the_node() -> None:
    """Cluster mode: a `docutray_watch_node_info{node=…} 1` series and every other series
    labelled with the node; no node label at all in single-node mode."""
    clustered = Metrics(node="scan-01").render().decode()
    assert 'docutray_watch_node_info{node="scan-01"} 1.0' in clustered
    series = [line for line in clustered.splitlines() if line and not line.startswith("#")]
    assert series
    assert all('node="scan-01"' in line for line in series), series
    assert 'docutray_watch_api_state{node="scan-01",state="ok"} 1.0' in clustered
    single = Metrics().render().decode()
    assert "docutray_watch_node_info{" not in single
    assert 'node="' not in single


def test_node_info_follows_a_renamed_node() -> None:
    """set_node replaces the series: a node has one name at a time."""
    metrics = Metrics()
    metrics.set_node("scan-01")
    metrics.set_node("scan-02")
    text = metrics.render().decode()
    assert 'docutray_watch_node_info{node="scan-02"} 1.0' in text
    assert 'node="scan-01"' not in text
