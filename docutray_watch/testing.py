"""Helpers for tests of docutray-watch and of its plugins.

With docutray-watch installed, pytest loads its plugin (`docutray_watch.pytest_plugin`, entry
point ``pytest11``) by itself: the fixtures below need no ``conftest.py``, and ``async def`` tests
run without setting ``asyncio_mode`` (see that module). Older set-ups can still enable the
fixtures with ``pytest_plugins = ["docutray_watch.testing"]``.

Fixtures:

- ``emulator``: a started `EmulatorServer` (latency 0.05 s, default API key), stopped after
  the test.
- ``emulator_factory``: starts emulators with `EmulatorConfig` overrides, e.g.
  ``emulator_factory(error_rate=1.0)``; every one is stopped after the test.

Building blocks for sink tests: `make_record()` / `make_document()` (plausible records with real
hashes), `MemorySink` (a sink keeping records in memory, with simulated outages) and
`MemorySinkPlugin` (register it with `pm.register(MemorySinkPlugin())`).

Building blocks for engine tests, without an emulator: `MemoryStore` (a `StateStore` in memory:
the real SQLite journal over ``:memory:``, called on the event loop, recording every call, with
fault injection: ``store.fail_next("step_accepted", 2)``, ``store.hold("delivery_done")``) and
`FakeApi` (a scripted API as an `httpx.MockTransport`: queues of answers for submissions and
status reads, every request recorded). Pass them as ``Engine(config, plugin_manager=pm,
store=store, transport=fake.transport, environ={"DOCUTRAY_API_KEY": ...})``; wait on
``await store.wait_for("step_accepted")``, ``await fake.wait_for(...)`` or
``engine.wait_idle()``, never on a sleep.

`ManualClock` makes an emulator's timing deterministic:
``emulator_factory(clock=clock, latency=5)``, then ``clock.advance(5)`` completes the executions.

Building blocks for pipeline tests:

- `config_data()` / `write_config()` / `build_config()`: the smallest working config for one
  pipeline with the given sink block, against an emulator (a dict, a YAML file, a `Config`);
- `process()` runs `docutray_watch.runner.process_once` — a coroutine: ``await`` it in an
  ``async def`` test — and `process_sync()` does the same from a plain test;
- `running_daemon()` runs the real daemon (`docutray-watch run`) in the test's event loop;
- `HookRecorder`, a plugin recording every hook call in order (register it with
  ``load_plugins(extra=[("recorder", recorder)])``).

For source plugins: ``await check_source(source, put=..., move_to=...)`` drives a source through
nominate / open / keep / sidecar / delete / move (twice, as after a crash) / changed-version round
trips and fails naming the first promise it breaks (see docs/sources.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest
import yaml

from docutray_watch._fakeapi import Answer, FakeApi, Reply, SeenRequest
from docutray_watch._memstore import MemoryStore, StoreCall
from docutray_watch._sourcecheck import check_source
from docutray_watch._testkit import (
    MemorySink,
    MemorySinkConfig,
    MemorySinkPlugin,
    make_document,
    make_record,
)
from docutray_watch.config import Config, load_config, parse_config
from docutray_watch.emulator import Clock, EmulatorConfig, EmulatorServer
from docutray_watch.hookspecs import hookimpl

if TYPE_CHECKING:
    from docutray_watch.daemon import Daemon
    from docutray_watch.plugins import Plugins
    from docutray_watch.records import Document, Identification, ResultRecord
    from docutray_watch.sinks.base import Receipt

__all__ = [
    "EMULATOR_FIXTURE_LATENCY",
    "Answer",
    "EmulatorFactory",
    "FakeApi",
    "HookCall",
    "HookRecorder",
    "ManualClock",
    "MemorySink",
    "MemorySinkConfig",
    "MemorySinkPlugin",
    "MemoryStore",
    "ProcessResult",
    "Reply",
    "SeenRequest",
    "StoreCall",
    "build_config",
    "check_source",
    "config_data",
    "make_document",
    "make_record",
    "process",
    "process_sync",
    "running_daemon",
    "write_config",
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


# --- configs ------------------------------------------------------------------------------------


def config_data(
    root: Path,
    sink: Mapping[str, Any],
    *,
    emulator: EmulatorServer | None = None,
    pipeline: str = "invoices",
    steps: Sequence[str] = ("stp_test",),
    **pipeline_options: Any,
) -> dict[str, Any]:
    """The smallest working config for one pipeline delivering to `sink`, as a dict.

    Folders live under `root`: the inbox ``<root>/<pipeline>/inbox`` (created), processed files
    go to ``<pipeline>/done`` or ``<pipeline>/failed``, the journal to ``state``. Files are
    taken at once (``settle: 0``) and polled quickly. With `emulator`, the API is that emulator.
    """
    inbox = root / pipeline / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    block: dict[str, Any] = {
        "name": pipeline,
        "watch": {"path": str(inbox), "settle": 0},
        "steps": list(steps),
        "poll": {"initial": 0.05, "max": 0.2, "timeout": 30},
        "on_success": {"action": "move", "to": str(root / pipeline / "done")},
        "on_failure": {"action": "move", "to": str(root / pipeline / "failed")},
        "sinks": [dict(sink)],
    }
    block.update(pipeline_options)
    data: dict[str, Any] = {
        "state_dir": str(root / "state"),
        "shutdown_grace": 5,
        "pipelines": [block],
    }
    if emulator is not None:
        data["api"] = {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 1000,
            "max_retries": 2,
        }
    return data


def write_config(root: Path, sink: Mapping[str, Any], **options: Any) -> Path:
    """`config_data()` written to ``<root>/config.yaml``; returns that path."""
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config_data(root, sink, **options)), encoding="utf-8")
    return path


def build_config(
    root: Path, sink: Mapping[str, Any], *, plugins: Plugins | None = None, **options: Any
) -> Config:
    """`config_data()` validated into a `Config`, with the sink types of `plugins` (default:
    the installed plugins, so your own sink type is known once your package is installed)."""
    return parse_config(
        config_data(root, sink, **options),
        config_dir=root,
        sink_types=_plugins_or_installed(plugins).config_sink_types,
        environ={},
    )


def _plugins_or_installed(plugins: Plugins | None) -> Plugins:
    from docutray_watch.plugins import load_plugins

    return plugins if plugins is not None else load_plugins()


# --- running pipelines --------------------------------------------------------------------------


@dataclass
class ProcessResult:
    """What `process()` returns: the exit code of `docutray-watch process` and its output."""

    exit_code: int
    output: list[str] = field(default_factory=list)


async def process(config: Config, *, plugins: Plugins | None = None) -> ProcessResult:
    """One `process` pass over every pipeline of `config` (a coroutine: ``await`` it)."""
    from docutray_watch.runner import process_once

    lines: list[str] = []
    pm = _plugins_or_installed(plugins).pm
    code = await process_once(config, plugin_manager=pm, echo=lines.append)
    return ProcessResult(code, lines)


def process_sync(config: Config, *, plugins: Plugins | None = None) -> ProcessResult:
    """`process()` for a plain (not ``async def``) test; not from inside a running event loop."""
    return asyncio.run(process(config, plugins=plugins))


@contextlib.asynccontextmanager
async def running_daemon(
    config_path: Path, *, plugins: Plugins | None = None, within: float = 30.0
) -> AsyncIterator[Daemon]:
    """Run the daemon (`docutray-watch run`) on `config_path` in this event loop, until the
    ``async with`` block ends; then stop it as SIGTERM would, and check it exited 0. It must
    start, and stop, `within` seconds."""
    from docutray_watch.daemon import Daemon
    from docutray_watch.sdnotify import Notifier

    plugins = _plugins_or_installed(plugins)
    config = load_config(config_path, sink_types=plugins.config_sink_types)
    daemon = Daemon(config, config_path, plugins=plugins, notifier=Notifier(None))
    task = asyncio.ensure_future(daemon.run())
    started = asyncio.ensure_future(daemon.started.wait())
    await asyncio.wait({task, started}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    if not daemon.started.is_set():
        started.cancel()
        daemon.stop()
        code = await task
        raise AssertionError(f"the daemon did not start (exit code {code}); see its log")
    try:
        yield daemon
    finally:
        daemon.stop()
        code = await asyncio.wait_for(task, timeout=within)
    assert code == 0, f"the daemon exited {code}"


# --- recording hook calls -----------------------------------------------------------------------


@dataclass(frozen=True)
class HookCall:
    """One hook call: the hook's name and its keyword arguments."""

    name: str
    kwargs: dict[str, Any]

    @property
    def document_name(self) -> str | None:
        """The name of the file the call is about (from `document` or `path`), if any."""
        document, path = self.kwargs.get("document"), self.kwargs.get("path")
        if document is not None:
            return str(document.name)
        return path.name if isinstance(path, Path) else None


