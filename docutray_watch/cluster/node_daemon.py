"""`docutray-watch run` with a `cluster:` block: the process around a `runtime.ClusterNode`.

What single-node `run` offers, for a cluster node:

- `/metrics`, `/healthz`, `/readyz` (`metrics.listen`): every series labelled `node=<name>`;
  `/readyz` says why the node is not ready (joining, waiting for PostgreSQL at start, the
  database lost while serving — deadlines are paused meanwhile, see `outages.py`, stopping);
- the status page (`web.listen`): `GET /api/status` is the cluster's `status --json` document
  (`operations.cluster_status`, one code path for both): nodes with their last heartbeat,
  documents per state of the whole cluster, oldest waiting, this node's name; no actions;
- sd_notify: `EXTEND_TIMEOUT_USEC` and `STATUS=` while the node waits to join (PostgreSQL away
  at start must not make systemd kill it), `READY=1` once it serves, then `WATCHDOG=1` from the
  event loop — also while PostgreSQL is away (a restart would not bring it back);
- SIGHUP: the file is read again. A change to the cluster's shared configuration (its
  fingerprint: what every node must agree on) or to the node's name, database or connection cap
  is refused, naming the keys, and the node keeps its running configuration; otherwise what
  single-node mode reloads is applied (log level and format, the API key, local paths, the
  page's settings);
- SIGTERM/SIGINT: the node drains (`ClusterNode.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import httpx
import pluggy
import structlog

from docutray_watch.cluster.errors import ClusterConfigError
from docutray_watch.cluster.fingerprint import differing_keys, normalised_config
from docutray_watch.cluster.operations import cluster_status
from docutray_watch.cluster.runtime import ClusterNode
from docutray_watch.config import Config, ConfigError, SinkTypes, api_key_of, load_config
from docutray_watch.engine import MissingApiKeyError
from docutray_watch.health import HealthServer
from docutray_watch.log import configure_logging, register_secret
from docutray_watch.sdnotify import Notifier

__all__ = ["EX_CONFIG", "NodeDaemon", "reload_refusal", "run_cluster_daemon"]

log = structlog.get_logger("docutray_watch.cluster")

EX_CONFIG = 78
_STARTING_EXTEND_S = 30.0  # asked of systemd at a time while the node waits to join


def reload_refusal(running: Config, new: Config) -> tuple[str, list[str]] | None:
    """Why `new` cannot replace `running` in a live node (a reason and the keys), or None."""
    if new.cluster is None:
        return "the new configuration has no cluster block (a restart is needed)", ["cluster"]
    assert running.cluster is not None
    keys = [
        f"cluster.{key}"
        for key in ("node", "database", "node_max_connections")
        if getattr(new.cluster, key) != getattr(running.cluster, key)
    ]
    if keys:
        # The pools are sized when the node starts (`cluster.connections`).
        return "the node's name, database and connection cap change only with a restart", keys
    keys = differing_keys(normalised_config(running), normalised_config(new))
    if keys:
        return (
            "it changes the cluster's shared configuration (its fingerprint), which must stay "
            "identical on every node: change every node's file, then `cluster init "
            "--adopt-config` and restart the nodes",
            keys,
        )
    return None


class NodeDaemon:
    """Runs one cluster node with its listeners, signals and sd_notify until told to stop."""

    def __init__(
        self,
        config: Config,
        *,
        plugin_manager: pluggy.PluginManager,
        config_path: Path | None = None,
        sink_types: SinkTypes | None = None,
        notifier: Notifier | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.sink_types = sink_types
        self.node = ClusterNode(config, plugin_manager=plugin_manager, transport=transport)
        self.notifier = notifier or Notifier.from_env()
        self.health: HealthServer | None = None
        self.web: Any = None  # the StatusPage, when `web:` is set
        self.stop = asyncio.Event()
        self._log_level = log_level
        self._log_format = log_format
        self._reloading = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- health ------------------------------------------------------------------------------

    async def readiness(self) -> list[str]:
        """Why the node is not ready (empty when it serves with its database)."""
        problems = []
        if self.node.waiting_for:
            problems.append(self.node.waiting_for)
        outage = self.node.outages.reason
        if outage and outage != self.node.waiting_for:
            problems.append(outage)
        if self.stop.is_set():
            problems.append("stopping")
        return problems

    async def _refresh_gauges(self) -> None:
        engine = self.node.engine
        if engine is not None:
            self.node.metrics.set_api_state(engine.api_state())

    def _api_state(self) -> dict[str, Any]:
        from docutray_watch.web import api_state_of

        engine = self.node.engine
        if engine is None:
            reasons = [self.node.waiting_for] if self.node.waiting_for else []
            return {"state": "unknown", "paused_for_s": 0, "paused_total_s": 0, "in_flight": 0,
                    "reasons": reasons}  # fmt: skip
        return api_state_of(engine)

    async def _status(self, failures: int) -> dict[str, Any]:
        return await cluster_status(self.config, failures=failures, store=self.node.store)

    async def _start_listeners(self) -> str | None:
        """Start /metrics and the status page; the config problem when one cannot listen."""
        config = self.config
        if config.metrics is not None:
            self.health = HealthServer(
                self.node.metrics,
                self.readiness,
                host=config.metrics.host,
                port=config.metrics.port,
                before_scrape=self._refresh_gauges,
            )
            try:
                await self.health.start()
            except OSError as exc:
                self.health = None
                return f"metrics.listen: cannot listen on {config.metrics.listen}: {exc.strerror}"
            log.info("metrics_listening", address=f"{self.health.host}:{self.health.port}")
        if config.web is not None:
            from docutray_watch.web import StatusPage

            self.web = StatusPage(
                lambda: self.config, self.node.metrics, api_state=self._api_state,
                report=self._status,
            )  # fmt: skip
            try:
                await self.web.start()
            except OSError as exc:
                self.web = None
                return f"web.listen: cannot listen on {config.web.listen}: {exc.strerror}"
            log.info("status_page_listening", address=f"{self.web.host}:{self.web.port}")
        return None

    # -- systemd -----------------------------------------------------------------------------

    async def _tell_systemd(self) -> None:
        """While joining: more start time and why; then READY=1 and WATCHDOG=1 from this loop
        (the jobs run in it: a stuck loop stops the pings), also while PostgreSQL is away."""
        notifier, node = self.notifier, self.node
        interval = notifier.watchdog_interval()
        tick = min(interval or 5.0, 5.0)
        while not node.ready.is_set():
            notifier.extend_timeout(_STARTING_EXTEND_S)
            if interval:
                notifier.watchdog()
            notifier.status(node.waiting_for or "joining the cluster")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.ready.wait(), tick)
        notifier.ready()
        serving = f"serving the cluster's jobs as node {node.cluster.node_name}"
        notifier.status(serving)
        shown = serving
        while not self.stop.is_set():
            if interval:
                notifier.watchdog()
            text = node.outages.reason or node.waiting_for or serving
            if text != shown:
                notifier.status(text)
                shown = text
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=tick)

    # -- reload ------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """SIGHUP: apply the file's configuration when the cluster's shared part is unchanged;
        otherwise log why not (naming the keys) and keep the running one."""
        if self.config_path is None:
            log.warning("config_reload_unavailable", note="no configuration file to read")
            return False
        async with self._reloading:
            self.notifier.reloading()
            try:
                return await self._reload(self.config_path)
            finally:
                self.notifier.ready()

    async def _reload(self, path: Path) -> bool:
        keeping = "keeping the running configuration"
        try:
            config = await asyncio.to_thread(load_config, path, sink_types=self.sink_types)
        except ConfigError as error:
            log.error("config_reload_failed", problems=error.lines(), note=keeping)
            return False
        refusal = reload_refusal(self.config, config)
        if refusal is not None:
            reason, keys = refusal
            log.error("config_reload_refused", reason=reason, keys=keys, note=keeping)
            return False
        register_secret(api_key_of(config))
        register_secret(config.web.token if config.web is not None else None)
        changes: list[str] = []
        engine = self.node.engine
        if engine is not None:
            try:
                changes = await engine.reload(config)
            except MissingApiKeyError as exc:
                log.error("config_reload_failed", problems=[f"api.api_key: {exc}"], note=keeping)
                return False
        self.config = self.node.config = config
        configure_logging(
            self._log_level or config.log.level, self._log_format or config.log.format
        )
        log.info("cluster_config_reloaded", node=self.node.cluster.node_name, changes=changes)
        return True

    # -- the whole life ----------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, *, install_signals: bool = True) -> int:
        """Serve until SIGTERM/SIGINT (or `stop`); the process exit code."""
        if install_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop.set)
            loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload(), "reload"))
        self._spawn(self._tell_systemd(), "cluster-sdnotify")
        try:
            problem = await self._start_listeners()
            if problem is not None:
                log.error("config_invalid", problems=[problem])
                return EX_CONFIG
            await self.node.run(self.stop)
        except ClusterConfigError as exc:
            key = f"{exc.key}: " if exc.key else ""
            log.error("config_invalid", problems=[f"{key}{exc}"])
            return EX_CONFIG
        finally:
            self.notifier.stopping()
            self.stop.set()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.notifier.close()
            if self.health is not None:
                await self.health.stop()
            if self.web is not None:
                await self.web.stop()
        return 0


def run_cluster_daemon(
    config: Config,
    *,
    plugin_manager: pluggy.PluginManager,
    config_path: Path | None = None,
    sink_types: SinkTypes | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
) -> int:
    """`docutray-watch run` with a `cluster:` block: the process exit code."""
    daemon = NodeDaemon(
        config,
        plugin_manager=plugin_manager,
        config_path=config_path,
        sink_types=sink_types,
        log_level=log_level,
        log_format=log_format,
    )
    return asyncio.run(daemon.run())
