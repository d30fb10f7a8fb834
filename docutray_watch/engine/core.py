"""`Engine`: one daemon's lifecycle — start, resume, reload, stop — around the phases.

The engine owns the services the phases share (`Context`), builds the API client and the sinks,
resumes every unfinished document of the journal at its stored state, and runs the long-lived
tasks: intake workers (`Discovery`), the `Dispatcher`, journal retention. Where a document goes
next is in `engine.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path

import httpx
import pluggy
import structlog

from docutray_watch import retention
from docutray_watch.client import AsyncClient, DocuTrayError, NotFoundError, RateLimitError
from docutray_watch.config import Config, PipelineConfig, api_key_of
from docutray_watch.delivery import describe
from docutray_watch.engine.context import Context, Documents, RunSummary
from docutray_watch.engine.discovery import Discovery
from docutray_watch.engine.errors import Failure, classify
from docutray_watch.engine.gate import PROBE_EXECUTION_ID, ApiGate
from docutray_watch.engine.housekeeping import prune_journal, retention_loop
from docutray_watch.engine.http import build_client
from docutray_watch.engine.kept import KEPT_TASK_PREFIXES
from docutray_watch.engine.limits import LocalLimits
from docutray_watch.engine.pipelines import PipelineSet
from docutray_watch.engine.rate_memory import RateMemory, request_rate
from docutray_watch.engine.ratelimit import RateLimiter
from docutray_watch.engine.reading import absolute
from docutray_watch.engine.run import Dispatcher
from docutray_watch.engine.source_intake import SourceIntake
from docutray_watch.journal import (
    DocumentRow,
    DocumentState,
    SqliteStore,
    StateStore,
)
from docutray_watch.metrics import Metrics
from docutray_watch.plugins import call_observers, collect_sink_types
from docutray_watch.polling import LatencyModel
from docutray_watch.sources.registry import collect_source_types
from docutray_watch.statelock import StateLock

__all__ = ["Engine", "MissingApiKeyError", "StateDirError"]

log = structlog.get_logger("docutray_watch.engine")

# Tasks that only wait (for a file to settle, for a twin document) are cancelled at once on stop.
_WAITER_PREFIXES = ("settle:", "twin:", *KEPT_TASK_PREFIXES)
_INTAKE_WORKERS = 2


class MissingApiKeyError(Exception):
    """No API key in the config, its key file or $DOCUTRAY_API_KEY."""


class StateDirError(Exception):
    """The journal in `state_dir` cannot be opened (not creatable, not a database, locked…)."""


class Engine:
    """Processes the documents of every pipeline of a `Config` (see the package docstring)."""

    def __init__(
        self,
        config: Config,
        *,
        plugin_manager: pluggy.PluginManager,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        environ: dict[str, str] | None = None,
        store: StateStore | None = None,
    ) -> None:
        self._transport = transport
        self._environ = environ if environ is not None else dict(os.environ)
        self._lock = StateLock(config.state_dir)
        self._tasks: set[asyncio.Task[object]] = set()
        self._limits = LocalLimits.of(
            config, probe=self._probe_api, on_pause_change=self._pause_changed
        )
        self.ctx = Context(
            config=config,
            pm=plugin_manager,
            metrics=metrics or Metrics(),
            store=store if store is not None else SqliteStore(config.journal_path),
            limits=self._limits,
            latency=LatencyModel(),
            summary=RunSummary(),
            documents=Documents(),
            spawn=self._spawn,
        )
        self.ctx.metrics.request_rate.set_function(lambda: self.limiter.rate)
        self.ctx.metrics.in_flight.set_function(lambda: self.limits.slots.used)
        self.dispatcher = Dispatcher(self.ctx)
        self.discovery = Discovery(self.ctx, self.dispatcher)
        self.dispatcher.discovery = self.discovery
        # Pipelines whose `source` is not a folder (an S3 bucket…): see engine.source_intake.
        self.sources = SourceIntake(self.ctx, self.discovery)
        self.ctx.renominate = self._renominate
        self.rate_memory = RateMemory(self.limiter, config.api.resolved_base_url(self._environ))
        self.pipeline_set = PipelineSet(self.ctx)
        self._http: httpx.AsyncClient | None = None
        self._old_clients: list[tuple[AsyncClient | None, httpx.AsyncClient | None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._hurry = asyncio.Event()
        self._started = False

    # -- what the daemon, `status` and tests read ----------------------------------------------

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def pm(self) -> pluggy.PluginManager:
        return self.ctx.pm

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    @property
    def summary(self) -> RunSummary:
        return self.ctx.summary

    @property
    def journal(self) -> StateStore:
        return self.ctx.store

    @property
    def latency(self) -> LatencyModel:
        return self.ctx.latency

    @property
    def limits(self) -> LocalLimits:
        return self._limits

    @property
    def limiter(self) -> RateLimiter:
        """The shared request rate."""
        return self._limits.rate

    @property
    def api_gate(self) -> ApiGate:
        """The shared API pauses."""
        return self._limits.pauses

    @property
    def last_progress(self) -> float:
        """When something last moved on (monotonic): the watchdog's measure."""
        return self.ctx.documents.last_progress

    @last_progress.setter
    def last_progress(self, value: float) -> None:
        self.ctx.documents.last_progress = value

    @property
    def pipelines(self) -> dict[str, PipelineConfig]:
        """The active (not retired) pipelines."""
        return {n: r.config for n, r in self.ctx.pipelines.items() if not r.retired}

    @property
    def in_flight(self) -> int:
        """Executions submitted (or being submitted) and not finished."""
        return self._limits.slots.used

    @property
    def outstanding(self) -> int:
        """Documents (or candidate files) not finished yet."""
        return self.ctx.documents.outstanding

    @property
    def queue_depth(self) -> int:
        """Documents waiting for a free execution slot."""
        return self.dispatcher.depth

    def api_state(self) -> str:
        """One word for dashboards: the API gate's (`key_refused`, `unreachable`, `paused`,
        `ok`), or `paused` while the rate limiter holds every request for a 429."""
        state = self.api_gate.state()
        if state == "ok" and self.limiter.paused_until > time.monotonic():
            return "paused"
        return state

    def request_rate(self) -> dict[str, object]:
        """The shared request rate now: what `status` shows."""
        return request_rate(self.limiter)

    async def record_request_rate(self) -> None:
        """Store the current rate in the journal, for `status` and the next start (when it
        changed since the last time; the daemon calls this every few seconds)."""
        if self._started:
            await self.rate_memory.record(self.journal)

    # -- taking files --------------------------------------------------------------------------

    async def scan(self, pipeline: str | None = None) -> int:
        """Nominate every file in the watched folder(s); returns how many were nominated."""
        found = await self.discovery.scan(pipeline)
        return found + await self.sources.discover(pipeline)

    def _renominate(self, pipeline: str, path: Path) -> bool:
        """Offer a changed document again: a file by its path, a source's by a new look."""
        if self.sources.handles(pipeline):
            return self.sources.look_again(pipeline)
        return self.discovery.nominate(pipeline, path)

    def nominate(
        self,
        pipeline: str,
        path: Path,
        *,
        st: os.stat_result | None = None,
        relative_path: str | None = None,
        closed: bool = False,
        writing: bool = False,
    ) -> bool:
        """Offer a file to a pipeline (see `Discovery.nominate`); True if taken up."""
        return self.discovery.nominate(
            pipeline, path, st=st, relative_path=relative_path, closed=closed, writing=writing
        )

    def hurry(self) -> None:
        """Cut the shutdown grace period short (a second SIGTERM): persist in-flight work now."""
        self._hurry.set()

    async def wait_idle(self) -> None:
        """Wait until every nominated or resumed document has reached its end."""
        await self.ctx.documents.idle.wait()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, resume: bool = True) -> None:
        """Open the journal and the sinks, resume unfinished work, start taking documents."""
        api_key = api_key_of(self.config, self._environ)
        if not api_key:
            raise MissingApiKeyError(
                "no API key: set api.api_key or api.api_key_file in the config, "
                "or DOCUTRAY_API_KEY in the environment"
            )
        try:
            await asyncio.to_thread(self._lock.acquire)
        except OSError as exc:
            raise StateDirError(f"cannot lock {self.config.state_dir}: {exc.strerror}") from None
        try:
            await self.journal.open()
        except (OSError, sqlite3.Error, RuntimeError) as exc:
            self._lock.release()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StateDirError(
                f"cannot open the journal {self.config.journal_path}: {reason}"
            ) from None
        self.latency.load(await self.journal.load_latencies())
        await self.rate_memory.resume(self.journal)
        await self.journal.record_api_pause(None)  # a pause recorded by an earlier run is over
        self._build_client(api_key)
        await self.pipeline_set.open(collect_sink_types(self.pm))
        self.discovery.accepting = True
        self._started = True
        call_observers(self.pm, "startup", config=self.config)
        source_workers = await self.sources.open(collect_source_types(self.pm)[0])
        if resume:
            await self._resume()
        self._workers = [
            asyncio.create_task(self.discovery.worker(), name=f"intake-{i}")
            for i in range(_INTAKE_WORKERS)
        ]
        self._workers += source_workers
        self._workers.append(asyncio.create_task(self.dispatcher.loop(), name="dispatcher"))
        self._workers.append(asyncio.create_task(retention_loop(self.ctx), name="retention"))

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking documents, let in-flight work finish for `grace` seconds, persist the rest.

        Nothing is lost by stopping early: steps still polling resume on the next start, queued
        documents stay queued, undelivered results are delivered again.
        """
        if not self._started:
            return
        self._started = False
        self.discovery.accepting = False
        self.sources.stop_looking()
        grace = self.config.shutdown_grace if grace is None else grace
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for task in list(self._tasks):
            if task.get_name().startswith(_WAITER_PREFIXES):
                task.cancel()  # waiting for a file to settle or a twin: nothing in flight
        await self._drain(grace)
        await self.api_gate.close()
        with contextlib.suppress(Exception):
            await self.journal.save_latencies(self.latency.export())
        await self.rate_memory.record(self.journal)  # where the next start resumes from
        with contextlib.suppress(Exception):
            # A stopped engine pauses nothing: `status` must not go on saying it does.
            await self.journal.record_api_pause(None)
        for client, http in [*self._old_clients, (self.ctx.client, self._http)]:
            if client is not None:
                await client.close()
            if http is not None:
                await http.aclose()
        await self.pipeline_set.close()
        await self.sources.close()
        call_observers(self.pm, "shutdown", config=self.config)
        await self.journal.close()
        self._lock.release()

    async def _drain(self, grace: float) -> None:
        """Let running work finish for `grace` seconds (or until `hurry`), then cancel it."""
        deadline = time.monotonic() + grace
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            log.info("engine_draining", tasks=len(pending), grace_s=grace)
        # Finishing work spawns more (a document found a twin done), so wait in rounds.
        hurry = asyncio.ensure_future(self._hurry.wait())
        while pending and not self._hurry.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.wait(pending | {hurry}, timeout=remaining, return_when="FIRST_COMPLETED")
            pending = {t for t in self._tasks if not t.done()}
        hurry.cancel()
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.info("engine_persisted_in_flight", tasks=len(pending))

    async def reload(self, config: Config) -> list[str]:
        """Apply a new configuration without dropping in-flight documents; returns the changes.

        Added pipelines start taking files; removed ones stop taking files but finish what they
        have; changed ones take new files with the new settings (documents already submitted
        finish under the settings they started with). API limits apply at once. The state
        directory cannot change while running (the journal is open): that needs a restart.
        """
        ctx = self.ctx
        changes: list[str] = []
        if absolute(config.state_dir) != absolute(self.config.state_dir):
            changes.append("state_dir: ignored until restart (the journal is open)")
            config = config.model_copy(update={"state_dir": self.config.state_dir})
        if config.api != self.config.api:
            self.limits.reconfigure(config)
            self.rate_memory.base_url = config.api.resolved_base_url(self._environ)
            old_api = self.config.api
            connection = ("base_url", "api_key", "api_key_file", "timeout", "max_retries")
            if any(getattr(old_api, f) != getattr(config.api, f) for f in connection):
                api_key = api_key_of(config, self._environ)
                if not api_key:
                    raise MissingApiKeyError("the new configuration has no API key")
                # In-flight requests keep the old client; it is closed at shutdown.
                self._old_clients.append((ctx.client, self._http))
                ctx.config = config
                self._build_client(api_key)
            changes.append("api")
        ctx.config = config
        changes += await self.pipeline_set.apply(config)
        await self.sources.sync()
        self.api_gate.reset()  # maybe a new key or step id: try again at once
        log.info("config_reloaded", changes=changes)
        return changes

    # -- building ------------------------------------------------------------------------------

    def _build_client(self, api_key: str) -> None:
        client, http = build_client(
            self.config,
            api_key=api_key,
            base_url=self.config.api.resolved_base_url(self._environ),
            rate=self.limiter,
            metrics=self.metrics,
            transport=self._transport,
            retry_filter=self._client_may_retry,
        )
        self.ctx.client, self._http = client, http

    def _client_may_retry(self, exc: BaseException) -> bool:
        """What the engine's client may retry on its own. Not a 429: the shared rate already
        learned from it (the response hook) and `engine.errors.classify` pauses every request
        at the gate for its Retry-After, so the client retrying that one request as well would
        be a third layer. Not a connection never made while the API is already known to be
        unreachable: the request waits at the gate at once (its probe tells when the API is
        back) instead of retrying on its own first. Everything else keeps the client's rules."""
        if isinstance(exc, RateLimitError):
            return False
        if self.api_gate.unreachable is None or not isinstance(exc, DocuTrayError):
            return True
        return classify(exc, stage="poll") is not Failure.UNREACHABLE

    # -- resume --------------------------------------------------------------------------------

    async def resume_requeued(self) -> int:
        """Pick up documents requeued in the journal by `docutray-watch retry` meanwhile."""
        return await self._resume(only_new=True)

    async def _resume(self, *, only_new: bool = False) -> int:
        """Pick up every unfinished document of the journal where it stopped."""
        ctx = self.ctx
        resumed = Counter[str]()
        for doc in await self.journal.unfinished_documents():
            if only_new and doc.id in ctx.documents.active:
                continue
            if doc.pipeline not in ctx.pipelines:
                log.warning("document_pipeline_missing", pipeline=doc.pipeline, doc=doc.name)
                continue
            ctx.documents.remember(doc)
            resumed[doc.state] += 1
            if doc.state == DocumentState.DISCOVERED and self.sources.handles(doc.pipeline):
                self._spawn(self.sources.inspect(doc), f"inspect:{doc.name}", doc)
            elif doc.state == DocumentState.DISCOVERED:
                self._spawn(self.discovery.inspect(doc), f"inspect:{doc.name}", doc)
            elif doc.state == DocumentState.QUEUED:
                self.dispatcher.queued(doc, None)
            elif doc.state in (DocumentState.SUBMITTING, DocumentState.POLLING):
                self.dispatcher.resume_executions(doc, await self.journal.steps_of(doc.id))
            else:  # completed: deliveries, then the file action; others: only the file action
                if doc.state == DocumentState.COMPLETED:
                    ctx.documents.in_progress[(doc.pipeline, doc.sha256 or "")] = asyncio.Event()
                self.dispatcher.to_the_end(doc)
        if resumed:
            log.info("journal_resumed", **{str(state): n for state, n in resumed.items()})
        return sum(resumed.values())

    # -- tasks -----------------------------------------------------------------------------------

    def _spawn(
        self, coro: Coroutine[object, object, object], name: str, doc: DocumentRow | None
    ) -> asyncio.Task[object]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, doc))
        return task

    def _task_done(self, task: asyncio.Task[object], doc: DocumentRow | None) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # Tasks handle their own errors; reaching here is a bug. Say so loudly, and let go of the
        # document so nothing waits for it forever: it stays unfinished in the journal and is
        # picked up again at the next start.
        exc = task.exception()
        log.error(
            "engine_task_crashed",
            task=task.get_name(),
            error=describe(exc or Exception()),
            exc_info=exc,
        )
        if doc is not None:
            self.ctx.documents.forget(doc)

    async def prune_journal(self, older_than_days: float) -> retention.PruneResult:
        """Forget documents that finished more than `older_than_days` days ago."""
        return await prune_journal(self.ctx, older_than_days)

    # -- API pauses ------------------------------------------------------------------------------

    async def _probe_api(self) -> Failure | None:
        """A free request that proves the key works and the API answers (see `engine.gate`)."""
        client = self.ctx.client
        if client is None:
            return Failure.UNREACHABLE
        try:
            await client.steps.get_status(PROBE_EXECUTION_ID)
        except NotFoundError:
            return None  # authenticated, then not found: exactly what a working key gets
        except DocuTrayError as exc:
            return classify(exc, stage="poll")
        return None

    def _pause_changed(self) -> None:
        """A pause started or ended: that is progress (for the watchdog), and `status` is told."""
        self.ctx.documents.progress()
        reasons = "; ".join(self.api_gate.reasons()) or None
        if self._started:
            task = asyncio.ensure_future(self.journal.record_api_pause(reasons))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
