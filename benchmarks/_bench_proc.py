"""Processes of a benchmark: the emulator (its own process) and the measured child processes.

A measured child is reaped with ``os.wait4``, which returns the rusage of that one process: its
user and system CPU seconds and its peak RSS (``ru_maxrss``), with nothing of this harness or of
the emulator mixed in.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

__all__ = ["ChildResult", "Emulator", "machine_info", "run_child", "start_emulator"]

_EMULATOR_CODE = "from docutray_watch.emulator.cli import emulator_command; emulator_command()"
_URL_LINE = re.compile(r"emulator at (http://\S+)")


@dataclass
class Emulator:
    """A running emulator process and how to reach its control endpoints."""

    base_url: str
    api_key: str
    process: subprocess.Popen[bytes]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - a loopback URL we started
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310
            return json.loads(answer.read() or b"null")

    def reset(self) -> None:
        """Forget executions and statistics."""
        self._call("POST", "/_emulator/reset")

    def configure(self, **fields: Any) -> None:
        """Change settings of the running emulator."""
        self._call("POST", "/_emulator/config", fields)

    def counts(self) -> dict[str, Any]:
        """Statistics without the per-execution details (cheap enough to poll)."""
        result: dict[str, Any] = self._call("GET", "/_emulator/stats")
        return result

    def stats(self) -> dict[str, Any]:
        """Statistics with per-execution details."""
        result: dict[str, Any] = self._call("GET", "/_emulator/stats?executions=1")
        return result

    def cpu_seconds(self) -> float:
        """User + system CPU the emulator process has used so far."""
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)


@contextmanager
def start_emulator(
    *,
    folder: Path,
    api_key: str,
    latency: float,
    jitter: float,
    rate_limit_rps: float | None,
    hidden_limit: bool = False,
) -> Iterator[Emulator]:
    """Run ``docutray-watch emulator --port 0`` in its own process; stop it afterwards.

    ``hidden_limit``: the rate limit is enforced without being announced (no ``limit`` in 429
    bodies) and ``Retry-After`` comes in fractions of a second."""
    argv = [
        sys.executable,
        "-c",
        _EMULATOR_CODE,
        "--port",
        "0",
        "--api-key",
        api_key,
        "--latency",
        f"{latency}",
        "--latency-jitter",
        f"{jitter}",
        "--seed",
        "1",
    ]
    if rate_limit_rps:
        argv += ["--rate-limit-rps", f"{rate_limit_rps}"]
    if hidden_limit:  # an API that does not say its rate: no `limit`, Retry-After to the ms
        argv += ["--hide-rate-limit", "--fractional-retry-after"]
    log_path = folder / "emulator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = _URL_LINE.search(log_path.read_text(errors="replace"))
            if match:
                break
            if process.poll() is not None:
                raise RuntimeError(f"the emulator exited: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        else:
            raise RuntimeError("the emulator did not announce its URL within 30 s")
        yield Emulator(match.group(1), api_key, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class ChildResult:
    """How a measured child process ran."""

    argv: list[str]
    returncode: int
    started_wall: float
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    max_rss_mb: float
    stopped_early: bool
    stdout: Path
    stderr: Path

    @property
    def cpu_s(self) -> float:
        """User + system CPU seconds."""
        return self.cpu_user_s + self.cpu_sys_s


def run_child(
    argv: list[str],
    *,
    stdout: Path,
    stderr: Path,
    timeout: float,
    stop_when: Callable[[], bool] | None = None,
    env: dict[str, str] | None = None,
) -> ChildResult:
    """Run ``argv`` to its end (or until ``stop_when()`` says so, then SIGKILL it) and measure it.

    Without ``stop_when`` the harness blocks in ``wait4`` and uses no CPU meanwhile; with it, the
    condition is checked every 50 ms. ``env`` replaces the inherited environment.
    """
    stopped = threading.Event()
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started_wall = time.time()
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)

    def kill() -> None:
        stopped.set()
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        if stop_when is None:
            _, status, usage = os.wait4(process.pid, 0)
        else:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if stop_when():
                    kill()
                    _, status, usage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.05)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return ChildResult(
        argv=argv,
        returncode=process.returncode,
        started_wall=started_wall,
        wall_s=wall,
        cpu_user_s=usage.ru_utime,
        cpu_sys_s=usage.ru_stime,
        max_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        stopped_early=stopped.is_set(),
        stdout=stdout,
        stderr=stderr,
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": {
            name: _version(name)
            for name in ("docutray-watch", "docutray", "httpx", "httpcore", "structlog", "aiohttp")
        },
    }
