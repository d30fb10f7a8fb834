"""`run` in multi-node mode: join the cluster, then run procrastinate's worker in our loop.

`ClusterNode.run(stop)`:

1. `join_cluster` (schema, shared configuration, node name; waits while PostgreSQL is away,
   telling `on_waiting` why, for /readyz);
2. the engine's services on the cluster journal (`PostgresStore`): API client, sinks,
   discovery — the engine's dispatcher and resume are not used: jobs carry the documents;
3. the cluster limits (`ClusterSlots`, `ClusterRate`) and the jobs (`ClusterJobs`);
4. the node's own folders (not `shared: true`) are scanned by the node every
   `watch.rescan_interval` (their files go through discovery, whose handoff defers jobs); the
   shared ones by the periodic scan job (one node per period);
5. procrastinate's worker on the queues [`node.<name>`, `shared`], finished jobs deleted;
6. on `stop` (SIGTERM): the worker stops fetching and finishes its running jobs, the engine
   closes, the node leaves the cluster (its name is free at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import httpx
import pluggy
import sqlalchemy as sa
import structlog

from docutray_watch.cluster.app import create_app, libpq_url, node_queue
from docutray_watch.cluster.handoff import DeferFailed
from docutray_watch.cluster.jobs import SHARED_QUEUE, ClusterHandoff, ClusterJobs, NodeServices
from docutray_watch.cluster.limits import ClusterRate, ClusterSlots, open_pool
from docutray_watch.cluster.membership import join_cluster
from docutray_watch.config import Config
from docutray_watch.engine import Engine
from docutray_watch.engine.limits import fixed_rate
from docutray_watch.journal.postgres import PostgresStore
from docutray_watch.metrics import Metrics
from docutray_watch.sdnotify import Notifier

__all__ = ["ClusterNode", "run_cluster_daemon"]

log = structlog.get_logger("docutray_watch.cluster")

_MIN_CONCURRENCY = 4


class ClusterNode:
    """One daemon of a cluster (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        *,
        plugin_manager: pluggy.PluginManager,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        if config.cluster is None:
            raise ValueError("ClusterNode needs a config with a cluster block")
        self.config = config
        self.cluster = config.cluster
        self.pm = plugin_manager
        self.metrics = metrics or Metrics()
        self.transport = transport
        self.environ = environ
        self.waiting_for: str | None = None  # why the node is not ready yet (for /readyz)
        self.ready = asyncio.Event()
        self.jobs: ClusterJobs | None = None

    def _waiting(self, reason: str) -> None:
        self.waiting_for = f"waiting for the cluster database: {reason}"

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set (or the node's name is taken over); raises
        `ClusterConfigError` (exit 78) when the node must not join."""
        self.waiting_for = "joining the cluster"
        joining = asyncio.ensure_future(join_cluster(self.config, on_waiting=self._waiting))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({joining, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not joining.done():
            # Stopped while waiting for PostgreSQL: nothing was started.
            joining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await joining
            return
        membership = joining.result()
        node = membership.node
        url = self.cluster.database.get_secret_value()
        store = PostgresStore(url, node=node, migrate=False)
        engine = Engine(
            self.config,
            plugin_manager=self.pm,
            metrics=self.metrics,
            transport=self.transport,
            environ=self.environ,
            # cast: PostgresStore lacks the routing calls of StateStore until they land on main.
            store=store,
        )
        jobs: ClusterJobs | None = None
        handoff = ClusterHandoff(lambda: _must(jobs))
        engine.discovery.handoff = handoff
        try:
            if not await self._open_journal(store, stop):
                return  # stopped while waiting for PostgreSQL: nothing was started
            async with open_pool(libpq_url(url), node=node) as pool:
                await engine.start(resume=False)
                try:
                    app = create_app(self.cluster)
                    cap = self.cluster.node_max_in_flight or self.config.api.max_in_flight
                    services = NodeServices(
                        ctx=engine.ctx,
                        store=store,
                        slots=ClusterSlots(
                            pool,
                            node=node,
                            cluster_cap=self.config.api.max_in_flight,
                            node_cap=cap,
                            journal_schema=store.schema,
                        ),
                        rate=ClusterRate(
                            pool,
                            fixed=fixed_rate(self.config),
                            max_rate=self.config.api.max_requests_per_second,
                        ),
                        node=node,
                        discovery=engine.discovery,
                        local_rate=engine.limiter,
                        healthy=membership.healthy,
                        connected_for=membership.heartbeat.connected_for,
                        stalled_timeout=self.cluster.stalled_timeout,
                        write_timeout=self.config.api.timeout.write,
                        scan_period=max(1, round(self.cluster.heartbeat_interval)),
                    )
                    jobs = self.jobs = ClusterJobs(app, services)
                    async with app.open_async():
                        await _hand_on_local(jobs, store, node)
                        await self._serve(app, engine, membership.heartbeat.lost, stop, node)
                finally:
                    await handoff.flush()
                    await engine.stop(grace=0)
        finally:
            await membership.leave()
            log.info("cluster_node_left", node=node)

    async def _open_journal(self, store: PostgresStore, stop: asyncio.Event) -> bool:
        """Open the journal's connections, waiting with backoff (1 s to 30 s) while PostgreSQL
        refuses them (restarting, out of connection slots): the name was taken, a crash here
        would leave it to go stale. False when `stop` came first."""
        backoff = 1.0
        while True:
            try:
                await store.open()
                return True
            except sa.exc.OperationalError as exc:
                reason = str(exc.orig or exc).splitlines()[0]
                self._waiting(reason)
                log.warning("cluster_journal_unreachable", error=reason, retry_in=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            if stop.is_set():
                return False
            backoff = min(30.0, backoff * 2)

    async def _serve(
        self, app: Any, engine: Engine, lost: asyncio.Event, stop: asyncio.Event, node: str
    ) -> None:
        scanning = asyncio.create_task(self._scan_local(engine), name="cluster-local-scan")
        self.waiting_for = None
        self.ready.set()
        log.info("cluster_node_serving", node=node, queues=[node_queue(node), SHARED_QUEUE])
        backoff = 1.0
        try:
            while not (stop.is_set() or lost.is_set()):
                if await self._work_until(app, node, stop, lost):
                    break
                # The worker ended on its own: the database went away (a restart, a terminated
                # connection). Nothing is failed: wait, then work again.
                self.waiting_for = "the job worker lost the cluster database; reconnecting"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(30.0, backoff * 2)
                self.waiting_for = None
        finally:
            scanning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scanning
        if lost.is_set():
            log.error("cluster_node_name_lost", node=node, note="stopped taking jobs")

    async def _work_until(
        self, app: Any, node: str, stop: asyncio.Event, lost: asyncio.Event
    ) -> bool:
        """Run procrastinate's worker until `stop` or `lost` (True) or until it ends on its
        own (False)."""
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[node_queue(node), SHARED_QUEUE],
                name=node,
                concurrency=max(_MIN_CONCURRENCY, self.config.api.max_in_flight),
                delete_jobs="successful",
                install_signal_handlers=False,
                # SIGTERM drains: running jobs finish (a POST under way is journaled).
                shutdown_graceful_timeout=self.config.shutdown_grace,
            ),
            name="cluster-worker",
        )
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
        try:
            await asyncio.wait([worker, *waiters], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            if not worker.done():
                worker.cancel()  # procrastinate's worker: stop fetching, let running jobs end
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(worker, return_exceptions=True)
        if stop.is_set() or lost.is_set():
            return True
        error = worker.exception() if not worker.cancelled() else None
        log.error("cluster_worker_ended", node=node, error=f"{type(error).__name__}: {error}")
        return False

    async def _scan_local(self, engine: Engine) -> None:
        """Scan this node's own folders now and every `watch.rescan_interval`."""
        local = [p for p in self.config.pipelines if not p.shared]
        if not local:
            return
        documents = engine.ctx.documents
        store = engine.journal
        while True:
            for pipeline in local:
                if pipeline.name not in engine.pipelines:
                    continue
                # What the journal holds unfinished for a path is not taken again.
                documents.known[pipeline.name] = await store.unfinished_by_path(pipeline.name)
                await engine.scan(pipeline.name)
            await asyncio.sleep(min(p.folder.rescan_interval for p in local))


async def _hand_on_local(jobs: ClusterJobs, store: PostgresStore, node: str) -> None:
    """Defer again the next job of this node's journaled documents in its own folders: a node
    killed between journaling a batch and deferring its jobs left them with none, and nothing
    else looks at them (a waiting job is kept, not doubled)."""
    try:
        found = await store.unfinished_of_node(node)
    except sa.exc.OperationalError as exc:
        log.warning("cluster_hand_on_skipped", node=node, error=str(exc.orig or exc))
        return  # the next start looks again
    for doc in found:
        if jobs.holder_of(doc.pipeline) != node:
            continue
        for wait in (1.0, 2.0, 4.0, 8.0, 0.0):
            try:
                await jobs._hand_on(doc)
                break
            except (DeferFailed, sa.exc.OperationalError):
                if not wait:
                    log.warning("cluster_hand_on_failed", node=node, doc=doc.name)
                await asyncio.sleep(wait)  # the database refusing for a moment


def _must(jobs: ClusterJobs | None) -> ClusterJobs:
    assert jobs is not None, "jobs are registered before the worker runs"
    return jobs


EX_CONFIG = 78


def run_cluster_daemon(config: Config, *, plugin_manager: pluggy.PluginManager) -> int:
    """`docutray-watch run` with a `cluster:` block: the process exit code."""
    return asyncio.run(_serve_until_signal(config, plugin_manager))


async def _serve_until_signal(config: Config, pm: pluggy.PluginManager) -> int:
    from docutray_watch.cluster.errors import ClusterConfigError
    from docutray_watch.health import HealthServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    node = ClusterNode(config, plugin_manager=pm)

    async def readiness() -> list[str]:
        return [node.waiting_for] if node.waiting_for else []

    notifier = Notifier.from_env()
    systemd = asyncio.create_task(_tell_systemd(node, notifier, stop), name="cluster-sdnotify")
    health = None
    if config.metrics is not None:
        # /readyz says why while the node waits for PostgreSQL (or is still joining).
        health = HealthServer(
            node.metrics, readiness, host=config.metrics.host, port=config.metrics.port
        )
        await health.start()
    try:
        await node.run(stop)
    except ClusterConfigError as exc:
        key = f"{exc.key}: " if exc.key else ""
        log.error("config_invalid", problems=[f"{key}{exc}"])
        return EX_CONFIG
    finally:
        notifier.stopping()
        systemd.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await systemd
        notifier.close()
        if health is not None:
            await health.stop()
    return 0


async def _tell_systemd(node: ClusterNode, notifier: Notifier, stop: asyncio.Event) -> None:
    """READY=1 once the node serves its queues, then WATCHDOG=1 from the main loop (the jobs
    run in this loop: a loop that is stuck stops the pings)."""
    await node.ready.wait()
    notifier.ready()
    notifier.status(f"serving the cluster's jobs as node {node.cluster.node_name}")
    interval = notifier.watchdog_interval()
    while interval and not stop.is_set():
        notifier.watchdog()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