class HookRecorder:
    """A plugin that records every hook call, in order (answers nothing, changes nothing).

    Register it next to the plugin under test, e.g. ``load_plugins(extra=[("recorder", r)])``
    or ``pm.register(r)``; then ``r.names()`` is the order of the calls, ``r.calls("startup")``
    the calls of one hook, and ``r.wait_for("after_document_archived")`` waits for one (from a
    thread) — ``await r.wait_for_async(...)`` in an ``async def`` test.
    """

    def __init__(self) -> None:
        self.history: list[HookCall] = []
        self._changed = threading.Condition()

    def _record(self, name: str, **kwargs: Any) -> None:
        with self._changed:
            self.history.append(HookCall(name, kwargs))
            self._changed.notify_all()

    def names(self, *, pipeline: str | None = None, document: str | None = None) -> list[str]:
        """The hooks called so far, in order (only those about `pipeline`, and about the file
        named `document`, if given)."""
        with self._changed:
            return [
                call.name
                for call in self.history
                if (pipeline is None or call.kwargs.get("pipeline") in (None, pipeline))
                and (document is None or call.document_name == document)
            ]

    def calls(self, name: str) -> list[HookCall]:
        """The calls of one hook so far."""
        with self._changed:
            return [call for call in self.history if call.name == name]

    def wait_for(self, name: str, count: int = 1, *, timeout: float = 10.0) -> list[HookCall]:
        """Block until `name` was called `count` times; its calls. Raises TimeoutError."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.calls(name)) >= count, timeout):
                raise TimeoutError(f"{name} was called {len(self.calls(name))} of {count} times")
            return self.calls(name)

    async def wait_for_async(
        self, name: str, count: int = 1, *, within: float = 10.0
    ) -> list[HookCall]:
        """`wait_for` without blocking the event loop (the hooks are called on it)."""
        return await asyncio.to_thread(self.wait_for, name, count, timeout=within)

    @hookimpl
    def startup(self, config: Config) -> None:
        """Record it."""
        self._record("startup", config=config)

    @hookimpl
    def shutdown(self, config: Config) -> None:
        """Record it."""
        self._record("shutdown", config=config)

    @hookimpl
    def ignore_document(self, pipeline: str, path: Path, location: str) -> None:
        """Record it (and ignore nothing)."""
        self._record("ignore_document", pipeline=pipeline, path=path, location=location)

    @hookimpl
    def document_discovered(self, pipeline: str, document: Document) -> None:
        """Record it."""
        self._record("document_discovered", pipeline=pipeline, document=document)

    @hookimpl
    def after_document_identified(
        self, pipeline: str, document: Document, identification: Identification
    ) -> None:
        """Record it."""
        self._record(
            "after_document_identified",
            pipeline=pipeline,
            document=document,
            identification=identification,
        )

    @hookimpl
    def before_document_submit(
        self, pipeline: str, document: Document, step_id: str, metadata: dict[str, Any]
    ) -> None:
        """Record it (and add no metadata)."""
        self._record(
            "before_document_submit",
            pipeline=pipeline,
            document=document,
            step_id=step_id,
            metadata=dict(metadata),
        )

    @hookimpl
    def after_document_result(
        self, pipeline: str, document: Document, record: ResultRecord
    ) -> None:
        """Record it."""
        self._record("after_document_result", pipeline=pipeline, document=document, record=record)

    @hookimpl
    def after_document_delivered(
        self, pipeline: str, document: Document, record: ResultRecord, sink: str, receipt: Receipt
    ) -> None:
        """Record it."""
        self._record(
            "after_document_delivered",
            pipeline=pipeline,
            document=document,
            record=record,
            sink=sink,
            receipt=receipt,
        )

    @hookimpl
    def on_document_error(
        self,
        pipeline: str,
        document: Document | None,
        path: Path,
        stage: str,
        error: str,
        location: str,
    ) -> None:
        """Record it."""
        self._record(
            "on_document_error",
            pipeline=pipeline,
            document=document,
            path=path,
            stage=stage,
            error=error,
            location=location,
        )

    @hookimpl
    def after_document_archived(
        self,
        pipeline: str,
        document: Document | None,
        path: Path,
        outcome: str,
        destination: Path | str | None,
        location: str,
    ) -> None:
        """Record it."""
        self._record(
            "after_document_archived",
            pipeline=pipeline,
            document=document,
            path=path,
            outcome=outcome,
            destination=destination,
            location=location,
        )
