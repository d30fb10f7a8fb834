"""The engine: every document from its folder to its sinks and its final place, nothing lost.

For each document the engine runs every configured step: it journals the intent, submits the file
(streamed), stores the execution id, polls (learned schedule, see `polling`), journals the result,
delivers one `ResultRecord` per step to every sink of the pipeline (each delivery its own journal
row and retries), and finally moves, deletes or keeps the source file. All pipelines share one
limit of executions in flight (`api.max_in_flight`) and one request rate (`api.requests_per_second`)
that a 429 answer slows down for everyone.

Hooks fire in this order for a document (`startup` before the first, `shutdown` after the last)::

    ignore_document            a candidate file's name passed the include/ignore rules
    document_discovered        the file is complete, hashed, checked and journaled
    before_document_submit     for each step, just before its submission (may add metadata)
    after_document_result      for each step, once its SUCCESS/ERROR result is journaled
    after_document_delivered   for each result and sink, once the sink stored it
    on_document_error          whenever the document is rejected or fails (then no more results)
    after_document_archived    last: the source file was moved, deleted or kept (or, outcome
                               `superseded`, left alone: it changed and is taken again)

A duplicate goes from `document_discovered` straight to `after_document_archived`; a rejected file
from `document_discovered` (or before, when it cannot be read) to `on_document_error` and then
`after_document_archived`.

A file that changes while it is processed is never archived under results that describe other
bytes: its identity (size, mtime, ctime, inode; hashed again when any differs) is checked once
every step has ended, before anything is delivered, and again just before the final action. A
change found there delivers nothing more, ends the document `superseded` (its delivered results
are marked so) and takes the file again as a new document — or, with `on_change: fail`, fails it.

Crash safety (design §5): after a restart, steps in `polling` resume polling their execution id
and are never resubmitted; steps caught in `submitting` are resubmitted at most once (and the
document is flagged `resubmitted`); deliveries not yet journaled are delivered again (sinks are
idempotent); interrupted moves are completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookiejar import Cookie, CookieJar
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pluggy
import structlog
import tenacity
from structlog.typing import FilteringBoundLogger

from docutray_watch import archive, intake, retention
from docutray_watch.api_gate import PROBE_EXECUTION_ID, ApiGate
from docutray_watch.client import (
    AiohttpTransport,
    AsyncClient,
    DocuTrayError,
    InvalidDocumentError,
    NotFoundError,
    RateLimitError,
    RetryInfo,
    rate_limit_wait,
)
from docutray_watch.config import Config, PipelineConfig, api_key_of, same_settings
from docutray_watch.delivery import DeliveryGaveUp, SinkRunner, describe
from docutray_watch.engine_errors import Failure, classify
from docutray_watch.journal import (
    REQUEST_RATE_KEY,
    Completion,
    DocumentRow,
    NewDocument,
    SqliteStore,
    StateStore,
    StepRow,
    kept_stamp,
)
from docutray_watch.metrics import Metrics
from docutray_watch.plugins import SinkType, call_first, call_observers, collect_sink_types
from docutray_watch.polling import LatencyModel, PollSchedule, probe_schedule
from docutray_watch.ratelimit import RateLimiter
from docutray_watch.records import Document, ResultRecord
from docutray_watch.sinks.base import Sink, SinkConfig
from docutray_watch.statelock import StateLock
from docutray_watch.templates import metadata_context, render

__all__ = ["Engine", "MissingApiKeyError", "RunSummary", "StateDirError"]

log = structlog.get_logger(__name__)

_TERMINAL = frozenset({"SUCCESS", "ERROR"})
_SUBMIT_BACKOFF_MAX = 60.0
_SUMMARY_KEEP = 10_000
T = TypeVar("T")

# Tasks that only wait (for a file to settle, for a twin document) are cancelled at once on stop.
_WAITER_PREFIXES = ("settle:", "twin:")
PRUNE_INTERVAL = 86_400.0  # journal retention runs at start and then daily
INTAKE_BATCH = 64  # files an intake worker takes from the queue at once (hashed, journaled)
INTAKE_BATCH_BYTES = 8 * 1024 * 1024  # ... of at most this many bytes to read, past the first


class MissingApiKeyError(Exception):
    """No API key in the config, its key file or $DOCUTRAY_API_KEY."""


class StateDirError(Exception):
    """The journal in `state_dir` cannot be opened (not creatable, not a database, locked…)."""


@dataclass
class RunSummary:
    """What happened to the documents finished since the engine started."""

    outcomes: Counter[str] = field(default_factory=Counter)
    # The most recent ones only: a daemon runs for months (the journal keeps everything).
    failures: deque[tuple[str, str, str]] = field(  # (pipeline, where the file is now, reason)
        default_factory=lambda: deque(maxlen=_SUMMARY_KEEP)
    )
    ignored: deque[tuple[str, str, str]] = field(  # (pipeline, path, rule)
        default_factory=lambda: deque(maxlen=_SUMMARY_KEEP)
    )

    @property
    def failed(self) -> int:
        """Documents that failed or were rejected."""
        return self.outcomes["failed"] + self.outcomes["rejected"]


def _fixed_rate(config: Config) -> float | None:
    rate = config.api.requests_per_second
    return None if rate == "auto" else rate


def _limiter_of(config: Config) -> RateLimiter:
    """`api.requests_per_second`: a fixed rate, or learned from the service's 429s (auto)."""
    rate = _fixed_rate(config)
    if rate is None:
        return RateLimiter.adaptive_rate(max_rate=config.api.max_requests_per_second)
    return RateLimiter(rate)


async def _rate_slot(limiter: RateLimiter, request: httpx.Request) -> None:
    """Wait for the request's turn in the shared rate: a submission (new work) lets status reads
    of executions already running go first (see `RateLimiter.acquire`)."""
    await limiter.acquire(yield_to_others=request.method == "POST")


class _NoCookies(CookieJar):
    """The engine's HTTP client keeps no cookies: the API authenticates with a bearer key, and
    httpx parses every response's headers into a cookie jar otherwise (~0.1 ms per request)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        """Ignore Set-Cookie."""

    def set_cookie(self, cookie: Cookie) -> None:
        """Keep nothing."""


class _Slots:
    """Executions in flight: a counting semaphore that resumed work may overfill."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._changed = asyncio.Condition()

    async def resize(self, capacity: int) -> None:
        async with self._changed:
            self.capacity = capacity
            self._changed.notify_all()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used < self.capacity)
            self.used += 1

    def take(self) -> None:
        self.used += 1

    async def release(self) -> None:
        async with self._changed:
            self.used -= 1
            self._changed.notify_all()


@dataclass
class _Pipeline:
    config: PipelineConfig
    sinks: dict[str, SinkRunner]
    root: Path
    retired: bool = False  # removed by a reload: finishes its documents, takes no new ones


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Unreadable:
    """Why a file could not be hashed; `forget`: it is gone or still changing (not a failure)."""

    reason: str
    forget: bool = False


def _document_of(row: DocumentRow) -> Document:
    return Document(
        name=row.name,
        path=row.path,
        relative_path=row.relative_path,
        sha256=row.sha256 or "",
        size=row.size or 0,
        content_type=row.content_type or "application/octet-stream",
    )


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


