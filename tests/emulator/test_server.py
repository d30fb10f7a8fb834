"""Tests of EmulatorServer: lifecycle, clean shutdown, load and streaming memory use."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from docutray_watch.emulator import (
    STATE_KEY,
    EmulatorConfig,
    EmulatorServer,
    EmulatorState,
    create_app,
)
from docutray_watch.testing import EmulatorFactory, ManualClock

Connect = Callable[[EmulatorServer], httpx.Client]
MakePdf = Callable[..., bytes]


def _emulator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "docutray-emulator"]


class TestLifecycle:
    def test_context_manager_serves_then_stops(self, make_pdf: MakePdf) -> None:
        """Inside `with` the server answers on a real port; afterwards it is gone."""
        with EmulatorServer(EmulatorConfig(latency=0.0)) as server:
            assert server.running
            assert server.port > 0
            assert server.base_url == f"http://127.0.0.1:{server.port}"
            url = f"{server.base_url}/_emulator/stats"
            assert httpx.get(url).status_code == 200
        assert not server.running
        with pytest.raises(httpx.ConnectError):
            httpx.get(url)

    async def test_async_context_manager(self, make_pdf: MakePdf) -> None:
        """`async with` starts and stops the server without blocking the caller's loop."""
        async with EmulatorServer(EmulatorConfig(latency=0.0)) as server:
            headers = {"Authorization": f"Bearer {server.api_key}"}
            async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as client:
                accepted = await client.post(
                    "/api/steps-async/s", files={"image": ("a.pdf", make_pdf())}
                )
                execution_id = accepted.json()["execution_id"]
                status = await client.get(f"/api/steps-async/status/{execution_id}")
        assert status.json()["status"] == "SUCCESS"
        assert not server.running

    def test_shutdown_is_clean(self, make_pdf: MakePdf) -> None:
        """Stopping closes every connection without ResourceWarnings or leftover threads."""
        before = set(_emulator_threads())  # other tests' servers are not this test's business
        gc.collect()  # likewise earlier tests' garbage: its ResourceWarnings would land below
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            server = EmulatorServer().start()
            headers = {"Authorization": f"Bearer {server.api_key}"}
            # An idle keep-alive connection stays open while the server stops.
            client = httpx.Client(base_url=server.base_url, headers=headers)
            client.post("/api/steps-async/s", files={"image": ("a.pdf", make_pdf())})
            server.stop()
            client.close()
            gc.collect()
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert set(_emulator_threads()) - before == set()

    def test_stop_is_idempotent_and_restart_keeps_state(self, make_pdf: MakePdf) -> None:
        """stop() twice is harmless; start() again serves with the statistics kept."""
        server = EmulatorServer()
        server.start()
        headers = {"Authorization": f"Bearer {server.api_key}"}
        httpx.post(
            f"{server.base_url}/api/steps-async/s",
            headers=headers,
            files={"image": ("a.pdf", make_pdf())},
        )
        server.stop()
        server.stop()
        with server:
            assert httpx.get(f"{server.base_url}/_emulator/stats").json()["posts"] == 1

    def test_start_twice_is_an_error(self, emulator: EmulatorServer) -> None:
        """Starting a running server raises instead of starting a second one."""
        with pytest.raises(RuntimeError):
            emulator.start()

    def test_port_in_use_raises_on_start(self, emulator: EmulatorServer) -> None:
        """A port that cannot be bound raises from start() and leaves no thread behind."""
        before = len(_emulator_threads())
        with pytest.raises(OSError, match=r"address already in use|Errno"):
            EmulatorServer(port=emulator.port).start()
        assert len(_emulator_threads()) == before

    def test_base_url_needs_a_running_server(self) -> None:
        """Asking a stopped server for its URL is an error, not a wrong URL."""
        with pytest.raises(RuntimeError):
            _ = EmulatorServer().base_url

    def test_repr_hides_the_key(self, emulator: EmulatorServer) -> None:
        """The server's repr shows its URL, never its API key."""
        assert emulator.base_url in repr(emulator)
        assert emulator.api_key not in repr(emulator)


