"""Run the emulator on its own event loop in a daemon thread, for sync and async callers."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from docutray_watch.emulator.app import create_app
from docutray_watch.emulator.config import EmulatorConfig
from docutray_watch.emulator.state import Clock, EmulatorState
from docutray_watch.emulator.stats import EmulatorStats

KEEPALIVE_TIMEOUT = 3600.0
"""Idle keep-alive connections stay open this long, so clients never see them vanish."""

_BACKLOG = 4096
_SHUTDOWN_TIMEOUT = 2.0
_JOIN_TIMEOUT = 30.0


class EmulatorServer:
    """A DocuTray API emulator listening on a local port.

    Use it as ``with EmulatorServer(cfg) as emu:`` or ``async with ...`` (start and stop run in
    a worker thread, so the caller's event loop is never blocked), or call `start` and `stop`.
    It can be started again after `stop`; executions and statistics are kept until `reset`.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
    ) -> None:
        self._state = EmulatorState(config, clock=clock)
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"<EmulatorServer {where}>"

    # -- facts ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._port is not None

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when started with port 0)."""
        if self._port is None:
            raise RuntimeError("the emulator is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>``, the base URL to give clients."""
        return f"http://{self._host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The API key the emulator accepts."""
        return self._state.config.api_key

    @property
    def config(self) -> EmulatorConfig:
        """The configuration in force."""
        return self._state.config

    @property
    def state(self) -> EmulatorState:
        """The emulator's state, shared with its application."""
        return self._state

    # -- control -------------------------------------------------------------------------------

    def stats(self, *, include_executions: bool = True) -> EmulatorStats:
        """A consistent snapshot of the statistics."""
        return self._state.stats(include_executions=include_executions)

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change any `EmulatorConfig` field; requests arriving afterwards see the change."""
        return self._state.configure(**changes)

    def reset(self) -> None:
        """Forget every execution and statistic."""
        self._state.reset()

    def alias_execution(self, alias: str, execution_id: str) -> None:
        """Let status reads of `alias` answer for the existing `execution_id` (KeyError if none).

        Useful to run documentation examples that poll a hard-coded id such as ``exec_abc123``.
        """
        self._state.alias_execution(alias, execution_id)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start listening; return once the port is bound (raises what binding raised)."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        self._ready.clear()
        thread = threading.Thread(target=self._run, name="docutray-emulator", daemon=True)
        self._thread = thread
        thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            thread.join()
            self._thread = None
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Close every connection and stop the server thread (does nothing when stopped)."""
        thread = self._thread
        if thread is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("stop() cannot be called from the emulator's own thread")
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None and thread.is_alive():
            loop.call_soon_threadsafe(stop_requested.set)
        thread.join(_JOIN_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("the emulator thread did not stop")
        self._thread = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self._loop = None
            self._stop_requested = None
            self._ready.set()

    async def _serve(self) -> None:
        self._startup_error = None
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        runner = web.AppRunner(
            create_app(state=self._state),
            handle_signals=False,
            access_log=None,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        try:
            await runner.setup()
            site = web.TCPSite(runner, self._host, self._requested_port, backlog=_BACKLOG)
            await site.start()
            self._port = int(runner.addresses[0][1])
        except Exception as exc:  # noqa: BLE001 - re-raised by start() in the caller's thread
            self._startup_error = exc
            await runner.cleanup()
            return
        finally:
            self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await runner.cleanup()
