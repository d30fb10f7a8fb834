"""Tests of the pytest fixtures in docutray_watch.testing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from docutray_watch.emulator import DEFAULT_API_KEY, EmulatorServer
from docutray_watch.testing import EmulatorFactory, ManualClock


class TestEmulatorFixture:
    def test_is_running_with_short_latency(self, emulator: EmulatorServer) -> None:
        """The emulator fixture is started, with a 0.05 s latency and the default key."""
        assert emulator.running
        assert emulator.config.latency == 0.05
        assert emulator.api_key == DEFAULT_API_KEY
        assert httpx.get(f"{emulator.base_url}/_emulator/stats").status_code == 200


class TestEmulatorFactory:
    def test_applies_overrides(self, emulator_factory: EmulatorFactory) -> None:
        """Overrides replace the fixture defaults; unspecified fields keep them."""
        server = emulator_factory(error_rate=1.0, step_ids={"s"})
        assert server.config.error_rate == 1.0
        assert server.config.step_ids == frozenset({"s"})
        assert server.config.latency == 0.05

    def test_accepts_a_clock(self, emulator_factory: EmulatorFactory) -> None:
        """A manual clock passed to the factory drives the emulator's time."""
        clock = ManualClock(start=50.0)
        assert emulator_factory(clock=clock).state.now() == 50.0

    def test_plugin_stops_servers_after_each_test(self, tmp_path: Path) -> None:
        """Enabled through pytest_plugins, the fixtures stop their servers at teardown."""
        (tmp_path / "conftest.py").write_text('pytest_plugins = ["docutray_watch.testing"]\n')
        (tmp_path / "test_inner.py").write_text(
            textwrap.dedent(
                """
                import threading
                import httpx
                import pytest

                PORTS = []

                def test_start(emulator, emulator_factory):
                    PORTS.extend([emulator.port, emulator_factory(latency=0).port])

                def test_all_stopped():
                    for port in PORTS:
                        with pytest.raises(httpx.ConnectError):
                            httpx.get(f"http://127.0.0.1:{port}/_emulator/stats")
                    names = [t.name for t in threading.enumerate()]
                    assert "docutray-emulator" not in names
                """
            )
        )
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 passed" in result.stdout
