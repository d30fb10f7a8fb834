"""Tests of the control endpoints and of the Python control API (stats, configure, reset)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import httpx
import pytest

from docutray_watch.emulator import EmulatorServer, EmulatorStats
from docutray_watch.testing import EmulatorFactory, ManualClock

Connect = Callable[[EmulatorServer], httpx.Client]
MakePdf = Callable[..., bytes]


def _upload(client: httpx.Client, document: bytes, step_id: str = "step_1") -> httpx.Response:
    return client.post(
        f"/api/steps-async/{step_id}", files={"image": ("doc.pdf", document, "application/pdf")}
    )


class TestStatsEndpoint:
    def test_counts_requests_and_answers(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """GET /_emulator/stats counts POSTs, status reads and answers by status code."""
        client = connect(emulator)
        execution_id = _upload(client, make_pdf()).json()["execution_id"]
        client.get(f"/api/steps-async/status/{execution_id}")
        client.get("/api/steps-async/status/exec_missing")
        body = httpx.get(f"{emulator.base_url}/_emulator/stats").json()
        assert body["posts"] == 1
        assert body["status_gets"] == 2
        assert body["responses_by_status"] == {"200": 2, "404": 1}
        assert body["executions_created"] == 1
        assert body["executions"] is None

    def test_executions_on_request(
        self, emulator_factory: EmulatorFactory, connect: Connect, clock: ManualClock
    ) -> None:
        """?executions=1 adds per-execution details, including the detection delay."""
        server = emulator_factory(clock=clock, latency=2.0)
        client = connect(server)
        document = b"%PDF-1.7 stats"
        execution_id = _upload(client, document).json()["execution_id"]
        clock.advance(1.0)
        client.get(f"/api/steps-async/status/{execution_id}")
        clock.advance(1.5)
        client.get(f"/api/steps-async/status/{execution_id}")
        client.get(f"/api/steps-async/status/{execution_id}")
        stats = EmulatorStats.model_validate(
            httpx.get(f"{server.base_url}/_emulator/stats?executions=1").json()
        )
        assert stats.executions is not None
        execution = stats.executions[execution_id]
        assert execution.sha256 == hashlib.sha256(document).hexdigest()
        assert execution.size == len(document)
        assert execution.status_reads == 3
        assert execution.completes_at - execution.created_at == 2.0
        assert execution.detection_delay == pytest.approx(0.5)

    def test_control_endpoints_need_no_key(self, emulator: EmulatorServer) -> None:
        """The control endpoints answer without an API key and are not counted as API answers."""
        assert httpx.get(f"{emulator.base_url}/_emulator/stats").status_code == 200
        assert httpx.get(f"{emulator.base_url}/_emulator/config").status_code == 200
        assert emulator.stats().responses_by_status == {}


class TestSubmissionCounts:
    def test_resubmissions_are_counted(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """Submissions are counted per step and document, and repeats are resubmissions."""
        client = connect(emulator)
        first, second = make_pdf(), make_pdf()
        for document in (first, first, first, second):
            _upload(client, document)
        _upload(client, first, step_id="step_2")
        stats = emulator.stats()
        first_sha = hashlib.sha256(first).hexdigest()
        assert stats.submissions["step_1"][first_sha] == 3
        assert stats.submissions["step_2"] == {first_sha: 1}
        assert stats.resubmissions == 2


class TestConfigEndpoint:
    def test_changes_apply_at_once(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """POST /_emulator/config changes the behaviour of the next request."""
        client = connect(emulator)
        answer = httpx.post(f"{emulator.base_url}/_emulator/config", json={"rate_limit_rate": 1.0})
        assert answer.status_code == 200
        assert answer.json()["rate_limit_rate"] == 1.0
        assert "api_key" not in answer.json()
        assert _upload(client, make_pdf()).status_code == 429
        assert emulator.config.rate_limit_rate == 1.0

    @pytest.mark.parametrize(
        "body", [{"error_rate": 2}, {"no_such_option": 1}, [1]], ids=["range", "unknown", "list"]
    )
    def test_rejects_invalid_changes(self, emulator: EmulatorServer, body: object) -> None:
        """Invalid or unknown settings get 400 and change nothing."""
        answer = httpx.post(f"{emulator.base_url}/_emulator/config", json=body)
        assert answer.status_code == 400
        assert answer.json()["error"]["message"]
        assert emulator.config.error_rate == 0.0


class TestReset:
    def test_reset_endpoint_clears_everything(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """POST /_emulator/reset forgets executions and counters but keeps the configuration."""
        client = connect(emulator)
        execution_id = _upload(client, make_pdf()).json()["execution_id"]
        emulator.configure(latency=0.01)
        assert httpx.post(f"{emulator.base_url}/_emulator/reset").status_code == 200
        stats = emulator.stats()
        assert (stats.posts, stats.executions_created, stats.submissions) == (0, 0, {})
        assert stats.responses_by_status == {}
        assert client.get(f"/api/steps-async/status/{execution_id}").status_code == 404
        assert emulator.config.latency == 0.01

    def test_python_reset(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """EmulatorServer.reset() clears the statistics."""
        _upload(connect(emulator), make_pdf())
        emulator.reset()
        assert emulator.stats().posts == 0


class TestPythonConfigure:
    def test_configure_returns_and_applies(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """configure() validates, applies at once and returns the new configuration."""
        config = emulator.configure(server_error_rate=1.0, latency=1.0)
        assert (config.server_error_rate, config.latency) == (1.0, 1.0)
        assert _upload(connect(emulator), make_pdf()).status_code >= 500

    def test_configure_rejects_unknown_fields(self, emulator: EmulatorServer) -> None:
        """configure() refuses unknown option names."""
        with pytest.raises(ValueError, match="bogus"):
            emulator.configure(bogus=1)

    def test_new_api_key_applies(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """Changing the API key makes the old one invalid at once."""
        client = connect(emulator)
        emulator.configure(api_key="rotated")
        assert _upload(client, make_pdf()).status_code == 401
        assert emulator.api_key == "rotated"
