"""`docutray_watch.testing` and the pytest plugin: what a plugin author's tests build on."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from docutray_watch import hookspecs
from docutray_watch.emulator import EmulatorServer
from docutray_watch.hookspecs import PROJECT_NAME
from docutray_watch.plugins import load_plugins
from docutray_watch.samples import make_pdf
from docutray_watch.testing import HookRecorder, build_config, process, process_sync


def test_the_hook_recorder_implements_every_observer_hook() -> None:
    """HookRecorder records every hook a plugin can implement (registration aside)."""
    specs = {
        name
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, f"{PROJECT_NAME}_spec")
    }
    recorded = {
        name
        for name, function in inspect.getmembers(HookRecorder, inspect.isfunction)
        if hasattr(function, f"{PROJECT_NAME}_impl")
    }
    assert recorded == specs - {"register_sink_types", "register_source_types"}
    plugins = load_plugins(load_entrypoints=False, extra=[("recorder", HookRecorder())])
    assert not plugins.broken


def test_process_sync_runs_a_pipeline_from_a_plain_test(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """process_sync() runs a one-pipeline config from build_config() without an event loop,
    and a registered HookRecorder sees the hooks in their order."""
    recorder = HookRecorder()
    plugins = load_plugins(extra=[("recorder", recorder)])
    config = build_config(
        tmp_path, {"type": "filesystem", "path": str(tmp_path / "out")}, emulator=emulator
    )
    (tmp_path / "invoices" / "inbox" / "a.pdf").write_bytes(make_pdf(["a"]))
    result = process_sync(config, plugins=plugins)
    assert result.exit_code == 0, result.output
    assert result.output[0] == "processed 1 document(s): success 1"
    assert recorder.names() == [
        "startup",
        "ignore_document",
        "document_discovered",
        "before_document_submit",
        "after_document_result",
        "after_document_delivered",
        "after_document_archived",
        "shutdown",
    ]
    assert (tmp_path / "invoices" / "done" / "a.pdf").exists()


async def test_process_is_a_coroutine(tmp_path: Path, emulator: EmulatorServer) -> None:
    """process() is awaited in an async test (process_sync would need its own loop)."""
    assert inspect.iscoroutinefunction(process)
    config = build_config(
        tmp_path, {"type": "filesystem", "path": str(tmp_path / "out")}, emulator=emulator
    )
    result = await process(config)
    assert result.exit_code == 0
    assert result.output[0] == "processed 0 document(s)"


PLUGIN_AUTHOR_TEST = """
from docutray_watch.testing import HookRecorder


async def test_async_without_marker(hook_recorder, watch_config, emulator):
    assert isinstance(hook_recorder, HookRecorder)
    path = watch_config({"type": "filesystem", "path": "out"})
    assert emulator.base_url in path.read_text()
"""


def _run_pytest(project: Path, ini: str) -> subprocess.CompletedProcess[str]:
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n' + ini
    )
    (project / "test_author.py").write_text(textwrap.dedent(PLUGIN_AUTHOR_TEST))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_author.py"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_pytest_plugin_needs_no_setup_in_a_plugin_project(tmp_path: Path) -> None:
    """In a project without conftest or asyncio_mode, an unmarked async test using the
    plugin's fixtures runs and passes."""
    proc = _run_pytest(tmp_path, "")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


@pytest.mark.parametrize("ini", ['asyncio_mode = "strict"\n'])
def test_the_pytest_plugin_keeps_a_mode_the_project_chose(tmp_path: Path, ini: str) -> None:
    """A project that sets asyncio_mode keeps it: strict mode does not run unmarked tests."""
    proc = _run_pytest(tmp_path, ini)
    assert "async def functions are not natively supported" in proc.stdout, proc.stdout
