"""Tests for `docutray_watch.sdnotify`: real datagram sockets stand in for the service manager."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from docutray_watch.sdnotify import Notifier

_RECV_TIMEOUT_S = 5.0


@dataclass
class _Manager:
    """The receiving end of `NOTIFY_SOCKET`, as systemd would hold it."""

    sock: socket.socket
    notify_socket: str

    def receive(self) -> str:
        """The next datagram, decoded; fails the test if none arrives in time."""
        return self.sock.recv(4096).decode()

    def receive_fields(self) -> list[tuple[str, str]]:
        """The next datagram as an ordered list of `(KEY, value)` pairs."""
        return [
            (key, value)
            for key, _, value in (line.partition("=") for line in self.receive().split("\n"))
        ]

    def assert_empty(self) -> None:
        """No datagram is waiting."""
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(4096)
        finally:
            self.sock.settimeout(_RECV_TIMEOUT_S)


def _bound_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(_RECV_TIMEOUT_S)
    return sock


@pytest.fixture(name="short_dir")
def fixture_short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX paths are limited to 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="path_manager")
def fixture_path_manager(short_dir: Path) -> Iterator[_Manager]:
    """A manager listening on a filesystem socket."""
    path = str(short_dir / "notify")
    sock = _bound_socket(path)
    yield _Manager(sock, path)
    sock.close()


@pytest.fixture(name="abstract_manager")
def fixture_abstract_manager() -> Iterator[_Manager]:
    """A manager listening on an abstract-namespace socket."""
    name = f"docutray-watch-test-{uuid.uuid4().hex}"
    sock = _bound_socket("\0" + name)
    yield _Manager(sock, "@" + name)
    sock.close()


@pytest.fixture(name="manager", params=["path", "abstract"])
def fixture_manager(request: pytest.FixtureRequest) -> _Manager:
    """Each kind of manager socket in turn."""
    manager: _Manager = request.getfixturevalue(f"{request.param}_manager")
    return manager


@pytest.fixture(name="notifier")
def fixture_notifier(manager: _Manager) -> Iterator[Notifier]:
    """A notifier pointed at `manager`."""
    notifier = Notifier.from_env({"NOTIFY_SOCKET": manager.notify_socket})
    yield notifier
    notifier.close()


class TestNotifierMessages:
    """What reaches the manager's socket, byte for byte and in order."""

    def test_enabled_with_socket(self, notifier: Notifier) -> None:
        """A notifier built with NOTIFY_SOCKET is enabled."""
        assert notifier.enabled

    def test_lifecycle_in_order(self, notifier: Notifier, manager: _Manager) -> None:
        """ready, status, watchdog, stopping arrive as separate datagrams in call order."""
        assert notifier.ready()
        assert notifier.status("queue=3 in_flight=2")
        assert notifier.watchdog()
        assert notifier.stopping()
        received = [manager.receive() for _ in range(4)]
        assert received == [
            "READY=1",
            "STATUS=queue=3 in_flight=2",
            "WATCHDOG=1",
            "STOPPING=1",
        ]
        manager.assert_empty()

    def test_reloading_carries_monotonic_time(self, notifier: Notifier, manager: _Manager) -> None:
        """reloading sends RELOADING=1 and the current CLOCK_MONOTONIC µs in one datagram."""
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        fields = manager.receive_fields()
        assert [key for key, _ in fields] == ["RELOADING", "MONOTONIC_USEC"]
        assert fields[0][1] == "1"
        assert before <= int(fields[1][1]) <= after
        manager.assert_empty()

    def test_extend_timeout_in_microseconds(self, notifier: Notifier, manager: _Manager) -> None:
        """extend_timeout converts seconds to EXTEND_TIMEOUT_USEC."""
        assert notifier.extend_timeout(12.5)
        assert manager.receive() == "EXTEND_TIMEOUT_USEC=12500000"

    def test_extend_timeout_rejects_non_positive(self, notifier: Notifier) -> None:
        """A zero or negative extension is a programming error."""
        with pytest.raises(ValueError, match="positive"):
            notifier.extend_timeout(0)

    def test_notify_keeps_field_order(self, notifier: Notifier, manager: _Manager) -> None:
        """notify sends every field, in the order given, in one datagram."""
        assert notifier.notify(STATUS="reloaded", READY=1, ERRNO=0)
        assert manager.receive() == "STATUS=reloaded\nREADY=1\nERRNO=0"

    def test_newline_in_value_cannot_inject_a_field(
        self, notifier: Notifier, manager: _Manager
    ) -> None:
        """A newline inside a value becomes a space instead of starting a new field."""
        assert notifier.status("bad\nREADY=1")
        assert manager.receive() == "STATUS=bad READY=1"

    def test_invalid_field_name_rejected(self, notifier: Notifier) -> None:
        """Field names must be upper-case sd_notify variable names."""
        with pytest.raises(ValueError, match="field name"):
            notifier.notify(status="x")

    def test_concurrent_senders_each_deliver_whole_datagrams(
        self, notifier: Notifier, manager: _Manager
    ) -> None:
        """Datagrams sent from several threads at once all arrive intact."""
        threads = [
            threading.Thread(target=notifier.status, args=(f"thread-{n}",)) for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        received = sorted(manager.receive() for _ in threads)
        assert received == sorted(f"STATUS=thread-{n}" for n in range(8))


class TestNotifierDisabled:
    """Behaviour without a usable NOTIFY_SOCKET."""

    def test_unset_is_a_noop(self) -> None:
        """Without NOTIFY_SOCKET the notifier is disabled and every method returns False."""
        notifier = Notifier.from_env({})
        assert not notifier.enabled
        assert not notifier.ready()
        assert not notifier.status("x")
        assert not notifier.reloading()
        assert not notifier.stopping()
        assert not notifier.watchdog()
        assert not notifier.extend_timeout(1)

    def test_empty_value_is_unset(self) -> None:
        """An empty NOTIFY_SOCKET counts as unset."""
        assert not Notifier.from_env({"NOTIFY_SOCKET": ""}).enabled

    def test_unsupported_address_disabled_and_logged(self) -> None:
        """A NOTIFY_SOCKET that is neither a path nor @abstract disables notifications."""
        with capture_logs() as logs:
            notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
        assert not notifier.enabled
        assert [entry["event"] for entry in logs] == ["sd_notify_socket_unsupported"]

    def test_reads_process_environment_by_default(
        self, monkeypatch: pytest.MonkeyPatch, path_manager: _Manager
    ) -> None:
        """from_env() without arguments reads os.environ."""
        monkeypatch.setenv("NOTIFY_SOCKET", path_manager.notify_socket)
        notifier = Notifier.from_env()
        try:
            assert notifier.ready()
            assert path_manager.receive() == "READY=1"
        finally:
            notifier.close()


class TestNotifierSendFailures:
    """A manager socket that goes away must never take the daemon down."""

    def test_vanished_socket_returns_false_and_logs_once(self, short_dir: Path) -> None:
        """Sends to a removed socket return False, and only the first failure is logged."""
        path = str(short_dir / "gone")
        _bound_socket(path).close()
        os.unlink(path)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
        with capture_logs() as logs:
            assert not notifier.ready()
            assert not notifier.watchdog()
            assert not notifier.stopping()
        notifier.close()
        assert [entry["event"] for entry in logs] == ["sd_notify_failed"]
        assert logs[0]["socket"] == path

    def test_closed_receiver_does_not_raise(self, short_dir: Path) -> None:
        """A socket file whose listener has exited (connection refused) is not an error."""
        path = str(short_dir / "closed")
        _bound_socket(path).close()  # the file stays, nobody listens
        notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
        assert not notifier.watchdog()
        notifier.close()

    def test_recovers_after_manager_returns(self, short_dir: Path) -> None:
        """After a failure, a send to a listening socket succeeds and logs the recovery."""
        path = str(short_dir / "back")
        notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
        with capture_logs() as logs:
            assert not notifier.ready()
            receiver = _bound_socket(path)
            try:
                assert notifier.ready()
                assert receiver.recv(4096) == b"READY=1"
            finally:
                receiver.close()
                notifier.close()
        assert [entry["event"] for entry in logs] == ["sd_notify_failed", "sd_notify_recovered"]


class TestWatchdogInterval:
    """WATCHDOG_USEC / WATCHDOG_PID handling."""

    def test_half_of_watchdog_usec(self) -> None:
        """With WATCHDOG_USEC and no WATCHDOG_PID the interval is half the timeout, in seconds."""
        notifier = Notifier.from_env({"WATCHDOG_USEC": "60000000"})
        assert notifier.watchdog_interval() == 30.0

    def test_pid_matches_us(self) -> None:
        """WATCHDOG_PID equal to our pid keeps the watchdog on."""
        notifier = Notifier.from_env({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())})
        assert notifier.watchdog_interval() == 1.5

    def test_pid_of_another_process(self) -> None:
        """WATCHDOG_PID naming another process means the watchdog is not ours."""
        notifier = Notifier.from_env(
            {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}
        )
        assert notifier.watchdog_interval() is None

    @pytest.mark.parametrize("usec", [None, "", "0", "-5", "abc"])
    def test_missing_or_malformed_usec(self, usec: str | None) -> None:
        """No, zero, negative or non-numeric WATCHDOG_USEC disables the watchdog."""
        env = {} if usec is None else {"WATCHDOG_USEC": usec}
        assert Notifier.from_env(env).watchdog_interval() is None

    def test_malformed_pid(self) -> None:
        """A non-numeric WATCHDOG_PID cannot be ours."""
        notifier = Notifier.from_env({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "x"})
        assert notifier.watchdog_interval() is None
