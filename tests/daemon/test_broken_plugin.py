"""`docutray-watch run` with a broken plugin installed: logged, left out, the rest runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docutray_watch.emulator import EmulatorServer
from docutray_watch.samples import make_pdf

from .conftest import daemon_config, pipeline, wait_for


def _install_broken_plugin(site: Path) -> None:
    """A distribution docutray-watch-broken 0.3.1 whose hook is `async def`."""
    site.mkdir()
    (site / "broken_daemon_plugin.py").write_text(
        "from docutray_watch import hookimpl\n\n@hookimpl\nasync def startup(config):\n    pass\n"
    )
    info = site / "docutray_watch_broken-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: docutray-watch-broken\nVersion: 0.3.1\n"
    )
    (info / "entry_points.txt").write_text("[docutray_watch]\nbroken = broken_daemon_plugin\n")


def test_the_daemon_logs_a_broken_plugin_and_runs_the_pipelines(
    tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
) -> None:
    """`run` logs plugin_load_failed with the distribution and version, then processes."""
    site = tmp_path / "site"
    _install_broken_plugin(site)
    daemon = daemon_factory(daemon_config(tmp_path, emulator, pipeline(tmp_path)))
    daemon.start(extra_env={"PYTHONPATH": str(site)})
    (tmp_path / "inbox" / "in" / "a.pdf").write_bytes(make_pdf(["a"]))
    wait_for(lambda: (tmp_path / "inbox" / "done" / "a.pdf").exists())
    assert daemon.stop() == 0
    lines = daemon.log().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    [failed] = [e for e in events if e.get("event") == "plugin_load_failed"]
    assert failed["distribution"] == "docutray-watch-broken"
    assert failed["version"] == "0.3.1"
    assert "`async def`" in failed["error"]
    assert not [line for line in lines if not line.startswith("{")]  # no stray stderr lines
