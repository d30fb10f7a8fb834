"""A cluster node's listeners in one process against the real PostgreSQL and the emulator: the
status page and `GET /api/status` show the cluster (one code path with `status --json`), every
metric series carries the node's name, a SIGHUP-style reload refuses a change to the cluster's
shared configuration, and the page draws the nodes in a real browser."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from docutray_watch.cluster.node_daemon import NodeDaemon, reload_refusal
from docutray_watch.cluster.operations import cluster_status_report
from docutray_watch.config import Config, parse_config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.plugins import load_plugins
from docutray_watch.testing import EmulatorFactory
from tests.cluster.test_runtime import node_config, wait_until
from tests.web.conftest import chromium_fixture  # noqa: F401 - the `chromium` fixture
from tests.web.test_page_browser import WAIT_MS, browser_page

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DOCUMENTS = 3


def listening_config(root: Path, url: str, emulator: EmulatorServer, node: str) -> Config:
    """`node_config` with the status page and /metrics on free loopback ports."""
    data = node_config(root, url, emulator, node).model_dump(mode="json", exclude_none=True)
    data["cluster"]["database"] = url
    data["api"]["api_key"] = emulator.api_key
    data["web"] = {"listen": "127.0.0.1:0", "refresh_seconds": 1}
    data["metrics"] = {"listen": "127.0.0.1:0"}
    return parse_config(
        data, config_dir=root, sink_types=load_plugins().config_sink_types, environ={}
    )


@contextlib.asynccontextmanager
async def serving(config: Config) -> AsyncIterator[NodeDaemon]:
    """A node daemon (listeners included) serving until the block ends, then stopped."""
    daemon = NodeDaemon(config, plugin_manager=load_plugins().pm)
    task = asyncio.create_task(daemon.run(install_signals=False))
    ready = asyncio.ensure_future(daemon.node.ready.wait())
    await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if task.done():
        raise AssertionError(f"the node stopped at start: exit {task.result()}")
    try:
        yield daemon
    finally:
        daemon.stop.set()
        assert await asyncio.wait_for(task, 30) == 0


def _write_inbox(root: Path, count: int) -> None:
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (inbox / f"doc-{i:03}.pdf").write_bytes(b"%PDF-1.4\n" + f"document {i}\n".encode() * 20)


def _done(root: Path) -> int:
    done = root / "done"
    return len(list(done.iterdir())) if done.exists() else 0


async def test_api_status_and_metrics_of_a_cluster_node(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """`GET /api/status` of a node is the cluster's `status --json` document (same keys, this
    node's name, the nodes with their heartbeat, the whole cluster's counts); `/metrics`
    labels every series node=<name>; `/readyz` is ready while the database is there."""
    emulator = emulator_factory(latency=0.2)
    _write_inbox(tmp_path, DOCUMENTS)
    config = listening_config(tmp_path, initialised_url, emulator, "n1")
    async with serving(config) as daemon:
        await wait_until(lambda: _done(tmp_path) == DOCUMENTS, 60)
        assert daemon.web is not None
        assert daemon.health is not None
        web = f"http://127.0.0.1:{daemon.web.port}"
        health = f"http://127.0.0.1:{daemon.health.port}"
        async with httpx.AsyncClient(timeout=10) as client:
            status = (await client.get(f"{web}/api/status")).json()
            metrics = (await client.get(f"{health}/metrics")).text
            ready = await client.get(f"{health}/readyz")
            live = (await client.get(f"{web}/api/live")).json()
            retry = await client.post(f"{web}/api/documents/1/retry")
        cli = await asyncio.to_thread(cluster_status_report, config)
    assert set(status) == set(cli), status  # one code path: the same document as `status --json`
    cluster = status["cluster"]
    assert cluster["this_node"] == "n1"
    [node] = cluster["nodes"]
    assert node["name"] == "n1"
    assert node["state"] == "alive"
    assert node["heartbeat_age_s"] < 30
    assert node["last_heartbeat"].endswith("Z")
    assert status["pipelines"]["invoices"] == {"success": DOCUMENTS}
    assert status["queue"]["invoices"] == {"waiting": 0, "in_flight": 0}
    assert status["today"]["invoices"]["done"] == DOCUMENTS
    assert status["oldest_pending_age_s"] == {"invoices": None}
    assert ready.status_code == 200, ready.text
    assert live["api"]["state"] == "ok"
    assert retry.status_code == 403  # no page action in cluster mode
    series = [line for line in metrics.splitlines() if line and not line.startswith("#")]
    assert all('node="n1"' in line for line in series), [s for s in series if 'node="n1"' not in s]
    assert (
        f'docutray_watch_documents_total{{node="n1",outcome="success",pipeline="invoices"}} '
        f"{float(DOCUMENTS)}" in metrics
    )
    assert 'docutray_watch_node_info{node="n1"} 1.0' in metrics


async def test_the_status_page_draws_the_cluster_nodes(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory, chromium: str
) -> None:
    """Two nodes, the page of one: in a real browser the nodes table lists both as alive with
    a heartbeat age, marks the page's own node, and the pipeline card counts the documents
    both processed; no console error."""
    emulator = emulator_factory(latency=0.2)
    _write_inbox(tmp_path, DOCUMENTS)
    first = listening_config(tmp_path, initialised_url, emulator, "n1")
    second = node_config(tmp_path, initialised_url, emulator, "n2")
    async with serving(first) as daemon, serving(second):
        await wait_until(lambda: _done(tmp_path) == DOCUMENTS, 60)
        assert daemon.web is not None
        async with browser_page(chromium) as page:
            await page.goto(f"http://127.0.0.1:{daemon.web.port}/")
            await page.wait_for_selector('#nodes tr[data-node="n2"]', timeout=WAIT_MS)
            assert await page.is_visible("#cluster")
            states = await page.locator("#nodes td[data-state]").all_text_contents()
            assert states == ["alive", "alive"]
            names = await page.locator("#nodes tr[data-node] td:first-child").all_text_contents()
            assert names == ["n1", "n2"]
            own = await page.get_attribute('#nodes tr[data-node="n1"]', "class")
            assert own == "this-node"
            heartbeat = await page.text_content('#nodes tr[data-node="n2"] td:nth-child(3)')
            assert (heartbeat or "").endswith(" ago"), heartbeat
            assert "node n1" in (await page.text_content("#this-node") or "")
            await page.wait_for_function(
                "(n) => { const b = document.querySelector("
                "'[data-pipeline=invoices] [data-figure=done] b');"
                " return b && b.textContent === n; }",
                arg=str(DOCUMENTS),
                timeout=WAIT_MS,
            )
            assert await page.locator("[data-retry]").count() == 0  # no actions in cluster mode
            assert page.errors == []
            await page.screenshot(path=str(tmp_path / "cluster-page.png"), full_page=True)


def _changed(config: Config, change: Any) -> Config:
    data = config.model_dump(mode="json", exclude_none=True)
    assert config.cluster is not None
    data["cluster"]["database"] = config.cluster.database.get_secret_value()
    data["api"]["api_key"] = config.api.api_key.get_secret_value() if config.api.api_key else "k"
    change(data)
    return parse_config(data, sink_types=load_plugins().config_sink_types, environ={})


def test_reload_refusal_names_the_keys(tmp_path: Path, emulator_factory: EmulatorFactory) -> None:
    """A reload that changes the shared configuration is refused naming the keys; a node name
    or connection cap change is refused; log level, shutdown grace and a local path are
    accepted."""
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/unused"
    running = node_config(tmp_path, url, emulator_factory(), "n1")

    def shared(data: dict[str, Any]) -> None:
        data["api"]["max_in_flight"] = 9
        data["pipelines"][0]["steps"] = ["stp_other"]

    refusal = reload_refusal(running, _changed(running, shared))
    assert refusal is not None
    reason, keys = refusal
    assert keys == ["api.max_in_flight", "pipelines[invoices].steps"]
    assert "fingerprint" in reason
    renamed = reload_refusal(running, _changed(running, lambda d: d["cluster"].update(node="x")))
    assert renamed is not None
    assert renamed[1] == ["cluster.node"]
    capped = reload_refusal(
        running, _changed(running, lambda d: d["cluster"].update(node_max_connections=6))
    )
    assert capped is not None
    assert capped[1] == ["cluster.node_max_connections"]

    def local(data: dict[str, Any]) -> None:
        data["log"] = {"level": "debug"}
        data["shutdown_grace"] = 9
        data["pipelines"][0]["sinks"][0]["path"] = str(tmp_path / "elsewhere")

    assert reload_refusal(running, _changed(running, local)) is None
