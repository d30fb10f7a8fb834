"""The stamps of files kept in place, read while the daemon starts instead of before.

A folder may hold 100,000 files kept where they were found (`on_success: keep`), each
remembered as `kept_stamp(size, mtime_ns)`. Reading them costs a few tenths of a second of the
start, so the start does not wait for them: `PipelineSet` begins the read (`read_kept`, on a
connection of its own for the SQLite journal) and goes on opening sinks, resuming and starting
the watchers, while the start-up scan's walking thread lists the folder. Whatever has to tell a
kept file from a new one waits for the stamps instead:

- the walking thread holds back what it listed until `filled` (`scanning.py`);
- `Discovery.nominate` holds a file-system event's path until the stamps are read, then offers
  it again (`Held`).

So a kept, unchanged file is never taken again, whichever comes first. While the read runs the
engine may already change the memory (a resumed document finishes and is kept, or a kept file
is taken again): those paths are noted, and the stamps read do not overwrite them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar, overload

import structlog

from docutray_watch.delivery import describe
from docutray_watch.journal import StateStore

__all__ = ["KEPT_TASK_PREFIXES", "Held", "KeptStamps", "Offer", "read_kept"]

log = structlog.get_logger("docutray_watch.engine")

# Names of the tasks below: a stop cancels them (nothing is in flight in them).
KEPT_TASK_PREFIXES = ("kept-read:", "kept-wait:")
_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)

T = TypeVar("T")


class KeptStamps(dict[str, int]):
    """Path → `kept_stamp(size, mtime_ns)` of one pipeline's kept files; `filled` once the
    journal's stamps are in. Item assignment, `del` and `pop` before that are noted and win
    over what the read brings; reading (`get`, `in`) is the plain dict's."""

    def __init__(self, *, filled: bool = True) -> None:
        super().__init__()
        self._filled = threading.Event()  # `filled_event`
        self._touched: set[str] | None = None if filled else set()
        self._waiters: list[asyncio.Future[None]] = []
        self._abandoned = False
        if filled:
            self._filled.set()

    @property
    def filled(self) -> bool:
        """The journal's stamps are in: a lookup answers for the file."""
        return self._filled.is_set() and not self._abandoned

    @property
    def abandoned(self) -> bool:
        """The read was given up (the engine stops): no file of the pipeline can be taken."""
        return self._abandoned

    def abandon(self) -> None:
        """Give up the read: wake whatever waits for the stamps (`filled` stays False, so
        nothing listed meanwhile is taken)."""
        self._abandoned = True
        self._wake()

    @property
    def filled_event(self) -> threading.Event:
        """Set once the stamps are in (for a worker thread to wait on)."""
        return self._filled

    async def ready(self) -> None:
        """Wait (on the event loop) until the stamps are in."""
        if self.filled:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def fill(self, stamps: dict[str, int]) -> None:
        """The journal's stamps (taken over, not copied), under the changes made meanwhile.
        Called on the event loop's thread, like every change."""
        for path in self._touched or ():
            stamps.pop(path, None)  # what the engine changed meanwhile is newer than the read
        dict.update(self, stamps)
        self._touched = None
        self._wake()

    def _wake(self) -> None:
        self._filled.set()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def __setitem__(self, path: str, stamp: int) -> None:
        if self._touched is not None:
            self._touched.add(path)
        super().__setitem__(path, stamp)

    def __delitem__(self, path: str) -> None:
        if self._touched is not None:
            self._touched.add(path)
        super().__delitem__(path)

    @overload
    def pop(self, path: str, /) -> int: ...
    @overload
    def pop(self, path: str, default: int, /) -> int: ...
    @overload
    def pop(self, path: str, default: T, /) -> int | T: ...
    def pop(self, path: str, *default: object) -> object:
        """`dict.pop`, noted while the stamps are being read."""
        if self._touched is not None:
            self._touched.add(path)
        return super().pop(path, *default)


async def read_kept(store: StateStore, pipeline: str, kept: KeptStamps) -> None:
    """Read a pipeline's kept stamps into `kept`; a failed read is logged and tried again
    (the folder's files wait meanwhile: none can be told from a kept one). Cancelled (the
    engine stops) before the stamps are in, the read is abandoned: a walking thread waiting for
    them must not keep the process from ending."""
    try:
        for attempt in range(1_000_000):
            try:
                stamps = await store.kept_stamps(pipeline)
            except (sqlite3.Error, OSError, RuntimeError) as exc:
                delay = _RETRY_S[min(attempt, len(_RETRY_S) - 1)]
                log.error(
                    "kept_files_unreadable",
                    pipeline=pipeline,
                    error=describe(exc),
                    retry_in_s=delay,
                    note="the folder's files wait: none can be told from a file kept in place",
                )
                await asyncio.sleep(delay)
                continue
            kept.fill(stamps)
            return
    finally:
        if not kept.filled:
            kept.abandon()


class Offer(NamedTuple):
    """One offer of a path to a pipeline (the arguments of `Discovery.nominate` it needs)."""

    path: Path
    relative_path: str | None
    closed: bool
    writing: bool


class Nominations(Protocol):
    """Where an offer counts as outstanding work (`Documents`)."""

    def nominate(self, key: tuple[str, str]) -> None: ...
    def release(self, key: tuple[str, str]) -> None: ...


_HELD = "\0held:"  # marks an offer held until the kept stamps are read (never a path)


class Held:
    """Paths offered while their pipeline's kept stamps were still being read: offered again
    once they are in, in the order they came (`spawn(pipeline)` starts `release` as a task).
    Each counts as outstanding work meanwhile (the engine is not idle)."""

    def __init__(self, spawn: Callable[[str], None]) -> None:
        self._spawn = spawn
        self._held: dict[str, list[Offer]] = {}

    def hold(self, pipeline: str, offer: Offer, documents: Nominations) -> None:
        """Keep an offer until the pipeline's stamps are in."""
        waiting = self._held.setdefault(pipeline, [])
        if not waiting:
            self._spawn(pipeline)
        waiting.append(offer)
        documents.nominate((pipeline, _HELD + str(offer.path)))

    async def release(
        self,
        pipeline: str,
        kept: KeptStamps,
        again: Callable[[str, Offer], object],
        documents: Nominations,
    ) -> None:
        """Once the stamps are in, make each held offer again (none if the read was given up:
        the engine stops)."""
        try:
            await kept.ready()
        finally:
            offers = self._held.pop(pipeline, [])
        for offer in offers:
            if kept.filled:
                again(pipeline, offer)
            documents.release((pipeline, _HELD + str(offer.path)))
