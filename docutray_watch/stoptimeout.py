"""How long systemd waits for the daemon to stop, and whether `shutdown_grace` fits in it.

After `shutdown_grace` the daemon still has to persist what is in flight; systemd sends SIGKILL
once the unit's `TimeoutStopSec` is over. `validate` asks systemd for the installed unit's value
(`systemctl show`), and falls back to the shipped unit's when systemd cannot answer (no systemd,
a container, the unit not installed).
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docutray_watch.config import Config

__all__ = [
    "PERSIST_MARGIN",
    "SHIPPED_STOP_TIMEOUT",
    "StopBudget",
    "config_grace_warning",
    "grace_warning",
    "parse_timespan",
    "stop_budget",
    "unit_for_config",
]

# systemd/docutray-watch{,@}.service: TimeoutStopSec=40, DOCUTRAY_WATCH_SHUTDOWN_GRACE=30.
SHIPPED_STOP_TIMEOUT = 40.0
# What the daemon keeps for itself after the grace period, to persist the rest (operations.md).
PERSIST_MARGIN = 10.0
CONFIG_DIR = Path("/etc/docutray-watch")
GRACE_VARIABLE = "DOCUTRAY_WATCH_SHUTDOWN_GRACE"

Run = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class StopBudget:
    """The unit's stop timeout, where it came from, and the grace its environment sets (if any)."""

    timeout: float
    source: str
    unit_grace: float | None = None


def unit_for_config(config_path: str | Path) -> str:
    """The unit that runs this config: /etc/docutray-watch/NAME.yaml → `docutray-watch@NAME`."""
    path = Path(config_path).absolute()
    if path.parent == CONFIG_DIR and path.suffix == ".yaml" and path.stem != "config":
        return f"docutray-watch@{path.stem}.service"
    return "docutray-watch.service"


_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "M": 2629800.0,
    "y": 31557600.0,
}
_SPAN_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(us|ms|min|s|h|d|w|M|y)?")


def parse_timespan(text: str) -> float | None:
    """A systemd time span as `systemctl show` prints it (`40s`, `1min 30s`, `infinity`)."""
    text = text.strip()
    if text == "infinity":
        return math.inf
    if not text:
        return None
    total, position = 0.0, 0
    for match in _SPAN_PART.finditer(text):
        if text[position : match.start()].strip():
            return None
        total += float(match.group(1)) * _UNITS[match.group(2) or "s"]
        position = match.end()
    return total if position and not text[position:].strip() else None


def _grace_from_environment(value: str) -> float | None:
    try:
        items = shlex.split(value)
    except ValueError:
        return None
    for item in items:
        key, _, raw = item.partition("=")
        if key == GRACE_VARIABLE:
            try:
                return float(raw)
            except ValueError:
                return None
    return None


def stop_budget(unit: str, *, run: Run | None = None) -> StopBudget:
    """The installed unit's TimeoutStopSec from `systemctl show`, else the shipped unit's 40 s.

    `run` stands in for `subprocess.run` (tests inject systemd's answers).
    """
    run = run or subprocess.run
    fallback = StopBudget(SHIPPED_STOP_TIMEOUT, f"the shipped {unit}'s TimeoutStopSec")
    argv = ["systemctl", "show", "-p", "LoadState", "-p", "TimeoutStopUSec", "-p", "Environment"]
    try:
        result: Any = run([*argv, unit], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return fallback
    if result.returncode != 0:
        return fallback
    values = dict(line.partition("=")[::2] for line in str(result.stdout).splitlines())
    timeout = parse_timespan(values.get("TimeoutStopUSec", ""))
    if values.get("LoadState") != "loaded" or timeout is None:
        return fallback  # an unknown unit still shows systemd's default; that is not ours
    return StopBudget(
        timeout,
        f"systemctl show {unit}",
        _grace_from_environment(values.get("Environment", "")),
    )


def grace_warning(grace: float, budget: StopBudget) -> str | None:
    """A warning when the grace period leaves under PERSIST_MARGIN seconds before SIGKILL."""
    if grace + PERSIST_MARGIN <= budget.timeout:
        return None
    timeout = f"{budget.timeout:g} s ({budget.source})"
    if grace >= budget.timeout:
        consequence = (
            "systemd sends SIGKILL before the grace period is over, in the middle of the drain"
        )
    else:
        consequence = f"that leaves under {PERSIST_MARGIN:g} s to persist the work still in flight"
    return (
        f"shutdown_grace is {grace:g} s but the stop timeout is {timeout}: {consequence}; "
        f"keep shutdown_grace at least {PERSIST_MARGIN:g} s below TimeoutStopSec"
    )


def config_grace_warning(
    config: Config, config_path: str | Path, *, run: Run | None = None
) -> str | None:
    """`grace_warning` for the grace this config gets under its unit.

    A `shutdown_grace` in the file wins; without one the unit's DOCUTRAY_WATCH_SHUTDOWN_GRACE
    applies (when systemd says what it is), else the default.
    """
    budget = stop_budget(unit_for_config(config_path), run=run)
    grace = config.shutdown_grace
    if "shutdown_grace" not in config.model_fields_set and budget.unit_grace is not None:
        grace = budget.unit_grace
    return grace_warning(grace, budget)
