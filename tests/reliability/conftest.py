"""The reliability suite's harness: sizes, the real daemon process, probe plugin, PostgreSQL, S3.

Every scenario runs the real `docutray-watch run` in a child process against the emulator (in
this process) over loopback. Sizes: small by default (CI, a few minutes for the whole directory);
the full sizes of docs/reliability.md with `DOCUTRAY_WATCH_RELIABILITY_FULL=1` or `--full` (the
option exists when this directory is on the command line: `pytest tests/reliability --full`).

Each scenario prints one `[reliability:ci|full] <scenario>: key=value …` line, shown even without
`-s`; with `DOCUTRAY_WATCH_RELIABILITY_REPORT=FILE` the figures are also appended to FILE as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from docutray_watch.emulator import EmulatorServer
from tests.daemon.conftest import DaemonProcess, wait_for
from tests.sinks.conftest import PG_HOST, PG_PORT, PG_URL, MotoServer, TcpProxy

REPO_ROOT = Path(__file__).resolve().parents[2]
FULL_ENV = "DOCUTRAY_WATCH_RELIABILITY_FULL"
REPORT_ENV = "DOCUTRAY_WATCH_RELIABILITY_REPORT"
T = TypeVar("T")

__all__ = [
    "PG_URL",
    "REPO_ROOT",
    "Daemon",
    "MotoServer",
    "Sizes",
    "StallingProxy",
    "TcpProxy",
    "integrity_of",
    "journal_rows",
    "wait_for",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help=f"reliability suite at full size (same as {FULL_ENV}=1)",
    )


# --- sizes and figures --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """Which size the suite runs at."""

    full: bool

    @property
    def label(self) -> str:
        """`full` or `ci`."""
        return "full" if self.full else "ci"

    def pick(self, ci: T, full: T) -> T:
        """The CI value or the full-size one."""
        return full if self.full else ci


@pytest.fixture(name="sizes", scope="session")
def sizes_fixture(pytestconfig: pytest.Config) -> Sizes:
    """CI size unless --full or DOCUTRAY_WATCH_RELIABILITY_FULL=1."""
    option = bool(pytestconfig.getoption("full", default=False))
    return Sizes(full=option or os.environ.get(FULL_ENV, "") not in ("", "0"))


Report = Callable[..., None]


@pytest.fixture(name="report")
def report_fixture(capsys: pytest.CaptureFixture[str], sizes: Sizes) -> Report:
    """Print a scenario's figures on one line (also without -s); optionally append them as JSON."""

    def report(scenario: str, **figures: Any) -> None:
        line = f"[reliability:{sizes.label}] {scenario}: " + " ".join(
            f"{key}={value}" for key, value in figures.items()
        )
        with capsys.disabled():
            print(f"\n{line}", flush=True)
        target = os.environ.get(REPORT_ENV)
        if target:
            with open(target, "a", encoding="utf-8") as handle:
                entry = {"scenario": scenario, "size": sizes.label, **figures}
                handle.write(json.dumps(entry, default=str) + "\n")

    return report


# --- the daemon process -------------------------------------------------------------------------


