"""`validate`'s check that `shutdown_grace` fits in the unit's TimeoutStopSec."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from docutray_watch import stoptimeout
from docutray_watch.cli import cli
from docutray_watch.stoptimeout import (
    SHIPPED_STOP_TIMEOUT,
    StopBudget,
    grace_warning,
    parse_timespan,
    stop_budget,
    unit_for_config,
)


def _systemctl(stdout: str, returncode: int = 0) -> Any:
    """A stand-in for subprocess.run that answers like `systemctl show`."""
    calls: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, returncode, stdout, "")

    run.calls = calls  # type: ignore[attr-defined]
    return run


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("40s", 40.0),
        ("1min 30s", 90.0),
        ("1h 2min", 3720.0),
        ("500ms", 0.5),
        ("infinity", math.inf),
        ("", None),
        ("soon", None),
        ("40s later", None),
    ],
)
def test_parse_timespan(text: str, seconds: float | None) -> None:
    """Time spans as `systemctl show` prints them."""
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize(
    ("path", "unit"),
    [
        ("/etc/docutray-watch/config.yaml", "docutray-watch.service"),
        ("/etc/docutray-watch/scans.yaml", "docutray-watch@scans.service"),
        ("/home/me/docutray.yaml", "docutray-watch.service"),
    ],
)
def test_unit_for_config(path: str, unit: str) -> None:
    """The shipped unit that runs a config: the template instance named after the file."""
    assert unit_for_config(path) == unit


def test_budget_from_systemctl() -> None:
    """An installed unit's TimeoutStopSec and DOCUTRAY_WATCH_SHUTDOWN_GRACE come from systemd."""
    run = _systemctl(
        "LoadState=loaded\nTimeoutStopUSec=2min\n"
        "Environment=DOCUTRAY_WATCH_SHUTDOWN_GRACE=100 DOCUTRAY_WATCH_STATE_DIR=/var/lib/x\n"
    )
    budget = stop_budget("docutray-watch.service", run=run)
    assert budget == StopBudget(120.0, "systemctl show docutray-watch.service", 100.0)
    assert run.calls[0][:2] == ["systemctl", "show"]
    assert run.calls[0][-1] == "docutray-watch.service"


@pytest.mark.parametrize(
    "run",
    [
        _systemctl("", returncode=1),  # no systemd as PID 1
        _systemctl("LoadState=not-found\nTimeoutStopUSec=1min 30s\n"),  # unit not installed
        _systemctl("LoadState=loaded\nTimeoutStopUSec=whenever\n"),
    ],
)
def test_budget_falls_back_to_the_shipped_unit(run: Any) -> None:
    """When systemd cannot say, the shipped unit's 40 s is assumed."""
    budget = stop_budget("docutray-watch.service", run=run)
    assert (budget.timeout, budget.unit_grace) == (SHIPPED_STOP_TIMEOUT, None)
    assert "shipped" in budget.source


def test_budget_without_systemctl() -> None:
    """No systemctl at all is the same fallback."""

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(argv[0])

    assert stop_budget("docutray-watch.service", run=run).timeout == SHIPPED_STOP_TIMEOUT


@pytest.mark.parametrize(
    ("grace", "warns"), [(30, False), (0, False), (35, True), (40, True), (80, True)]
)
def test_grace_warning(grace: float, warns: bool) -> None:
    """A grace that does not leave 10 s of the stop timeout is warned about."""
    warning = grace_warning(grace, StopBudget(40.0, "test"))
    assert (warning is not None) == warns
    if grace >= 40:
        assert warning is not None
        assert "SIGKILL" in warning


def test_infinite_stop_timeout_never_warns() -> None:
    """TimeoutStopSec=infinity waits for any grace."""
    assert grace_warning(3600, StopBudget(math.inf, "test")) is None


class TestValidate:
    @staticmethod
    def _config(tmp_path: Path, **top: Any) -> Path:
        data = {
            "state_dir": str(tmp_path / "state"),
            "pipelines": [
                {
                    "name": "p",
                    "watch": {"path": str(tmp_path / "inbox")},
                    "steps": ["stp"],
                    "sinks": [{"type": "filesystem", "path": str(tmp_path / "out")}],
                }
            ],
            **top,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def test_validate_warns_about_a_grace_longer_than_the_stop_timeout(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`validate` warns (and still exits 0) when shutdown_grace does not fit the unit's."""
        monkeypatch.setattr(
            stoptimeout, "stop_budget", lambda unit, **_: StopBudget(40.0, "the shipped unit")
        )
        config = self._config(tmp_path, shutdown_grace=80)
        result = CliRunner().invoke(cli, ["validate", "--offline", "-c", str(config)])
        assert result.exit_code == 0, result.output
        assert "warning: shutdown_grace is 80 s but the stop timeout is 40 s" in result.output

    def test_validate_takes_the_stop_timeout_from_systemctl(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The installed unit's timeout is the one compared (a drop-in may have raised it)."""
        monkeypatch.setattr(
            stoptimeout.subprocess,
            "run",
            _systemctl("LoadState=loaded\nTimeoutStopUSec=1min 30s\nEnvironment=\n"),
        )
        config = self._config(tmp_path, shutdown_grace=85)
        result = CliRunner().invoke(cli, ["validate", "--offline", "-c", str(config)])
        assert "warning: shutdown_grace is 85 s but the stop timeout is 90 s (systemctl show " in (
            result.output
        )
        assert "leaves under 10 s" in result.output

    def test_validate_is_quiet_about_the_default_grace(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without shutdown_grace in the file, the default fits the shipped unit."""
        monkeypatch.delenv("DOCUTRAY_WATCH_SHUTDOWN_GRACE", raising=False)
        monkeypatch.setattr(stoptimeout.subprocess, "run", _systemctl("", returncode=1))
        result = CliRunner().invoke(
            cli, ["validate", "--offline", "-c", str(self._config(tmp_path))]
        )
        assert result.exit_code == 0, result.output
        assert "warning" not in result.output


class TestEffectiveGrace:
    """Which grace is compared: the file's, else the unit's DOCUTRAY_WATCH_SHUTDOWN_GRACE."""

    ANSWER = "LoadState=loaded\nTimeoutStopUSec=40s\nEnvironment=DOCUTRAY_WATCH_SHUTDOWN_GRACE=35\n"

    @staticmethod
    def _load(tmp_path: Path, **top: Any) -> Any:
        from docutray_watch.config import load_config

        return load_config(TestValidate._config(tmp_path, **top), environ={})

    def test_the_units_variable_counts_when_the_file_has_no_grace(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without shutdown_grace in the file, the installed unit's variable is what runs."""
        monkeypatch.delenv("DOCUTRAY_WATCH_SHUTDOWN_GRACE", raising=False)
        config = self._load(tmp_path)
        warning = stoptimeout.config_grace_warning(
            config, tmp_path / "config.yaml", run=_systemctl(self.ANSWER)
        )
        assert warning is not None
        assert warning.startswith("shutdown_grace is 35 s but the stop timeout is 40 s")

    def test_the_files_grace_wins_over_the_units_variable(self, tmp_path: Path) -> None:
        """A shutdown_grace in the file is what the daemon uses, whatever the unit sets."""
        config = self._load(tmp_path, shutdown_grace=20)
        run = _systemctl(self.ANSWER)
        assert stoptimeout.config_grace_warning(config, tmp_path / "config.yaml", run=run) is None
