"""Helpers for tests of docutray-watch and of its plugins.

Enable them in a ``conftest.py`` with ``pytest_plugins = ["docutray_watch.testing"]``.

Fixtures:

- ``emulator``: a started `EmulatorServer` (latency 0.05 s, default API key), stopped after
  the test.
- ``emulator_factory``: starts emulators with `EmulatorConfig` overrides, e.g.
  ``emulator_factory(error_rate=1.0)``; every one is stopped after the test.

Building blocks for sink tests: `make_record()` / `make_document()` (plausible records with real
hashes), `MemorySink` (a sink keeping records in memory, with simulated outages) and
`MemorySinkPlugin` (register it with `pm.register(MemorySinkPlugin())`).

`ManualClock` makes an emulator's timing deterministic:
``emulator_factory(clock=clock, latency=5)``, then ``clock.advance(5)`` completes the executions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from docutray_watch._testkit import (
    MemorySink,
    MemorySinkConfig,
    MemorySinkPlugin,
    make_document,
    make_record,
)
from docutray_watch.emulator import Clock, EmulatorConfig, EmulatorServer

__all__ = [
    "EMULATOR_FIXTURE_LATENCY",
    "EmulatorFactory",
    "ManualClock",
    "MemorySink",
    "MemorySinkConfig",
    "MemorySinkPlugin",
    "make_document",
    "make_record",
]

EMULATOR_FIXTURE_LATENCY = 0.05
"""Latency of the emulators the fixtures start, unless overridden: short, but not zero."""


class ManualClock:
    """A monotonic clock that moves only when told (an emulator `Clock` for tests)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` forward."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        with self._lock:
            self._now += seconds


class EmulatorFactory(Protocol):
    """Start an emulator from a base config (default: latency 0.05 s) and field overrides."""

    def __call__(
        self,
        config: EmulatorConfig | None = None,
        /,
        *,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> EmulatorServer: ...


@pytest.fixture(name="emulator_factory")
def emulator_factory_fixture() -> Iterator[EmulatorFactory]:
    """Start emulators on demand; stop them all at teardown."""
    servers: list[EmulatorServer] = []

    def start(
        config: EmulatorConfig | None = None, /, *, clock: Clock | None = None, **overrides: Any
    ) -> EmulatorServer:
        base = config or EmulatorConfig(latency=EMULATOR_FIXTURE_LATENCY)
        server = EmulatorServer(base.with_changes(**overrides), clock=clock)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in reversed(servers):
            server.stop()


@pytest.fixture(name="emulator")
def emulator_fixture(emulator_factory: EmulatorFactory) -> EmulatorServer:
    """A started DocuTray API emulator with a 0.05 s latency and the default API key."""
    return emulator_factory()
