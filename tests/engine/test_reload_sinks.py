"""SIGHUP reloads and sinks: unchanged sinks are kept, changed ones are handed over, never
overlapping with their new instance."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pluggy
import structlog

from docutray_watch.delivery import SinkRunner
from docutray_watch.engine import Engine
from docutray_watch.hookspecs import hookimpl
from docutray_watch.records import ResultRecord
from docutray_watch.sinks.base import Receipt, Sink, SinkConfig
from docutray_watch.testing import make_record

from .conftest import ConfigFactory, pipeline_data


class GateConfig(SinkConfig):
    """A label, so a reload can change the settings."""

    label: str = "a"


class GateSink(Sink[GateConfig]):
    """Writes what it does to a shared timeline; `deliver` can be held open."""

    type = "gate"
    description = "Timeline sink (tests)."
    config_model = GateConfig
    timeline: list[tuple[str, str]] = []
    hold: threading.Event | None = None  # deliver waits for it when set
    entered = threading.Event()

    def _note(self, what: str) -> None:
        GateSink.timeline.append((self.config.label, what))

    def open(self) -> None:
        self._note("open")

    def deliver(self, record: ResultRecord) -> Receipt:
        self._note("deliver")
        GateSink.entered.set()
        if GateSink.hold is not None:
            assert GateSink.hold.wait(10)
        self._note("delivered")
        return None

    def close(self) -> None:
        self._note("close")


class GatePlugin:
    @hookimpl
    def register_sink_types(self, register: Callable[[type[Sink[Any]]], None]) -> None:
        register(GateSink)


def _reset_gate() -> None:
    GateSink.timeline = []
    GateSink.hold = None
    GateSink.entered = threading.Event()


def _gate_pipeline(tmp_path: Any, label: str, name: str = "invoices") -> dict[str, Any]:
    return pipeline_data(
        tmp_path,
        name,
        sinks=[
            {"type": "filesystem", "path": str(tmp_path / name / "results")},
            {"type": "gate", "label": label},
        ],
    )


async def test_an_unchanged_reload_keeps_every_sink_and_logs_nothing_changed(
    tmp_path: Any, make_config: ConfigFactory, pm: pluggy.PluginManager
) -> None:
    """A reload of an equal config (loaded again: new model classes) keeps every sink object,
    rebuilds nothing and logs no change."""
    _reset_gate()
    pm.register(GatePlugin(), name="gate")
    pipelines = [_gate_pipeline(tmp_path, "a"), _gate_pipeline(tmp_path, "a", "receipts")]
    engine = Engine(make_config(*pipelines), plugin_manager=pm)
    await engine.start(resume=False)
    try:
        before = {
            (name, sink_id): runner.sink
            for name, runtime in engine.ctx.pipelines.items()
            for sink_id, runner in runtime.sinks.items()
        }
        again = make_config(*pipelines)
        assert type(again.pipelines[0]) is not type(engine.config.pipelines[0])
        with structlog.testing.capture_logs() as logs:
            changes = await engine.reload(again)
        after = {
            (name, sink_id): runner.sink
            for name, runtime in engine.ctx.pipelines.items()
            for sink_id, runner in runtime.sinks.items()
        }
    finally:
        await engine.stop(grace=0)
    assert changes == []
    assert len(before) == 4
    assert all(after[key] is sink for key, sink in before.items())
    (reloaded,) = [e for e in logs if e["event"] == "config_reloaded"]
    assert reloaded["changes"] == []
    assert GateSink.timeline.count(("a", "open")) == 2  # opened once each, at start


async def test_a_changed_sink_is_closed_before_its_new_instance_opens(
    tmp_path: Any, make_config: ConfigFactory, pm: pluggy.PluginManager
) -> None:
    """A reload changing a sink's settings closes the old instance, then opens the new one in
    the same runner; the unchanged sink next to it is kept."""
    _reset_gate()
    pm.register(GatePlugin(), name="gate")
    engine = Engine(make_config(_gate_pipeline(tmp_path, "old")), plugin_manager=pm)
    await engine.start(resume=False)
    try:
        runtime = engine.ctx.pipelines["invoices"]
        runner, filesystem = runtime.sinks["gate"], runtime.sinks["filesystem"]
        old_sink = runner.sink
        changes = await engine.reload(make_config(_gate_pipeline(tmp_path, "new")))
        new_runtime = engine.ctx.pipelines["invoices"]
        assert new_runtime.sinks["gate"] is runner
        assert runner.sink is not old_sink
        assert new_runtime.sinks["filesystem"] is filesystem
    finally:
        await engine.stop(grace=0)
    assert changes == ["changed pipeline invoices"]
    assert GateSink.timeline == [
        ("old", "open"),
        ("old", "close"),
        ("new", "open"),
        ("new", "close"),
    ]


async def test_replace_waits_for_deliveries_in_progress_and_never_overlaps() -> None:
    """While the old instance delivers, the handover and new deliveries wait; the old one is
    closed before the new one is opened, and later deliveries go to the new one."""
    _reset_gate()
    GateSink.hold = threading.Event()
    old = GateSink(GateConfig(type="gate", id="gate", label="old"), pipeline="p", sink_id="gate")
    runner = SinkRunner(old, old.config, pipeline="p")
    await runner.open()
    first = asyncio.ensure_future(runner.deliver_once(make_record()))
    assert await asyncio.to_thread(GateSink.entered.wait, 10)
    new_config = GateConfig(type="gate", id="gate", label="new", concurrency=2)
    new = GateSink(new_config, pipeline="p", sink_id="gate")
    replacing = asyncio.ensure_future(runner.replace(new, new_config))
    second = asyncio.ensure_future(runner.deliver_once(make_record(step_id="stp_2")))
    done, _ = await asyncio.wait({replacing, second}, timeout=0.2)
    assert not done, "the handover or a new delivery did not wait for the old delivery"
    GateSink.hold.set()
    await asyncio.wait_for(asyncio.gather(first, replacing, second), timeout=10)
    await runner.close()
    assert GateSink.timeline == [
        ("old", "open"),
        ("old", "deliver"),
        ("old", "delivered"),
        ("old", "close"),
        ("new", "open"),
        ("new", "deliver"),
        ("new", "delivered"),
        ("new", "close"),
    ]
    assert runner.config is new_config
