"""`run` in multi-node mode: join the cluster, then run procrastinate's worker in our loop.

`ClusterNode.run(stop)`:

1. `join_cluster` (schema, shared configuration, node name; waits while PostgreSQL is away,
   telling `on_waiting` why, for /readyz);
2. the engine's services on the cluster journal (`PostgresStore`): API client, sinks,
   discovery — the engine's dispatcher and resume are not used: jobs carry the documents;
3. the cluster limits (`ClusterSlots`, `ClusterRate`) and the jobs (`ClusterJobs`);
4. the node's own folders (not `shared: true`) are watched (inotify, `watching.py`) and scanned
   by the node every `watch.rescan_interval` (their files go through discovery, whose handoff
   defers jobs); the shared ones, and sources such as S3 buckets (shared by nature: every node
   builds the source to read and archive its documents, none looks on its own), by the
   periodic scan job (one node per period; a source every `rescan_interval`);
5. procrastinate's worker on the queues [`node.<name>`, `shared`], finished jobs deleted;
6. on `stop` (SIGTERM): the worker stops fetching and finishes its running jobs, the engine
   closes, the node leaves the cluster (its name is free at once).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pluggy
import sqlalchemy as sa
import structlog

from docutray_watch.cluster.app import create_app, libpq_url, node_queue
from docutray_watch.cluster.connections import connection_budget, worker_concurrency
from docutray_watch.cluster.handoff import DeferFailed
from docutray_watch.cluster.jobs import SHARED_QUEUE, ClusterHandoff, ClusterJobs, NodeServices
from docutray_watch.cluster.limits import ClusterRate, ClusterSlots, open_pool
from docutray_watch.cluster.membership import join_cluster
from docutray_watch.cluster.outages import Outages
from docutray_watch.cluster.watching import LocalWatchers
from docutray_watch.config import Config
from docutray_watch.engine import Engine
from docutray_watch.engine.limits import fixed_rate
from docutray_watch.journal.postgres import PostgresStore
from docutray_watch.metrics import Metrics

__all__ = ["ClusterNode"]

log = structlog.get_logger("docutray_watch.cluster")


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
        self.engine: Engine | None = None  # while it runs (the status page, reload)
        self.store: PostgresStore | None = None
        self.outages = Outages()  # the database lost while serving: /readyz, deadlines
        self.metrics.set_node(self.cluster.node_name)  # every series labelled node=<name>

    def _waiting(self, reason: str) -> None:
        self.waiting_for = f"waiting for the cluster database: {reason}"

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set (or the node's name is taken over); raises
        `ClusterConfigError` (exit 78) when the node must not join."""
        self.waiting_for = "joining the cluster"
        joining = asyncio.ensure_future(
            join_cluster(self.config, on_waiting=self._waiting, outages=self.outages)
        )
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
        budget = connection_budget(self.config)  # each pool's size (`connections.py`)
        log.info(
            "cluster_connections",
            node=node,
            journal=budget.journal,
            queue=budget.queue,
            limits=budget.limits,
            at_most=budget.total,
        )
        store = PostgresStore(url, node=node, migrate=False, pool_size=budget.journal)
        engine = Engine(
            self.config,
            plugin_manager=self.pm,
            metrics=self.metrics,
            transport=self.transport,
            environ=self.environ,
            store=store,
        )
        self.engine, self.store = engine, store
        jobs: ClusterJobs | None = None
        handoff = ClusterHandoff(lambda: _must(jobs))
        engine.discovery.handoff = handoff
        engine.sources.looks_itself = False  # the periodic scan lists them (one node per period)
        try:
            if not await self._open_journal(store, stop):
                return  # stopped while waiting for PostgreSQL: nothing was started
            async with open_pool(libpq_url(url), max_size=budget.limits, node=node) as pool:
                await engine.start(resume=False)
                try:
                    app = create_app(self.cluster, max_connections=budget.queue)
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
                        sources=engine.sources,
                        local_rate=engine.limiter,
                        healthy=membership.healthy,
                        connected_for=membership.heartbeat.connected_for,
                        stalled_timeout=self.cluster.stalled_timeout,
                        write_timeout=self.config.api.timeout.write,
                        scan_period=max(1, round(self.cluster.heartbeat_interval)),
                        outages=self.outages,
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
                if self.outages.came_back.is_set():
                    backoff = 1.0
                    continue  # restarted because the database came back: at once
                # The worker ended on its own: the database went away (a restart, a terminated
                # connection). Nothing is failed: wait, then work again.
                self.waiting_for = "the job worker lost the cluster database; reconnecting"
                came_back = self.outages.came_back
                came_back.clear()  # the heartbeat tells when the database answers again
                waits = {asyncio.ensure_future(e.wait()) for e in (stop, came_back)}
                await asyncio.wait(waits, timeout=backoff, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waits:
                    waiter.cancel()
                backoff = 1.0 if came_back.is_set() else min(30.0, backoff * 2)
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
        """Run procrastinate's worker until `stop` or `lost` (True), until it ends on its own,
        or until the database comes back after an outage the heartbeat saw (False).

        After an outage the worker is started afresh: a job whose end the worker could not
        record (its connection was cut as it finished) would otherwise stay `doing` under a
        live worker, holding its document's lock for ever; a stopped worker's `doing` jobs are
        retried by the stalled-job recovery."""
        came_back = self.outages.came_back
        came_back.clear()
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[node_queue(node), SHARED_QUEUE],
                name=node,
                concurrency=worker_concurrency(self.config),
                delete_jobs="successful",
                install_signal_handlers=False,
                # SIGTERM drains: running jobs finish (a POST under way is journaled).
                shutdown_graceful_timeout=self.config.shutdown_grace,
            ),
            name="cluster-worker",
        )
        waiters = [asyncio.ensure_future(e.wait()) for e in (stop, lost, came_back)]
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
        if came_back.is_set():
            log.info("cluster_worker_restarted", node=node, reason="the database came back")
            return False
        error = worker.exception() if not worker.cancelled() else None
        log.error("cluster_worker_ended", node=node, error=f"{type(error).__name__}: {error}")
        return False

    async def _scan_local(self, engine: Engine) -> None:
        """Watch this node's own folders (inotify, `watching.py`) and scan them now and every
        `watch.rescan_interval`."""
        local = [p for p in self.config.pipelines if not p.shared]
        if not local:
            return
        documents = engine.ctx.documents
        store = engine.journal
        watchers = LocalWatchers(engine)
        try:
            while True:
                for pipeline in local:
                    if pipeline.name not in engine.pipelines:
                        continue
                    # What the journal holds unfinished for a path is not taken again.
                    documents.known[pipeline.name] = await store.unfinished_by_path(pipeline.name)
                    watchers.ensure(pipeline.name)  # once that is known (restarted if it died)
                    await engine.scan(pipeline.name)
                await asyncio.sleep(min(p.folder.rescan_interval for p in local))
        finally:
            watchers.stop()


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
                await jobs.hand_on(doc)
                break
            except (DeferFailed, sa.exc.OperationalError):
                if not wait:
                    log.warning("cluster_hand_on_failed", node=node, doc=doc.name)
                await asyncio.sleep(wait)  # the database refusing for a moment


def _must(jobs: ClusterJobs | None) -> ClusterJobs:
    assert jobs is not None, "jobs are registered before the worker runs"
    return jobs
