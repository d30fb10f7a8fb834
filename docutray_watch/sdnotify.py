"""A small, dependency-free implementation of systemd's `sd_notify` protocol.

The service manager passes `NOTIFY_SOCKET` (a filesystem path, or `@name` for the abstract
namespace) and, when `WatchdogSec=` is set, `WATCHDOG_USEC` / `WATCHDOG_PID`. Each notification is
one `AF_UNIX`/`SOCK_DGRAM` datagram of newline-separated `KEY=value` lines (see sd_notify(3)).

Notifications are best effort: when `NOTIFY_SOCKET` is unset every method is a no-op, and a send
that fails (the socket went away, the manager's queue is full) is logged once and never raises —
the daemon must keep processing documents whatever happens to its supervisor.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Mapping

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger(__name__)

# A send must never stall the daemon for long if the manager stops draining its queue.
_SEND_TIMEOUT_S = 1.0
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def _socket_address(raw: str) -> str | None:
    """The address to `sendto()` for a `NOTIFY_SOCKET` value, or None if unsupported."""
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        # Linux abstract namespace: a leading NUL byte instead of the `@`.
        return "\0" + raw[1:]
    return None


def _positive_int(raw: str | None) -> int | None:
    """`raw` as a positive integer, or None when absent or malformed."""
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value > 0 else None


class Notifier:
    """Sends service state notifications to the service manager (sd_notify(3)).

    Build it with `Notifier.from_env()`. All methods are thread-safe; each returns True when the
    datagram was handed to the kernel and False when notifications are disabled or the send failed.
    """

    def __init__(
        self,
        socket_path: str | None,
        *,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ) -> None:
        """Notify through `socket_path` (`/path` or `@abstract`); None disables notifications."""
        self._socket_path = socket_path
        self._address = _socket_address(socket_path) if socket_path else None
        if socket_path and self._address is None:
            log.warning("sd_notify_socket_unsupported", socket=socket_path)
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier configured from `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("NOTIFY_SOCKET") or None,
            watchdog_usec=env.get("WATCHDOG_USEC"),
            watchdog_pid=env.get("WATCHDOG_PID"),
        )

    def __repr__(self) -> str:
        return f"Notifier(socket_path={self._socket_path!r}, enabled={self.enabled})"

    @property
    def enabled(self) -> bool:
        """True when a usable `NOTIFY_SOCKET` was given."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between `watchdog()` pings (half of `WATCHDOG_USEC`), or None if not wanted.

        None when `WATCHDOG_USEC` is missing or malformed, or when `WATCHDOG_PID` names another
        process (the variables were inherited from a parent that is the one being watched).
        """
        usec = _positive_int(self._watchdog_usec)
        if usec is None:
            return None
        if self._watchdog_pid is not None and _positive_int(self._watchdog_pid) != os.getpid():
            return None
        return usec / 2 / 1_000_000

    def ready(self) -> bool:
        """Startup (or a reload) is complete: `READY=1`."""
        return self.notify(READY=1)

    def status(self, text: str) -> bool:
        """A one-line, human-readable status shown by `systemctl status`: `STATUS=...`."""
        return self.notify(STATUS=text)

    def stopping(self) -> bool:
        """Shutdown has begun: `STOPPING=1`."""
        return self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """A reload has begun: `RELOADING=1` and `MONOTONIC_USEC` in the same datagram."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000
        return self.notify(RELOADING=1, MONOTONIC_USEC=now_usec)

    def watchdog(self) -> bool:
        """Keep-alive ping for `WatchdogSec=`: `WATCHDOG=1`."""
        return self.notify(WATCHDOG=1)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the current start/stop/reload times out."""
        if seconds <= 0:
            raise ValueError(f"extend_timeout needs a positive duration, got {seconds!r}")
        return self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def notify(self, **fields: str | int) -> bool:
        """Send `fields` as `KEY=value` lines, in the given order, in one datagram.

        Field names must be upper-case sd_notify variable names; newlines inside values become
        spaces because a newline separates fields.
        """
        if not fields:
            raise ValueError("notify needs at least one field")
        for name in fields:
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"not an sd_notify field name: {name!r}")
        if self._address is None:
            return False
        message = "\n".join(
            f"{name}={str(value).replace(chr(10), ' ')}" for name, value in fields.items()
        )
        return self._send(message.encode())

    def close(self) -> None:
        """Release the socket; a later notification opens a new one."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, datagram: bytes) -> bool:
        """Send one datagram; log the first failure of a run of failures and report False."""
        assert self._address is not None
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                    self._sock.settimeout(_SEND_TIMEOUT_S)
                self._sock.sendto(datagram, self._address)
            except OSError as exc:
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "sd_notify_failed",
                        socket=self._socket_path,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                return False
            if self._failing:
                self._failing = False
                log.info("sd_notify_recovered", socket=self._socket_path)
            return True
