"""`docutray-watch run` daemons of a test as subprocesses, and the faults done to them: SIGKILL
with a restart once the node's name is free again, and its PostgreSQL backends terminated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from docutray_watch.cluster.app import libpq_url
from docutray_watch.journal.postgres.connection import application_name

EXECUTABLE = Path(sys.executable).with_name("docutray-watch")


class Daemons:
    """The daemon processes of a test by node name; each logs to `<root>/<node>.log`."""

    def __init__(self, root: Path, configs: dict[str, Path], url: str) -> None:
        self.root = root
        self.configs = configs
        self.url = url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = {}

    def start(self, node: str) -> None:
        self.starts[node] = self.starts.get(node, 0) + 1
        log = (self.root / f"{node}.log").open("ab")
        env = {**os.environ, "DOCUTRAY_API_KEY": ""}
        self.procs[node] = subprocess.Popen(
            [str(EXECUTABLE), "run", "-c", str(self.configs[node])],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def alive(self, node: str) -> bool:
        proc = self.procs.get(node)
        return proc is not None and proc.poll() is None

    def kill(self, node: str) -> None:
        """`kill -9`: no drain, no leaving the cluster; its jobs stay `doing` until recovered."""
        self.procs[node].send_signal(signal.SIGKILL)
        self.procs[node].wait(10)

    def silent_for(self, node: str) -> float:
        """Seconds since the node's last heartbeat (infinite when it is not registered; 0 when
        the server has no connection to spare: a shared server, asked again later)."""
        try:
            with psycopg.connect(libpq_url(self.url)) as conn:
                row = conn.execute(
                    "SELECT EXTRACT(EPOCH FROM now() - last_heartbeat)"
                    " FROM docutray_cluster.nodes WHERE name = %s",
                    (node,),
                ).fetchone()
        except psycopg.OperationalError:
            return 0.0
        return float(row[0]) if row else float("inf")

    def terminate_backends(self, node: str) -> int:
        """`pg_terminate_backend` on every backend of `node` (its connections say
        `docutray-watch/<node>`, its heartbeat's `docutray-watch/<node> heartbeat`); how many."""
        name = application_name(node)
        try:
            with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND (application_name = %s OR application_name LIKE %s)",
                    (name, f"{name} %"),
                ).fetchall()
        except psycopg.OperationalError:
            return 0  # no connection to spare: asked again later
        return sum(1 for (ok,) in rows if ok)

    def serving(self, node: str) -> bool:
        """Whether the node's latest start has reached serving its queues (from its log)."""
        log = self.root / f"{node}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return text.count('"cluster_node_serving"') >= self.starts.get(node, 0)

    def stop_all(self) -> dict[str, int]:
        """SIGTERM to every live daemon, once each serves (a signal during its start-up would
        end it before its handler is installed); their exit codes."""
        live = {node: proc for node, proc in self.procs.items() if proc.poll() is None}
        wait_until(lambda: all(self.serving(n) for n in live), 60, "every node serving")
        for proc in live.values():
            proc.send_signal(signal.SIGTERM)
        return {node: proc.wait(60) for node, proc in live.items()}

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def logs(self, tail: int = 40) -> str:
        """The last lines of every node's log, for a failure message."""
        parts = []
        for node in self.configs:
            path = self.root / f"{node}.log"
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            parts.append(f"--- {node} ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(parts)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for what other processes bring about (files, rows): looked at every 0.2 s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)
