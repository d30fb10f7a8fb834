"""`MemoryStore`: a `StateStore` for tests, in memory, with fault injection and a call log.

Re-exported by `docutray_watch.testing`. It is the real SQLite journal (`Journal` over
``:memory:``), so every state move is checked exactly as in production; only the writer thread is
gone: each call runs on the event loop, in its own transaction, after yielding once (a real store
call always suspends its caller, and tests must not depend on it not doing so).

Why not a pure-Python fake: the journal's behaviour *is* its SQL (transition checks, document
advancement, flags, the twin lookups); a second implementation for tests would drift from it and
prove nothing about the engine's use of the real one.

On top of the journal:

- every call is recorded, in order (`calls`, `names()`), and a test can wait for one
  (`await store.wait_for("step_accepted")`) instead of sleeping;
- `fail_next(name, times, error)` makes the next calls of a method raise (by default
  ``sqlite3.OperationalError("disk I/O error")``, what a failing disk gives), and sets
  `write_error` as the real store does;
- `hold(name)` makes calls of a method wait until the returned event is set (a caller cancelled
  meanwhile does not cancel the call, as with the real writer thread; `close` waits for it).

Closing the store keeps its contents (as a file would): a new engine given the same store sees
what the previous one wrote, which is how a restart is tested. `discard()` frees it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from docutray_watch.journal.sqlite.journal import Journal
from docutray_watch.journal.sqlite.store import SqliteStore

__all__ = ["MemoryStore", "StoreCall"]

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True)
class StoreCall:
    """One call of a store method: its name, arguments and how it ended."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    error: BaseException | None = field(default=None, compare=False)

    @property
    def failed(self) -> bool:
        """Whether the call raised."""
        return self.error is not None


@dataclass
class _Fault:
    times: int
    error: Callable[[], BaseException]


class MemoryStore(SqliteStore):
    """The SQLite journal in memory, called on the event loop (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(Journal(":memory:"))
        self.calls: list[StoreCall] = []
        self._faults: dict[str, _Fault] = {}
        self._holds: dict[str, asyncio.Event] = {}
        self._pulse = asyncio.Event()
        self._pending: set[asyncio.Future[Any]] = set()
        self._is_open = False
        self._opened_once = False

    # -- life cycle: the data outlives `close` (a restart), like a file's -------------------

    async def open(self) -> None:
        """Open the journal (created on first open, kept afterwards)."""
        self._record("open", (), {})
        if not self._opened_once:
            self.journal.open()
            self._opened_once = True
        self._is_open = True

    async def close(self) -> None:
        """Finish the calls under way (a held one: once released), then stop taking calls; the
        contents stay for the next `open`."""
        self._record("close", (), {})
        while self._pending:
            await asyncio.wait(set(self._pending))
        self._is_open = False

    def discard(self) -> None:
        """Free the database (its contents are gone)."""
        self.journal.close()
        self._opened_once = self._is_open = False

    # -- the only way into the journal --------------------------------------------------------

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` (a `Journal` method named like the store's) in its own transaction.

        As with the writer thread, a call whose caller is cancelled still runs: a write that was
        asked for (an execution id) is not lost because the task waiting on it stopped."""
        name = getattr(fn, "__name__", repr(fn))
        work = asyncio.ensure_future(self._execute(name, lambda: fn(*args, **kwargs), args, kwargs))
        self._pending.add(work)
        work.add_done_callback(self._pending.discard)
        return await asyncio.shield(work)

    async def _execute(
        self, name: str, run: Callable[[], T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        await asyncio.sleep(0)  # a real store call suspends its caller: so does this one
        hold = self._holds.get(name)
        if hold is not None:
            await hold.wait()
        error: BaseException | None = None
        try:
            if not self._is_open:
                raise RuntimeError("the journal is closed")
            fault = self._faults.get(name)
            if fault is not None and fault.times > 0:
                fault.times -= 1
                raise fault.error()
            conn = self.journal.conn
            before = conn.total_changes
            result = run()
            if conn.total_changes != before:
                self._write_error = None  # a write went through, as in the writer thread
            return result
        except BaseException as exc:
            error = exc
            if isinstance(exc, sqlite3.OperationalError):
                self._write_error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._record(name, args, kwargs, error)

    # -- fault injection ----------------------------------------------------------------------

    def fail_next(
        self,
        name: str,
        times: int = 1,
        error: Callable[[], BaseException] = lambda: sqlite3.OperationalError("disk I/O error"),
    ) -> None:
        """Make the next `times` calls of method `name` raise `error()` (nothing is written)."""
        self._faults[name] = _Fault(times, error)

    def hold(self, name: str) -> asyncio.Event:
        """Make calls of method `name` wait until the returned event is set."""
        event = self._holds[name] = asyncio.Event()
        return event

    # -- what a test reads ----------------------------------------------------------------------

    def names(self) -> list[str]:
        """The methods called so far, in order."""
        return [call.name for call in self.calls]

    def calls_of(self, name: str) -> list[StoreCall]:
        """The calls of one method so far."""
        return [call for call in self.calls if call.name == name]

    async def wait_for(
        self,
        name: str,
        count: int = 1,
        *,
        where: Callable[[StoreCall], bool] | None = None,
        within: float = 10.0,
    ) -> list[StoreCall]:
        """Wait until method `name` was called `count` times (those matching `where`, if given);
        returns those calls. Raises TimeoutError after `within` seconds."""

        def matching() -> list[StoreCall]:
            return [c for c in self.calls_of(name) if where is None or where(c)]

        async with asyncio.timeout(within):
            while len(matching()) < count:
                await self._pulse.wait()
        return matching()

    def _record(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: BaseException | None = None,
    ) -> None:
        self.calls.append(StoreCall(name, args, dict(kwargs), error))
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()  # wakes every waiter once; they look again and wait on the new event
