"""`docutray-watch run`: the long-running service — watchers, rescans, signals, sd_notify.

Lifecycle:

1. open the journal, the sinks and the API client (`Engine.start`), resuming unfinished work;
2. start a watcher per pipeline and the optional metrics/health listener;
3. tell systemd `READY=1`; the backlog scan runs alongside new arrivals, so the first document
   is submitted while a large inbox is still being listed;
4. every `rescan_interval`, rescan each folder (inotify drops events on overflow); every second,
   read the journal's `requeued` counter and pick up documents requeued with `docutray-watch
   retry` when it moved (a counter, not a signal: the CLI may run as another user);
5. SIGHUP: `RELOADING=1`, reload the config (a bad one is logged and the old one kept), then
   `READY=1`;
6. SIGTERM/SIGINT: `STOPPING=1`, stop taking files, give in-flight executions `shutdown_grace`
   seconds, persist the rest (they resume on the next start), exit 0. A second signal cuts the
   grace period short — still losing nothing.

`WATCHDOG=1` is sent from the main loop only while it makes progress: if documents are pending
and nothing has moved for `STALL_SECONDS`, the pings stop and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from docutray_watch.config import Config, ConfigError, api_key_of, load_config
from docutray_watch.engine import Engine, MissingApiKeyError, StateDirError
from docutray_watch.inbox import ensure_inbox
from docutray_watch.log import configure_logging, register_secret
from docutray_watch.metrics import Metrics
from docutray_watch.plugins import Plugins, load_plugins
from docutray_watch.sdnotify import Notifier
from docutray_watch.statelock import AlreadyRunningError
from docutray_watch.watcher import FolderWatcher

if TYPE_CHECKING:
    from docutray_watch.health import HealthServer
    from docutray_watch.web import StatusPage

__all__ = ["STALL_SECONDS", "Daemon", "run_daemon"]

log = structlog.get_logger(__name__)

STALL_SECONDS = 600.0
STATUS_EVERY = 5.0
REQUEUE_CHECK_INTERVAL = 1.0  # how soon a `retry` from another process is picked up
EX_CONFIG = 78
EX_TEMPFAIL = 75  # another instance holds the state directory: try again later


class UnusableSettingError(Exception):
    """A folder or an address in the config that the daemon cannot use; the message names it."""


class Daemon:
    """Runs the engine with its watchers until told to stop."""

    def __init__(
        self,
        config: Config,
        config_path: Path,
        *,
        notifier: Notifier | None = None,
        plugins: Plugins | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or Notifier.from_env()
        self.metrics = Metrics()
        # Built once: a reload validates against the same sink types (and model classes).
        self.plugins = plugins if plugins is not None else load_plugins()
        self.engine = Engine(config, plugin_manager=self.plugins.pm, metrics=self.metrics)
        self.watchers: dict[str, FolderWatcher] = {}
        self.health: HealthServer | None = None
        self.web: StatusPage | None = None
        self._log_level = log_level
        self._log_format = log_format
        self._stop = asyncio.Event()
        self.started = asyncio.Event()  # set once READY=1 was sent (for tests and embedders)
        self._signals = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reloading = asyncio.Lock()
        self._missing: dict[str, Path] = {}  # pipelines whose watched folder has gone

    # -- signals -----------------------------------------------------------------------------

    def _on_stop_signal(self, signame: str) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stop_requested", signal=signame, grace_s=self.config.shutdown_grace)
            self._stop.set()
        else:
            log.warning("stop_forced", signal=signame, note="persisting in-flight work now")
            self.engine.hurry()

    def stop(self) -> None:
        """Ask the daemon to stop, as SIGTERM does (a second call cuts the grace period)."""
        self._on_stop_signal("stop()")

    def _on_reload_signal(self) -> None:
        self._spawn(self.reload(), "reload")

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- watching ----------------------------------------------------------------------------

    def _start_watchers(self, *, strict: bool = True) -> None:
        """Start a watcher per active pipeline; an unusable folder raises (`strict`) or is logged.

        Not strict (on reload), the other pipelines keep going and the failing one has no watcher
        until the next reload.
        """
        loop = asyncio.get_running_loop()
        # Only folders are watched here; the engine looks at other sources itself.
        wanted = {n: p for n, p in self.engine.pipelines.items() if p.folder_watch is not None}
        for name in list(self.watchers):
            old = self.watchers[name]
            config = wanted.get(name)
            if (
                config is None
                or Path(config.folder.path) != old.root
                or config.folder.recursive != old.recursive
                or config.folder.polling != old.polling
            ):
                old.stop()
                del self.watchers[name]
        for name, pipeline in wanted.items():
            if name in self.watchers:
                continue
            root = Path(pipeline.folder.path)
            try:
                created = ensure_inbox(root)
            except OSError as exc:
                self._unusable(name, root, exc, strict=strict)
                continue
            if created:
                log.info("watch_folder_created", pipeline=name, path=str(root))

            def nominate(path: Path, signal: str, _name: str = name) -> None:
                loop.call_soon_threadsafe(
                    lambda: self.engine.nominate(
                        _name, path, closed=signal == "closed", writing=signal == "writing"
                    )
                )

            watcher = FolderWatcher(
                pipeline=name,
                root=root,
                recursive=pipeline.folder.recursive,
                polling=pipeline.folder.polling,
                nominate=nominate,
            )
            try:
                watcher.start()
            except OSError as exc:
                self._unusable(name, root, exc, strict=strict)
                continue
            log.info("watcher_started", pipeline=name, path=str(root), mode=watcher.mode)
            self.watchers[name] = watcher

    def _unusable(self, pipeline: str, root: Path, exc: OSError, *, strict: bool) -> None:
        names = [p.name for p in self.config.pipelines]
        where = f"pipelines[{names.index(pipeline)}]" if pipeline in names else pipeline
        problem = f"{where}.watch.path: cannot watch {root}: {exc.strerror or exc}"
        if strict:
            raise UnusableSettingError(problem)
        log.error("watch_failed", pipeline=pipeline, problem=problem)

    def _stop_watchers(self) -> None:
        for watcher in self.watchers.values():
            watcher.stop()
        self.watchers.clear()

    async def _rescan_loop(self) -> None:
        """Scan every folder now (the backlog), then each pipeline every `rescan_interval`."""
        next_scan: dict[str, float] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            for name, pipeline in self.engine.pipelines.items():
                if pipeline.folder_watch is None:
                    continue  # not a folder: the engine looks at its source every interval
                if next_scan.get(name, 0.0) <= now:
                    next_scan[name] = now + pipeline.folder.rescan_interval
                    if not self._folder_present(name, Path(pipeline.folder.path)):
                        continue
                    started = time.monotonic()
                    found = await self.engine.scan(name)
                    log.debug(
                        "folder_scanned",
                        pipeline=name,
                        nominated=found,
                        duration_s=round(time.monotonic() - started, 3),
                    )
            with contextlib.suppress(Exception):
                await self.engine.resume_requeued()
            wake = min(next_scan.values(), default=time.monotonic() + 60) - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=max(0.5, wake))

    async def _requeue_watch(self) -> None:
        """Pick up what `docutray-watch retry` requeued within a second of its commit."""
        seen: int | None = None  # unknown at first: one look catches a retry made during start
        failing = False
        while not self._stop.is_set():
            try:
                count = await self.engine.journal.requeue_count()
                if count != seen:
                    picked = await self.engine.resume_requeued()
                    seen = count
                    if picked:
                        log.info("requeued_documents_taken", documents=picked)
                failing = False
            except Exception as exc:  # noqa: BLE001 - the next rescan picks them up as well
                if not failing:
                    log.warning("requeue_check_failed", error=f"{type(exc).__name__}: {exc}")
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=REQUEUE_CHECK_INTERVAL)

    def _folder_present(self, name: str, root: Path) -> bool:
        """Notice a watched folder that went away (an unmounted share, a deleted directory) and
        its return: the watcher is restarted then, as the old one watches nothing."""
        if not root.is_dir():
            if name not in self._missing:
                self._missing[name] = root
                log.warning(
                    "watch_folder_missing",
                    pipeline=name,
                    path=str(root),
                    note="documents wait until it is back; checked at every rescan",
                )
            return False
        if self._missing.pop(name, None) is not None:
            watcher = self.watchers.pop(name, None)
            if watcher is not None:
                watcher.stop()
            self._start_watchers(strict=False)
            log.info("watch_folder_back", pipeline=name, path=str(root))
        return True

    # -- health ------------------------------------------------------------------------------

    async def _readiness(self) -> list[str]:
        problems = []
        try:
            await self.engine.journal.probe()
        except Exception as exc:  # noqa: BLE001 - reported as a readiness problem
            problems.append(f"journal not writable: {exc}")
        else:
            # The probe writes nothing; a full disk shows only when a real write fails.
            if self.engine.journal.write_error is not None:
                problems.append(f"journal not writable: {self.engine.journal.write_error}")
        for name, watcher in self.watchers.items():
            if not watcher.alive:
                problems.append(f"watcher of pipeline {name} is not running")
        active = self.engine.pipelines
        for name, root in self._missing.items():
            if name in active:
                problems.append(f"watched folder of pipeline {name} is missing: {root}")
        problems.extend(held.line() for held in self.config.held_back)
        # A refused key, an unreachable API, a pipeline whose step the API refuses.
        problems.extend(self.engine.api_gate.reasons())
        if self._stop.is_set():
            problems.append("stopping")
        return problems

    async def _refresh_gauges(self) -> None:
        self.metrics.journal_writable.set(0 if self.engine.journal.write_error else 1)
        self.metrics.set_api_state(self.engine.api_state())
        oldest = await self.engine.journal.oldest_pending()
        now = time.time()
        for name in self.engine.pipelines:
            self.metrics.oldest_pending.labels(name).set(
                max(0.0, now - oldest[name]) if name in oldest else 0.0
            )

    async def _heartbeat(self) -> None:
        """STATUS= and WATCHDOG=1 from the main loop, while the engine makes progress."""
        interval = self.notifier.watchdog_interval()
        tick = min(STATUS_EVERY, interval) if interval else STATUS_EVERY
        last_status = ""
        while not self._stop.is_set():
            engine = self.engine
            status = (
                f"{engine.queue_depth} queued, {engine.in_flight} in flight, "
                f"{engine.outstanding} pending, "
                f"{sum(engine.summary.outcomes.values())} done since start"
            )
            if status != last_status:
                self.notifier.status(status)
                last_status = status
            # A deliberate pause (key refused, API unreachable, 429) is not a stall: a restart
            # would not help, and the pause resumes by itself.
            stalled = (
                engine.outstanding > 0
                and not engine.api_gate.paused
                and time.monotonic() - engine.last_progress > STALL_SECONDS
            )
            if interval and not stalled:
                self.notifier.watchdog()
            elif stalled:
                log.error(
                    "engine_stalled",
                    pending=engine.outstanding,
                    idle_s=round(time.monotonic() - engine.last_progress),
                )
            # After the watchdog ping: a journal write that waits must not hold up liveness.
            await engine.record_request_rate()  # for `status`; written only when it changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=tick)

    # -- reload ------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the config file and apply it; a bad file is logged and the old one kept."""
        async with self._reloading:
            self.notifier.reloading()
            try:
                try:
                    config = await asyncio.to_thread(
                        load_config,
                        self.config_path,
                        sink_types=self.plugins.config_sink_types,
                    )
                except ConfigError as error:
                    log.error(
                        "config_reload_failed",
                        problems=error.lines(),
                        note="keeping the running configuration",
                    )
                    return False
                register_secret(api_key_of(config))
                register_secret(config.web.token if config.web is not None else None)
                _log_held_back(config)
                try:
                    changes = await self.engine.reload(config)
                except MissingApiKeyError as exc:
                    log.error(
                        "config_reload_failed",
                        problems=[f"api.api_key: {exc}"],
                        note="keeping the running configuration",
                    )
                    return False
                self.config = self.engine.config
                configure_logging(
                    self._log_level or self.config.log.level,
                    self._log_format or self.config.log.format,
                )
                self._start_watchers(strict=False)
                await self.engine.resume_requeued()  # documents requeued by `retry`
                for change in changes:
                    if change.startswith("added pipeline ") or change.startswith("changed"):
                        await self.engine.scan(change.rsplit(" ", 1)[-1])
                return True
            finally:
                self.notifier.ready()

    # -- the whole life ----------------------------------------------------------------------

    async def _start_health(self) -> None:
        if self.config.metrics is None:
            return
        from docutray_watch.health import HealthServer  # aiohttp's server: only when listening

        self.health = HealthServer(
            self.metrics,
            self._readiness,
            host=self.config.metrics.host,
            port=self.config.metrics.port,
            before_scrape=self._refresh_gauges,
        )
        try:
            await self.health.start()
        except OSError as exc:
            self.health = None
            raise UnusableSettingError(
                f"metrics.listen: cannot listen on {self.config.metrics.listen}: "
                f"{exc.strerror or exc}"
            ) from None
        log.info("metrics_listening", address=f"{self.health.host}:{self.health.port}")

    async def _start_web(self) -> None:
        if self.config.web is None:
            return
        from docutray_watch.web import StatusPage, api_state_of

        self.web = StatusPage(
            lambda: self.config, self.metrics, api_state=lambda: api_state_of(self.engine)
        )
        try:
            await self.web.start()
        except OSError as exc:
            self.web = None
            raise UnusableSettingError(
                f"web.listen: cannot listen on {self.config.web.listen}: {exc.strerror or exc}"
            ) from None
        log.info(
            "status_page_listening",
            address=f"{self.web.host}:{self.web.port}",
            actions=self.config.web.actions,
        )

    async def run(self) -> int:
        """Start everything, serve until a stop signal, stop cleanly; returns the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signal.Signals(signum).name)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        for broken in self.plugins.broken:
            log.error(
                "plugin_load_failed",
                plugin=broken.name,
                distribution=broken.distribution,
                version=broken.version,
                error=broken.error,
                note="left out; pipelines that do not need it run",
            )
        _log_held_back(self.config)
        try:
            await self.engine.start()
        except MissingApiKeyError as exc:
            log.error("config_invalid", problems=[f"api.api_key: {exc}"])
            return EX_CONFIG
        except StateDirError as exc:
            log.error("config_invalid", problems=[f"state_dir: {exc}"])
            return EX_CONFIG
        except AlreadyRunningError as exc:
            log.error("already_running", error=str(exc))
            return EX_TEMPFAIL
        try:
            try:
                self._start_watchers()
                await self._start_health()
                await self._start_web()
            except UnusableSettingError as exc:
                # A folder or address of the config that cannot be used: a restart won't help.
                log.error("config_invalid", problems=[str(exc)])
                return EX_CONFIG
            self._spawn(self._rescan_loop(), "rescan")
            self._spawn(self._requeue_watch(), "requeue-watch")
            self._spawn(self._heartbeat(), "heartbeat")
            self.notifier.ready()
            self.started.set()
            log.info(
                "daemon_started",
                pipelines=sorted(self.engine.pipelines),
                config=str(self.config_path),
            )
            await self._stop.wait()
        finally:
            self.notifier.stopping()
            self._stop.set()
            self._stop_watchers()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.engine.stop(self.config.shutdown_grace)
            if self.health is not None:
                await self.health.stop()
            if self.web is not None:
                await self.web.stop()
            self.notifier.close()
            log.info("daemon_stopped", outcomes=dict(self.engine.summary.outcomes))
        return 0


def run_daemon(
    config: Config,
    config_path: Path,
    *,
    plugins: Plugins | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
) -> int:
    """Run the daemon until SIGTERM; the process exit code."""
    if config.cluster is not None:
        # Multi-node mode: the jobs of the cluster's queues instead of the local engine loop.
        from docutray_watch.cluster.node_daemon import run_cluster_daemon

        loaded = plugins if plugins is not None else load_plugins()
        return run_cluster_daemon(
            config,
            plugin_manager=loaded.pm,
            config_path=config_path,
            sink_types=loaded.config_sink_types,
            log_level=log_level,
            log_format=log_format,
        )
    daemon = Daemon(
        config, config_path, plugins=plugins, log_level=log_level, log_format=log_format
    )
    return asyncio.run(daemon.run())


def _log_held_back(config: Config) -> None:
    for held in config.held_back:
        log.error(
            "pipeline_left_out",
            pipeline=held.name,
            key=held.path,
            reason=held.reason,
            note="its files stay in its folder until the plugin loads",
        )
