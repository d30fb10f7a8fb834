"""The journal's writer thread, with group commit.

SQLite allows one writer at a time and each commit costs an fsync. All journal calls of the daemon
run on one dedicated thread; calls queued while a transaction is being committed run together in
the next one, so many documents share one fsync without weakening what a returned call
guarantees: it returns only after its changes are committed. A batch runs without savepoints
first; should a call fail, it runs again with one per call, so a failed call never takes the
others' changes with it. The outcomes of a batch reach the event loop in one wake-up, not one per
call (each wake-up is a system call).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from docutray_watch.journal.sqlite.journal import Journal

__all__ = ["GroupCommitWriter"]

T = TypeVar("T")
P = ParamSpec("P")

_Outcome = tuple["asyncio.Future[Any]", bool, Any]


class GroupCommitWriter:
    """Runs `Journal` methods on one writer thread, many calls to a transaction."""

    def __init__(self, journal: Journal, *, max_batch: int = 256) -> None:
        self.journal = journal
        self._max_batch = max_batch
        self._queue: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._write_error: str | None = None

    @property
    def write_error(self) -> str | None:
        """Why the last batch that tried to change the journal failed (disk full, I/O error);
        None once a later batch committed changes. `/readyz` reports it."""
        return self._write_error

    async def open(self) -> None:
        """Open the journal and start the writer thread."""
        await asyncio.to_thread(self.journal.open)
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Finish queued calls, stop the thread and close the database."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        await asyncio.to_thread(self.journal.close)

    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the journal is closed")
            self._queue.append((fn, future))
            self._cond.notify()
        return future

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` (a `Journal` method) on the writer thread."""
        return await self._submit(lambda: fn(*args, **kwargs))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]]) -> None:
        conn = self.journal.conn
        changes_before = conn.total_changes
        try:
            try:
                outcomes = self._transaction(conn, batch, savepoints=False)
            except _RunAgain:
                # A call failed part-way, with no savepoint to undo only its changes: the whole
                # batch was rolled back, and runs again with a savepoint per call. The calls
                # change nothing but the database, so running them again is safe.
                outcomes = self._transaction(conn, batch, savepoints=True)
        except BaseException as exc:  # noqa: BLE001 - the batch failed: every call fails
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                self._write_error = f"{type(exc).__name__}: {exc}"
                if _is_disk_full(exc):
                    # The WAL holds many versions of the same pages: copying the latest into the
                    # database lets the next transactions reuse the WAL from its start instead of
                    # growing it. PASSIVE: never waits for readers (the writer must not block).
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            _hand_over([(future, False, exc) for _fn, future in batch])
            return
        finally:
            self.journal.savepoints = True
        if conn.total_changes != changes_before:
            self._write_error = None  # a write went through: the journal takes changes again
        _hand_over(outcomes)

    def _transaction(
        self,
        conn: sqlite3.Connection,
        batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]],
        *,
        savepoints: bool,
    ) -> list[_Outcome]:
        """Run the batch in one transaction and commit it; the outcome of each call. Without
        `savepoints` (two statements less per call) the first call that fails rolls the whole
        transaction back and raises `_RunAgain` (a batch of one fails as it is)."""
        self.journal.savepoints = savepoints
        outcomes: list[_Outcome] = []
        conn.execute("BEGIN IMMEDIATE")
        for fn, future in batch:
            # A call whose caller was cancelled still runs: a write that was asked for (an
            # execution id, say) must not be lost because the task waiting on it stopped.
            try:
                outcomes.append((future, True, fn()))
            except BaseException as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    self._write_error = f"{type(exc).__name__}: {exc}"
                if not conn.in_transaction:
                    raise  # SQLite rolled the whole batch back: every call in it failed
                if not savepoints:
                    conn.execute("ROLLBACK")
                    if len(batch) > 1:
                        raise _RunAgain from exc
                    return [(future, False, exc)]
                outcomes.append((future, False, exc))
        conn.execute("COMMIT")
        return outcomes


class _RunAgain(Exception):
    """A batch run without savepoints was rolled back: run it again with them."""


def _is_disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(
        exc
    )


def _hand_over(outcomes: list[_Outcome]) -> None:
    """Pass a batch's outcomes to their callers: one wake-up per event loop (from the writer)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_settle_all, items)


def _settle_all(outcomes: list[_Outcome]) -> None:
    """Hand each call's outcome to its caller, unless the caller has stopped waiting."""
    for future, ok, value in outcomes:
        if future.done():
            continue  # cancelled by its caller: the work is done (or failed) all the same
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
