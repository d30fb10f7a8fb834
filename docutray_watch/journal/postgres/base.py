"""The PostgreSQL store's machinery: opening (and migrating), one transaction per call, fenced
views, and the multi-node calls outside the protocol (leases, source identities, generations).

As with SQLite's writer thread, a call whose caller is cancelled still runs to its commit: a
write that was asked for (an execution id) is not lost because the task waiting on it stopped;
`close` waits for such calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from docutray_watch.journal.postgres.connection import in_transaction, make_engine
from docutray_watch.journal.postgres.migrations import (
    SCHEMA_VERSION,
    SchemaNotReady,
    migrate_on,
    refuse_newer,
    schema_version_of,
)
from docutray_watch.journal.postgres.tx import Tx

__all__ = ["StoreBase"]

T = TypeVar("T")


@dataclass
class _Shared:
    """What a store and its fenced views share: the engine, the calls under way, the health."""

    engine: AsyncEngine | None = None
    pending: set[asyncio.Task[object]] = field(default_factory=set)
    write_error: str | None = None


def _retrieve(task: asyncio.Task[object]) -> None:
    """Mark the outcome of a call seen: one whose caller was cancelled has nobody to raise to
    (asyncio would log "exception never retrieved" for a failed write nobody awaits)."""
    if not task.cancelled():
        task.exception()


class StoreBase:
    """The `StateStore` of a cluster: the journal in schema `schema` of the database at `url`.

    `node` is written on the documents this store creates (the node holding their file; None
    for a shared source). With `migrate` (the default, as SQLite creates its journal on open)
    `open` applies missing migrations; without it, `open` refuses a missing or older schema
    (`SchemaNotReady`: run `docutray-watch cluster init`). A newer schema is always refused
    (`NewerSchemaError`). `pool_size` caps its connections (`make_engine`).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "docutray",
        node: str | None = None,
        migrate: bool = True,
        clock: Callable[[], float] = time.time,
        pool_size: int | None = None,
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.schema = schema
        self.node = node
        self._migrate = migrate
        self._clock = clock
        self._lease: int | None = None
        self._shared = _Shared()

    # -- life cycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, and bring the schema up to date (or check it is, without `migrate`); does
        nothing when the store is open already (a cluster node opens it, waiting for the
        database, before its engine starts)."""
        if self._shared.engine is not None:
            return
        engine = make_engine(self.url, self.schema, node=self.node, pool_size=self.pool_size)
        try:
            async with engine.begin() as conn:
                if self._migrate:
                    await migrate_on(conn, self.schema)
                else:
                    version = await schema_version_of(conn, self.schema)
                    refuse_newer(self.schema, version)
                    if version < SCHEMA_VERSION:
                        raise SchemaNotReady(
                            f"PostgreSQL schema {self.schema!r} is at version {version}, this "
                            f"docutray-watch needs {SCHEMA_VERSION}: run `docutray-watch cluster"
                            " init`"
                        )
        except BaseException:
            await engine.dispose()
            raise
        self._shared.engine = engine

    async def close(self) -> None:
        """Wait for the calls under way, then release the connections."""
        while self._shared.pending:
            await asyncio.wait(set(self._shared.pending))
        engine, self._shared.engine = self._shared.engine, None
        if engine is not None:
            await engine.dispose()

    @property
    def write_error(self) -> str | None:
        """Why the last write failed (the server unreachable…); None once a later one went
        through."""
        return self._shared.write_error

    async def probe(self) -> None:
        """Raise unless the database takes a transaction now (the readiness check)."""
        await self._call(lambda tx: tx.conn.execute(sa.text("SELECT 1")), write=False)

    def fenced(self, lease: int) -> Self:
        """A view of this store whose writes to a document hold only while the document's lease
        is `lease` (as `take_lease` returned it): otherwise they raise `LeaseLost` and write
        nothing. It shares this store's connections; open and close the store, not the view."""
        view = copy.copy(self)
        view._lease = lease
        return view

    @property
    def lease(self) -> int | None:
        """The lease this view's writes carry (None: unfenced)."""
        return self._lease

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the store's database, committed when the block ends: for writes that
        must commit together with the cluster's own (e.g. `claims.record_source` with a job's
        defer). Unqualified names resolve to the store's schema first, then `public` (where
        procrastinate's tables live by default), in Core queries and plain SQL alike."""
        async with self._engine().begin() as conn:
            quoted = conn.dialect.identifier_preparer.quote_identifier(self.schema)
            await conn.execute(sa.text(f"SET LOCAL search_path TO {quoted}, public"))
            yield conn

    # -- running a call ------------------------------------------------------------------------

    def _engine(self) -> AsyncEngine:
        if self._shared.engine is None:
            raise RuntimeError("the journal is not open")
        return self._shared.engine

    async def _call(
        self, work: Callable[[Tx], Awaitable[T]], *, write: bool = True, idempotent: bool = False
    ) -> T:
        engine = self._engine()

        def run(conn: AsyncConnection) -> Awaitable[T]:
            return work(Tx(conn, self._clock(), self._lease, self.node))

        task = asyncio.ensure_future(
            self._tracked(
                in_transaction(engine, run, read_only=not write, idempotent=idempotent),
                write=write,
            )
        )
        self._shared.pending.add(task)
        task.add_done_callback(self._shared.pending.discard)
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _tracked(self, call: Awaitable[T], *, write: bool) -> T:
        try:
            result = await call
        except sa.exc.OperationalError as exc:
            self._shared.write_error = f"{type(exc.orig).__name__}: {exc.orig}"
            raise
        if write:
            self._shared.write_error = None
        return result
