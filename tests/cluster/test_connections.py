"""The PostgreSQL connections of a cluster node: pools sized from its work, the total capped by
`cluster.node_max_connections`, counted in `pg_stat_activity` while it processes documents."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from docutray_watch.cli import cli
from docutray_watch.cluster.app import libpq_url
from docutray_watch.cluster.connections import DEDICATED, connection_budget
from docutray_watch.cluster.operations import cluster_status
from docutray_watch.config import ApiConfig, Config, parse_config
from docutray_watch.testing import EmulatorFactory
from tests.cluster.conftest import WriteConfig, config_data
from tests.cluster.test_runtime import node_config, running, wait_until

URL = "postgresql+psycopg://docutray@db.example/docutray"
DOCUMENTS = 24
DEFAULT_MAX_IN_FLIGHT = ApiConfig.model_fields["max_in_flight"].default


def _config(tmp_path: Path, **cluster: Any) -> Config:
    data = config_data(tmp_path, URL, **cluster)
    return parse_config(data, environ={})


def test_a_default_node_opens_twelve_connections_at_most(tmp_path: Path) -> None:
    """With the default api.max_in_flight (32): journal 5, job queue 3, limits 2, plus the
    LISTEN connection and the heartbeat: 12 (the fixed pools allowed about 30)."""
    budget = connection_budget(_config(tmp_path))
    assert (budget.journal, budget.queue, budget.limits) == (5, 3, 2)
    assert budget.total == 12


def test_pools_follow_the_worker_concurrency_up_to_the_former_sizes(tmp_path: Path) -> None:
    """A node running few jobs at once has the floor of two per pool; many, up to the former
    fixed sizes (15 for the journal, 10 for the job queue) and no further."""
    sizes = []
    for in_flight in (1, 16, 64, 10_000):
        data = config_data(tmp_path, URL)
        data["api"]["max_in_flight"] = in_flight
        budget = connection_budget(parse_config(data, environ={}))
        sizes.append((budget.journal, budget.queue, budget.limits))
    assert sizes == [(2, 2, 2), (3, 2, 2), (9, 5, 2), (15, 10, 2)]


def test_the_cap_shrinks_the_pools_to_fit(tmp_path: Path) -> None:
    """`node_max_connections` from 5 to 12 gives exactly that many, every pool keeping one
    connection at least; a cap above what the node needs changes nothing."""
    for cap in range(5, 13):
        budget = connection_budget(_config(tmp_path, node_max_connections=cap))
        assert budget.total == cap
        assert min(budget.journal, budget.queue, budget.limits) >= 1
    five = connection_budget(_config(tmp_path, node_max_connections=5))
    assert five.total - DEDICATED == 3  # one per pool
    assert connection_budget(_config(tmp_path, node_max_connections=50)).total == 12


def test_run_with_a_cap_below_five_exits_78_naming_the_key(write_config: WriteConfig) -> None:
    """`run` refuses `cluster.node_max_connections: 4` before joining: exit 78, key and reason."""
    config = write_config(URL, cluster__node_max_connections=4)
    result = CliRunner().invoke(cli, ["run", "-c", str(config)])
    assert result.exit_code == 78
    assert ": cluster.node_max_connections: must be at least 5" in result.stderr


# -- on PostgreSQL, while documents are processed ---------------------------------------------


_COUNT = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name LIKE 'docutray-watch%%'"
)


@contextlib.asynccontextmanager
async def _peak_connections(url: str) -> AsyncIterator[list[int]]:
    """The most connections of docutray-watch (the node's pools, its listener and heartbeat,
    and any one-off one) open at once on the test's own database, sampled every 50 ms while
    the block runs; in the yielded list's only item once the block ends."""
    peak = [0]
    async with await psycopg.AsyncConnection.connect(
        libpq_url(url), autocommit=True, application_name="connection-sampler"
    ) as conn:

        async def sample() -> None:
            while True:
                row = await (await conn.execute(_COUNT)).fetchone()
                assert row is not None
                peak[0] = max(peak[0], int(row[0]))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        try:
            yield peak
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler


def _write_inbox(root: Path) -> None:
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for i in range(DOCUMENTS):
        (inbox / f"doc-{i:03}.pdf").write_bytes(b"%PDF-1.4\n" + f"document {i}\n".encode() * 20)


async def _process_all(config: Config, root: Path, url: str) -> int:
    """Run the node until every document is done, its status page's document read every 0.2 s
    meanwhile (as a browser would); the peak of its connections."""
    _write_inbox(root)
    done = root / "done"
    async with _peak_connections(url) as peak, running(config) as node:

        async def read_status() -> None:
            while True:
                report = await cluster_status(config, store=node.store)
                assert report["cluster"]["this_node"] == "n1"
                await asyncio.sleep(0.2)

        reading = asyncio.create_task(read_status())
        try:
            await wait_until(
                lambda: done.exists() and len(list(done.iterdir())) == DOCUMENTS, timeout=90
            )
        finally:
            reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading  # and raise what failed in it
    results = [p for p in (root / "out").rglob("*") if p.is_file()]
    assert len(results) == DOCUMENTS
    return peak[0]


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_default_node_holds_at_most_its_budget_while_processing(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """A node with the default api.max_in_flight (32 jobs at once) processing 24 documents, its
    status page read meanwhile, never has more than 12 connections open (pg_stat_activity, by
    application_name)."""
    emulator = emulator_factory(latency=0.3)
    config = node_config(
        tmp_path, initialised_url, emulator, "n1", max_in_flight=DEFAULT_MAX_IN_FLIGHT
    )
    assert connection_budget(config).total == 12
    peak = await _process_all(config, tmp_path, initialised_url)
    assert DEDICATED < peak <= 12


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_node_capped_at_five_connections_processes_everything(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """`node_max_connections: 5` (every pool down to one connection): the node never holds
    more than 5, and with 32 jobs at once still takes every document to its end (no job waits
    for a second connection of a pool while holding one)."""
    emulator = emulator_factory(latency=0.3)
    config = node_config(
        tmp_path, initialised_url, emulator, "n1", max_in_flight=DEFAULT_MAX_IN_FLIGHT
    )
    assert config.cluster is not None
    config.cluster.node_max_connections = 5
    peak = await _process_all(config, tmp_path, initialised_url)
    assert DEDICATED < peak <= 5
