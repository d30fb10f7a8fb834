"""Delivering results to one sink: its own threads, its own concurrency, its own retries.

Each configured sink gets a `SinkRunner`. Sync sink methods run in the runner's own thread pool
(never the event loop's default executor), so a slow or hung sink uses up only its own workers;
async methods run on the event loop under the same concurrency limit. A failing delivery is
retried with capped, jittered exponential backoff (tenacity) until the sink's `retry.timeout`,
then reported as given up; `PermanentSinkError` gives up at once, and an exception that means a bug
in the sink (`Sink.bug_exceptions`) after `BUG_ATTEMPTS` attempts. Any exception a plugin raises is
caught here: a broken plugin fails its deliveries, never the daemon. An exception that is not a
`SinkError` is logged with its traceback and the plugin's name once per distinct error (a retried
bug does not flood the log).

A SIGHUP reload that changes a sink's settings hands the runner over to a new instance of the
sink (`SinkRunner.replace`): the old instance's calls in progress finish, it is closed and its
threads stopped, and only then is the new one opened — two instances never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from docutray_watch.log import mask_secrets
from docutray_watch.records import ResultRecord
from docutray_watch.sinks.base import (
    BUG_ATTEMPTS,
    PermanentSinkError,
    Receipt,
    Sink,
    SinkConfig,
    SinkError,
)

__all__ = ["DeliveryGaveUp", "InvalidReceiptError", "SinkRunner", "is_bug"]

log = structlog.get_logger(__name__)

_MAX_REPORTED = 256  # distinct tracebacks remembered per sink; past that, no more are logged


class DeliveryGaveUp(Exception):
    """Delivery to a sink failed for good (permanent error, a bug, or retry timeout)."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class InvalidReceiptError(PermanentSinkError):
    """`deliver` returned a receipt that the journal cannot store as JSON."""


def is_bug(sink: Sink[Any], exc: BaseException) -> bool:
    """Whether `exc` from one of `sink`'s methods means a bug in it (see `Sink.bug_exceptions`)."""
    return not isinstance(exc, SinkError) and isinstance(exc, tuple(sink.bug_exceptions))


