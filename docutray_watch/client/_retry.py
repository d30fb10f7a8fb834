"""When to send a request again, and how long to wait first (tenacity does the looping).

The rule that matters: a POST starts an execution, so it is resent only when the service
provably did not accept it, that is the connection was never established (``request_sent`` is
False) or the service answered 429/503. A POST that timed out or lost its connection after the
body went out raises, and the caller decides. Idempotent requests (status GETs) are retried on
connection errors, timeouts, 429, 500, 502, 503 and 504. No other 4xx is ever retried.

Waits: exponential from 0.5 s with up to 0.5 s of jitter, capped at 8 s, and never shorter than
the service's ``Retry-After``. A ``Retry-After`` longer than ``max_retry_wait`` is not slept
through: its error is raised so the caller can reschedule.

Most requests succeed at once, and building tenacity's controller costs more than the decision
it makes (about 4 % of the daemon's event loop), so the first attempt runs bare; the controller
(tenacity's public ``Retrying``/``AsyncRetrying``) is built only after a failure worth retrying,
and its first attempt raises that failure again instead of resending, so it is counted once.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import structlog
import tenacity
from tenacity.wait import wait_base, wait_exponential_jitter

from docutray_watch.client._exceptions import APIConnectionError, APIError, RateLimitError
from docutray_watch.client._retry_after import parse_retry_after

if TYPE_CHECKING:
    from docutray_watch.client._request import RequestSpec

__all__ = [
    "BACKOFF_CAP",
    "BACKOFF_INITIAL",
    "BACKOFF_JITTER",
    "RetryInfo",
    "RetryPolicy",
    "failure_reason",
    "retry_after_of",
]

BACKOFF_INITIAL = 0.5
BACKOFF_CAP = 8.0
BACKOFF_JITTER = 0.5

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_RETRY_STATUSES_IDEMPOTENT = frozenset({429, 500, 502, 503, 504})
# Statuses that say "not accepted, try later" even for a POST.
_RETRY_STATUSES_ANY = frozenset({429, 503})

# Looked up each time a request starts, so tests can record the waits instead of sleeping.
_sleep: Callable[[float], None] = time.sleep
_async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryInfo:
    """What the ``on_retry`` hook receives before each retry's wait.

    ``attempt`` is the 1-based number of the attempt that failed, ``reason`` a short
    snake_case cause (``http_429``, ``connect_error``, ``read_timeout``...).
    """

    method: str
    path: str
    attempt: int
    reason: str
    wait_s: float


def retry_after_of(exc: BaseException | None) -> float | None:
    """The ``Retry-After`` an API error carries, in seconds (None if it has none)."""
    if isinstance(exc, RateLimitError):
        return exc.retry_after
    if isinstance(exc, APIError):
        return parse_retry_after(exc.headers.get("retry-after"))
    return None


def failure_reason(exc: BaseException | None) -> str:
    """A short snake_case label for why an attempt failed, for logs and metrics."""
    if isinstance(exc, APIError):
        return f"http_{exc.status_code}"
    cause = exc.__cause__ if exc is not None else None
    if isinstance(exc, APIConnectionError) and cause is not None:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(cause).__name__).lower()
    return type(exc).__name__.lower() if exc is not None else "unknown"


class _BackoffWithRetryAfterFloor(wait_base):
    """Jittered exponential backoff, raised to the failed attempt's ``Retry-After``."""

    def __init__(self) -> None:
        self._backoff = wait_exponential_jitter(
            multiplier=BACKOFF_INITIAL, max=BACKOFF_CAP, jitter=BACKOFF_JITTER
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = self._backoff(retry_state)
        outcome = retry_state.outcome
        floor = retry_after_of(outcome.exception() if outcome is not None else None)
        return backoff if floor is None else max(backoff, floor)


class RetryPolicy:
    """Sends a request with retries; builds the tenacity controller when one is needed."""

    def __init__(
        self,
        *,
        max_retries: int,
        max_retry_wait: float,
        on_retry: Callable[[RetryInfo], None] | None = None,
        retry_filter: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.on_retry = on_retry
        # The caller's veto: an error it already deals with (the daemon pauses on an
        # unreachable API) is raised at once instead of retried here first.
        self.retry_filter = retry_filter

    def should_retry(self, exc: BaseException | None, spec: RequestSpec) -> bool:
        """Whether ``exc`` from sending ``spec`` justifies another attempt."""
        if not spec.replayable:
            return False
        if exc is not None and self.retry_filter is not None and not self.retry_filter(exc):
            return False
        idempotent = spec.method in _IDEMPOTENT_METHODS
        if isinstance(exc, APIError):
            retryable = _RETRY_STATUSES_IDEMPOTENT if idempotent else _RETRY_STATUSES_ANY
            if exc.status_code not in retryable:
                return False
            retry_after = retry_after_of(exc)
            return retry_after is None or retry_after <= self.max_retry_wait
        if isinstance(exc, APIConnectionError):
            return exc.should_retry and (idempotent or not exc.request_sent)
        return False

    def _predicate(self, spec: RequestSpec) -> Callable[[tenacity.RetryCallState], bool]:
        def retry(retry_state: tenacity.RetryCallState) -> bool:
            outcome = retry_state.outcome
            return outcome is not None and self.should_retry(outcome.exception(), spec)

        return retry

    def _announcer(self, spec: RequestSpec) -> Callable[[tenacity.RetryCallState], None]:
        def before_sleep(retry_state: tenacity.RetryCallState) -> None:
            outcome = retry_state.outcome
            info = RetryInfo(
                method=spec.method,
                path=spec.path,
                attempt=retry_state.attempt_number,
                reason=failure_reason(outcome.exception() if outcome is not None else None),
                wait_s=retry_state.upcoming_sleep,
            )
            log.warning(
                "request_retried",
                method=info.method,
                path=info.path,
                attempt=info.attempt,
                wait_s=round(info.wait_s, 3),
                reason=info.reason,
            )
            if self.on_retry is not None:
                try:
                    self.on_retry(info)
                except Exception:  # a metrics hook must not break the request
                    log.exception("retry_hook_failed", method=info.method, path=info.path)

        return before_sleep

    def call(self, spec: RequestSpec, send: Callable[[RequestSpec], T]) -> T:
        """``send(spec)``, retried by the rules above (for ``Client``)."""
        try:
            return send(spec)
        except Exception as exc:
            if not self._worth_retrying(exc, spec):
                raise
            failure: BaseException | None = exc

        def attempt(spec: RequestSpec) -> T:
            nonlocal failure
            if failure is not None:  # attempt 1 already ran, bare: hand tenacity its outcome
                exc, failure = failure, None
                raise exc
            return send(spec)

        return self.retrying(spec)(attempt, spec)

    async def async_call(self, spec: RequestSpec, send: Callable[[RequestSpec], Awaitable[T]]) -> T:
        """``await send(spec)``, retried by the rules above (for ``AsyncClient``)."""
        try:
            return await send(spec)
        except Exception as exc:
            if not self._worth_retrying(exc, spec):
                raise
            failure: BaseException | None = exc

        async def attempt(spec: RequestSpec) -> T:
            nonlocal failure
            if failure is not None:  # attempt 1 already ran, bare: hand tenacity its outcome
                exc, failure = failure, None
                raise exc
            return await send(spec)

        return await self.async_retrying(spec)(attempt, spec)

    def _worth_retrying(self, exc: BaseException, spec: RequestSpec) -> bool:
        # With no retry allowed tenacity would stop at once, without a log line or hook call.
        return self.max_retries > 0 and self.should_retry(exc, spec)

    def retrying(self, spec: RequestSpec) -> tenacity.Retrying:
        """The controller for a request sent by ``Client``."""
        return tenacity.Retrying(
            sleep=_sleep,
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=_BackoffWithRetryAfterFloor(),
            retry=self._predicate(spec),
            before_sleep=self._announcer(spec),
            reraise=True,
        )

    def async_retrying(self, spec: RequestSpec) -> tenacity.AsyncRetrying:
        """The controller for a request sent by ``AsyncClient``."""
        return tenacity.AsyncRetrying(
            sleep=_async_sleep,
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=_BackoffWithRetryAfterFloor(),
            retry=self._predicate(spec),
            before_sleep=self._announcer(spec),
            reraise=True,
        )
