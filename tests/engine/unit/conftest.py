"""A real `Engine` over a `MemoryStore` and a `FakeApi`: no emulator, no disk journal, no sleeps.

`unit` builds the harness: a config with one pipeline (`invoices`, step `stp_one`, a memory sink
retrying every 10 ms), the store, the fake API and the engine (not started: a test may script the
fake or prepare the store first). `await unit.start()`, drop files with `unit.drop(name)`, then
`await unit.settled()` waits (with a timeout) until every document reached its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

from docutray_watch._testkit import MemorySink
from docutray_watch.config import Config, parse_config
from docutray_watch.engine import Engine
from docutray_watch.journal import DocumentRow, DocumentState
from docutray_watch.plugins import config_sink_types
from docutray_watch.samples import make_pdf
from docutray_watch.testing import FakeApi, MemoryStore

API_KEY = "k" * 24
PIPELINE = "invoices"
STEP = "stp_one"


class Unit:
    """One engine under test, with its store, fake API and folders."""

    def __init__(self, root: Path, pm: pluggy.PluginManager) -> None:
        self.root = root
        self.pm = pm
        self.store = MemoryStore()
        self.fake = FakeApi()
        self.inbox = root / PIPELINE / "inbox"
        self.done = root / PIPELINE / "done"
        self.failed = root / PIPELINE / "failed"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.engine: Engine | None = None

    def config(self, *, api: dict[str, Any] | None = None, **pipeline: Any) -> Config:
        """The config: `api` entries and pipeline options override the defaults."""
        block: dict[str, Any] = {
            "name": PIPELINE,
            "watch": {"path": str(self.inbox), "settle": 0},
            "steps": [STEP],
            "poll": {"initial": 0.01, "max": 0.05, "timeout": 30},
            "on_success": {"action": "move", "to": str(self.done)},
            "on_failure": {"action": "move", "to": str(self.failed)},
            "sinks": [{"type": "memory", "retry": {"initial": 0.01, "max": 0.02}}],
        }
        block.update(pipeline)
        data: dict[str, Any] = {
            "api": {
                "base_url": "http://127.0.0.1:9",  # never contacted: the fake answers
                "max_in_flight": 4,
                "requests_per_second": 1000,
                "max_retries": 0,
                "pause_probe_interval": 0.05,
                **(api or {}),
            },
            "state_dir": str(self.root / "state"),
            "shutdown_grace": 2,
            "pipelines": [block],
        }
        return parse_config(
            data, config_dir=self.root, sink_types=config_sink_types(self.pm), environ={}
        )

    def build(self, *, api: dict[str, Any] | None = None, **pipeline: Any) -> Engine:
        """A new engine on this store and fake API (the previous one, if any, must be stopped)."""
        self.engine = Engine(
            self.config(api=api, **pipeline),
            plugin_manager=self.pm,
            store=self.store,
            transport=self.fake.transport,
            environ={"DOCUTRAY_API_KEY": API_KEY},
        )
        return self.engine

    async def start(self, *, api: dict[str, Any] | None = None, **pipeline: Any) -> Engine:
        """Build (unless built) and start the engine."""
        engine = self.engine or self.build(api=api, **pipeline)
        await engine.start()
        return engine

    def drop(self, name: str = "a.pdf") -> Path:
        """Write a small PDF into the inbox and offer it to the engine."""
        path = self.inbox / name
        path.write_bytes(make_pdf([name]))
        assert self.engine is not None
        assert self.engine.nominate(PIPELINE, path)
        return path

    async def settled(self, within: float = 15.0) -> None:
        """Wait until every document the engine took has reached its end."""
        assert self.engine is not None
        await asyncio.wait_for(self.engine.wait_idle(), within)

    async def document(self, name: str = "a.pdf") -> DocumentRow:
        """The newest journaled document of that file name."""
        found = [d for d in await self.store.documents_in(*_ALL_STATES) if d.name == name]
        assert found, f"{name} is not in the store"
        return max(found, key=lambda d: d.id)

    def sink(self) -> MemorySink:
        """The memory sink the engine built."""
        return MemorySink.instances[-1]

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop(grace=0)


_ALL_STATES = tuple(DocumentState)


@pytest.fixture(name="unit")
async def unit_fixture(tmp_path: Path, pm: pluggy.PluginManager) -> AsyncIterator[Unit]:
    """The harness; its engine is stopped after the test."""
    harness = Unit(tmp_path, pm)
    try:
        yield harness
    finally:
        await harness.stop()
