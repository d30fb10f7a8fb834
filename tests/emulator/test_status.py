"""Tests of GET /api/steps-async/status/{execution_id}: transitions, outcomes, answer shape."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from docutray_watch.emulator import EmulatorServer
from docutray_watch.testing import EmulatorFactory, ManualClock

Connect = Callable[[EmulatorServer], httpx.Client]
MakePdf = Callable[..., bytes]
WaitTerminal = Callable[[httpx.Client, str], dict[str, Any]]


def _submit(client: httpx.Client, document: bytes, step_id: str = "step_1") -> str:
    response = client.post(
        f"/api/steps-async/{step_id}", files={"image": ("doc.pdf", document, "application/pdf")}
    )
    response.raise_for_status()
    execution_id: str = response.json()["execution_id"]
    return execution_id


def _read(client: httpx.Client, execution_id: str) -> dict[str, Any]:
    response = client.get(f"/api/steps-async/status/{execution_id}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


class TestStatusTransitions:
    def test_enqueued_then_processing_then_success(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """ENQUEUED for the first 10 % of the latency, PROCESSING until it passes, then SUCCESS."""
        client = connect(emulator_factory(clock=clock, latency=10.0))
        execution_id = _submit(client, make_pdf())
        seen = [_read(client, execution_id)]
        for step in (0.5, 0.49, 0.01, 8.99, 0.01):
            clock.advance(step)
            seen.append(_read(client, execution_id))
        statuses = [body["status"] for body in seen]
        assert statuses == [
            "ENQUEUED",
            "ENQUEUED",
            "ENQUEUED",
            "PROCESSING",
            "PROCESSING",
            "SUCCESS",
        ]
        assert all(body["response_timestamp"] is None for body in seen[:-1])
        assert all(body["data"] is None for body in seen[:-1])
        assert seen[-1]["response_timestamp"] is not None

    def test_transitions_in_real_time(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """With the real clock an execution passes through PROCESSING and ends in SUCCESS."""
        client = connect(emulator_factory(latency=0.5))
        execution_id = _submit(client, make_pdf())
        order = ["ENQUEUED", "PROCESSING", "SUCCESS"]
        seen: list[str] = []
        deadline = time.monotonic() + 10.0
        while (not seen or seen[-1] != "SUCCESS") and time.monotonic() < deadline:
            status = _read(client, execution_id)["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
            time.sleep(0.005)
        assert seen == [s for s in order if s in seen]
        assert "PROCESSING" in seen

    def test_zero_latency_is_immediately_terminal(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """With no latency the first status read already sees SUCCESS."""
        client = connect(emulator_factory(latency=0.0))
        assert _read(client, _submit(client, make_pdf()))["status"] == "SUCCESS"


class TestOutcomes:
    def test_error_marker(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """A document carrying the ERROR marker ends in ERROR with a string error."""
        client = connect(emulator_factory(clock=clock, latency=1.0))
        execution_id = _submit(client, make_pdf(b"DOCUTRAY-EMULATOR:ERROR", padding=10))
        clock.advance(1.0)
        body = _read(client, execution_id)
        assert body["status"] == "ERROR"
        assert isinstance(body["error"], str)
        assert body["data"] is None

    def test_error_marker_split_across_upload_chunks(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        clock: ManualClock,
    ) -> None:
        """A marker straddling the server's 256 KiB read chunks is still found."""
        client = connect(emulator_factory(clock=clock, latency=0.0))
        document = b"%PDF-1.7\n".ljust(256 * 1024 - 10, b"x") + b"DOCUTRAY-EMULATOR:ERROR\n"
        assert _read(client, _submit(client, document))["status"] == "ERROR"

    def test_error_rate_one(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """With error_rate=1.0 every execution ends in ERROR and is counted as a fault."""
        server = emulator_factory(clock=clock, latency=0.0, error_rate=1.0)
        client = connect(server)
        ids = [_submit(client, make_pdf()) for _ in range(3)]
        assert {_read(client, i)["status"] for i in ids} == {"ERROR"}
        assert server.stats().faults == {"execution_error": 3}

    def test_seeded_error_rate_is_repeatable(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
    ) -> None:
        """Two emulators with the same seed make the same error decisions."""
        outcomes = []
        for _ in range(2):
            client = connect(emulator_factory(latency=0.0, error_rate=0.5, seed=42))
            outcomes.append(
                [_read(client, _submit(client, make_pdf()))["status"] for _ in range(20)]
            )
        assert outcomes[0] == outcomes[1]
        assert set(outcomes[0]) == {"SUCCESS", "ERROR"}

    def test_latency_marker(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """The LATENCY marker replaces the configured latency for its document."""
        server = emulator_factory(clock=clock, latency=100.0)
        client = connect(server)
        execution_id = _submit(client, make_pdf(b"DOCUTRAY-EMULATOR:LATENCY=2.5\n"))
        assert server.stats().executions[execution_id].latency == 2.5  # type: ignore[index]
        clock.advance(2.4)
        assert _read(client, execution_id)["status"] == "PROCESSING"
        clock.advance(0.1)
        assert _read(client, execution_id)["status"] == "SUCCESS"

    def test_latency_per_mb_and_jitter(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
    ) -> None:
        """Latency grows with the document size and stays within the jitter band."""
        server = emulator_factory(latency=10.0, latency_jitter=0.1, latency_per_mb=4.0)
        client = connect(server)
        execution_id = _submit(client, make_pdf(padding=1024 * 1024))
        latency = server.stats().executions[execution_id].latency  # type: ignore[index]
        assert 9.0 + 4.0 <= latency <= 11.0 + 4.1


class TestStatusAnswer:
    def test_fields(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """A status answer has the documented fields plus an extra one clients must keep."""
        client = connect(emulator_factory(clock=clock, latency=1.0))
        execution_id = _submit(client, make_pdf(), step_id="step_x")
        clock.advance(1.0)
        body = _read(client, execution_id)
        assert set(body) == {
            "execution_id",
            "status",
            "step_id",
            "original_filename",
            "request_timestamp",
            "response_timestamp",
            "data",
            "error",
            "document_metadata",
            "emulator",
        }
        assert body["execution_id"] == execution_id
        assert body["step_id"] == "step_x"
        assert body["original_filename"] == "doc.pdf"
        assert body["emulator"] == {"version": 1}
        iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        assert iso.match(body["request_timestamp"])
        assert iso.match(body["response_timestamp"])
        assert body["response_timestamp"] > body["request_timestamp"]

    def test_alias_answers_for_an_execution(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """An alias (e.g. the docs' exec_abc123) reads the aliased execution's status."""
        client = connect(emulator)
        execution_id = _submit(client, make_pdf())
        emulator.alias_execution("exec_abc123", execution_id)
        assert _read(client, "exec_abc123")["execution_id"] == execution_id
        assert emulator.stats().executions_created == 1
        with pytest.raises(KeyError):
            emulator.alias_execution("exec_other", "exec_unknown")

    def test_unknown_execution_is_404(self, emulator: EmulatorServer, connect: Connect) -> None:
        """An unknown execution id gets 404 with a JSON message."""
        response = connect(emulator).get("/api/steps-async/status/exec_nope")
        assert response.status_code == 404
        assert "exec_nope" in response.json()["error"]["message"]

    @pytest.mark.parametrize(
        "path", ["/api/steps-async/status/x", "/api/nothing", "/_emulator/stats"]
    )
    def test_every_answer_has_a_unique_request_id(
        self, emulator: EmulatorServer, connect: Connect, path: str
    ) -> None:
        """Every answer, success or error, carries its own X-Request-ID."""
        client = connect(emulator)
        ids = {client.get(path).headers["X-Request-ID"] for _ in range(5)}
        assert len(ids) == 5