class TestClientDisconnects:
    def test_abandoned_upload_is_counted_quietly(
        self, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A client that hangs up mid-upload is counted, without an error logged."""
        head = (
            "POST /api/steps-async/s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {emulator.api_key}\r\n"
            "Content-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 5000000\r\n\r\n"
            '--XYZ\r\nContent-Disposition: form-data; name="image"; filename="a.pdf"\r\n\r\n'
        )
        with socket.create_connection(("127.0.0.1", emulator.port)) as sock:
            sock.sendall(head.encode() + b"%PDF-1.7" + b"x" * 100_000)
            _wait_for(lambda: emulator.stats().posts == 1)
        _wait_for(lambda: emulator.stats().client_disconnects == 1)
        assert emulator.stats().executions_created == 0
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class TestCreateApp:
    def test_app_holds_its_state(self) -> None:
        """create_app builds an aiohttp application whose state is reachable for embedding."""
        app = create_app(EmulatorConfig(latency=3.0))
        assert isinstance(app, web.Application)
        assert app[STATE_KEY].config.latency == 3.0

    def test_config_and_state_exclude_each_other(self) -> None:
        """Passing both a config and a state is refused."""
        with pytest.raises(ValueError, match="either"):
            create_app(EmulatorConfig(), state=EmulatorState())


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    await reader.readexactly(length)
    return int(lines[0].split()[1])


class TestLoad:
    async def test_many_simultaneous_keepalive_connections(self, emulator: EmulatorServer) -> None:
        """300 connections open at once are all served, and stay usable after idling."""
        request = b"GET /_emulator/config HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

        async def open_and_ask() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
            reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
            writer.write(request)
            return reader, writer, await _read_response(reader)

        connections = await asyncio.wait_for(
            asyncio.gather(*(open_and_ask() for _ in range(300))), timeout=30
        )
        try:
            await asyncio.sleep(0.2)  # idle time, during which no connection may be closed
            for _, writer, _ in connections:
                writer.write(request)
            again = await asyncio.wait_for(
                asyncio.gather(*(_read_response(reader) for reader, _, _ in connections)),
                timeout=30,
            )
        finally:
            for _, writer, _ in connections:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for _, w, _ in connections))
        assert {status for _, _, status in connections} == {200}
        assert set(again) == {200}

    @pytest.mark.slow
    async def test_thousand_executions_in_flight(
        self, emulator_factory: EmulatorFactory, clock: ManualClock, make_pdf: MakePdf
    ) -> None:
        """1,000 submissions over many connections are all held in flight, then all succeed."""
        server = emulator_factory(clock=clock, latency=30.0)
        # httpx's pool spends CPU per open connection on every request; 20 keeps this quick.
        connections = 20
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        headers = {"Authorization": f"Bearer {server.api_key}"}
        slots = asyncio.Semaphore(connections)
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=headers, limits=limits, timeout=30.0
        ) as client:

            async def submit() -> str:
                async with slots:
                    response = await client.post(
                        "/api/steps-async/s", files={"image": ("a.pdf", make_pdf())}
                    )
                response.raise_for_status()
                execution_id: str = response.json()["execution_id"]
                return execution_id

            async def status(execution_id: str) -> str:
                async with slots:
                    response = await client.get(f"/api/steps-async/status/{execution_id}")
                response.raise_for_status()
                value: str = response.json()["status"]
                return value

            ids = await asyncio.gather(*(submit() for _ in range(1000)))
            stats = server.stats(include_executions=False)
            assert (stats.executions_created, stats.executions_in_flight) == (1000, 1000)
            clock.advance(30.0)
            statuses = await asyncio.gather(*(status(i) for i in ids))
        assert set(statuses) == {"SUCCESS"}
        assert len(set(ids)) == 1000
        assert server.stats(include_executions=False).executions_in_flight == 0


class TestStreaming:
    def test_large_upload_is_not_buffered(self, emulator: EmulatorServer, tmp_path: Path) -> None:
        """A 20 MB multipart upload is hashed on the fly, not held in memory."""
        size = 20 * 1024 * 1024
        document = tmp_path / "big.pdf"
        with document.open("wb") as out:
            out.write(b"%PDF-1.7\n")
            out.truncate(size)
        headers = {"Authorization": f"Bearer {emulator.api_key}"}
        tracemalloc.start()
        try:
            baseline, _ = tracemalloc.get_traced_memory()
            with document.open("rb") as upload:
                response = httpx.post(
                    f"{emulator.base_url}/api/steps-async/s",
                    headers=headers,
                    files={"image": ("big.pdf", upload, "application/pdf")},
                    timeout=30.0,
                )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 200
        assert emulator.stats().executions[response.json()["execution_id"]].size == size  # type: ignore[index]
        assert peak - baseline < size // 4