class Engine:
    """Processes the documents of every pipeline of a `Config` (see the module docstring)."""

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
        self.config = config
        self.pm = plugin_manager
        self.metrics = metrics or Metrics()
        self.summary = RunSummary()
        self._transport = transport
        self._environ = environ if environ is not None else dict(os.environ)
        self.journal: StateStore = store if store is not None else SqliteStore(config.journal_path)
        self._lock = StateLock(config.state_dir)
        self.latency = LatencyModel()
        self.limiter = _limiter_of(config)
        self.metrics.request_rate.set_function(lambda: self.limiter.rate)
        self._recorded_rate: str | None = None  # what `record_request_rate` last stored
        self._slots = _Slots(config.api.max_in_flight)
        self._pipelines: dict[str, _Pipeline] = {}
        self._sink_types: dict[str, SinkType] = {}
        self._client: AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._old_clients: list[tuple[AsyncClient | None, httpx.AsyncClient | None]] = []
        self._retired_runners: list[SinkRunner] = []
        self._candidates: asyncio.Queue[tuple[str, intake.Candidate]] = asyncio.Queue()
        self._ready: asyncio.Queue[int] = asyncio.Queue()
        self._nominated: set[tuple[str, str]] = set()
        # Per pipeline: the unfinished document of each path (work in hand), and for each file
        # kept where it was found (`on_success: keep`) only `kept_stamp(size, mtime_ns)`: one
        # int per file, however many months of kept files the folder holds.
        self._known: dict[str, dict[str, DocumentRow]] = {}
        self._kept: dict[str, dict[str, int]] = {}
        self._ignored: dict[tuple[str, str], tuple[int, int]] = {}
        self._closed: dict[tuple[str, str], int] = {}
        # Files an inotify watcher saw written to and not closed yet: (pipeline, path) → since
        # (monotonic). Not complete, whatever their age, for up to `watch.max_open_wait`.
        self._writing: dict[tuple[str, str], float] = {}
        self._settle_wake: dict[tuple[str, str], asyncio.Event] = {}
        self._hurry = asyncio.Event()
        self._active_sha: dict[tuple[str, str], asyncio.Event] = {}
        self._slot_freed: set[int] = set()  # step rows whose slot `_poll` gave back early
        self._docs: dict[int, DocumentRow] = {}
        # Step rows created when this engine queued a document, so its dispatch need not ask
        # the journal for them again (a document resumed or requeued has none here).
        self._queued_steps: dict[int, list[StepRow]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = False
        self._started = False
        self.last_progress = time.monotonic()
        # Shared pauses (key refused, API unreachable, 429, a pipeline's step refused).
        self.api_gate = ApiGate(
            probe=self._probe_api,
            probe_interval=config.api.pause_probe_interval,
            on_change=self._api_pause_changed,
        )
        self._pause_base: dict[int, float] = {}  # step row → api_gate.paused_seconds at start

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, resume: bool = True) -> None:
        """Open the journal and the sinks, resume unfinished work, start taking documents."""
        api_key = api_key_of(self.config, self._environ)
        if not api_key:
            raise MissingApiKeyError(
                "no API key: set api.api_key or api.api_key_file in the config, "
                "or DOCUTRAY_API_KEY in the environment"
            )
        self._sink_types = collect_sink_types(self.pm)
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
        await self.journal.record_api_pause(None)  # a pause recorded by an earlier run is over
        self._build_client(api_key)
        for pipeline in self.config.pipelines:
            self._pipelines[pipeline.name] = self._build_pipeline(pipeline)
            self._known[pipeline.name] = await self.journal.unfinished_by_path(pipeline.name)
            self._kept[pipeline.name] = await self.journal.kept_stamps(pipeline.name)
        for runtime in self._pipelines.values():
            for runner in runtime.sinks.values():
                await self._open_sink(runner)
        self._accepting = True
        self._started = True
        call_observers(self.pm, "startup", config=self.config)
        if resume:
            await self._resume()
        self._workers = [
            asyncio.create_task(self._intake_worker(), name=f"intake-{i}") for i in range(2)
        ]
        self._workers.append(asyncio.create_task(self._dispatcher(), name="dispatcher"))
        self._workers.append(asyncio.create_task(self._retention_loop(), name="retention"))

    async def _retention_loop(self) -> None:
        """Forget long-finished documents at start and then every PRUNE_INTERVAL seconds."""
        while True:
            days = self.config.journal.retention_days
            if days is not None:
                try:
                    await self.prune_journal(days)
                except Exception as exc:  # noqa: BLE001 - retention must never stop the engine
                    log.error("journal_prune_failed", error=describe(exc))
            await asyncio.sleep(PRUNE_INTERVAL)

    async def prune_journal(self, older_than_days: float) -> retention.PruneResult:
        """Forget documents that finished more than `older_than_days` days ago."""
        started = time.monotonic()
        result = await asyncio.to_thread(
            retention.prune_journal_file,
            self.config.journal_path,
            older_than_days=older_than_days,
        )
        for pipeline, path, _doc_id in result.forgotten_kept:
            # The kept file is gone: a new file there is a new document. (Checked again: one
            # kept there since the prune read its rows stays remembered.)
            if not _exists(Path(path)):
                self._kept.get(pipeline, {}).pop(path, None)
        log.info(
            "journal_pruned",
            forgotten=result.forgotten,
            kept_in_place=result.kept_in_place,
            retention_days=older_than_days,
            duration_s=round(time.monotonic() - started, 3),
        )
        return result

    def _build_client(self, api_key: str) -> None:
        timeout = self.config.api.timeout
        limiter, metrics = self.limiter, self.metrics

        async def before_request(request: httpx.Request) -> None:
            await _rate_slot(limiter, request)
            request.extensions["docutray_watch_started"] = time.monotonic()

        async def after_response(response: httpx.Response) -> None:
            started = response.request.extensions.get("docutray_watch_started")
            if started is not None:
                metrics.api_latency.labels(
                    response.request.method, str(response.status_code)
                ).observe(time.monotonic() - started)
            if response.status_code == 429:
                metrics.rate_limited.inc()
                wait = await _rate_limit_wait(response)
                limiter.throttled(wait if wait is not None else 1.0, sent_at=started)
            else:
                limiter.accepted(sent_at=started)

        connections = max(8, min(self.config.api.max_in_flight, 256))
        http_timeout = httpx.Timeout(
            connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool
        )
        self._http = httpx.AsyncClient(
            timeout=http_timeout,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            event_hooks={"request": [before_request], "response": [after_response]},
            cookies=_NoCookies(),
            # aiohttp underneath: a third of httpcore's CPU per request (docs/performance.md)
            transport=self._transport or AiohttpTransport(max_connections=connections),
        )

        def on_retry(info: RetryInfo) -> None:
            metrics.api_retries.labels(info.method, info.reason).inc()

        self._client = AsyncClient(
            api_key=api_key,
            base_url=self.config.api.resolved_base_url(self._environ),
            max_retries=self.config.api.max_retries,
            # Each request carries the client's timeout, which wins over the pool's: pass it on.
            timeout=http_timeout,
            http_client=self._http,
            on_retry=on_retry,
        )

    def _build_pipeline(
        self,
        pipeline: PipelineConfig,
        reuse: _Pipeline | None = None,
        replacements: list[tuple[SinkRunner, Sink[Any], SinkConfig, str]] | None = None,
    ) -> _Pipeline:
        """The runtime of a pipeline. On reload (`reuse`), a sink whose settings did not change
        keeps its runner and instance; a changed one keeps its runner, and the new instance to
        hand it over to is added to `replacements` (so old and new never overlap)."""
        runners: dict[str, SinkRunner] = {}
        for sink_config in pipeline.sinks:
            assert sink_config.id is not None
            previous = reuse.sinks.get(sink_config.id) if reuse is not None else None
            if previous is None and reuse is not None:
                previous = self._unretire_runner(pipeline.name, sink_config.id)
            if previous is not None and same_settings(previous.config, sink_config):
                runners[sink_config.id] = previous  # unchanged: keep it open
                continue
            sink_type = self._sink_types[sink_config.type]
            sink = sink_type.sink_class(sink_config, pipeline=pipeline.name, sink_id=sink_config.id)
            if previous is not None and replacements is not None:
                replacements.append((previous, sink, sink_config, sink_type.plugin))
                runners[sink_config.id] = previous
            else:
                runners[sink_config.id] = SinkRunner(
                    sink, sink_config, pipeline=pipeline.name, plugin=sink_type.plugin
                )
        return _Pipeline(
            config=pipeline, sinks=runners, root=Path(os.path.abspath(pipeline.watch.path))
        )

    def _unretire_runner(self, pipeline: str, sink_id: str) -> SinkRunner | None:
        """A runner a reload removed may still deliver; a sink id coming back takes it over."""
        for runner in self._retired_runners:
            if runner.pipeline == pipeline and runner.sink_id == sink_id:
                self._retired_runners.remove(runner)
                return runner
        return None

    async def _open_sink(self, runner: SinkRunner) -> None:
        try:
            await runner.open()
        except Exception as exc:  # noqa: BLE001 - any plugin error; the sink retries later
            # A sink that cannot open now is retried at each delivery; the others go on.
            log.error(
                "sink_open_failed",
                pipeline=runner.pipeline,
                sink=runner.sink_id,
                plugin=runner.plugin,
                error=runner.explain(exc),
            )

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking documents, let in-flight work finish for `grace` seconds, persist the rest.

        Nothing is lost by stopping early: steps still polling resume on the next start, queued
        documents stay queued, undelivered results are delivered again.
        """
        if not self._started:
            return
        self._started = False
        self._accepting = False
        grace = self.config.shutdown_grace if grace is None else grace
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for task in list(self._tasks):
            if task.get_name().startswith(_WAITER_PREFIXES):
                task.cancel()  # waiting for a file to settle or a twin: nothing in flight
        deadline = time.monotonic() + grace
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            log.info("engine_draining", tasks=len(pending), grace_s=grace)
        # Finishing work spawns more (a result leads to deliveries), so wait in rounds.
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
        await self.api_gate.close()
        with contextlib.suppress(Exception):
            await self.journal.save_latencies(self.latency.export())
        with contextlib.suppress(Exception):
            # A stopped engine pauses nothing: `status` must not go on saying it does.
            await self.journal.record_api_pause(None)
        for client, http in [*self._old_clients, (self._client, self._http)]:
            if client is not None:
                await client.close()
            if http is not None:
                await http.aclose()
        runners = [r for runtime in self._pipelines.values() for r in runtime.sinks.values()]
        for runner in [*runners, *self._retired_runners]:
            try:
                await runner.close()
            except Exception as exc:  # noqa: BLE001 - one sink's close must not stop the others
                log.warning("sink_close_failed", sink=runner.sink_id, error=describe(exc))
        call_observers(self.pm, "shutdown", config=self.config)
        await self.journal.close()
        self._lock.release()

    async def reload(self, config: Config) -> list[str]:
        """Apply a new configuration without dropping in-flight documents; returns the changes.

        Added pipelines start taking files; removed ones stop taking files but finish what they
        have; changed ones take new files with the new settings (documents already submitted
        finish under the settings they started with). API limits apply at once. The state
        directory cannot change while running (the journal is open): that needs a restart.
        """
        changes: list[str] = []
        if _absolute(config.state_dir) != _absolute(self.config.state_dir):
            changes.append("state_dir: ignored until restart (the journal is open)")
            config = config.model_copy(update={"state_dir": self.config.state_dir})
        if config.api != self.config.api:
            self.limiter.configure(_fixed_rate(config), config.api.max_requests_per_second)
            await self._slots.resize(config.api.max_in_flight)
            old_api = self.config.api
            connection = ("base_url", "api_key", "api_key_file", "timeout", "max_retries")
            if any(getattr(old_api, f) != getattr(config.api, f) for f in connection):
                api_key = api_key_of(config, self._environ)
                if not api_key:
                    raise MissingApiKeyError("the new configuration has no API key")
                # In-flight requests keep the old client; it is closed at shutdown.
                self._old_clients.append((self._client, self._http))
                self.config = config
                self._build_client(api_key)
            changes.append("api")
        self.config = config
        for pipeline in config.pipelines:
            current = self._pipelines.get(pipeline.name)
            if (
                current is not None
                and not current.retired
                and same_settings(current.config, pipeline)
            ):
                continue
            replacements: list[tuple[SinkRunner, Sink[Any], SinkConfig, str]] = []
            runtime = self._build_pipeline(pipeline, reuse=current, replacements=replacements)
            await asyncio.gather(
                *(
                    runner.replace(sink, cfg, plugin=plugin)
                    for runner, sink, cfg, plugin in replacements
                )
            )
            for runner in runtime.sinks.values():
                if not runner.opened:
                    await self._open_sink(runner)
            if current is not None:
                self._retired_runners.extend(
                    r for r in current.sinks.values() if r not in runtime.sinks.values()
                )
            self._pipelines[pipeline.name] = runtime
            if pipeline.name not in self._known:
                self._known[pipeline.name] = await self.journal.unfinished_by_path(pipeline.name)
                self._kept[pipeline.name] = await self.journal.kept_stamps(pipeline.name)
            changes.append(
                f"{'changed' if current and not current.retired else 'added'} "
                f"pipeline {pipeline.name}"
            )
        names = {p.name for p in config.pipelines}
        for name, runtime in self._pipelines.items():
            if name not in names and not runtime.retired:
                runtime.retired = True
                changes.append(f"removed pipeline {name}")
        self.api_gate.reset()  # maybe a new key or step id: try again at once
        log.info("config_reloaded", changes=changes)
        return changes

    @property
    def pipelines(self) -> dict[str, PipelineConfig]:
        """The active (not retired) pipelines."""
        return {n: r.config for n, r in self._pipelines.items() if not r.retired}

    def hurry(self) -> None:
        """Cut the shutdown grace period short (a second SIGTERM): persist in-flight work now."""
        self._hurry.set()

    async def wait_idle(self) -> None:
        """Wait until every nominated or resumed document has reached its end."""
        await self._idle.wait()

    @property
    def in_flight(self) -> int:
        """Executions submitted (or being submitted) and not finished."""
        return self._slots.used

    @property
    def outstanding(self) -> int:
        """Documents (or candidate files) not finished yet."""
        return self._outstanding

    @property
    def queue_depth(self) -> int:
        """Documents waiting for a free execution slot."""
        return self._ready.qsize()

    def api_state(self) -> str:
        """One word for dashboards: the API gate's (`key_refused`, `unreachable`, `paused`,
        `ok`), or `paused` while the rate limiter holds every request for a 429."""
        state = self.api_gate.state()
        if state == "ok" and self.limiter.paused_until > time.monotonic():
            return "paused"
        return state

    def request_rate(self) -> dict[str, Any]:
        """The shared request rate now: what `status` shows."""
        limiter = self.limiter
        return {
            "mode": "auto" if limiter.adaptive else "fixed",
            "requests_per_second": round(limiter.rate, 2),
            "slow_start": limiter.slow_start,
            "decreases": limiter.decreases,
            "max_requests_per_second": limiter.max_rate,
        }

    async def record_request_rate(self) -> None:
        """Store the current rate in the journal for `status` (when it changed since the last
        time; the daemon calls this every few seconds). A failed write is only logged."""
        value = json.dumps(self.request_rate(), sort_keys=True)
        if value == self._recorded_rate or not self._started:
            return
        try:
            await self.journal.set_meta(REQUEST_RATE_KEY, value)
        except (sqlite3.Error, RuntimeError) as exc:
            log.warning("request_rate_not_recorded", error=f"{type(exc).__name__}: {exc}")
            return
        self._recorded_rate = value

    def _work_started(self) -> None:
        self._outstanding += 1
        self._idle.clear()

    def _work_done(self) -> None:
        self._outstanding -= 1
        self.last_progress = time.monotonic()
        if self._outstanding <= 0:
            self._outstanding = 0
            self._idle.set()

    def _spawn(
        self, coro: Awaitable[Any], name: str, doc: DocumentRow | None = None
    ) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, doc))
        return task

    def _task_done(self, task: asyncio.Task[Any], doc: DocumentRow | None) -> None:
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
            self._forget(doc)

    # -- intake ------------------------------------------------------------------------------

    async def scan(self, pipeline: str | None = None) -> int:
        """Nominate every file in the watched folder(s); returns how many were nominated."""
        count = 0
        for runtime in list(self._pipelines.values()):
            if runtime.retired or (pipeline is not None and runtime.config.name != pipeline):
                continue
            queue: asyncio.Queue[list[tuple[intake.Candidate, os.stat_result]] | None]
            queue = asyncio.Queue(maxsize=4)
            loop = asyncio.get_running_loop()

            kept = self._kept.get(runtime.config.name, {})

            def known(path: str, st: os.stat_result, kept: dict[str, int] = kept) -> bool:
                # A file kept in place and unchanged since: left out in the walking thread, so a
                # folder of 100,000 kept files costs a dict lookup each. (Read while the event
                # loop may update it: a stamp leaves the dict only once its file is gone or
                # changed, so a stale read never hides a new file.)
                return kept.get(path) == kept_stamp(st.st_size, st.st_mtime_ns)

            def walk(
                loop: asyncio.AbstractEventLoop = loop,
                root: Path = runtime.root,
                recursive: bool = runtime.config.watch.recursive,
                q: asyncio.Queue[Any] = queue,
            ) -> None:
                batch: list[tuple[intake.Candidate, os.stat_result]] = []
                for item in intake.scan_folder(root, recursive=recursive, skip=known):
                    batch.append(item)
                    if len(batch) >= 256:
                        asyncio.run_coroutine_threadsafe(q.put(batch), loop).result()
                        batch = []
                asyncio.run_coroutine_threadsafe(q.put(batch), loop).result()
                asyncio.run_coroutine_threadsafe(q.put(None), loop).result()

            walker = asyncio.ensure_future(asyncio.to_thread(walk))
            while (batch := await queue.get()) is not None:
                for candidate, st in batch:
                    if self.nominate(
                        runtime.config.name,
                        candidate.path,
                        st=st,
                        relative_path=candidate.relative_path,
                    ):
                        count += 1
            await walker
        return count

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
        """Offer a file to a pipeline (from a scan or a file-system event); True if taken up.

        `closed` says a close-after-write event was seen for it: the writer is done, so the file
        need not sit unchanged for `settle` seconds first. `writing` says data was written to it
        and no close-after-write followed yet: a writer has it open, so it is not complete.
        """
        if not self._accepting or pipeline not in self._pipelines:
            return False
        runtime = self._pipelines[pipeline]
        if runtime.retired:
            return False
        absolute = os.path.abspath(path)
        if not isinstance(path, Path) or str(path) != absolute:  # a scan's paths already are
            path = Path(absolute)
        marker = runtime.config.watch.ready_marker
        if marker and path.name.endswith(marker) and len(path.name) > len(marker):
            # The marker arrived: its document is ready now.
            path = path.with_name(path.name[: -len(marker)])
            relative_path = relative_path[: -len(marker)] if relative_path else None
            st = None
        if relative_path is None:
            try:
                relative_path = path.relative_to(runtime.root).as_posix()
            except ValueError:
                return False
            if "/" in relative_path and not runtime.config.watch.recursive:
                return False
        key = (pipeline, str(path))
        rule = intake.rule_for_name(runtime.config, relative_path)
        if rule is not None:
            return False
        if writing:
            self._writing.setdefault(key, time.monotonic())
        elif closed:
            self._writing.pop(key, None)
        if key in self._nominated:
            if closed:
                self._closed_while_waiting(key, path)
            return False
        if st is None:
            try:
                st = path.lstat()
            except OSError:
                return False
        if key[1] in self._known[pipeline]:
            return False  # in progress
        if self._kept[pipeline].get(key[1]) == kept_stamp(st.st_size, st.st_mtime_ns):
            return False  # this very file was already handled (kept in place)
        kind = intake.rule_for_kind(st.st_mode)
        if kind is not None:
            self._note_ignored(pipeline, path, st, kind)
            return False
        if closed:
            self._closed[key] = st.st_mtime_ns
        self._nominated.add(key)
        self._work_started()
        self._candidates.put_nowait((pipeline, intake.Candidate(path, relative_path)))
        return True

    def _closed_while_waiting(self, key: tuple[str, str], path: Path) -> None:
        """A file waiting to be complete was closed after writing: take it now."""
        try:
            self._closed[key] = path.lstat().st_mtime_ns
        except OSError:
            return
        wake = self._settle_wake.get(key)
        if wake is not None:
            wake.set()

    def _note_ignored(self, pipeline: str, path: Path, st: os.stat_result, rule: str) -> None:
        key = (pipeline, str(path))
        stamp = (st.st_mtime_ns, st.st_ino)
        if self._ignored.get(key) != stamp:
            self._ignored[key] = stamp
            self.summary.ignored.append((pipeline, str(path), rule))
            log.info("file_ignored", pipeline=pipeline, doc=path.name, path=str(path), rule=rule)

    async def _intake_worker(self) -> None:
        # Files waiting are taken a batch at a time: hashed in one worker-thread trip and
        # journaled in one transaction (a backlog of 20,000 files would otherwise cost two
        # thread trips and a commit each). A lone file is a batch of one: no waiting for more.
        while True:
            batch = [await self._candidates.get()]
            while len(batch) < INTAKE_BATCH and not self._candidates.empty():
                batch.append(self._candidates.get_nowait())
            ready: list[tuple[str, intake.Candidate, os.stat_result]] = []
            for pipeline, candidate in batch:
                try:
                    st = await self._ready_to_read(pipeline, candidate)
                except Exception as exc:  # noqa: BLE001 - one file never stops intake
                    self._intake_failed(pipeline, candidate, exc)
                    continue
                if st is not None:
                    ready.append((pipeline, candidate, st))
            for part in _by_volume(ready):
                try:
                    await self._take(part)
                except Exception as exc:  # noqa: BLE001 - one batch never stops intake
                    for pipeline, candidate, _st in part:
                        self._intake_failed(pipeline, candidate, exc)

    def _intake_failed(self, pipeline: str, candidate: intake.Candidate, exc: Exception) -> None:
        log.error(
            "intake_failed",
            pipeline=pipeline,
            path=str(candidate.path),
            error=describe(exc),
            exc_info=exc,
        )
        self._release_nomination(pipeline, candidate.path)  # a no-op once it was journaled

    def _release_nomination(self, pipeline: str, path: Path) -> None:
        if (pipeline, str(path)) in self._nominated:
            self._nominated.discard((pipeline, str(path)))
            self._work_done()

    async def _ready_to_read(
        self, pipeline: str, candidate: intake.Candidate
    ) -> os.stat_result | None:
        """The file's lstat when it is complete and no rule or plugin leaves it alone; None
        when it is not taken now (released, or waiting to settle)."""
        runtime = self._pipelines.get(pipeline)
        if runtime is None or not self._accepting:
            self._release_nomination(pipeline, candidate.path)
            return None
        path = candidate.path
        key = (pipeline, str(path))
        try:
            st = path.lstat()
        except FileNotFoundError:
            self._writing.pop(key, None)
            self._release_nomination(pipeline, path)
            return None
        watch = runtime.config.watch
        marker = watch.ready_marker
        if marker and not await asyncio.to_thread(os.path.lexists, f"{path}{marker}"):
            self._release_nomination(pipeline, path)  # the marker's arrival nominates it again
            return None
        closed = self._closed.pop(key, None) == st.st_mtime_ns
        since = None if closed else self._writing.get(key)
        if since is not None and watch.max_open_wait == 0:
            self._writing.pop(key, None)  # the wait is turned off: `settle` alone decides
        elif since is not None:
            waited = time.monotonic() - since
            if waited < watch.max_open_wait:
                # Written to and not closed yet: a writer has it open. Its close wakes the wait;
                # the periodic look only notices a file deleted or renamed meanwhile.
                wait = min(max(1.0, watch.settle), watch.max_open_wait - waited)
                self._spawn(self._recheck(pipeline, candidate, wait), name=f"settle:{path.name}")
                return None
            self._writing.pop(key, None)
            log.warning(
                "document_open_too_long",
                pipeline=pipeline,
                doc=path.name,
                path=str(path),
                open_s=round(waited, 1),
                note="written to and still not closed after watch.max_open_wait; taken as it is",
            )
        if not closed and not intake.is_settled(st, time.time_ns(), watch.settle):
            # Still being written (or just touched): look again once it could have settled.
            wait = max(0.05, watch.settle - (time.time_ns() - st.st_mtime_ns) / 1e9)
            self._spawn(self._recheck(pipeline, candidate, wait), name=f"settle:{path.name}")
            return None
        reason = call_first(self.pm, "ignore_document", pipeline=pipeline, path=path)
        if reason:
            self._note_ignored(pipeline, path, st, f"plugin: {reason}")
            self._release_nomination(pipeline, path)
            return None
        return st

    async def _take(self, batch: list[tuple[str, intake.Candidate, os.stat_result]]) -> None:
        """Hash a batch of complete files, then journal them.

        Hashed before they are journaled: the usual file is found and queued in one commit,
        shared with the rest of its batch. Until then its nomination holds its work unit; a crash
        meanwhile leaves nothing to resume, and the next scan finds the file again. A file that
        is rejected, a duplicate or unreadable is journaled on its own in two steps (it needs a
        row to explain itself).
        """
        reads = await asyncio.to_thread(_read_all, [candidate.path for _, candidate, _ in batch])
        plain: list[NewDocument] = []
        for (pipeline, candidate, _st), read in zip(batch, reads, strict=True):
            if isinstance(read, intake.FileFacts) and intake.rejection_for(read) is None:
                assert read.content_type is not None
                runtime = self._pipelines[pipeline]
                plain.append(
                    NewDocument(
                        pipeline=pipeline,
                        path=str(candidate.path),
                        relative_path=candidate.relative_path,
                        sha256=read.sha256,
                        content_type=read.content_type,
                        size=read.size,
                        mtime_ns=read.mtime_ns,
                        ctime_ns=read.ctime_ns,
                        inode=read.inode,
                        steps=runtime.config.steps,
                        skip_if_done=runtime.config.duplicates == "skip",
                    )
                )
        queued = iter(await self.journal.add_queued_batch(plain) if plain else [])
        for (pipeline, candidate, st), read in zip(batch, reads, strict=True):
            path = candidate.path
            if isinstance(read, intake.FileFacts) and intake.rejection_for(read) is None:
                done = next(queued)
                if done is not None:
                    # The document carries the work unit now.
                    self._nominated.discard((pipeline, str(path)))
                    await self._queued(done.document, done.steps)
                    continue
            doc = await self.journal.add_document(
                pipeline,
                str(path),
                candidate.relative_path,
                st.st_size,
                st.st_mtime_ns,
                ctime_ns=st.st_ctime_ns,
                inode=st.st_ino,
            )
            self._remember(doc)
            self._nominated.discard((pipeline, str(path)))  # the document carries the work unit
            await self._classify(doc, read)

    async def _recheck(self, pipeline: str, candidate: intake.Candidate, wait: float) -> None:
        key = (pipeline, str(candidate.path))
        wake = self._settle_wake.setdefault(key, asyncio.Event())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)
        finally:
            if self._settle_wake.get(key) is wake:
                del self._settle_wake[key]
        if self._accepting:
            await self._candidates.put((pipeline, candidate))
        else:
            self._release_nomination(pipeline, candidate.path)

    def _remember(self, doc: DocumentRow) -> None:
        self._docs[doc.id] = doc
        self._known.setdefault(doc.pipeline, {})[doc.path] = doc

    async def _read(self, path: Path) -> intake.FileFacts | _Unreadable:
        """Hash and sniff a file (in a thread); why not, when it cannot be read."""
        return await asyncio.to_thread(_read_one, path)

    async def _inspect(self, doc: DocumentRow) -> None:
        """Hash and check a journaled document again (resumed, or changed while queued)."""
        await self._classify(doc, await self._read(Path(doc.path)))

    async def _classify(self, doc: DocumentRow, read: intake.FileFacts | _Unreadable) -> None:
        """Queue, reject or mark duplicate a journaled document, from what reading it found."""
        runtime = self._pipelines[doc.pipeline]
        if isinstance(read, _Unreadable):
            await self._reject(doc, read.reason, forget=read.forget)
            return
        facts = read
        document = Document(
            name=doc.name,
            path=doc.path,
            relative_path=doc.relative_path,
            sha256=facts.sha256,
            size=facts.size,
            content_type=facts.content_type or "application/octet-stream",
        )
        rejection = intake.rejection_for(facts)
        if rejection is not None:
            doc = await self.journal.reject(
                doc.id,
                rejection,
                stage="intake",
                sha256=facts.sha256,
                content_type=facts.content_type,
            )
            self._docs[doc.id] = doc
            await self._finalize(doc, document)
            return
        assert facts.content_type is not None
        if runtime.config.duplicates == "skip":
            original = await self.journal.find_done_by_sha(
                doc.pipeline, facts.sha256, exclude=doc.id
            )
            if original is not None:
                doc = await self.journal.mark_duplicate(
                    doc.id, sha256=facts.sha256, content_type=facts.content_type, of=original.id
                )
                self._docs[doc.id] = doc
                call_observers(
                    self.pm, "document_discovered", pipeline=doc.pipeline, document=document
                )
                log.info(
                    "document_duplicate",
                    pipeline=doc.pipeline,
                    doc=doc.name,
                    doc_sha256=facts.sha256,
                    duplicate_of=original.path,
                )
                await self._finalize(doc, document)
                return
        doc, steps = await self.journal.mark_queued(
            doc.id,
            sha256=facts.sha256,
            content_type=facts.content_type,
            size=facts.size,
            mtime_ns=facts.mtime_ns,
            steps=runtime.config.steps,
            ctime_ns=facts.ctime_ns,
            inode=facts.inode,
        )
        await self._queued(doc, steps)

    async def _queued(self, doc: DocumentRow, steps: list[StepRow]) -> None:
        """A document was journaled `queued` (its row holds what hashing found): announce it
        and hand it to dispatch."""
        self._remember(doc)
        self._queued_steps[doc.id] = steps
        if self.pm.hook.document_discovered.get_hookimpls():  # the model only for a listener
            document = _document_of(doc)
            call_observers(self.pm, "document_discovered", pipeline=doc.pipeline, document=document)
        log.info(
            "document_discovered",
            pipeline=doc.pipeline,
            doc=doc.name,
            doc_sha256=doc.sha256,
            size=doc.size,
            content_type=doc.content_type,
        )
        await self._enqueue(doc)

    async def _enqueue(self, doc: DocumentRow) -> None:
        runtime = self._pipelines[doc.pipeline]
        key = (doc.pipeline, doc.sha256 or "")
        if runtime.config.duplicates == "skip" and key in self._active_sha:
            # Same content already in progress: wait for it, then decide (duplicate or retry).
            self._spawn(
                self._after_twin(doc, self._active_sha[key]), name=f"twin:{doc.name}", doc=doc
            )
            return
        self._active_sha[key] = asyncio.Event()
        self._ready.put_nowait(doc.id)
        self.metrics.queue_depth.labels(doc.pipeline).inc()

    async def _after_twin(self, doc: DocumentRow, event: asyncio.Event) -> None:
        await event.wait()
        original = await self.journal.find_done_by_sha(
            doc.pipeline, doc.sha256 or "", exclude=doc.id
        )
        if original is not None:
            await self.journal.mark_rediscovered(doc.id)
            doc = await self.journal.mark_duplicate(
                doc.id, sha256=doc.sha256 or "", content_type=doc.content_type or "", of=original.id
            )
            self._docs[doc.id] = doc
            await self._finalize(doc, _document_of(doc))
        else:
            await self._enqueue(doc)

    async def _reject(self, doc: DocumentRow, reason: str, *, forget: bool = False) -> None:
        if forget:
            # Nothing to move: the file is gone or still changing. Journal why, then let a later
            # scan take the path afresh.
            doc = await self.journal.reject(doc.id, reason, stage="intake")
            doc = await self.journal.finish(doc.id, None)
            log.info("document_dropped", pipeline=doc.pipeline, doc=doc.name, reason=reason)
            self._known[doc.pipeline].pop(doc.path, None)
            self._forget(doc)
            return
        doc = await self.journal.reject(doc.id, reason, stage="intake")
        self._docs[doc.id] = doc
        await self._finalize(doc, None)

    def _forget(self, doc: DocumentRow) -> None:
        """The engine is done with this document (for now); wake anyone waiting on its twin."""
        self._queued_steps.pop(doc.id, None)
        if self._docs.pop(doc.id, None) is None:
            return  # already forgotten: its work unit was released before
        event = self._active_sha.pop((doc.pipeline, doc.sha256 or ""), None)
        if event is not None:
            event.set()
        self._work_done()

    # -- resume ------------------------------------------------------------------------------

    async def resume_requeued(self) -> int:
        """Pick up documents requeued in the journal by `docutray-watch retry` meanwhile."""
        return await self._resume(only_new=True)

    async def _resume(self, *, only_new: bool = False) -> int:
        """Pick up every unfinished document of the journal where it stopped."""
        unfinished = await self.journal.unfinished_documents()
        resumed = Counter[str]()
        for doc in unfinished:
            if only_new and doc.id in self._docs:
                continue
            if doc.pipeline not in self._pipelines:
                log.warning("document_pipeline_missing", pipeline=doc.pipeline, doc=doc.name)
                continue
            self._work_started()
            self._remember(doc)
            resumed[doc.state] += 1
            if doc.state == "discovered":
                self._spawn(self._inspect(doc), name=f"inspect:{doc.name}", doc=doc)
            elif doc.state == "queued":
                await self._enqueue(doc)
            elif doc.state in ("submitting", "polling"):
                self._active_sha[(doc.pipeline, doc.sha256 or "")] = asyncio.Event()
                for step in await self.journal.steps_of(doc.id):
                    if step.finished:
                        continue
                    self._slots.take()
                    self.metrics.in_flight.inc()
                    self._spawn(
                        self._run_step(doc, step), name=f"step:{doc.name}:{step.step_id}", doc=doc
                    )
                # A step may have finished just before the crash, with the document not moved on.
                if all(s.finished for s in await self.journal.steps_of(doc.id)):
                    self._spawn(self._complete(doc.id), name=f"complete:{doc.name}", doc=doc)
            elif doc.state == "completed":
                self._active_sha[(doc.pipeline, doc.sha256 or "")] = asyncio.Event()
                self._spawn(self._complete(doc.id), name=f"deliver:{doc.name}", doc=doc)
            else:  # delivered, duplicate, failed, rejected, archived: only the file action is left
                self._spawn(
                    self._finalize(doc, _document_of(doc) if doc.sha256 else None),
                    name=f"finalize:{doc.name}",
                    doc=doc,
                )
        if resumed:
            log.info("journal_resumed", **{f"{state}": n for state, n in resumed.items()})
        return sum(resumed.values())

    # -- submission and polling --------------------------------------------------------------

    async def _dispatcher(self) -> None:
        while True:
            doc_id = await self._ready.get()
            try:
                await self._dispatch(doc_id)
            except Exception as exc:  # noqa: BLE001 - the dispatcher must outlive any failure
                # Typically the journal cannot be written (disk full). The document stays
                # unfinished in the journal; the daemon's periodic resume takes it up again.
                doc = self._docs.get(doc_id)
                log.error(
                    "dispatch_failed",
                    pipeline=doc.pipeline if doc else None,
                    doc=doc.name if doc else None,
                    error=describe(exc),
                )
                if doc is not None:
                    self._forget(doc)

    async def _dispatch(self, doc_id: int) -> None:
        """Give a queued document's unfinished steps a slot each (waiting for free ones)."""
        doc = self._docs.get(doc_id) or await self.journal.document(doc_id)
        self.metrics.queue_depth.labels(doc.pipeline).dec()
        configured = self._pipelines[doc.pipeline].config.steps
        all_steps = self._queued_steps.pop(doc_id, None)
        if all_steps is None or [s.step_id for s in all_steps] != list(configured):
            # Resumed, requeued, or the pipeline's steps changed (a reload) since it was queued.
            all_steps = await self.journal.ensure_steps(doc_id, configured)
        steps = [s for s in all_steps if not s.finished]
        if not steps:
            self._spawn(self._complete(doc_id), name=f"complete:{doc.name}", doc=doc)
            return
        fresh = all(s.state == "pending" and s.attempts == 0 for s in steps)
        for index, step in enumerate(steps):
            await self._slots.acquire()
            if fresh and index == 0:
                # Nothing submitted yet: a file replaced or deleted while queued (checked
                # once a slot is free, as the wait for one can be long) is simply taken
                # again from scratch (or dropped), never failed.
                # One lstat, inline like `_take`'s: cheaper than a trip to a thread.
                changed = self._source_changed(doc)
                if changed is not None:
                    await self._slots.release()
                    await self._requeue_changed(doc, changed)
                    break
            self.metrics.in_flight.inc()
            self._spawn(self._run_step(doc, step), name=f"step:{doc.name}:{step.step_id}", doc=doc)

    async def _run_step(self, doc: DocumentRow, step: StepRow) -> None:
        self._pause_base[step.id] = self.api_gate.paused_seconds(doc.pipeline)
        try:
            step = await self._submit(doc, step)
            if step.state == "polling":
                await self._poll(doc, step)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("step_crashed", pipeline=doc.pipeline, doc=doc.name, step_id=step.step_id)
            await self._step_failed(doc, step, f"internal error: {describe(exc)}", stage="submit")
        finally:
            if step.id in self._slot_freed:
                self._slot_freed.discard(step.id)
            else:
                await self._free_slot()
            self._pause_base.pop(step.id, None)
            self.last_progress = time.monotonic()

    async def _write_until_done(
        self, method: Callable[..., Awaitable[T]], *args: Any, doc: DocumentRow, what: str
    ) -> T:
        """A journal write that must not be lost, retried with backoff while SQLite refuses it."""

        def announce(state: tenacity.RetryCallState) -> None:
            assert state.outcome is not None
            assert state.next_action is not None
            log.error(
                "journal_write_retrying",
                pipeline=doc.pipeline,
                doc=doc.name,
                what=what,
                error=describe(state.outcome.exception() or Exception()),
                retry_in_s=state.next_action.sleep,
            )

        try:
            return await method(*args)
        except sqlite3.OperationalError:
            pass  # refused (disk full…): tried again at once, then with backoff, each announced
        # No stop: giving up would lose the write; shutdown cancels the wait instead.
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(sqlite3.OperationalError),
            wait=tenacity.wait_exponential(multiplier=0.5, max=30.0),
            before_sleep=announce,
            reraise=True,
        )
        result: T = await retrying(method, *args)
        return result

    async def _free_slot(self) -> None:
        self.metrics.in_flight.dec()
        await self._slots.release()

    def _deadline(self, doc: DocumentRow, step: StepRow) -> float:
        """When the step gives up: `poll.timeout` after its first try, plus the time the API
        was paused meanwhile (a refused key or an outage is not the document's fault)."""
        timeout = self._pipelines[doc.pipeline].config.poll.timeout
        paused = self.api_gate.paused_seconds(doc.pipeline)
        paused -= self._pause_base.setdefault(step.id, paused)
        return (step.first_try_at or time.time()) + timeout + paused

    async def _submit(self, doc: DocumentRow, step: StepRow) -> StepRow:
        """Submit until the service accepts the document; returns the step in `polling` or done."""
        if step.state == "polling":
            return step
        runtime = self._pipelines[doc.pipeline]
        assert self._client is not None
        if step.state == "submitting":
            # Interrupted while submitting (crash or hard stop): the outcome is unknown.
            step = await self.journal.step_uncertain(step.id, "interrupted while submitting")
        backoff = 1.0
        while True:
            await self._await_api(doc, submission=True)
            if step.uncertain >= 2:
                return await self._step_failed(
                    doc,
                    step,
                    "the outcome of two submissions is unknown; not submitting a "
                    "third time, to avoid paying twice (use `retry` to force)",
                    stage="submit",
                )
            changed = self._source_changed(doc)  # one lstat: inline, no thread trip
            if changed:
                return await self._step_failed(doc, step, changed, stage="submit")
            step = await self.journal.step_submitting(step.id)
            document = _document_of(doc)
            metadata = self._metadata(runtime.config, document, step.step_id)
            try:
                status = await self._client.steps.run_async(
                    step.step_id,
                    file=Path(doc.path),
                    content_type=doc.content_type,
                    document_metadata=metadata or None,
                    filename=doc.name,
                )
            except InvalidDocumentError as exc:
                return await self._step_failed(doc, step, str(exc), stage="submit")
            except FileNotFoundError:
                return await self._step_failed(
                    doc, step, "the file disappeared before it was uploaded", stage="submit"
                )
            except OSError as exc:
                return await self._step_failed(
                    doc,
                    step,
                    f"cannot read the file: {exc.strerror or describe(exc)}",
                    stage="submit",
                )
            except DocuTrayError as exc:
                failure = classify(exc, stage="submit")
                if failure is Failure.REJECTED:
                    return await self._step_failed(
                        doc,
                        step,
                        f"the service rejected the document: {describe(exc)}",
                        stage="submit",
                        http_status=getattr(exc, "status_code", None),
                    )
                if failure is Failure.UNCERTAIN:
                    step = await self.journal.step_uncertain(step.id, describe(exc))
                    log.warning(
                        "submission_uncertain",
                        pipeline=doc.pipeline,
                        doc=doc.name,
                        step_id=step.step_id,
                        error=describe(exc),
                        uncertain=step.uncertain,
                    )
                    continue
                step = await self.journal.step_not_accepted(step.id, describe(exc))
                if failure.pauses:
                    # Not this document's fault: wait at the gate (not counted against its
                    # deadline) instead of backing off towards a failure.
                    self._pause_api(failure, doc, exc)
                    continue
            else:
                # The service is running it now: losing its id would mean paying twice, so a
                # journal that cannot be written (disk full) is waited for, not given up on.
                step = await self._write_until_done(
                    self.journal.step_accepted,
                    step.id,
                    status.execution_id,
                    status.status,
                    doc=doc,
                    what=f"execution id {status.execution_id}",
                )
                self.api_gate.answered(doc.pipeline)
                self.metrics.submissions.labels(doc.pipeline).inc()
                log.info(
                    "document_submitted",
                    pipeline=doc.pipeline,
                    doc=doc.name,
                    doc_sha256=doc.sha256,
                    step_id=step.step_id,
                    execution_id=status.execution_id,
                )
                return step
            # Not accepted: wait and try again, until the step's deadline.
            if time.time() + backoff > self._deadline(doc, step):
                return await self._step_failed(
                    doc,
                    step,
                    f"could not submit within {runtime.config.poll.timeout:g} s "
                    f"(last error: {step.error})",
                    stage="submit",
                )
            await asyncio.sleep(backoff)
            backoff = min(_SUBMIT_BACKOFF_MAX, backoff * 2)

    async def _await_api(self, doc: DocumentRow, *, submission: bool = False) -> None:
        """Wait while the API is paused for this document's pipeline. A submission gives its
        execution slot back meanwhile (the other pipelines may use it); a status read keeps it
        (its execution is running at the service)."""
        gate = self.api_gate
        if gate.blocked(doc.pipeline) is None or not submission:
            await gate.wait_open(doc.pipeline, submission=submission)
            return
        await self._free_slot()
        try:
            await gate.wait_open(doc.pipeline, submission=True)
            await self._slots.acquire()
        except asyncio.CancelledError:
            self._slots.take()  # `_run_step` gives the slot back on its way out
            self.metrics.in_flight.inc()
            raise
        self.metrics.in_flight.inc()

    def _pause_api(self, failure: Failure, doc: DocumentRow, exc: DocuTrayError) -> None:
        """Tell the gate about a failure that pauses work (see `engine_errors`)."""
        retry_after = exc.retry_after if isinstance(exc, RateLimitError) else None
        status = getattr(exc, "status_code", None)
        error = f"HTTP {status}: {describe(exc)}" if status else describe(exc)
        self.api_gate.report(failure, pipeline=doc.pipeline, error=error, retry_after=retry_after)

    async def _probe_api(self) -> Failure | None:
        """A free request that proves the key works and the API answers (see `api_gate`)."""
        if self._client is None:
            return Failure.UNREACHABLE
        try:
            await self._client.steps.get_status(PROBE_EXECUTION_ID)
        except NotFoundError:
            return None  # authenticated, then not found: exactly what a working key gets
        except DocuTrayError as exc:
            return classify(exc, stage="poll")
        return None

    def _api_pause_changed(self) -> None:
        """A pause started or ended: that is progress (for the watchdog), and `status` is told."""
        self.last_progress = time.monotonic()
        reasons = "; ".join(self.api_gate.reasons()) or None
        if self._started:
            task = asyncio.ensure_future(self.journal.record_api_pause(reasons))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _requeue_changed(self, doc: DocumentRow, reason: str) -> None:
        event = self._active_sha.pop((doc.pipeline, doc.sha256 or ""), None)
        if event is not None:
            event.set()
        log.info(
            "document_changed_while_queued", pipeline=doc.pipeline, doc=doc.name, reason=reason
        )
        if not await asyncio.to_thread(os.path.lexists, doc.path):
            await self._reject(doc, reason, forget=True)
            return
        doc = await self.journal.mark_rediscovered(doc.id)
        self._remember(doc)
        self._spawn(self._inspect(doc), name=f"inspect:{doc.name}", doc=doc)

    def _source_changed(self, doc: DocumentRow) -> str | None:
        """Why the file may no longer be what was hashed, or None."""
        try:
            st = os.lstat(doc.path)
        except FileNotFoundError:
            return "the file disappeared before it was uploaded"
        except OSError as exc:
            return f"cannot read the file: {exc.strerror}"
        if (st.st_size, st.st_mtime_ns) != (doc.size, doc.mtime_ns):
            return "the file was replaced or modified after it was checked; it will be taken again"
        return None

    def _metadata(
        self, pipeline: PipelineConfig, document: Document, step_id: str
    ) -> dict[str, Any]:
        context = metadata_context(pipeline.name, document, _now())
        metadata: dict[str, Any] = {
            key: render(value, context) if isinstance(value, str) else value
            for key, value in pipeline.document_metadata.items()
        }
        for extra in call_observers(
            self.pm,
            "before_document_submit",
            pipeline=pipeline.name,
            document=document,
            step_id=step_id,
            metadata=dict(metadata),
        ):
            if isinstance(extra, dict):
                metadata.update(extra)
        return metadata

    async def _poll(self, doc: DocumentRow, step: StepRow) -> None:
        """Read the execution's status until it ends or the deadline passes."""
        assert self._client is not None
        assert step.execution_id is not None
        runtime = self._pipelines[doc.pipeline]
        poll = runtime.config.poll
        deadline = self._deadline(doc, step)
        size = doc.size or 0
        submitted_wall = step.submitted_at or time.time()
        schedule = PollSchedule(poll.initial, poll.max)
        overdue: PollSchedule | None = None
        probe = False
        expected = self.latency.first_read(step.step_id, size)
        if expected is None:
            probe = self.latency.claim_probe(step.step_id, size)
            if probe:
                schedule = probe_schedule(poll.initial, poll.max)
            else:
                await self.latency.wait_learned(
                    step.step_id, size, patience=max(0.0, min(deadline - time.time(), poll.max * 4))
                )
                expected = self.latency.first_read(step.step_id, size)
        wait = (
            max(0.0, submitted_wall + expected - time.time())
            if expected is not None
            else schedule.next_interval()
        )
        last_pending_at = submitted_wall
        asked = False
        try:
            while True:
                remaining = self._deadline(doc, step) - time.time()
                if remaining <= 0:
                    if asked:
                        await self._step_failed(
                            doc,
                            step,
                            f"timed out after {poll.timeout:g} s waiting for the result "
                            f"(last status {step.status or 'unknown'})",
                            stage="poll",
                        )
                        return
                    # Past its deadline before this loop asked even once (the daemon was down
                    # meanwhile): the paid-for result may be ready, so ask before giving up.
                    wait = remaining = 0.0
                await asyncio.sleep(min(wait, remaining))
                await self._await_api(doc)
                asked = True
                asked_at = time.time()
                try:
                    self.metrics.status_requests.inc()
                    status = await self._client.steps.get_status(step.execution_id)
                except DocuTrayError as exc:
                    failure = classify(exc, stage="poll")
                    if failure is Failure.REJECTED:
                        unknown = isinstance(exc, NotFoundError)
                        await self._step_failed(
                            doc,
                            step,
                            f"the service does not know execution {step.execution_id}: "
                            f"{describe(exc)}"
                            if unknown
                            else f"the service refused the status read: {describe(exc)}",
                            stage="poll",
                            http_status=getattr(exc, "status_code", None),
                        )
                        return
                    wait = schedule.next_interval()
                    if failure.pauses:
                        self._pause_api(failure, doc, exc)  # the next read waits at the gate
                        continue
                    log.warning(
                        "status_read_failed",
                        pipeline=doc.pipeline,
                        doc=doc.name,
                        step_id=step.step_id,
                        execution_id=step.execution_id,
                        error=describe(exc),
                    )
                    continue
                self.api_gate.answered()
                if status.status in _TERMINAL:
                    self._learn(
                        step.step_id, size, status, submitted_wall, last_pending_at, asked_at
                    )
                    probe = False
                    # The execution is over at the service: its slot can take the next document
                    # while the result is journaled (a crash before that re-reads the status).
                    self._slot_freed.add(step.id)
                    await self._free_slot()
                    await self._step_result(doc, step, status)
                    return
                last_pending_at = asked_at
                if status.status != step.status:
                    await self.journal.step_status(step.id, status.status)
                    step = await self.journal.step(step.id)
                wait = schedule.next_interval()
                learned = self.latency.first_read(step.step_id, size)
                if learned is not None:
                    # Something was learned meanwhile (by another execution): aim at it.
                    target = submitted_wall + learned - time.time()
                    if target > 0:
                        wait = min(wait, target) if target < wait else wait
                    else:
                        # Read too early: the result is due, so look again soon.
                        if overdue is None:
                            overdue = self.latency.recheck_schedule(step.step_id, size, poll.max)
                        wait = min(wait, overdue.next_interval())
        finally:
            if probe:
                self.latency.release_probe(step.step_id, size)

    def _learn(
        self,
        step_id: str,
        size: int,
        status: Any,
        submitted_wall: float,
        last_pending_at: float,
        seen_at: float,
    ) -> None:
        started = _parse_time(status.request_timestamp)
        ended = _parse_time(status.response_timestamp)
        if started is not None and ended is not None:
            seconds = (ended - started).total_seconds()
        else:
            # No server timestamps: completion happened between the last two reads.
            seconds = (last_pending_at + seen_at) / 2 - submitted_wall
        self.latency.observe(step_id, size, seconds)

    async def _step_result(self, doc: DocumentRow, step: StepRow, status: Any) -> None:
        runtime = self._pipelines[doc.pipeline]
        success = status.status == "SUCCESS"
        deliver = success or runtime.config.deliver_errors
        result = {
            "status": status.status,
            "data": status.data,
            "error": status.error,
            "original_filename": status.original_filename,
            "request_timestamp": _iso(status.request_timestamp),
            "response_timestamp": _iso(status.response_timestamp),
        }
        error = None if success else f"the step ended in ERROR: {_error_text(status.error)}"
        step, completed = await self.journal.step_finished(
            step.id,
            state="success" if success else "error",
            status=status.status,
            result=result,
            error=error,
            sinks=list(runtime.sinks) if deliver else [],
        )
        log.info(
            "step_completed",
            pipeline=doc.pipeline,
            doc=doc.name,
            doc_sha256=doc.sha256,
            step_id=step.step_id,
            execution_id=step.execution_id,
            status=status.status,
        )
        record = self._record(doc, step)
        if record is not None:
            call_observers(
                self.pm,
                "after_document_result",
                pipeline=doc.pipeline,
                document=record.document,
                record=record,
            )
        if completed:
            self._spawn(self._complete(doc.id), name=f"complete:{doc.name}", doc=doc)

    async def _step_failed(
        self,
        doc: DocumentRow,
        step: StepRow,
        reason: str,
        *,
        stage: str,
        http_status: int | None = None,
    ) -> StepRow:
        step, completed = await self.journal.step_finished(
            step.id, state="failed", error=reason, http_status=http_status
        )
        log.warning(
            "step_failed",
            pipeline=doc.pipeline,
            doc=doc.name,
            step_id=step.step_id,
            execution_id=step.execution_id,
            stage=stage,
            reason=reason,
        )
        if completed:
            self._spawn(self._complete(doc.id), name=f"complete:{doc.name}", doc=doc)
        return step

    def _record(self, doc: DocumentRow, step: StepRow) -> ResultRecord | None:
        if step.result is None or step.execution_id is None:
            return None
        result = step.result
        return ResultRecord(
            pipeline=doc.pipeline,
            document=_document_of(doc),
            step_id=step.step_id,
            execution_id=step.execution_id,
            status=result["status"],
            data=result.get("data"),
            error=result.get("error"),
            original_filename=result.get("original_filename"),
            request_timestamp=result.get("request_timestamp"),
            response_timestamp=result.get("response_timestamp"),
            submitted_at=datetime.fromtimestamp(step.submitted_at or 0, UTC),
            completed_at=datetime.fromtimestamp(step.completed_at or 0, UTC),
        )

    # -- delivery ----------------------------------------------------------------------------

    async def _complete(self, doc_id: int) -> None:
        """Every step has ended: deliver what there is to deliver, then finish the document."""
        view: Completion = await self.journal.completion(doc_id)
        doc, deliveries = view.document, view.deliveries
        self._docs[doc_id] = doc
        runtime = self._pipelines[doc.pipeline]
        # The results describe the bytes that were hashed: is that still what the file holds?
        doc, changed = await self._version_check(doc)
        if changed is not None:
            await self._changed_during_processing(doc, changed, when="before delivery")
            return
        steps = {s.id: s for s in view.steps}
        pending = [d for d in deliveries if d.state == "pending"]
        doc_log = log.bind(pipeline=doc.pipeline, doc=doc.name)
        results = await asyncio.gather(
            *(
                self._deliver_one(doc, runtime, steps[d.step_row], d.id, d.sink, doc_log)
                for d in pending
            )
        )
        delivery_errors = [r for r in results if r is not None]
        # Deliveries that had already given up before (in an earlier run) fail it too.
        for d in deliveries:
            if d.state == "failed" and d.error:
                reason = f"sink {d.sink}: {d.error}"
                if reason not in delivery_errors:
                    delivery_errors.append(reason)
        failed_steps = [s for s in steps.values() if s.state in ("error", "failed")]
        if failed_steps or delivery_errors:
            first = failed_steps[0] if failed_steps else None
            if first is not None:
                reason = f"step {first.step_id}: {first.error}"
                stage = "result" if first.state == "error" else _stage_of(first)
            else:
                reason, stage = delivery_errors[0], "deliver"
            detail = {
                "step_id": first.step_id if first else None,
                "execution_id": first.execution_id if first else None,
                "http_status": first.http_status if first else None,
            }
            if first is None:
                detail.update(await self._delivery_failure(doc.id, steps))
            doc = await self.journal.mark_failed(doc.id, reason, stage=stage, detail=detail)
            self._docs[doc.id] = doc
        # Delivered: still `completed` here; `_finalize` journals `delivered` (with `archived`
        # in the same commit when the file is kept).
        await self._finalize(doc, _document_of(doc))

    async def _delivery_failure(self, doc_id: int, steps: dict[int, StepRow]) -> dict[str, Any]:
        """The step, sink and attempt count of the first delivery that failed (sidecar)."""
        for d in await self.journal.deliveries_of(doc_id):
            if d.state == "failed":
                step = steps.get(d.step_row)
                return {
                    "step_id": step.step_id if step else None,
                    "execution_id": step.execution_id if step else None,
                    "sink": d.sink,
                    "attempts": d.attempts,
                }
        return {}

    async def _deliver_one(
        self,
        doc: DocumentRow,
        runtime: _Pipeline,
        step: StepRow,
        delivery_id: int,
        sink_id: str,
        doc_log: FilteringBoundLogger,
    ) -> str | None:
        record = self._record(doc, step)
        runner = runtime.sinks.get(sink_id)
        if record is None or runner is None:
            reason = "the sink is no longer configured" if runner is None else "no result stored"
            await self.journal.delivery_attempt_failed(delivery_id, reason, final=True)
            return f"sink {sink_id}: {reason}"

        async def on_failure(exc: BaseException, attempt: int) -> None:
            self.metrics.delivery_failures.labels(doc.pipeline, sink_id).inc()
            await self.journal.delivery_attempt_failed(delivery_id, describe(exc), final=False)

        started = time.monotonic()
        try:
            receipt = await runner.deliver(record, on_failure=on_failure)
        except DeliveryGaveUp as exc:
            await self.journal.delivery_gave_up(delivery_id, str(exc))
            doc_log.error(
                "delivery_gave_up",
                sink=sink_id,
                plugin=runner.plugin,
                step_id=step.step_id,
                attempts=exc.attempts,
                error=str(exc),
            )
            return f"sink {sink_id}: {exc}"
        text = receipt if isinstance(receipt, str) or receipt is None else _json_text(receipt)
        await self.journal.delivery_done(delivery_id, text)
        self.metrics.deliveries.labels(doc.pipeline, sink_id).inc()
        self.metrics.last_delivery.labels(doc.pipeline, sink_id).set(time.time())
        doc_log.info(
            "document_delivered",
            doc_sha256=doc.sha256,
            step_id=step.step_id,
            execution_id=step.execution_id,
            sink=sink_id,
            duration_s=round(time.monotonic() - started, 4),
        )
        call_observers(
            self.pm,
            "after_document_delivered",
            pipeline=doc.pipeline,
            document=record.document,
            record=record,
            sink=sink_id,
            receipt=receipt,
        )
        return None

    # -- the end -----------------------------------------------------------------------------

    async def _finalize(
        self, doc: DocumentRow, document: Document | None, *, checked: bool = False
    ) -> None:
        """Apply on_success / on_failure to the source file, then mark the document finished.

        `checked`: the file is known to have changed already (`on_change: fail`), so it is not
        checked again before the final action.
        """
        runtime = self._pipelines.get(doc.pipeline)
        if runtime is None:
            return
        doc_log = log.bind(pipeline=doc.pipeline, doc=doc.name)
        delivered_now = doc.state == "completed"  # every result delivered, not journaled yet
        outcome = doc.outcome or (
            "success" if delivered_now or doc.state in ("delivered", "archived") else doc.state
        )
        failed = doc.state in ("failed", "rejected")
        # Last look before the file is moved, deleted or kept under these results: a failed
        # document's before its failure is announced (unless it goes to failed/ anyway), a
        # delivered one's once `delivered` is journaled, right before the action.
        check = not checked and not (failed and runtime.config.on_change == "fail")
        if check and failed and await self._retaken_if_changed(doc):
            return
        if failed:
            call_observers(
                self.pm,
                "on_document_error",
                pipeline=doc.pipeline,
                document=document,
                path=Path(doc.path),
                stage=doc.error_stage or "intake",
                error=doc.error or "",
            )
            doc_log.warning(
                "document_failed",
                doc_sha256=doc.sha256,
                outcome=outcome,
                stage=doc.error_stage,
                reason=doc.error,
            )
        action = runtime.config.on_failure if failed else runtime.config.on_success
        if delivered_now and action.action != "keep":
            # A move or delete is journaled (intent, then done) after `delivered`.
            doc = await self.journal.mark_delivered(doc.id)
            self._docs[doc.id] = doc
            delivered_now = False
        if check and not failed and await self._retaken_if_changed(doc):
            return
        destination: Path | None = None
        try:
            destination = await self._file_action(doc, action.action, action.to, failed)
        except Exception as exc:  # noqa: BLE001 - a file action must never stop the daemon
            # The document stays unfinished in the journal and is retried at the next start.
            doc_log.error(
                "archive_failed",
                path=doc.path,
                error=describe(exc),
            )
            self._forget(doc)
            return
        if doc.state != "archived" or doc.finished_at is None:
            # A kept file "is archived" where it was found: the journal then knows its path is
            # taken (see Journal.latest_by_path).
            kept = action.action == "keep" and destination is None
            archived_to = doc.path if kept else (str(destination) if destination else None)
            # A kept file has nothing to undo: `delivered` and `archived` share one commit (a
            # crash before it delivers nothing twice: every delivery is journaled as done).
            finish = self.journal.deliver_and_finish if delivered_now else self.journal.finish
            doc = await finish(doc.id, archived_to)
        self.summary.outcomes[outcome] += 1
        self.metrics.documents.labels(doc.pipeline, outcome).inc()
        if failed:
            # Where the file is now (the failed folder), not the inbox it was found in.
            where = f"{doc.path} (deleted)" if action.action == "delete" else doc.archived_to
            self.summary.failures.append((doc.pipeline, where or doc.path, doc.error or ""))
        self._known[doc.pipeline].pop(doc.path, None)
        if action.action != "keep":
            self._kept[doc.pipeline].pop(doc.path, None)
        else:
            self._kept[doc.pipeline][doc.path] = kept_stamp(doc.size, doc.mtime_ns)
        doc_log.info(
            "document_archived",
            outcome=outcome,
            action=action.action,
            destination=str(destination) if destination else None,
        )
        call_observers(
            self.pm,
            "after_document_archived",
            pipeline=doc.pipeline,
            document=document,
            path=Path(doc.path),
            outcome=outcome,
            destination=destination,
        )
        self._forget(doc)

    async def _retaken_if_changed(self, doc: DocumentRow) -> bool:
        """The check before the final action: True when the file changed (and was dealt with)."""
        doc, changed = await self._version_check(doc)
        if changed is None:
            return False
        await self._changed_during_processing(doc, changed, when="before the final action")
        return True

    async def _version_check(self, doc: DocumentRow) -> tuple[DocumentRow, str | None]:
        """How the file differs from the version hashed at intake, or None (with the document,
        its identity refreshed when only metadata changed).

        One lstat when nothing changed; the file is hashed again only when its size, mtime, ctime
        or inode differ (ctime and inode are unknown for documents journaled by an older
        version: size and mtime decide alone then). A file that is gone is not a new version.
        """
        if doc.sha256 is None or doc.size is None or doc.mtime_ns is None:
            return doc, None
        if doc.state not in ("completed", "delivered", "duplicate", "failed", "rejected"):
            return doc, None
        try:
            st = os.lstat(doc.path)
        except OSError:
            return doc, None  # gone (or unreadable): the final action reports it
        size, mtime_ns, ctime_ns, inode = intake.identity(st)
        if (
            size == doc.size
            and mtime_ns == doc.mtime_ns
            and doc.ctime_ns in (None, ctime_ns)
            and doc.inode in (None, inode)
        ):
            return doc, None
        if intake.rule_for_kind(st.st_mode) is not None:
            return doc, "the file was replaced by something that is not a regular file"
        read = await self._read(Path(doc.path))
        if isinstance(read, _Unreadable):
            if read.forget and _exists(Path(doc.path)):  # changed while read
                return doc, "the file is still being written"
            return doc, None
        if read.sha256 != doc.sha256:
            return doc, (
                f"the file changed: {doc.size} bytes (sha256 {doc.sha256[:12]}…) when it was "
                f"taken, {read.size} bytes (sha256 {read.sha256[:12]}…) now"
            )
        # Same bytes (touched, chmod-ed, or the same content renamed over it).
        assert read.ctime_ns is not None
        assert read.inode is not None
        await self.journal.refresh_identity(
            doc.id, mtime_ns=read.mtime_ns, ctime_ns=read.ctime_ns, inode=read.inode
        )
        doc = await self.journal.document(doc.id)
        self._docs[doc.id] = doc
        return doc, None

    async def _changed_during_processing(self, doc: DocumentRow, reason: str, *, when: str) -> None:
        """The file is no longer the version these results describe: deliver nothing more and
        take it again as a new document (or fail it, `on_change: fail`)."""
        runtime = self._pipelines[doc.pipeline]
        # Only a version with results fails; a duplicate or an already failed one is simply
        # taken again (its new content is a document of its own).
        fail = runtime.config.on_change == "fail" and doc.state in ("completed", "delivered")
        deliveries = await self.journal.deliveries_of(doc.id)
        delivered = sum(1 for d in deliveries if d.state == "delivered")
        log.warning(
            "document_changed_during_processing",
            pipeline=doc.pipeline,
            doc=doc.name,
            path=doc.path,
            doc_sha256=doc.sha256,
            found=when,
            reason=reason,
            superseded_results=delivered,
            then="failed" if fail else "taken again",
        )
        if fail:
            doc = await self.journal.fail_changed(
                doc.id, f"the file changed while it was processed ({when}): {reason}"
            )
            self._docs[doc.id] = doc
            await self._finalize(doc, _document_of(doc), checked=True)
            return
        doc, _superseded = await self.journal.supersede(doc.id, reason)
        self._docs[doc.id] = doc
        self._known[doc.pipeline].pop(doc.path, None)
        self._kept[doc.pipeline].pop(doc.path, None)
        self.summary.outcomes["superseded"] += 1
        self.metrics.documents.labels(doc.pipeline, "superseded").inc()
        call_observers(
            self.pm,
            "after_document_archived",
            pipeline=doc.pipeline,
            document=_document_of(doc),
            path=Path(doc.path),
            outcome="superseded",
            destination=None,
        )
        # The new version: offered before this one lets go of its work unit, so a caller
        # waiting for the engine to be idle waits for it too.
        self.nominate(doc.pipeline, Path(doc.path))
        self._forget(doc)

    async def _file_action(
        self, doc: DocumentRow, action: str, folder: Path | None, failed: bool
    ) -> Path | None:
        source = Path(doc.path)
        marker = self._pipelines[doc.pipeline].config.watch.ready_marker
        details = await self._failure_details(doc) if failed else None
        destination: Path | None = None
        if action == "move":
            assert folder is not None
            destination = Path(doc.archive_to) if doc.archive_to else None
            target_dir = Path(folder) / Path(doc.relative_path).parent
            if destination is None and _absolute(target_dir / source.name) == _absolute(source):
                destination = source  # a retried document already lives in that folder
            if destination is None:
                destination = await asyncio.to_thread(_choose_destination, target_dir, source.name)
                await self.journal.archive_intent(doc.id, str(destination))
            if details is not None:
                details["moved_to"] = str(destination)
                await asyncio.to_thread(archive.write_sidecar, destination, details)
            try:
                if destination != source:
                    destination = await asyncio.to_thread(
                        archive.move_file, source, destination, sha256=doc.sha256
                    )
            except FileNotFoundError:
                log.warning(
                    "document_vanished",
                    pipeline=doc.pipeline,
                    doc=doc.name,
                    path=doc.path,
                    note="the source file was gone before its final move",
                )
                destination = None
        elif action == "delete":
            await asyncio.to_thread(archive.remove_file, source)
        elif details is not None:
            await asyncio.to_thread(_sidecar_if_present, source, details)
        if not failed:
            # A retried document succeeded: its old sidecar no longer tells the truth.
            sidecar = archive.sidecar_path(source)
            if _exists(sidecar):  # usually there is none: one lstat instead of a thread trip
                await asyncio.to_thread(archive.remove_file, sidecar)
        if marker:
            await asyncio.to_thread(archive.remove_file, Path(str(source) + marker))
        return destination

    async def _failure_details(self, doc: DocumentRow) -> dict[str, Any]:
        steps = await self.journal.steps_of(doc.id)
        step_ids = {s.id: s.step_id for s in steps}
        detail = doc.error_detail or {}
        return {
            "document": doc.name,
            "pipeline": doc.pipeline,
            "source_path": doc.path,
            "outcome": doc.outcome or doc.state,
            "reason": doc.error,
            "stage": doc.error_stage,
            "step_id": detail.get("step_id"),
            "execution_id": detail.get("execution_id"),
            "http_status": detail.get("http_status"),
            "sink": detail.get("sink"),
            "sha256": doc.sha256,
            "size": doc.size,
            "content_type": doc.content_type,
            # A delivery failure counts its sink's attempts; others the document's runs.
            "attempts": detail.get("attempts", doc.attempts),
            "flags": sorted(doc.flags),
            "time": _now().isoformat().replace("+00:00", "Z"),
            "steps": [
                {
                    "step_id": s.step_id,
                    "state": s.state,
                    "execution_id": s.execution_id,
                    "status": s.status,
                    "error": s.error,
                    "http_status": s.http_status,
                }
                for s in steps
            ],
            "deliveries": [
                {
                    "sink": d.sink,
                    "step_id": step_ids.get(d.step_row),
                    "state": d.state,
                    "attempts": d.attempts,
                    "error": d.error,
                }
                for d in await self.journal.deliveries_of(doc.id)
            ],
        }


