"""The engine's API client: one connection pool, every request through the shared limits.

Each request waits for its turn in the request rate (a submission lets status reads go first),
and each answer is reported back to it (a 429 slows everyone down), from httpx's event hooks:
the phases call the client as if there were no limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from http.cookiejar import Cookie, CookieJar

import httpx

from docutray_watch.client import AiohttpTransport, AsyncClient, RetryInfo, rate_limit_wait
from docutray_watch.config import Config
from docutray_watch.engine.limits import RequestRate
from docutray_watch.metrics import Metrics

__all__ = [
    "SUBMISSION_WIRE",
    "NoCookies",
    "SubmissionWire",
    "build_client",
    "rate_limit_wait_of",
    "rate_slot",
]


@dataclass
class SubmissionWire:
    """Whether the submission under way may have reached the service: set when its POST goes
    out, cleared when the client retries it (a POST is only retried when it provably never
    arrived). A submission stopped while this is False started nothing."""

    maybe_sent: bool = False


# The submitting task's wire: the client's hooks run in the task that awaits the request.
SUBMISSION_WIRE: ContextVar[SubmissionWire | None] = ContextVar("submission_wire", default=None)


class NoCookies(CookieJar):
    """The engine's HTTP client keeps no cookies: the API authenticates with a bearer key, and
    httpx parses every response's headers into a cookie jar otherwise (~0.1 ms per request)."""

    def extract_cookies(self, response: object, request: object) -> None:
        """Ignore Set-Cookie."""

    def set_cookie(self, cookie: Cookie) -> None:
        """Keep nothing."""


class _NoCookieStore(httpx.Cookies):
    """httpx's cookies of the engine's client: `NoCookies`, and no urllib request and response
    built around each answer only for the jar to ignore them (~2 % of the event loop's CPU)."""

    def __init__(self) -> None:
        super().__init__(NoCookies())

    def extract_cookies(self, response: httpx.Response) -> None:
        """Ignore Set-Cookie."""


async def rate_slot(rate: RequestRate, request: httpx.Request) -> None:
    """Wait for the request's turn in the shared rate: a submission (new work) lets status reads
    of executions already running go first (see `RateLimiter.acquire`)."""
    await rate.acquire(yield_to_others=request.method == "POST")


async def rate_limit_wait_of(response: httpx.Response) -> float | None:
    """How long a 429 holds every request: Retry-After, else the body's retryAfter."""
    body: object = None
    if "retry-after" not in response.headers:
        await response.aread()  # a small JSON body; the client reads it from httpx's cache
        try:
            body = response.json()
        except ValueError:
            body = None
    return rate_limit_wait(response.headers, body)


def build_client(
    config: Config,
    *,
    api_key: str,
    base_url: str,
    rate: RequestRate,
    metrics: Metrics,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_filter: Callable[[BaseException], bool] | None = None,
) -> tuple[AsyncClient, httpx.AsyncClient]:
    """The API client and the HTTP client under it (closed by the caller, in that order)."""
    timeout = config.api.timeout

    async def before_request(request: httpx.Request) -> None:
        await rate_slot(rate, request)
        request.extensions["docutray_watch_started"] = time.monotonic()
        wire = SUBMISSION_WIRE.get()
        if wire is not None and request.method == "POST":
            wire.maybe_sent = True

    async def after_response(response: httpx.Response) -> None:
        started = response.request.extensions.get("docutray_watch_started")
        if started is not None:
            metrics.api_latency.labels(response.request.method, str(response.status_code)).observe(
                time.monotonic() - started
            )
        if response.status_code == 429:
            metrics.rate_limited.inc()
            wait = await rate_limit_wait_of(response)
            rate.throttled(wait if wait is not None else 1.0, sent_at=started)
        else:
            rate.accepted(sent_at=started)

    connections = max(8, min(config.api.max_in_flight, 256))
    http_timeout = httpx.Timeout(
        connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool
    )
    http = httpx.AsyncClient(
        timeout=http_timeout,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        event_hooks={"request": [before_request], "response": [after_response]},
        cookies=NoCookies(),
        # aiohttp underneath: a third of httpcore's CPU per request (docs/performance.md)
        transport=transport or AiohttpTransport(max_connections=connections),
    )
    http._cookies = _NoCookieStore()  # httpx copies any jar it is given into a plain `Cookies`

    def on_retry(info: RetryInfo) -> None:
        metrics.api_retries.labels(info.method, info.reason).inc()
        wire = SUBMISSION_WIRE.get()
        if wire is not None and info.method == "POST":
            wire.maybe_sent = False  # retried: that POST never reached the service

    client = AsyncClient(
        api_key=api_key,
        base_url=base_url,
        max_retries=config.api.max_retries,
        # Each request carries the client's timeout, which wins over the pool's: pass it on.
        timeout=http_timeout,
        http_client=http,
        on_retry=on_retry,
        retry_filter=retry_filter,
    )
    return client, http
