"""Cluster nodes in one process against the emulator: the jobs carry every document to its end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.cluster.runtime import ClusterNode
from docutray_watch.config import Config, parse_config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.journal.postgres import PostgresStore
from docutray_watch.plugins import load_plugins
from docutray_watch.testing import EmulatorFactory

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DOCUMENTS = 16


def node_config(
    root: Path,
    url: str,
    emulator: EmulatorServer,
    node: str,
    *,
    steps: tuple[str, ...] = ("stp_test",),
    **api: Any,
) -> Config:
    """A node of a cluster watching one shared inbox (the same for every node)."""
    data = {
        "state_dir": str(root / f"state-{node}"),
        "shutdown_grace": 5,
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 1000,
            "max_retries": 2,
            "max_in_flight": 4,
            **api,
        },
        "cluster": {
            "database": url,
            "node": node,
            "heartbeat_interval": 1,
            "stalled_timeout": 3,
        },
        "pipelines": [
            {
                "name": "invoices",
                "watch": {"path": str(root / "inbox"), "settle": 0, "shared": True},
                "steps": list(steps),
                "poll": {"initial": 0.2, "max": 0.5, "timeout": 60},
                "on_success": {"action": "move", "to": str(root / "done")},
                "on_failure": {"action": "move", "to": str(root / "failed")},
                "sinks": [{"type": "filesystem", "path": str(root / "out")}],
            }
        ],
    }
    return parse_config(
        data, config_dir=root, sink_types=load_plugins().config_sink_types, environ={}
    )


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[ClusterNode]:
    """A node serving until the block ends (then stopped as SIGTERM would)."""
    node = ClusterNode(config, plugin_manager=load_plugins().pm)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    ready = asyncio.ensure_future(node.ready.wait())
    await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raise what stopped it
    ready.cancel()
    try:
        yield node
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Wait for a state another process or task brings about (looked at every 0.2 s)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.2)


def _write_inbox(root: Path, count: int) -> None:
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (inbox / f"doc-{i:03}.pdf").write_bytes(b"%PDF-1.4\n" + f"document {i}\n".encode() * 20)


async def test_two_nodes_share_one_inbox(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """Two nodes on one shared inbox: every document ends delivered once, its result in the sink
    exactly once, each content submitted once, and never more than max_in_flight executions
    running at the service at one time."""
    emulator = emulator_factory(latency=0.5)
    _write_inbox(tmp_path, DOCUMENTS)
    configs = [node_config(tmp_path, initialised_url, emulator, n) for n in ("n1", "n2")]
    async with running(configs[0]), running(configs[1]):
        done = tmp_path / "done"
        await wait_until(
            lambda: done.exists() and len(list(done.iterdir())) == DOCUMENTS, timeout=90
        )
    stats = emulator.stats()
    assert stats.resubmissions == 0
    assert sum(len(per_doc) for per_doc in stats.submissions.values()) == DOCUMENTS
    assert stats.peak_executions_running <= 4
    results = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(results) == DOCUMENTS
    store = PostgresStore(initialised_url, migrate=False)
    await store.open()
    try:
        assert await store.unfinished_documents() == []
        counts = await store.outcome_counts()
    finally:
        await store.close()
    assert counts["invoices"].get("success") == DOCUMENTS
    import psycopg

    from docutray_watch.cluster.app import libpq_url

    with psycopg.connect(libpq_url(initialised_url)) as conn:
        kept = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        ).fetchone()
    assert kept == (0,)  # finished jobs are deleted: one job per status read grows nothing


def local_config(root: Path, url: str, emulator: EmulatorServer, node: str) -> Config:
    """A node watching a folder of its own and writing results to a sink on its own disk."""
    config = node_config(root, url, emulator, node)
    home = root / node
    data = config.model_dump(mode="json", exclude_none=True)
    data["cluster"]["database"] = url
    data["api"]["api_key"] = emulator.api_key
    data["pipelines"][0]["watch"] = {"path": str(home / "inbox"), "settle": 0}
    data["pipelines"][0]["on_success"] = {"action": "move", "to": str(home / "done")}
    data["pipelines"][0]["on_failure"] = {"action": "move", "to": str(home / "failed")}
    data["pipelines"][0]["sinks"] = [{"type": "filesystem", "path": str(home / "out")}]
    return parse_config(
        data, config_dir=root, sink_types=load_plugins().config_sink_types, environ={}
    )


async def test_local_inboxes_stay_on_their_node(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """Two nodes each with a local inbox and a filesystem sink on its own disk: every file's
    result is written, and its file moved, by the node that holds it."""
    emulator = emulator_factory(latency=0.3)
    per_node = DOCUMENTS // 2
    for node in ("n1", "n2"):
        inbox = tmp_path / node / "inbox"
        inbox.mkdir(parents=True)
        for i in range(per_node):
            (inbox / f"{node}-{i:03}.pdf").write_bytes(
                b"%PDF-1.4\n" + f"{node} document {i}\n".encode() * 20
            )
    configs = [local_config(tmp_path, initialised_url, emulator, n) for n in ("n1", "n2")]

    def all_done() -> bool:
        return all(
            (tmp_path / n / "done").exists()
            and len(list((tmp_path / n / "done").iterdir())) == per_node
            for n in ("n1", "n2")
        )

    async with running(configs[0]), running(configs[1]):
        await wait_until(all_done, timeout=90)
    for node in ("n1", "n2"):
        results = [p.name for p in (tmp_path / node / "out").rglob("*") if p.is_file()]
        assert len(results) == per_node
        assert all(name.startswith(node) for name in results)
    assert emulator.stats().resubmissions == 0


async def test_the_steps_of_a_document_share_it_between_nodes(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """A pipeline of two steps on two nodes: both steps of every document end and are
    delivered, whichever nodes poll them (the document's jobs take its lease in turn)."""
    emulator = emulator_factory(latency=0.3)
    count = 8
    _write_inbox(tmp_path, count)
    steps = ("stp_a", "stp_b")
    configs = [
        node_config(tmp_path, initialised_url, emulator, n, steps=steps) for n in ("n1", "n2")
    ]
    async with running(configs[0]), running(configs[1]):
        done = tmp_path / "done"
        await wait_until(lambda: done.exists() and len(list(done.iterdir())) == count, 90)
    stats = emulator.stats()
    assert {step: len(per_doc) for step, per_doc in stats.submissions.items()} == dict.fromkeys(
        steps, count
    )
    assert stats.resubmissions == 0
    results = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(results) == count * len(steps)


async def test_a_numeric_rate_caps_the_cluster_total(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """With requests_per_second: 3, two nodes together stay near 3 requests a second (one
    bucket of 3 tokens for the cluster: at most 3 + 3 in any one second), not 3 each."""
    emulator = emulator_factory(latency=0.3)
    count = 12
    _write_inbox(tmp_path, count)
    configs = [
        node_config(tmp_path, initialised_url, emulator, n, requests_per_second=3, max_in_flight=8)
        for n in ("n1", "n2")
    ]
    async with running(configs[0]), running(configs[1]):
        done = tmp_path / "done"
        await wait_until(lambda: done.exists() and len(list(done.iterdir())) == count, 90)
    stats = emulator.stats()
    assert stats.posts + stats.status_gets >= 2 * count
    assert stats.peak_requests_per_second <= 6


def _terminate_backends(url: str) -> int:
    """End every other connection to the test database (as a PostgreSQL restart would)."""
    import psycopg

    from docutray_watch.cluster.app import libpq_url

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


async def test_terminated_connections_lose_nothing(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """Every connection of both nodes terminated once mid-run: the nodes reconnect, every
    document still ends once, and at most one extra POST per terminated submission."""
    emulator = emulator_factory(latency=0.5)
    _write_inbox(tmp_path, DOCUMENTS)
    configs = [node_config(tmp_path, initialised_url, emulator, n) for n in ("n1", "n2")]
    done = tmp_path / "done"
    async with running(configs[0]), running(configs[1]):
        await wait_until(lambda: done.exists() and len(list(done.iterdir())) >= 4, 60)
        terminated = await asyncio.to_thread(_terminate_backends, initialised_url)
        await wait_until(lambda: len(list(done.iterdir())) == DOCUMENTS, 100)
    assert terminated > 0
    stats = emulator.stats()
    results = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(results) == DOCUMENTS
    assert stats.resubmissions <= terminated


async def test_a_node_waiting_for_postgresql_says_why_and_stops(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """With the database unreachable the node waits (not ready, and says why: /readyz's
    reason) and a stop ends the wait at once."""
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    config = node_config(tmp_path, unreachable, emulator_factory(), "n1")
    node = ClusterNode(config, plugin_manager=load_plugins().pm)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    await wait_until(lambda: "waiting for the cluster database" in (node.waiting_for or ""), 30)
    assert "cannot reach the cluster database" in (node.waiting_for or "")
    assert not node.ready.is_set()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_node_waits_for_the_journal_while_the_database_refuses_connections(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """After joining, the node's journal connections are refused for a while (the server out of
    connection slots, restarting): the node waits, /readyz saying why, and opens it once they
    are accepted again; it does not crash with its name taken."""
    import psycopg

    from docutray_watch.cluster.app import libpq_url

    config = node_config(tmp_path, initialised_url, emulator_factory(), "n1")
    node = ClusterNode(config, plugin_manager=load_plugins().pm)
    store = PostgresStore(initialised_url, node="n1", migrate=False)
    server, name = libpq_url(initialised_url).rsplit("/", 1)
    with psycopg.connect(f"{server}/test", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            opening = asyncio.ensure_future(node._open_journal(store, asyncio.Event()))
            await asyncio.sleep(1.5)
            assert not opening.done()
            assert node.waiting_for is not None
            assert "waiting for the cluster database" in node.waiting_for
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    try:
        assert await asyncio.wait_for(opening, 10) is True
        assert (await store.outcome_counts()) == {}
    finally:
        await store.close()


async def test_a_stop_while_waiting_for_the_journal_starts_nothing(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """SIGTERM while the journal's connections are refused: the wait ends at once, False."""
    import psycopg

    from docutray_watch.cluster.app import libpq_url

    config = node_config(tmp_path, initialised_url, emulator_factory(), "n1")
    node = ClusterNode(config, plugin_manager=load_plugins().pm)
    store = PostgresStore(initialised_url, node="n1", migrate=False)
    server, name = libpq_url(initialised_url).rsplit("/", 1)
    stop = asyncio.Event()
    with psycopg.connect(f"{server}/test", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            opening = asyncio.ensure_future(node._open_journal(store, stop))
            await asyncio.sleep(0.5)
            stop.set()
            assert await asyncio.wait_for(opening, 5) is False
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
