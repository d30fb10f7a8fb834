"""Source types come from plugins through `register_source_types`, like sink types: the built-in
ones first, a third party's usable in `source: {type: …}`, a broken registration left out whole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from docutray_watch.config import parse_config
from docutray_watch.hookspecs import hookimpl
from docutray_watch.plugins import describe_plugins, load_plugins
from docutray_watch.sources.base import Source, SourceConfig, SourceDocument


class TrayConfig(SourceConfig):
    tray: int


class TraySource(Source[TrayConfig]):
    type = "tray"
    description = "Documents from a scanner's output tray (tests)."
    config_model = TrayConfig

    async def discover(self) -> int:
        return 0

    async def open(self, doc: SourceDocument) -> AsyncIterator[bytes]:
        yield b""

    async def plan_move(self, doc: SourceDocument, to: str) -> str:
        return to

    async def move(self, doc: SourceDocument, destination: str) -> str:
        return destination

    async def delete(self, doc: SourceDocument) -> None:
        return None

    async def keep(self, doc: SourceDocument) -> None:
        return None

    async def write_sidecar(
        self, doc: SourceDocument, details: dict[str, Any], at: str | None = None
    ) -> str:
        return doc.identity

    async def current_version(self, doc: SourceDocument) -> str | None:
        return doc.version


class TrayPlugin:
    @hookimpl
    def register_source_types(self, register: Callable[[type[Source[Any]]], None]) -> None:
        register(TraySource)


class ClashingPlugin:
    @hookimpl
    def register_source_types(self, register: Callable[[type[Source[Any]]], None]) -> None:
        register(TraySource)
        register(int)  # type: ignore[arg-type]


def test_builtin_sources_are_registered_like_any_plugin() -> None:
    """folder and s3 come from their modules through the hook."""
    plugins = load_plugins(load_entrypoints=False)
    assert {name: st.plugin for name, st in plugins.source_types.items()} == {
        "folder": "docutray_watch.sources.folder",
        "s3": "docutray_watch.sources.s3",
    }


def test_a_plugin_source_type_is_usable_in_the_config(tmp_path: Path) -> None:
    """`source: {type: tray}` is validated by the plugin's model, and described."""
    plugins = load_plugins(load_entrypoints=False, extra=[("tray-plugin", TrayPlugin())])
    data = {
        "state_dir": str(tmp_path / "state"),
        "pipelines": [
            {
                "name": "p",
                "source": {"type": "tray", "tray": 2},
                "steps": ["s"],
                "sinks": [{"type": "filesystem", "path": str(tmp_path / "out")}],
            }
        ],
    }
    config = parse_config(data, sink_types=plugins.config_sink_types, need_secrets=False)
    source = config.pipelines[0].source
    assert isinstance(source, TrayConfig)
    assert source.tray == 2
    (entry,) = describe_plugins(plugins=plugins)
    assert entry["source_types"] == [
        {"type": "tray", "description": "Documents from a scanner's output tray (tests)."}
    ]


def test_a_broken_registration_leaves_the_plugin_out() -> None:
    """Registering something that is not a Source class: the plugin is reported broken."""
    plugins = load_plugins(load_entrypoints=False, extra=[("clash", ClashingPlugin())])
    assert "tray" not in plugins.source_types
    (broken,) = plugins.broken
    assert broken.name == "clash"
    assert "not a Source class" in broken.error
    assert not plugins.pm.has_plugin("clash")


def test_loading_the_builtin_sources_stays_light() -> None:
    """Every command loads the plugins (`status` too): the sources pull in neither the HTTP
    stack, watchdog nor boto3 until they are used."""
    import subprocess
    import sys

    code = (
        "import sys; from docutray_watch.plugins import load_plugins;"
        " load_plugins(load_entrypoints=False);"
        " print(sorted(m for m in ('httpx', 'aiohttp', 'watchdog', 'boto3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
