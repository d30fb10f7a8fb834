"""Fixtures for the emulator's tests: a manual clock, documents and HTTP clients."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from docutray_watch.emulator import EmulatorServer
from docutray_watch.testing import ManualClock

MakePdf = Callable[..., bytes]
Connect = Callable[[EmulatorServer], httpx.Client]
WaitTerminal = Callable[[httpx.Client, str], dict[str, Any]]


@pytest.fixture(name="clock")
def clock_fixture() -> ManualClock:
    """A manual clock for emulators whose timing a test controls."""
    return ManualClock()


@pytest.fixture(name="make_pdf")
def make_pdf_fixture() -> MakePdf:
    """Build a small, unique PDF-looking document, optionally carrying extra bytes."""

    def make(*extra: bytes, padding: int = 0) -> bytes:
        unique = uuid.uuid4().hex.encode()
        return b"%PDF-1.7\n" + unique + b"\n" + b"".join(extra) + b"x" * padding + b"\n%%EOF\n"

    return make


@pytest.fixture(name="connect")
def connect_fixture() -> Iterator[Connect]:
    """Open httpx clients authenticated against an emulator; close them at teardown."""
    clients: list[httpx.Client] = []

    def connect(server: EmulatorServer) -> httpx.Client:
        client = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {server.api_key}"},
            timeout=10.0,
        )
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture(name="wait_terminal")
def wait_terminal_fixture() -> WaitTerminal:
    """Poll an execution's status until it is SUCCESS or ERROR (10 s deadline)."""

    def wait(client: httpx.Client, execution_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            response = client.get(f"/api/steps-async/status/{execution_id}")
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            if body["status"] in ("SUCCESS", "ERROR"):
                return body
            time.sleep(0.01)
        raise AssertionError(f"{execution_id} did not finish within 10 s")

    return wait