def _read_one(path: Path) -> intake.FileFacts | _Unreadable:
    """Hash and sniff a file; why not, when it cannot be read."""
    try:
        return intake.inspect_file(path)
    except FileNotFoundError:
        return _Unreadable("the file disappeared before it could be read", forget=True)
    except intake.FileChangedError:
        # Still changing: forget this attempt, the next event or rescan brings it back.
        return _Unreadable("the file changed while it was being read", forget=True)
    except OSError as exc:
        return _Unreadable(f"cannot read the file: {exc.strerror or describe(exc)}")


def _read_all(paths: list[Path]) -> list[intake.FileFacts | _Unreadable]:
    """`_read_one` for each file: a batch in one worker-thread trip."""
    return [_read_one(path) for path in paths]


def _by_volume(
    ready: list[tuple[str, intake.Candidate, os.stat_result]],
) -> Iterator[list[tuple[str, intake.Candidate, os.stat_result]]]:
    """Split a batch so that no part has more than INTAKE_BATCH_BYTES to read (but at least
    one file): large files are not all hashed before the first of them is queued."""
    part: list[tuple[str, intake.Candidate, os.stat_result]] = []
    volume = 0
    for item in ready:
        if part and volume + item[2].st_size > INTAKE_BATCH_BYTES:
            yield part
            part, volume = [], 0
        part.append(item)
        volume += item[2].st_size
    if part:
        yield part


def _absolute(path: Path) -> str:
    return os.path.abspath(path)


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _sidecar_if_present(source: Path, details: dict[str, Any]) -> None:
    if os.path.lexists(source):
        archive.write_sidecar(source, details)


def _choose_destination(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return archive.unique_destination(folder, name)


def _stage_of(step: StepRow) -> str:
    return "submit" if step.execution_id is None else "poll"


async def _rate_limit_wait(response: httpx.Response) -> float | None:
    """How long a 429 holds every request: Retry-After, else the body's retryAfter."""
    body: Any = None
    if "retry-after" not in response.headers:
        await response.aread()  # a small JSON body; the client reads it from httpx's cache
        try:
            body = response.json()
        except ValueError:
            body = None
    return rate_limit_wait(response.headers, body)


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        for key in ("message", "detail", "error"):
            if isinstance(error.get(key), str):
                return str(error[key])
        return _json_text(error)
    if isinstance(error, list):
        return _json_text(error)
    return str(error) if error is not None else "no error message"


def _json_text(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
