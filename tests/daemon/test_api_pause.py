"""The daemon with a refused API key: pauses (nothing fails), says so, resumes on SIGHUP."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.config import parse_config
from docutray_watch.daemon import STALL_SECONDS, Daemon
from docutray_watch.emulator import EmulatorServer
from docutray_watch.engine.errors import Failure
from docutray_watch.plugins import load_plugins
from docutray_watch.samples import make_pdf
from docutray_watch.sdnotify import Notifier
from tests.daemon.conftest import daemon_config, free_port, local_get, pipeline, wait_for

pytestmark = pytest.mark.slow


def test_a_refused_key_pauses_the_daemon_and_sighup_with_the_right_key_resumes_it(
    tmp_path: Path, emulator: EmulatorServer, daemon_factory: Any
) -> None:
    """Key refused: nothing fails, /readyz 503 and `status` name it, one log line; after a
    SIGHUP with the right key file every document completes."""
    key_file = tmp_path / "api-key"
    key_file.write_text("a-wrong-key\n")
    port = free_port()
    config = daemon_config(
        tmp_path, emulator, pipeline(tmp_path), metrics={"listen": f"127.0.0.1:{port}"}
    )
    config["api"] = {
        "base_url": emulator.base_url,
        "api_key_file": str(key_file),
        "pause_probe_interval": 3600,  # only the reload may end this pause
    }
    daemon = daemon_factory(config).start()
    inbox = tmp_path / "inbox" / "in"
    names = [f"k{i}.pdf" for i in range(3)]
    for name in names:
        (inbox / name).write_bytes(make_pdf([name]))

    def not_ready() -> dict[str, Any] | None:
        code, body = local_get(port, "/readyz")
        return json.loads(body) if code == 503 else None

    answer = wait_for(not_ready)
    assert "paused: the DocuTray API refused the API key (401)" in answer["problems"]
    status = subprocess.run(
        [sys.executable, "-m", "docutray_watch.cli", "status", "-c", str(daemon.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "API work paused since" in status.stdout
    assert "refused the API key (401)" in status.stdout
    assert sorted(p.name for p in inbox.iterdir()) == names
    assert not (tmp_path / "inbox" / "failed").exists()

    key_file.write_text(emulator.api_key + "\n")
    daemon.signal(signal.SIGHUP)
    done = tmp_path / "inbox" / "done"
    wait_for(lambda: done.exists() and sorted(p.name for p in done.iterdir()) == names)
    wait_for(lambda: local_get(port, "/readyz")[0] == 200)
    assert daemon.stop() == 0
    lines = daemon.log().splitlines()
    events = [json.loads(line).get("event") for line in lines if line.startswith("{")]
    assert events.count("api_key_rejected") == 1  # once a minute, not once per document
    assert "document_failed" not in events
    assert "a-wrong-key" not in daemon.log()


class _Watchdog(Notifier):
    """A notifier with a 50 ms watchdog that records its pings."""

    def __init__(self) -> None:
        super().__init__(None)
        self.pinged = asyncio.Event()

    def watchdog_interval(self) -> float | None:
        return 0.05

    def status(self, text: str) -> bool:
        return True

    def watchdog(self) -> bool:
        self.pinged.set()
        return True


@pytest.mark.parametrize("paused", [True, False])
def test_a_deliberate_api_pause_counts_as_progress_for_the_watchdog(
    tmp_path: Path, emulator: EmulatorServer, paused: bool
) -> None:
    """Documents pending and nothing moved for STALL_SECONDS: the watchdog keeps being pinged
    while the API is deliberately paused (a restart would not help), and stops otherwise."""
    raw = daemon_config(tmp_path, emulator, pipeline(tmp_path))
    config = parse_config(raw, config_dir=tmp_path, environ={})
    notifier = _Watchdog()
    daemon = Daemon(config, tmp_path / "config.yaml", notifier=notifier, plugins=load_plugins())
    engine = daemon.engine
    engine.ctx.documents.nominate(("inbox", "/pending.pdf"))  # one document pending

    async def beat() -> bool:
        if paused:
            engine.api_gate.report(
                Failure.CREDENTIALS, pipeline="inbox", error="HTTP 401", retry_after=None
            )
        # Paused (or not) for longer than the stall limit, with nothing else moving.
        engine.last_progress = time.monotonic() - STALL_SECONDS - 1
        task = asyncio.ensure_future(daemon._heartbeat())
        try:
            async with asyncio.timeout(1.0):
                await notifier.pinged.wait()
            return True
        except TimeoutError:
            return False
        finally:
            daemon.stop()
            await task
            await engine.api_gate.close()

    assert asyncio.run(beat()) is paused