class Daemon(DaemonProcess):
    """`DaemonProcess` that can also be killed with SIGKILL, restarted, and run under a wrapper.

    `wrapper` is put in front of the command, e.g. `setpriv …` to take away root's power to read
    any file.
    """

    def __init__(
        self,
        root: Path,
        config: dict[str, Any],
        *,
        env: dict[str, str | None] | None = None,
        wrapper: list[str] | None = None,
        log_level: str = "info",
    ) -> None:
        super().__init__(root, config)
        self.env = env or {}
        self.wrapper = wrapper or []
        self.log_level = log_level
        self.starts = 0

    def spawn(self) -> int:
        """Start the process without waiting; returns the index to wait for READY=1 after."""
        after = len(self.read_messages())
        env = child_env(self.env)
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process ends
        self.proc = subprocess.Popen(
            [
                *self.wrapper,
                sys.executable,
                "-m",
                "docutray_watch.cli",
                "--log-format",
                "json",
                "--log-level",
                self.log_level,
                "run",
                "-c",
                str(self.config_path),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
        )
        self.starts += 1
        return after

    def start(self, extra_env: dict[str, str] | None = None) -> Daemon:
        """Start and wait for READY=1 of this very start."""
        if extra_env:
            self.env.update(extra_env)
        after = self.spawn()
        self.wait_message("READY=1", timeout=60, after=after)
        return self

    def kill9(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed — a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines (other lines, e.g. from a crash, are returned as {"raw": …})."""
        lines = []
        for raw in self.log().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"raw": raw})
        return lines

    def tracebacks(self) -> list[str]:
        """Log lines that contain a Python traceback."""
        return [line for line in self.log().splitlines() if "Traceback" in line]


DaemonFactory = Callable[..., Daemon]


def child_env(changes: dict[str, str | None]) -> dict[str, str]:
    """This process's environment with `changes` (None removes), without our own settings."""
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env.pop("DOCUTRAY_API_KEY", None)
    env.pop("DOCUTRAY_WATCH_CONFIG", None)
    return env


@pytest.fixture(name="daemon_env")
def daemon_env_fixture(tmp_path: Path) -> dict[str, str | None]:
    """Environment of the daemon: the probe plugin importable, AWS settings of this machine hidden.

    The probe plugin is installed by a `.dist-info` folder on PYTHONPATH whose entry point names
    `tests.reliability.probe_plugin`, exactly as a pip-installed plugin would be found.
    """
    site = tmp_path / "probe-site"
    info = site / "docutray_watch_reliability_probe-0.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: docutray-watch-reliability-probe\nVersion: 0.0.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[docutray_watch]\nreliability-probe = tests.reliability.probe_plugin\n"
    )
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    paths = [str(site), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    # None removes a variable (AWS_CA_BUNDLE and friends of this machine).
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("AWS_")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


@pytest.fixture(name="reliable_daemon")
def reliable_daemon_fixture(
    tmp_path: Path, daemon_env: dict[str, str | None]
) -> Iterator[DaemonFactory]:
    """Make `Daemon`s (killed at teardown if still running)."""
    made: list[Daemon] = []

    def make(
        config: dict[str, Any],
        *,
        root: Path | None = None,
        env: dict[str, str | None] | None = None,
        **options: Any,
    ) -> Daemon:
        daemon = Daemon(root or tmp_path, config, env={**daemon_env, **(env or {})}, **options)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()


def base_config(
    root: Path, emulator: EmulatorServer, *pipelines: dict[str, Any], **top: Any
) -> dict[str, Any]:
    """A daemon config against `emulator`, state under `root/state`."""
    data: dict[str, Any] = {
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 1000,
            "max_in_flight": 32,
            "max_retries": 2,
        },
        "state_dir": str(root / "state"),
        "shutdown_grace": 5,
        "pipelines": list(pipelines),
    }
    data.update(top)
    return data


def pipeline_config(root: Path, name: str, **overrides: Any) -> dict[str, Any]:
    """A pipeline with in/ done/ failed/ out/ folders under `root/name`."""
    base = root / name
    data: dict[str, Any] = {
        "name": name,
        "watch": {"path": str(base / "in"), "settle": 0.2, "rescan_interval": 5},
        "steps": ["stp_one"],
        "poll": {"initial": 0.1, "max": 0.5, "timeout": 300},
        "on_success": {"action": "move", "to": str(base / "done")},
        "on_failure": {"action": "move", "to": str(base / "failed")},
        "sinks": [{"type": "filesystem", "path": str(base / "out")}],
    }
    data.update(overrides)
    (base / "in").mkdir(parents=True, exist_ok=True)
    return data


# --- an API that stops answering ----------------------------------------------------------------


class StallingProxy:
    """Forwards 127.0.0.1:<port> to the emulator; `stall()` makes every request time out."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.stalled = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.add(client)
            if self.stalled:
                continue  # accepted, never answered: the client's read timeout fires
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.add(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)

    def _cut_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)

    def stall(self) -> None:
        """Cut the open connections; new ones are accepted and left unanswered."""
        self.stalled = True
        self._cut_all()

    def resume(self) -> None:
        """Forward again (the stalled connections are closed)."""
        self.stalled = False
        self._cut_all()

    def close(self) -> None:
        """Stop listening and cut everything."""
        _close(self.listener)
        self._cut_all()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# --- the journal, read from outside -------------------------------------------------------------


def _readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def integrity_of(path: Path) -> str:
    """`PRAGMA integrity_check` of the journal, opened read-only (the daemon must be stopped)."""
    conn = _readonly(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def journal_rows(path: Path, query: str, *args: Any) -> list[sqlite3.Row]:
    """Rows of a read-only query on the journal."""
    conn = _readonly(path)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(query, args))
    finally:
        conn.close()


# --- PostgreSQL ---------------------------------------------------------------------------------


def _postgres_problem() -> str | None:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=3):
            pass
    except OSError as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {exc}"
    import psycopg

    try:
        with psycopg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test", connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is unusable: {exc}"


@pytest.fixture(name="pg_table")
def pg_table_fixture() -> Iterator[str]:
    """A fresh table name in the test PostgreSQL database, dropped afterwards.

    Skips when PostgreSQL is unreachable — except with CI=true, where that is a failure.
    """
    problem = _postgres_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    table = f"rel_{uuid.uuid4().hex[:16]}"
    yield table
    engine = sa.create_engine(PG_URL)
    try:
        sa.Table(table, sa.MetaData()).drop(engine, checkfirst=True)
    finally:
        engine.dispose()


def sink_row_keys(url: str, table: str) -> list[tuple[str, str, str]]:
    """Every (pipeline, sha256, step_id) row of a database sink's table, duplicates included."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return []
            rows = conn.execute(sa.text(f"SELECT pipeline, sha256, step_id FROM {table}"))  # noqa: S608
            return [(r[0], r[1], r[2]) for r in rows]
    finally:
        engine.dispose()


# --- S3 -----------------------------------------------------------------------------------------


@pytest.fixture(name="s3_server")
def s3_server_fixture() -> Iterator[MotoServer]:
    """A moto S3 server of this test, which the test may stop and restart on the same port."""
    server = MotoServer()
    server.start()
    yield server
    server.stop()


S3_ACCESS_KEY = "AKIARELIABILITY"
S3_SECRET_KEY = "reliability-secret-never-shown"


def s3_client(server: MotoServer) -> Any:
    """A boto3 client of `server` with the test credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
    )


def without_root_powers() -> list[str]:
    """A command prefix under which root can no longer read every file (mode 000 works), or []."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return []
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def elapsed_since(started: float) -> float:
    """Seconds since `started` (a monotonic time), rounded for reports."""
    return round(time.monotonic() - started, 1)
