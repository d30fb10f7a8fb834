"""The pytest plugin of docutray-watch: fixtures for plugin tests, and async tests that just run.

pytest loads it by itself wherever docutray-watch is installed (entry point ``pytest11``,
``docutray_watch``); switch it off with ``-p no:docutray_watch``. It only adds fixtures —
nothing happens in a test that does not ask for one — and one setting:

- when the project has not chosen an ``asyncio_mode`` (neither ``--asyncio-mode`` nor the
  ``asyncio_mode`` option of its pytest configuration), it runs pytest-asyncio in ``auto`` mode,
  so ``async def`` tests and fixtures work without markers or settings. A project that sets a
  mode, either one, keeps it.

Fixtures (see `docutray_watch.testing` for the helpers they use):

- ``emulator`` / ``emulator_factory``: a local DocuTray API emulator;
- ``hook_recorder``: a `HookRecorder` (register it with
  ``load_plugins(extra=[("recorder", hook_recorder)])``);
- ``watch_config``: ``watch_config(sink_block, **options)`` writes the smallest working config
  for one pipeline delivering to that sink, against the test's emulator, and returns its path.
"""

from __future__ import annotations

import configparser
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.emulator import EmulatorServer
from docutray_watch.testing import (
    HookRecorder,
    emulator_factory_fixture,
    emulator_fixture,
    write_config,
)

__all__ = ["emulator_factory_fixture", "emulator_fixture", "hook_recorder_fixture"]

WatchConfig = Callable[..., Path]


@pytest.fixture(name="hook_recorder")
def hook_recorder_fixture() -> HookRecorder:
    """A plugin recording every hook call in order."""
    return HookRecorder()


@pytest.fixture(name="watch_config")
def watch_config_fixture(tmp_path: Path, emulator: EmulatorServer) -> WatchConfig:
    """Write a one-pipeline config for a sink block, against the test's emulator."""

    def write(sink: Mapping[str, Any], **options: Any) -> Path:
        return write_config(tmp_path, sink, emulator=emulator, **options)

    return write


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """pytest-asyncio in auto mode, unless the project chose a mode."""
    if not config.pluginmanager.hasplugin("asyncio"):
        return
    if config.getoption("asyncio_mode", None) is not None or _ini_sets(config, "asyncio_mode"):
        return
    config.option.asyncio_mode = "auto"


def _ini_sets(config: pytest.Config, name: str) -> bool:
    """Whether the project's pytest configuration file sets `name` (or -o does)."""
    overrides = getattr(config.option, "override_ini", None) or []
    if any(item.split("=", 1)[0].strip() == name for item in overrides):
        return True
    path = config.inipath
    if path is None:
        return False
    try:
        if path.suffix == ".toml":
            with path.open("rb") as file:
                tool = tomllib.load(file).get("tool", {})
            tables = [tool.get("pytest", {}), tool.get("pytest", {}).get("ini_options", {})]
            return any(isinstance(t, dict) and name in t for t in tables)
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(path, encoding="utf-8")
        return any(
            parser.has_option(section, name)
            for section in ("pytest", "tool:pytest")
            if parser.has_section(section)
        )
    except (OSError, ValueError, configparser.Error):
        return True  # cannot tell: leave pytest-asyncio's own default alone
