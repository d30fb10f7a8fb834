"""`docutray-watch run` with a broken plugin installed: logged, left out, the rest runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docutray_watch.emulator import EmulatorServer
from docutray_watch.samples import make_pdf

from .conftest import daemon_config, free_port, local_get, pipeline, wait_for

_ASYNC_HOOK = (
    "from docutray_watch import hookimpl\n\n@hookimpl\nasync def startup(config):\n    pass\n"
)
# Registers sink type 'fancy' with a class that is not a Sink: the type is known, but unusable.
_NOT_A_SINK = (
    "from docutray_watch import hookimpl\n\n"
    "class Fancy:\n    type = 'fancy'\n\n"
    "@hookimpl\ndef register_sink_types(register):\n    register(Fancy)\n"
)


def _install_broken_plugin(site: Path, body: str = _ASYNC_HOOK) -> None:
    """A distribution docutray-watch-broken 0.3.1 with the given module (by default, one whose
    hook is `async def`)."""
    site.mkdir()
    (site / "broken_daemon_plugin.py").write_text(body)
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


def test_a_pipeline_needing_the_broken_plugin_is_left_out_and_readyz_names_it(
    tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
) -> None:
    """A pipeline whose sink type only the broken plugin provides is left out (logged,
    /readyz 503 naming it, its file untouched); the config's other pipeline runs."""
    site = tmp_path / "site"
    _install_broken_plugin(site, _NOT_A_SINK)
    port = free_port()
    held = pipeline(tmp_path, "held", sinks=[{"type": "fancy"}])
    config = daemon_config(
        tmp_path, emulator, held, pipeline(tmp_path), metrics={"listen": f"127.0.0.1:{port}"}
    )
    daemon = daemon_factory(config)
    daemon.start(extra_env={"PYTHONPATH": str(site)})
    (tmp_path / "held" / "in" / "h.pdf").write_bytes(make_pdf(["h"]))
    (tmp_path / "inbox" / "in" / "a.pdf").write_bytes(make_pdf(["a"]))
    wait_for(lambda: (tmp_path / "inbox" / "done" / "a.pdf").exists())
    status, body = local_get(port, "/readyz")
    assert status == 503
    assert "pipeline 'held' is left out: pipelines[0].sinks[0].type" in body
    assert daemon.stop() == 0
    assert (tmp_path / "held" / "in" / "h.pdf").exists()
    events = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    [left_out] = [e for e in events if e.get("event") == "pipeline_left_out"]
    assert left_out["pipeline"] == "held"
    assert "docutray-watch-broken 0.3.1" in left_out["reason"]
