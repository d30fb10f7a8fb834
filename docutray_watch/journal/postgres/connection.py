"""Reaching PostgreSQL: the async engine, transactions retried on deadlock or serialization
failure, and the errors the PostgreSQL journal adds to the protocol's.

Every store call is one transaction at READ COMMITTED; the writes lock the document row they
change (`SELECT … FOR UPDATE`) before checking its state, so two nodes never both move a document
from the state they read. A transaction PostgreSQL aborts as a deadlock victim (SQLSTATE 40P01)
or for a serialization failure (40001) changed nothing: it is run again from its start, a few
times with jittered backoff, before the error reaches the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

__all__ = [
    "CONTENT_INDEX",
    "RETRIED_SQLSTATES",
    "ContentClaimed",
    "DriverMissing",
    "LeaseLost",
    "application_name",
    "async_url",
    "in_transaction",
    "is_disconnect",
    "is_retryable",
    "make_engine",
    "sqlstate",
]

T = TypeVar("T")

RETRIED_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure

_ATTEMPTS = 6
_UNSENT_RETRY_S = 30.0  # how long a transaction that could not start, or an idempotent one, is
# tried again while the server refuses connections or cuts them (a restart, no slot free)

CONTENT_INDEX = "documents_content_once"  # the unique (pipeline, sha256, generation) index


class LeaseLost(RuntimeError):
    """A fenced write found the document's lease moved on: another node took the document
    (this one was declared dead, then woke). Nothing was written; stop working on it."""

    def __init__(self, doc_id: int, lease: int) -> None:
        super().__init__(f"document {doc_id}: lease {lease} is no longer held")
        self.doc_id = doc_id
        self.lease = lease


class ContentClaimed(RuntimeError):
    """Another document already claims this content in this generation (the unique index on
    (pipeline, sha256, generation)): journal this one as its duplicate, or start a generation."""


def async_url(url: str) -> sa.URL:
    """`url` for the async psycopg 3 driver (a plain `postgresql://` URL is accepted)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed.set(drivername="postgresql+psycopg")


class DriverMissing(RuntimeError):
    """psycopg 3 is not installed: the `cluster` extra brings it."""


def application_name(node: str | None = None) -> str:
    """What a connection of this program says it is in `pg_stat_activity`: the node's name
    with it in multi-node mode, so an operator (or a test) can tell each node's backends."""
    return "docutray-watch" if node is None else f"docutray-watch/{node}"


def make_engine(
    url: str,
    schema: str | None = None,
    *,
    pooled: bool = True,
    node: str | None = None,
    pool_size: int | None = None,
) -> AsyncEngine:
    """An async engine (whose unqualified tables are `schema`'s); `pooled=False` for one-off
    work such as a migration, which should leave no idle connection behind. Its connections
    carry `application_name(node)`. `pool_size`: at most that many connections, opened as they
    are needed and kept (none over it: an overflow connection is a new backend per checkout);
    None: SQLAlchemy's default (5, and 10 more for a burst)."""
    options: dict[str, object] = {"connect_args": {"application_name": application_name(node)}}
    if schema is not None:
        options["execution_options"] = {"schema_translate_map": {None: schema}}
    if pooled:
        options["pool_pre_ping"] = True
        if pool_size is not None:
            options.update(pool_size=pool_size, max_overflow=0)
    else:
        options["poolclass"] = NullPool
    try:
        return create_async_engine(async_url(url), **options)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("psycopg"):
            raise DriverMissing(
                "the PostgreSQL journal needs psycopg 3: pip install 'docutray-watch[cluster]'"
            ) from exc
        raise


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (psycopg's, as wrapped by SQLAlchemy), or None."""
    original = getattr(exc, "orig", None)
    found = getattr(original, "sqlstate", None)
    return found if isinstance(found, str) else None


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction can run again as it was."""
    return isinstance(exc, sa.exc.DBAPIError) and sqlstate(exc) in RETRIED_SQLSTATES


def is_disconnect(exc: BaseException) -> bool:
    """The connection was lost under the transaction (its backend terminated, the server
    restarted): SQLAlchemy has dropped it from the pool, a new transaction gets a new one."""
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


async def in_transaction(
    engine: AsyncEngine,
    work: Callable[[AsyncConnection], Awaitable[T]],
    *,
    read_only: bool = False,
    idempotent: bool = False,
) -> T:
    """Run `work` in a transaction of its own, committed when it returns, run again on a
    deadlock or serialization failure, and for up to `_UNSENT_RETRY_S` when no connection
    could be had (nothing was sent: any transaction may be run again) or, for a `read_only` or
    `idempotent` one (`work` finds out itself whether its write landed), when its connection
    was lost. Any other write that lost its connection is not run again here: its COMMIT may
    have landed, and the caller (a job, retried) reads before it writes again."""
    started = False

    def again(exc: BaseException) -> bool:
        if is_retryable(exc):
            return True
        if not started and isinstance(exc, sa.exc.OperationalError):
            return True  # the connection could not be had: nothing was sent
        return (read_only or idempotent) and is_disconnect(exc)

    retrying = AsyncRetrying(
        retry=retry_if_exception(again),
        stop=stop_after_attempt(_ATTEMPTS) & stop_after_delay(_UNSENT_RETRY_S),
        wait=wait_exponential_jitter(multiplier=0.02, max=1.0),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                started = False
                async with engine.begin() as conn:
                    started = True
                    return await work(conn)
    except sa.exc.IntegrityError as exc:
        diag = getattr(exc.orig, "diag", None)
        if getattr(diag, "constraint_name", None) == CONTENT_INDEX:
            detail = getattr(diag, "message_detail", None) or str(exc.orig)
            raise ContentClaimed(f"content already claimed: {detail}") from exc
        raise
    raise AssertionError("unreachable: tenacity reraises the last error")