def _location(exc: BaseException) -> str:
    """Where `exc` was raised: the innermost frame of its traceback."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


def describe(exc: BaseException) -> str:
    """A one-line description of an exception for journals, sidecars and logs.

    Registered secrets (the API key) are masked: a plugin's message may quote one, and journals
    and sidecars are not log lines, which are masked anyway.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = mask_secrets(text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SinkRunner:
    """Drives one configured sink for one pipeline."""

    def __init__(
        self, sink: Sink[Any], config: SinkConfig, *, pipeline: str, plugin: str | None = None
    ) -> None:
        self.sink = sink
        self.config = config
        self.pipeline = pipeline
        self.sink_id = sink.sink_id
        self.plugin = plugin or type(sink).__module__  # the plugin that registered the sink type
        self._reported: set[tuple[str, str, str, str]] = set()
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._executor = self._new_executor()
        self.opened = False
        # Calls of the current sink instance in progress, and whether one is being replaced.
        self._turn = asyncio.Condition()
        self._in_use = 0
        self._switching = False

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(
            max_workers=self.config.concurrency,
            thread_name_prefix=f"sink-{self.pipeline}-{self.sink_id}",
        )

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[None]:
        """Hold the current sink instance: a replacement waits until every holder is done."""
        async with self._turn:
            await self._turn.wait_for(lambda: not self._switching)
            self._in_use += 1
        try:
            yield
        finally:
            async with self._turn:
                self._in_use -= 1
                self._turn.notify_all()

    async def replace(
        self, sink: Sink[Any], config: SinkConfig, *, plugin: str | None = None
    ) -> None:
        """Hand over to a new instance of this sink (a reload changed its settings).

        New calls wait; the old instance's calls in progress finish; it is closed and its
        threads are stopped; then the new instance takes over (it is opened by its first call
        or by the engine). The two never run at the same time. Deliveries waiting between
        retries go on with the new instance.
        """
        async with self._turn:
            await self._turn.wait_for(lambda: not self._switching)
            self._switching = True
            await self._turn.wait_for(lambda: self._in_use == 0)
        try:
            try:
                if self.opened:
                    await self._call(self.sink.close)
            except Exception as exc:  # noqa: BLE001 - the new instance takes over regardless
                log.warning(
                    "sink_close_failed",
                    pipeline=self.pipeline,
                    sink=self.sink_id,
                    error=describe(exc),
                )
            finally:
                self.opened = False
                await asyncio.to_thread(self._executor.shutdown, wait=True)
            self.sink, self.config = sink, config
            self.plugin = plugin or type(sink).__module__
            self._reported.clear()
            self._semaphore = asyncio.Semaphore(config.concurrency)
            self._executor = self._new_executor()
        finally:
            async with self._turn:
                self._switching = False
                self._turn.notify_all()

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        if inspect.iscoroutinefunction(method):
            return await method(*args)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, method, *args)
        if inspect.isawaitable(result):
            return await result
        return result

    def explain(self, exc: BaseException) -> str:
        """`describe(exc)`, saying so when it is a bug in the sink's plugin."""
        if is_bug(self.sink, exc):
            return f"{describe(exc)} (a bug in plugin {self.plugin!r}; the log has the traceback)"
        return describe(exc)

    def report(self, exc: BaseException, method: str, **fields: Any) -> None:
        """Log the traceback of an exception a sink method raised, once per distinct error.

        A `SinkError` is the sink's own account of a failure and is not reported: its message is
        in `delivery_failed`. Others are: a bug at error level, anything else as a warning.
        """
        if isinstance(exc, SinkError):
            return
        key = (method, type(exc).__qualname__, _location(exc), describe(exc))
        if key in self._reported or len(self._reported) >= _MAX_REPORTED:
            return
        self._reported.add(key)
        bug = is_bug(self.sink, exc)
        (log.error if bug else log.warning)(
            "sink_exception",
            plugin=self.plugin,
            pipeline=self.pipeline,
            sink=self.sink_id,
            sink_class=type(self.sink).__qualname__,
            method=method,
            bug=bug,
            error=describe(exc),
            exc_info=exc,
            **fields,
        )

    async def open(self) -> None:
        """Open the sink once."""
        async with self._using():
            await self._open()

    async def _open(self) -> None:
        if not self.opened:
            try:
                await self._call(self.sink.open)
            except Exception as exc:
                self.report(exc, "open")
                raise
            self.opened = True

    async def check(self) -> str | None:
        """Run the sink's health check; its note, if it gives one."""
        async with self._using():
            try:
                note = await self._call(self.sink.check)
            except Exception as exc:
                self.report(exc, "check")
                raise
        return note if isinstance(note, str) else None

    async def close(self) -> None:
        """Close the sink and stop its threads (waiting for deliveries still running in them)."""
        try:
            if self.opened:
                await self._call(self.sink.close)
        finally:
            self.opened = False
            await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def deliver_once(self, record: ResultRecord) -> Receipt:
        """One delivery attempt, within the sink's concurrency limit."""
        async with self._using(), self._semaphore:
            await self._open()
            try:
                result: Receipt = await self._call(self.sink.deliver, record)
            except Exception as exc:
                self.report(exc, "deliver", step_id=record.step_id, doc=record.document.name)
                raise
            return self._checked_receipt(result)

    def _checked_receipt(self, receipt: Any) -> Receipt:
        """The receipt as the journal will store it; one that is not JSON fails the delivery
        now rather than be journaled as `"<object object at 0x…>"`."""
        if receipt is None or isinstance(receipt, str):
            return receipt
        value = dict(receipt) if isinstance(receipt, Mapping) else receipt
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise InvalidReceiptError(
                f"plugin {self.plugin!r}: {type(self.sink).__qualname__}.deliver returned a "
                f"receipt that is not JSON ({exc}); return a str, None or a JSON-serialisable "
                "mapping"
            ) from None
        return value

    async def deliver(
        self,
        record: ResultRecord,
        *,
        on_failure: Callable[[BaseException, int], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> Receipt:
        """Deliver with retries; raises `DeliveryGaveUp` when the sink's retry policy runs out,
        at once on a `PermanentSinkError`, after `BUG_ATTEMPTS` failures that mean a bug."""
        policy = self.config.retry
        bug_failures = 0
        out_of_time = stop_after_delay(policy.timeout)

        def stop(state: RetryCallState) -> bool:
            return bug_failures >= BUG_ATTEMPTS or out_of_time(state)

        retrying = AsyncRetrying(
            retry=retry_if_exception(
                lambda e: isinstance(e, Exception) and not isinstance(e, PermanentSinkError)
            ),
            wait=wait_exponential_jitter(
                multiplier=policy.initial, max=policy.max, jitter=policy.initial
            ),
            stop=stop,
            sleep=sleep,
            reraise=True,
        )
        attempt_number = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempt_number = attempt.retry_state.attempt_number
                    try:
                        return await self.deliver_once(record)
                    except Exception as exc:
                        bug = is_bug(self.sink, exc)
                        bug_failures += bug
                        log.warning(
                            "delivery_failed",
                            pipeline=self.pipeline,
                            sink=self.sink_id,
                            plugin=self.plugin,
                            step_id=record.step_id,
                            doc=record.document.name,
                            doc_sha256=record.document.sha256,
                            attempt=attempt_number,
                            error=describe(exc),
                            permanent=isinstance(exc, PermanentSinkError),
                            bug=bug,
                        )
                        if on_failure is not None:
                            await on_failure(exc, attempt_number)
                        raise
        except Exception as exc:
            raise DeliveryGaveUp(
                self._gave_up_reason(exc, attempt_number), attempts=attempt_number
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _gave_up_reason(self, exc: Exception, attempts: int) -> str:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if isinstance(exc, PermanentSinkError):
            return describe(exc)
        if is_bug(self.sink, exc):
            return (
                f"{describe(exc)} (a bug in plugin {self.plugin!r}: failed after {tries}; "
                "the log has the traceback)"
            )
        return f"{describe(exc)} (gave up after {tries})"
