"""SIGHUP of an unchanged config file through the real daemon process."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from docutray_watch.emulator import EmulatorServer

from .conftest import daemon_config, pipeline, wait_for


def test_sighup_of_an_unchanged_file_changes_nothing(
    tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
) -> None:
    """Reloading the same file logs `config_reloaded` with no changes (no pipeline rebuilt),
    even with a webhook sink whose config model comes from an installed plugin."""
    webhook = {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s3cr3t-value"}
    first = pipeline(tmp_path, "first")
    second = pipeline(tmp_path, "second", sinks=[*pipeline(tmp_path, "second")["sinks"], webhook])
    daemon = daemon_factory(daemon_config(tmp_path, emulator, first, second)).start()
    ready = daemon.wait_message("READY=1")
    daemon.signal(signal.SIGHUP)
    reloading = daemon.wait_message("RELOADING=1", after=ready)
    daemon.wait_message("READY=1", after=reloading)

    def reloaded() -> list[dict[str, Any]]:
        events = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
        return [e for e in events if e.get("event") == "config_reloaded"]

    [event] = wait_for(reloaded)
    assert event["changes"] == []
    assert daemon.stop() == 0
