"""Delivering results to one sink: its own threads, its own concurrency, its own retries.

Each configured sink gets a `SinkRunner`. Sync sink methods run in the runner's own thread pool
(never the event loop's default executor), so a slow or hung sink uses up only its own workers;
async methods run on the event loop under the same concurrency limit. A failing delivery is
retried with capped, jittered exponential backoff (tenacity) until the sink's `retry.timeout`,
then reported as given up; `PermanentSinkError` gives up at once. Any exception a plugin raises is
caught here: a broken plugin fails its deliveries, never the daemon.

A SIGHUP reload that changes a sink's settings hands the runner over to a new instance of the
sink (`SinkRunner.replace`): the old instance's calls in progress finish, it is closed and its
threads stopped, and only then is the new one opened — two instances never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from docutray_watch.log import mask_secrets
from docutray_watch.records import ResultRecord
from docutray_watch.sinks.base import PermanentSinkError, Receipt, Sink, SinkConfig

__all__ = ["DeliveryGaveUp", "SinkRunner"]

log = structlog.get_logger(__name__)


class DeliveryGaveUp(Exception):
    """Delivery to a sink failed for good (permanent error or retry timeout)."""


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

    def __init__(self, sink: Sink[Any], config: SinkConfig, *, pipeline: str) -> None:
        self.sink = sink
        self.config = config
        self.pipeline = pipeline
        self.sink_id = sink.sink_id
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

    async def replace(self, sink: Sink[Any], config: SinkConfig) -> None:
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

    async def open(self) -> None:
        """Open the sink once."""
        async with self._using():
            await self._open()

    async def _open(self) -> None:
        if not self.opened:
            await self._call(self.sink.open)
            self.opened = True

    async def check(self) -> None:
        """Run the sink's health check."""
        async with self._using():
            await self._call(self.sink.check)

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
            result: Receipt = await self._call(self.sink.deliver, record)
            return result

    async def deliver(
        self,
        record: ResultRecord,
        *,
        on_failure: Callable[[BaseException, int], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> Receipt:
        """Deliver with retries; raises `DeliveryGaveUp` when the sink's retry policy runs out."""
        policy = self.config.retry
        retrying = AsyncRetrying(
            retry=retry_if_exception(
                lambda e: isinstance(e, Exception) and not isinstance(e, PermanentSinkError)
            ),
            wait=wait_exponential_jitter(
                multiplier=policy.initial, max=policy.max, jitter=policy.initial
            ),
            stop=stop_after_delay(policy.timeout),
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
                        log.warning(
                            "delivery_failed",
                            pipeline=self.pipeline,
                            sink=self.sink_id,
                            step_id=record.step_id,
                            doc=record.document.name,
                            doc_sha256=record.document.sha256,
                            attempt=attempt_number,
                            error=describe(exc),
                            permanent=isinstance(exc, PermanentSinkError),
                        )
                        if on_failure is not None:
                            await on_failure(exc, attempt_number)
                        raise
        except Exception as exc:
            raise DeliveryGaveUp(describe(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover
