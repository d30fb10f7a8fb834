"""`docutray-watch run` of one cluster node as a process: SIGHUP, and PostgreSQL going away.

The node is told of systemd by a datagram socket the test opens (NOTIFY_SOCKET, WATCHDOG_USEC);
the outage is made on the test's own database: its connections terminated and new ones refused
(`ALTER DATABASE … ALLOW_CONNECTIONS false`), then allowed again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from docutray_watch.cluster.app import libpq_url
from docutray_watch.emulator import EmulatorServer
from docutray_watch.testing import EmulatorFactory
from tests.cluster.conftest import PG_ADMIN
from tests.cluster.daemons import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(180)]

EXECUTABLE = Path(sys.executable).with_name("docutray-watch")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_data(
    root: Path, url: str, emulator: EmulatorServer, *, port: int, poll_timeout: float = 60
) -> dict[str, Any]:
    return {
        "state_dir": str(root / "state"),
        "shutdown_grace": 5,
        "log": {"level": "info", "format": "json"},
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 1000,
            "max_in_flight": 4,
            "timeout": {"write": 2},
        },
        "cluster": {"database": url, "node": "n1", "heartbeat_interval": 1, "stalled_timeout": 3},
        "pipelines": [
            {
                "name": "invoices",
                "watch": {"path": str(root / "inbox"), "settle": 0, "shared": True},
                "steps": ["stp_test"],
                "poll": {"initial": 0.5, "max": 1.0, "timeout": poll_timeout},
                "on_success": {"action": "move", "to": str(root / "done")},
                "on_failure": {"action": "move", "to": str(root / "failed")},
                "sinks": [{"type": "filesystem", "path": str(root / "out")}],
            }
        ],
    }


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class Node:
    """One `docutray-watch run` process logging JSON lines to `log_path`."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(EXECUTABLE), "run", "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DOCUTRAY_API_KEY": "", **(env or {})},
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with_event = line.strip()
            if not with_event.startswith("{"):
                continue
            event = json.loads(with_event)
            if event.get("event") == name:
                found.append(event)
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture(name="started")
def started_fixture() -> Iterator[list[Node]]:
    nodes: list[Node] = []
    try:
        yield nodes
    finally:
        for node in nodes:
            if node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(10)


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except httpx.HTTPError as exc:
        return 0, {"error": str(exc)}
    return answer.status_code, answer.json()


def done_count(root: Path) -> int:
    done = root / "done"
    return len(list(done.iterdir())) if done.exists() else 0


def write_pdf(root: Path, name: str) -> None:
    inbox = root / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / name).write_bytes(b"%PDF-1.4\n" + f"document {name}\n".encode() * 20)


def fingerprint(url: str) -> str:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT config_fingerprint FROM docutray_cluster.cluster_meta"
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_sighup_reloads_local_settings_and_refuses_a_shared_change(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory, started: list[Node]
) -> None:
    """SIGHUP with only the log level changed: reloaded (debug lines follow). SIGHUP with
    api.max_in_flight changed: refused with a log line naming the key, the cluster's stored
    fingerprint unchanged, and the node goes on serving (ready, and a new file is processed)."""
    emulator = emulator_factory(latency=0.2)
    port = free_port()
    data = node_data(tmp_path, initialised_url, emulator, port=port)
    config = write(tmp_path / "n1.yaml", data)
    node = Node(config, tmp_path / "n1.log")
    started.append(node)
    wait_until(lambda: readyz(port)[0] == 200, 60, "the node to be ready")
    stored = fingerprint(initialised_url)

    data["log"]["level"] = "debug"
    write(config, data)
    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: node.events("cluster_config_reloaded"), 30, "the reload")
    write_pdf(tmp_path, "a.pdf")
    wait_until(lambda: done_count(tmp_path) == 1, 60, "the first document")
    log_lines = node.log_path.read_text().splitlines()
    reloaded_at = next(i for i, line in enumerate(log_lines) if "cluster_config_reloaded" in line)
    assert any('"level": "debug"' in line for line in log_lines[reloaded_at:])

    data["api"]["max_in_flight"] = 9
    write(config, data)
    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: node.events("config_reload_refused"), 30, "the refusal")
    [refused] = node.events("config_reload_refused")
    assert refused["keys"] == ["api.max_in_flight"]
    assert "fingerprint" in refused["reason"]
    assert refused["level"] == "error"
    assert len(node.events("cluster_config_reloaded")) == 1
    assert fingerprint(initialised_url) == stored
    assert node.proc.poll() is None
    assert readyz(port)[0] == 200
    write_pdf(tmp_path, "b.pdf")
    wait_until(lambda: done_count(tmp_path) == 2, 60, "a document after the refusal")
    assert node.stop() == 0


class NotifySocket:
    """The datagram socket systemd would listen on; records (time, message) it receives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def pings(self, start: float, end: float) -> int:
        return sum(1 for at, msg in self.messages if start <= at <= end and "WATCHDOG=1" in msg)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def set_connections(url: str, *, allowed: bool) -> None:
    """Allow or refuse new connections to the test's database; refusing ends the open ones."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def steps_polling(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SELECT count(*) FROM docutray.steps WHERE state = 'polling'").fetchone()
    return int(row[0]) if row else 0


def outcomes(url: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return [
            (str(state), outcome)
            for state, outcome in conn.execute("SELECT state, outcome FROM docutray.documents")
        ]


# The job worker stops ~30 s after the database went away and starts again when it is back, so
# the first status read after the outage comes ~35 s after the submission: the execution must
# still run then (LATENCY) for a deadline that ignored the outage (POLL_TIMEOUT) to fail it,
# and end before the deadline that counts the outage (POLL_TIMEOUT + OUTAGE).
POLL_TIMEOUT = 20.0
OUTAGE = 25.0
LATENCY = 40.0


def test_postgresql_outage_pauses_deadlines_feeds_the_watchdog_and_says_why(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory, started: list[Node]
) -> None:
    """A document polling with poll.timeout 20 s; the database refuses connections for 25 s
    (every open one terminated), then comes back while its execution still runs (40 s): the
    document ends successful, not failed by its deadline (the outage counted as a pause);
    meanwhile /readyz answered 503 saying the database cannot be reached, WATCHDOG=1 kept
    coming, and afterwards the node is ready again."""
    emulator = emulator_factory(latency=LATENCY)
    port = free_port()
    data = node_data(tmp_path, initialised_url, emulator, port=port, poll_timeout=POLL_TIMEOUT)
    config = write(tmp_path / "n1.yaml", data)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
        node = Node(config, tmp_path / "n1.log", env)
        started.append(node)
        wait_until(lambda: any("READY=1" in m for _, m in notify.messages), 60, "READY=1")
        write_pdf(tmp_path, "slow.pdf")
        wait_until(lambda: steps_polling(initialised_url) == 1, 60, "the step to be polling")
        set_connections(initialised_url, allowed=False)
        try:
            outage_start = time.monotonic()
            reasons: list[str] = []

            def says_why() -> bool:
                status, body = readyz(port)
                reasons.extend(body.get("problems", []))
                return status == 503 and any(
                    "cannot reach the cluster database" in r for r in reasons
                )

            wait_until(says_why, 15, "/readyz to say the database is away")
            time.sleep(max(0.0, outage_start + OUTAGE - time.monotonic()))
        finally:
            set_connections(initialised_url, allowed=True)
        outage_end = time.monotonic()
        pings = notify.pings(outage_start, outage_end)
        failed = tmp_path / "failed"
        wait_until(
            lambda: done_count(tmp_path) == 1 or failed.exists(), 90, "the document to finish"
        )
        wait_until(lambda: readyz(port)[0] == 200, 30, "the node to be ready again")
        assert node.stop() == 0
    finally:
        notify.close()
    assert not failed.exists(), node.log_path.read_text()[-3000:]
    assert outcomes(initialised_url) == [("archived", "success")]
    # One ping a second (half of WATCHDOG_USEC) from the event loop, outage or not.
    assert pings >= OUTAGE / 2, pings
    assert node.events("cluster_database_lost")
    assert node.events("cluster_database_back")
    assert emulator.stats().resubmissions == 0
