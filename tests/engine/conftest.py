"""Fixtures for engine tests: a config builder and a plugin manager with the memory sink."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

from docutray_watch._testkit import MemorySink, MemorySinkPlugin
from docutray_watch.config import Config, parse_config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.plugins import config_sink_types, get_plugin_manager

ConfigFactory = Callable[..., Config]


@pytest.fixture(name="pm")
def pm_fixture() -> Iterator[pluggy.PluginManager]:
    """Built-in plugins plus the memory sink, no entry points."""
    MemorySink.instances.clear()
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(MemorySinkPlugin(), name="memory-sink")
    yield pm
    MemorySink.instances.clear()


def pipeline_data(
    root: Path, name: str = "invoices", *, steps: list[str] | None = None, **overrides: Any
) -> dict[str, Any]:
    """A pipeline block with inbox/done/failed/results folders under `root`."""
    data: dict[str, Any] = {
        "name": name,
        "watch": {"path": str(root / name / "inbox"), "settle": 0},
        "steps": steps or ["stp_one"],
        "poll": {"initial": 0.05, "max": 0.2, "timeout": 30},
        "on_success": {"action": "move", "to": str(root / name / "done")},
        "on_failure": {"action": "move", "to": str(root / name / "failed")},
        "sinks": [{"type": "filesystem", "path": str(root / name / "results")}],
    }
    data.update(overrides)
    (root / name / "inbox").mkdir(parents=True, exist_ok=True)
    return data


@pytest.fixture(name="make_config")
def make_config_fixture(
    tmp_path: Path, emulator: EmulatorServer, pm: pluggy.PluginManager
) -> ConfigFactory:
    """Build a validated Config against the test's emulator; pipelines default to one."""

    def make(*pipelines: dict[str, Any], **top: Any) -> Config:
        data: dict[str, Any] = {
            "api": {
                "base_url": emulator.base_url,
                "api_key": emulator.api_key,
                "max_in_flight": 16,
                "requests_per_second": 1000,
                "max_retries": 2,
            },
            "state_dir": str(tmp_path / "state"),
            "shutdown_grace": 2,
            "pipelines": list(pipelines) or [pipeline_data(tmp_path)],
        }
        for key, value in top.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        return parse_config(data, config_dir=tmp_path, sink_types=config_sink_types(pm), environ={})

    return make
