"""Secret canary: a unique API key sent through every error path must never be written anywhere."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.samples import make_pdf
from tests.daemon.conftest import free_port
from tests.reliability.conftest import (
    DaemonFactory,
    Report,
    StallingProxy,
    base_config,
    child_env,
    elapsed_since,
    pipeline_config,
    wait_for,
)
from tests.reliability.probe_plugin import CANARY_HOOKS_ENV

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "docutray_watch.cli"]


def scrape(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return str(answer.read().decode())


class TestSecretCanary:
    def test_the_api_key_never_reaches_logs_outputs_sidecars_metrics_or_status(
        self,
        tmp_path: Path,
        emulator_factory: Any,
        reliable_daemon: DaemonFactory,
        daemon_env: dict[str, str | None],
        report: Report,
    ) -> None:
        """401s, 5xx, timeouts and exceptions with the key in a local: 0 occurrences anywhere."""
        started = time.monotonic()
        canary = f"canary-{uuid.uuid4().hex}"
        key_file = tmp_path / "secrets" / "api-key"
        key_file.parent.mkdir()
        key_file.write_text(canary + "\n")
        # Phase 1: the service does not know the key yet (401 on every request).
        emulator = emulator_factory(latency=0.3, api_key=f"other-{uuid.uuid4().hex}")
        proxy = StallingProxy(int(emulator.base_url.rsplit(":", 1)[1]))
        metrics_port = free_port()
        files = pipeline_config(
            tmp_path, "canary", poll={"initial": 0.1, "max": 0.5, "timeout": 20}
        )
        exploding = pipeline_config(
            tmp_path,
            "exploding",
            sinks=[
                {"type": "filesystem", "path": str(tmp_path / "exploding" / "out")},
                {
                    "type": "probe",
                    "path": str(tmp_path / "exploding" / "probe"),
                    "always_fail": True,
                    "failure": "secret",
                    "retry": {"initial": 0.2, "max": 0.5, "timeout": 2},
                },
            ],
        )
        config = base_config(
            tmp_path, emulator, files, exploding, metrics={"listen": f"127.0.0.1:{metrics_port}"}
        )
        config["api"] = {
            "base_url": f"http://127.0.0.1:{proxy.port}",
            "api_key_file": str(key_file),
            "max_retries": 1,
            "timeout": {"connect": 1, "read": 1, "write": 1, "pool": 1},
            "requests_per_second": 200,
            "pause_probe_interval": 0.5,  # resume soon after the key is known (phase 2)
        }
        daemon = reliable_daemon(config, env={CANARY_HOOKS_ENV: "1"}, log_level="debug")
        daemon.start()
        inbox = tmp_path / "canary" / "in"
        metrics_pages = []

        def statuses(code: int) -> int:
            return int(emulator.stats().responses_by_status.get(code, 0))

        for i in range(3):
            (inbox / f"a{i}.pdf").write_bytes(make_pdf([f"canary 401 {i}"]))
        # The first 401 pauses every request (one probe per interval after it).
        wait_for(lambda: statuses(401) >= 1, timeout=30)
        metrics_pages.append(scrape(metrics_port, "/metrics"))

        # Phase 2: the key is known now, but every request meets a server error.
        emulator.configure(api_key=canary, server_error_rate=1.0)
        for i in range(3):
            (inbox / f"b{i}.pdf").write_bytes(make_pdf([f"canary 5xx {i}"]))
        wait_for(lambda: sum(statuses(c) for c in (500, 502, 503, 504)) >= 6, timeout=30)
        metrics_pages.append(scrape(metrics_port, "/metrics"))

        # Phase 3: requests time out.
        emulator.configure(server_error_rate=0.0)
        proxy.stall()
        for i in range(3):
            (inbox / f"c{i}.pdf").write_bytes(make_pdf([f"canary timeout {i}"]))

        def timeouts() -> int:
            return sum("timed out" in line for line in daemon.log().splitlines())

        wait_for(lambda: timeouts() >= 3, timeout=30)
        proxy.resume()

        # Phase 4: the service works; a plugin hook and a sink raise with the key in a local.
        for i in range(3):
            (tmp_path / "exploding" / "in" / f"d{i}.pdf").write_bytes(make_pdf([f"explode {i}"]))

        def all_ended() -> bool:
            total = 0
            for pipeline in ("canary", "exploding"):
                for outcome in ("done", "failed"):
                    total += len(list((tmp_path / pipeline / outcome).glob("*.pdf")))
            return total == 12

        wait_for(all_ended, timeout=120, interval=0.2)
        metrics_pages.append(scrape(metrics_port, "/metrics"))
        status = subprocess.run(
            [*CLI, "status", "-c", str(daemon.config_path), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=child_env(daemon_env),
        )
        assert status.returncode == 0, status.stderr
        assert daemon.stop() == 0
        proxy.close()

        # The error paths were really taken.
        events = [line.get("event") for line in daemon.log_lines()]
        assert "api_key_rejected" in events
        assert "plugin_hook_failed" in events
        assert "delivery_gave_up" in events
        assert any("Traceback" in line or "exception" in line for line in daemon.log().splitlines())
        assert timeouts() >= 3
        sidecars = list(tmp_path.rglob("*.error.json"))
        assert any("Bearer ***" in p.read_text() for p in sidecars)  # quoted, then masked

        # 0 occurrences: every file under the test folder (logs, journal, outputs, sidecars) but
        # the key file itself, the status output and every /metrics page.
        needle = canary.encode()
        leaks = []
        scanned = 0
        for path in sorted(tmp_path.rglob("*")):
            if path == key_file or not path.is_file() or path.is_symlink():
                continue
            scanned += 1
            if needle in path.read_bytes():
                leaks.append(str(path.relative_to(tmp_path)))
        for label, text in [
            ("status --json", status.stdout + status.stderr),
            *((f"/metrics #{i}", page) for i, page in enumerate(metrics_pages)),
        ]:
            scanned += 1
            if canary in text:
                leaks.append(label)
        assert leaks == []
        report(
            "secret-canary",
            http_401=statuses(401),
            http_5xx=sum(statuses(c) for c in (500, 502, 503, 504)),
            timeouts_logged=timeouts(),
            hook_exceptions=events.count("plugin_hook_failed"),
            sink_exceptions=events.count("delivery_failed"),
            sidecars=len(sidecars),
            log_lines=len(events),
            places_scanned=scanned,
            occurrences=len(leaks),
            seconds=elapsed_since(started),
        )
