"""The daemon applies `api.timeout` to every request: a stalled API costs seconds, not minutes.

(The client's own 60 s default once silently replaced the configured timeouts.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.samples import make_pdf
from tests.reliability.conftest import (
    DaemonFactory,
    Report,
    StallingProxy,
    base_config,
    elapsed_since,
    pipeline_config,
    wait_for,
)

pytestmark = pytest.mark.slow


class TestApiTimeouts:
    def test_configured_read_timeout_ends_a_stalled_submission(
        self,
        tmp_path: Path,
        emulator_factory: Any,
        reliable_daemon: DaemonFactory,
        report: Report,
    ) -> None:
        """With timeout.read 0.5 s, two unanswered POSTs fail the document within seconds."""
        started = time.monotonic()
        emulator = emulator_factory(latency=0.2)
        proxy = StallingProxy(int(emulator.base_url.rsplit(":", 1)[1]))
        config = base_config(tmp_path, emulator, pipeline_config(tmp_path, "slow"))
        config["api"].update(
            base_url=f"http://127.0.0.1:{proxy.port}",
            max_retries=0,
            timeout={"connect": 0.5, "read": 0.5, "write": 0.5, "pool": 0.5},
        )
        daemon = reliable_daemon(config).start()
        proxy.stall()
        (tmp_path / "slow" / "in" / "stalled.pdf").write_bytes(make_pdf(["stalled"]))
        sidecar = tmp_path / "slow" / "failed" / "stalled.pdf.error.json"
        wait_for(sidecar.exists, timeout=30, interval=0.1)
        failed_after = elapsed_since(started)
        reason = json.loads(sidecar.read_text())["reason"]
        assert "two submissions" in reason
        uncertain = [
            line for line in daemon.log_lines() if line.get("event") == "submission_uncertain"
        ]
        assert uncertain
        assert all("timed out" in line["error"] for line in uncertain)
        assert daemon.stop() == 0
        proxy.close()
        report(
            "api-timeouts",
            read_timeout_s=0.5,
            uncertain_submissions=len(uncertain),
            failed_after_s=failed_after,
            seconds=elapsed_since(started),
        )
