"""`docutray-watch cluster import`: a single-node journal's documents move into the cluster with
their states, execution ids and deliveries; a second run imports nothing twice; a dry run changes
nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from docutray_watch.cli import cli
from docutray_watch.cluster.app import libpq_url
from docutray_watch.journal import Journal
from docutray_watch.journal.postgres import PostgresStore
from docutray_watch.statelock import StateLock
from tests.cluster.conftest import WriteConfig
from tests.cluster.single_node import PIPELINE, Built, build_journal

pytestmark = pytest.mark.postgres


@pytest.fixture(name="single_node")
def single_node_fixture(tmp_path: Path) -> Built:
    """The config's state_dir journal, with a document in every state."""
    return build_journal(tmp_path / "state" / "journal.sqlite3", tmp_path / "inbox")


@pytest.fixture(name="config")
def config_fixture(initialised_url: str, write_config: WriteConfig) -> Path:
    return write_config(initialised_url)


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["cluster", "import", *map(str, args)])


def pg(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(sql, params or None).fetchall()


def by_path(url: str) -> dict[str, dict[str, Any]]:
    """The cluster's documents by file name, with their steps and deliveries."""
    docs = pg(
        url,
        "SELECT id, relative_path, state, outcome, node, generation, duplicate_of,"
        " identified_type FROM docutray.documents",
    )
    found: dict[str, dict[str, Any]] = {}
    for doc_id, name, state, outcome, node, generation, duplicate_of, code in docs:
        steps = pg(
            url,
            "SELECT step_id, state, execution_id FROM docutray.steps WHERE document_id = %s",
            doc_id,
        )
        deliveries = pg(
            url,
            "SELECT sink, state, receipt FROM docutray.deliveries WHERE document_id = %s"
            " ORDER BY sink",
            doc_id,
        )
        found[name.removesuffix(".pdf")] = {
            "id": doc_id,
            "state": state,
            "outcome": outcome,
            "node": node,
            "generation": generation,
            "duplicate_of": duplicate_of,
            "identified_type": code,
            "steps": steps,
            "deliveries": deliveries,
        }
    return found


def test_import_keeps_every_document_as_it_was(
    config: Path, initialised_url: str, single_node: Built
) -> None:
    """Every state, execution id and delivery state survives; local files belong to node-a."""
    result = invoke("-c", config)
    assert result.exit_code == 0, result.output + result.stderr
    assert "imported 13 document(s)" in result.output
    assert "importing into the cluster's journal" in result.output
    assert "2 execution(s) are polled, never submitted again" in result.output
    docs = by_path(initialised_url)
    assert {name: d["state"] for name, d in docs.items()} == {
        name: ("polling" if name == "reprocessed" else name) for name in single_node.ids
    }
    assert all(d["node"] == "node-a" for d in docs.values())
    assert docs["polling"]["steps"] == [("stp_a", "polling", "exec-polling")]
    assert docs["submitting"]["steps"] == [("stp_a", "submitting", None)]
    assert docs["completed"]["deliveries"] == [
        ("db", "pending", None),
        ("files", "delivered", "receipt-1"),
    ]
    assert docs["duplicate"]["duplicate_of"] == docs["archived"]["id"]
    assert docs["unrouted"]["identified_type"] == "receipt"
    # The same content claimed twice on one machine: two generations, no unique-index clash.
    assert {docs["archived"]["generation"], docs["reprocessed"]["generation"]} == {0, 1}


def test_imported_documents_keep_deduplicating(
    config: Path, initialised_url: str, single_node: Built
) -> None:
    """The cluster's duplicate check finds imported content, and the imported files' source
    identities are taken: no node takes the same file again."""
    assert invoke("-c", config).exit_code == 0

    async def check() -> tuple[bool, bool]:
        store = PostgresStore(initialised_url, node="node-a", migrate=False)
        await store.open()
        try:
            twin = await store.find_done_by_sha(PIPELINE, single_node.sha("archived"), exclude=0)
            again = await store.record_source(
                pipeline=PIPELINE,
                path=str(single_node.inbox / "polling.pdf"),
                size=10,
                mtime_ns=123,
                inode=7,
            )
        finally:
            await store.close()
        return twin is not None, again

    found_twin, recorded_again = asyncio.run(check())
    assert found_twin
    assert not recorded_again


def test_a_second_import_imports_nothing_twice(
    config: Path, initialised_url: str, single_node: Built, tmp_path: Path
) -> None:
    """A re-run leaves the imported documents alone; a document added since is imported once."""
    assert invoke("-c", config).exit_code == 0
    again = invoke("-c", config)
    assert again.exit_code == 0, again.output
    assert "imported 0 document(s)" in again.output
    assert "13 document(s) imported by an earlier run" in again.output
    assert pg(initialised_url, "SELECT count(*) FROM docutray.documents") == [(13,)]
    with Journal(tmp_path / "state" / "journal.sqlite3") as journal:
        journal.add_document(PIPELINE, str(tmp_path / "inbox" / "late.pdf"), "late.pdf", 1, 2)
    third = invoke("-c", config)
    assert "imported 1 document(s): discovered 1" in third.output
    assert pg(initialised_url, "SELECT count(*) FROM docutray.documents") == [(14,)]
    summary = pg(initialised_url, "SELECT value FROM docutray.meta WHERE key LIKE 'import:%%'")
    assert json.loads(summary[0][0])["documents"] == 14


def test_the_same_journal_copied_elsewhere_is_the_same_source(
    config: Path, initialised_url: str, single_node: Built, tmp_path: Path
) -> None:
    """A copy of the journal (moved to another path) is recognised: nothing is imported twice."""
    assert invoke("-c", config).exit_code == 0
    copy = tmp_path / "copy" / "journal.sqlite3"
    copy.parent.mkdir()
    copy.write_bytes((tmp_path / "state" / "journal.sqlite3").read_bytes())
    result = invoke("-c", config, "--journal", copy)
    assert result.exit_code == 0, result.output
    assert "imported 0 document(s)" in result.output


def test_dry_run_changes_nothing(config: Path, initialised_url: str, single_node: Built) -> None:
    """--dry-run says what it would import and writes nothing to the cluster."""
    result = invoke("-c", config, "--dry-run")
    assert result.exit_code == 0, result.output + result.stderr
    assert "would import 13 document(s)" in result.output
    assert "dry run: nothing was changed" in result.output
    assert pg(initialised_url, "SELECT count(*) FROM docutray.documents") == [(0,)]
    assert pg(initialised_url, "SELECT to_regclass('docutray.import_origins')") == [(None,)]
    assert pg(initialised_url, "SELECT count(*) FROM docutray.source_identity") == [(0,)]
    assert invoke("-c", config).exit_code == 0
    assert pg(initialised_url, "SELECT count(*) FROM docutray.documents") == [(13,)]


@pytest.fixture(name="running_daemon")
def running_daemon_fixture(tmp_path: Path) -> Iterator[None]:
    """The single-node daemon's lock on the state directory, held."""
    lock = StateLock(tmp_path / "state")
    lock.acquire()
    yield
    lock.release()


@pytest.mark.usefixtures("single_node", "running_daemon")
def test_refused_while_the_single_node_daemon_runs(config: Path, initialised_url: str) -> None:
    """Importing a journal the daemon still writes would split its documents: exit 75."""
    result = invoke("-c", config)
    assert result.exit_code == 75
    assert "stop the single-node daemon first" in result.stderr
    assert pg(initialised_url, "SELECT count(*) FROM docutray.documents") == [(0,)]


def test_no_journal_exits_1(config: Path) -> None:
    """A state_dir without a journal has nothing to import."""
    result = invoke("-c", config)
    assert result.exit_code == 1
    assert "nothing to import: no journal at" in result.stderr


def test_uninitialised_cluster_exits_78(
    cluster_url: str, write_config: WriteConfig, single_node: Built
) -> None:
    """Before `cluster init` there is nothing to import into."""
    result = invoke("-c", write_config(cluster_url))
    assert result.exit_code == 78
    assert "cluster init" in result.stderr


def test_documents_of_a_shared_folder_belong_to_no_node(
    initialised_url: str, write_config: WriteConfig, single_node: Built
) -> None:
    """A pipeline watching a `shared: true` folder: its documents are any node's (node NULL),
    and their source identities are the shared ones (node '')."""
    config = write_config(initialised_url, pipelines__0__watch__shared=True)
    result = invoke("-c", config)
    assert result.exit_code == 0, result.output + result.stderr
    assert pg(initialised_url, "SELECT DISTINCT node FROM docutray.documents") == [(None,)]
    assert pg(initialised_url, "SELECT DISTINCT node FROM docutray.source_identity") == [("",)]
