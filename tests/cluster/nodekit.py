"""A cluster node's services and jobs in this process, without its worker: for tests that run
jobs by hand on several "nodes" sharing one database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from docutray_watch.cluster.app import create_app, libpq_url
from docutray_watch.cluster.jobs import ClusterHandoff, ClusterJobs, NodeServices
from docutray_watch.cluster.latency import ClusterLatency
from docutray_watch.cluster.limits import ClusterRate, ClusterSlots, open_pool
from docutray_watch.config import Config, parse_config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.engine import Engine
from docutray_watch.journal.postgres import PostgresStore
from docutray_watch.plugins import load_plugins


def shared_config(
    root: Path,
    url: str,
    emulator: EmulatorServer,
    node: str,
    *,
    watch: dict[str, Any] | None = None,
    poll: dict[str, Any] | None = None,
) -> Config:
    """A node of a cluster whose one pipeline watches the shared inbox `root/inbox`."""
    data = {
        "state_dir": str(root / f"state-{node}"),
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 1000,
            "max_in_flight": 4,
        },
        "cluster": {"database": url, "node": node, "heartbeat_interval": 1, "stalled_timeout": 3},
        "pipelines": [
            {
                "name": "invoices",
                "watch": {"path": str(root / "inbox"), "shared": True, **(watch or {})},
                "steps": ["stp_test"],
                "poll": {"initial": 0.2, "max": 0.5, "timeout": 60, **(poll or {})},
                "on_success": {"action": "move", "to": str(root / "done")},
                "sinks": [{"type": "filesystem", "path": str(root / "out")}],
            }
        ],
    }
    return parse_config(
        data, config_dir=root, sink_types=load_plugins().config_sink_types, environ={}
    )


@dataclass
class HandNode:
    """One node's jobs (run by hand) and its journal store."""

    name: str
    jobs: ClusterJobs
    store: PostgresStore
    engine: Engine


@contextlib.asynccontextmanager
async def hand_node(config: Config) -> AsyncIterator[HandNode]:
    """The services of the node `config` names, its jobs registered, its engine started (as
    `ClusterNode.run` builds them), no worker."""
    assert config.cluster is not None
    node = config.cluster.node_name
    url = config.cluster.database.get_secret_value()
    store = PostgresStore(url, node=node, migrate=False)
    engine = Engine(config, plugin_manager=load_plugins().pm, store=store)
    engine.ctx.latency = ClusterLatency()
    holder: list[ClusterJobs] = []
    engine.discovery.handoff = ClusterHandoff(lambda: holder[0])
    async with open_pool(libpq_url(url)) as pool:
        await engine.start(resume=False)
        try:
            app = create_app(config.cluster)
            services = NodeServices(
                ctx=engine.ctx,
                store=store,
                slots=ClusterSlots(pool, node=node, cluster_cap=4),
                rate=ClusterRate(pool, fixed=1000.0),
                node=node,
                discovery=engine.discovery,
                local_rate=engine.limiter,
            )
            jobs = ClusterJobs(app, services)
            holder.append(jobs)
            async with app.open_async():
                yield HandNode(node, jobs, store, engine)
        finally:
            await engine.stop(grace=0)


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one statement on the cluster database (autocommit)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        cursor = conn.execute(sql, params or None)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


def waiting_jobs(url: str) -> list[tuple[str, dict[str, Any]]]:
    """(task, arguments) of the jobs waiting (`todo`), in id order."""
    return [
        (str(task), dict(args))
        for task, args in query(
            url, "SELECT task_name, args FROM procrastinate_jobs WHERE status = 'todo' ORDER BY id"
        )
    ]
