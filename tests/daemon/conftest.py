"""Run the real `docutray-watch run` process against the emulator, with a notify socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from docutray_watch.emulator import EmulatorServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:<port><path> (the metrics listener): status and body, errors too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class DaemonProcess:
    """A `docutray-watch run` child process and its notify socket."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.config_path = root / "config.yaml"
        self.write_config(config)
        self.notify_path = root / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.1)
        self.messages: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "daemon.log"

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self, extra_env: dict[str, str] | None = None) -> DaemonProcess:
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify_path), **(extra_env or {})}
        env.pop("DOCUTRAY_API_KEY", None)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "docutray_watch.cli",
                "--log-format",
                "json",
                "run",
                "-c",
                str(self.config_path),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
        )
        self.wait_message("READY=1")
        return self

    def read_messages(self) -> list[str]:
        while True:
            try:
                data = self.notify.recv(4096)
            except (TimeoutError, BlockingIOError):
                break
            self.messages.append(data.decode())
        return self.messages

    def wait_message(self, text: str, timeout: float = 20.0, after: int = 0) -> int:
        def found() -> int | None:
            for index, message in enumerate(self.read_messages()):
                if index >= after and text in message.split("\n"):
                    return index + 1
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            return None

        return int(wait_for(found, timeout))

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        return self.wait_exit()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()


def daemon_config(
    root: Path, emulator: EmulatorServer, *pipelines: dict[str, Any], **top: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 500,
            "max_in_flight": 16,
        },
        "state_dir": str(root / "state"),
        "shutdown_grace": 5,
        "pipelines": list(pipelines),
    }
    data.update(top)
    return data


def pipeline(root: Path, name: str = "inbox", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "watch": {"path": str(root / name / "in"), "settle": 0.5, "rescan_interval": 30},
        "steps": ["stp_one"],
        "poll": {"initial": 0.1, "max": 0.5, "timeout": 60},
        "on_success": {"action": "move", "to": str(root / name / "done")},
        "on_failure": {"action": "move", "to": str(root / name / "failed")},
        "sinks": [{"type": "filesystem", "path": str(root / name / "out")}],
    }
    data.update(overrides)
    (root / name / "in").mkdir(parents=True, exist_ok=True)
    return data


@pytest.fixture(name="daemon_factory")
def daemon_factory_fixture(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(config: dict[str, Any]) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, config)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()
