"""Tests of fault injection, the rate limiter and Retry-After compliance accounting."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from docutray_watch.emulator import EmulatorServer
from docutray_watch.testing import EmulatorFactory, ManualClock

Connect = Callable[[EmulatorServer], httpx.Client]
MakePdf = Callable[..., bytes]

PATH = "/api/steps-async/step_1"


def _upload(client: httpx.Client, document: bytes) -> httpx.Response:
    return client.post(PATH, files={"image": ("doc.pdf", document, "application/pdf")})


class TestServerErrors:
    def test_server_error_rate_one(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """With server_error_rate=1.0 requests get a 5xx JSON answer and start nothing."""
        server = emulator_factory(server_error_rate=1.0, seed=1)
        client = connect(server)
        statuses = {_upload(client, make_pdf()).status_code for _ in range(20)}
        statuses |= {client.get("/api/steps-async/status/exec_x").status_code for _ in range(20)}
        assert statuses <= {500, 502, 503, 504}
        assert len(statuses) > 1
        stats = server.stats()
        assert stats.executions_created == 0
        assert stats.faults == {"server_error": 40}
        assert sum(stats.responses_by_status.values()) == 40

    def test_statuses_can_be_chosen(
        self, emulator_factory: EmulatorFactory, connect: Connect
    ) -> None:
        """server_error_statuses restricts the injected statuses, e.g. to 503 only."""
        client = connect(emulator_factory(server_error_rate=1.0, server_error_statuses=(503,)))
        statuses = {client.get("/api/steps-async/status/exec_x").status_code for _ in range(10)}
        assert statuses == {503}

    def test_statuses_must_be_5xx(self, emulator: EmulatorServer) -> None:
        """Only 5xx statuses can be injected as server errors."""
        with pytest.raises(ValueError, match="5xx"):
            emulator.configure(server_error_statuses=(404,))

    def test_server_error_body_has_a_message(
        self, emulator_factory: EmulatorFactory, connect: Connect
    ) -> None:
        """A 5xx answer has a JSON body with a human message and a request id."""
        response = connect(emulator_factory(server_error_rate=1.0)).get(
            "/api/steps-async/status/exec_x"
        )
        assert response.json()["error"]["message"]
        assert response.headers["X-Request-ID"]


class TestInjectedRateLimit:
    def test_429_answer(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """An injected 429 has a Retry-After header and the documented body fields."""
        server = emulator_factory(rate_limit_rate=1.0, retry_after=3.0)
        response = _upload(connect(server), make_pdf())
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3"
        body = response.json()
        assert body["message"]
        assert body["retryAfter"] == 3.0
        assert body["remaining"] == 0
        assert {"limitType", "limit", "resetTime"} <= set(body)
        assert server.stats().executions_created == 0
        assert server.stats().faults == {"rate_limit": 1}

    def test_fractional_retry_after_is_rounded_up(
        self, emulator_factory: EmulatorFactory, connect: Connect
    ) -> None:
        """The header carries whole seconds, rounded up; the body keeps the decimal."""
        response = connect(emulator_factory(rate_limit_rate=1.0, retry_after=0.25)).get(
            "/api/steps-async/status/exec_x"
        )
        assert response.headers["Retry-After"] == "1"
        assert response.json()["retryAfter"] == 0.25

    def test_upload_is_read_before_the_429(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """A rate-limited upload is still read: an over-size one gets 413, not 429."""
        client = connect(emulator_factory(rate_limit_rate=1.0, max_file_size=1024))
        assert _upload(client, make_pdf(padding=4096)).status_code == 413


class TestDrops:
    def test_drop_before_anything(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """With drop_rate=1.0 the connection closes without an answer and nothing starts."""
        server = emulator_factory(drop_rate=1.0)
        client = connect(server)
        with pytest.raises(httpx.TransportError):
            _upload(client, make_pdf())
        with pytest.raises(httpx.TransportError):
            client.get("/api/steps-async/status/exec_x")
        stats = server.stats()
        assert stats.executions_created == 0
        assert stats.faults == {"drop": 2}
        assert stats.responses_by_status == {}

    def test_drop_after_accept_creates_the_execution(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """With drop_after_accept_rate=1.0 the execution starts but no answer comes back."""
        server = emulator_factory(drop_after_accept_rate=1.0)
        client = connect(server)
        with pytest.raises(httpx.TransportError):
            _upload(client, make_pdf())
        stats = server.stats()
        assert stats.executions_created == 1
        assert stats.faults == {"drop_after_accept": 1}

    def test_drop_after_accept_leaves_status_reads_alone(
        self, emulator_factory: EmulatorFactory, connect: Connect
    ) -> None:
        """drop_after_accept_rate applies to submissions only."""
        client = connect(emulator_factory(drop_after_accept_rate=1.0))
        assert client.get("/api/steps-async/status/exec_x").status_code == 404

    def test_client_recovers_after_a_drop(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """After a dropped request the same client gets answers once drops stop."""
        server = emulator_factory(drop_rate=1.0)
        client = connect(server)
        with pytest.raises(httpx.TransportError):
            _upload(client, make_pdf())
        server.configure(drop_rate=0.0)
        assert _upload(client, make_pdf()).status_code == 200


class TestRateLimiter:
    def test_limits_requests_per_second(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        clock: ManualClock,
    ) -> None:
        """The token bucket lets a second's worth through, then answers 429 until refilled."""
        server = emulator_factory(clock=clock, rate_limit_rps=3.0)
        client = connect(server)
        path = "/api/steps-async/status/exec_x"
        assert [client.get(path).status_code for _ in range(4)] == [404, 404, 404, 429]
        clock.advance(1.0 / 3.0)
        assert [client.get(path).status_code for _ in range(2)] == [404, 429]
        assert server.stats().faults == {"rate_limiter": 2}

    def test_retry_after_says_when_a_token_is_free(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        clock: ManualClock,
    ) -> None:
        """The limiter's Retry-After is the wait for a token, rounded up to whole seconds."""
        client = connect(emulator_factory(clock=clock, rate_limit_rps=0.25))
        client.get("/api/steps-async/status/exec_x")
        response = client.get("/api/steps-async/status/exec_x")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "4"
        assert response.json()["retryAfter"] == 4.0
        assert response.json()["limitType"] == "requests_per_second"

    def test_limit_can_be_left_out_of_the_body(
        self, emulator_factory: EmulatorFactory, connect: Connect, clock: ManualClock
    ) -> None:
        """hide_rate_limit: the 429 body says when to retry but not the rate (no `limit`)."""
        client = connect(emulator_factory(clock=clock, rate_limit_rps=2.0, hide_rate_limit=True))
        path = "/api/steps-async/status/exec_x"
        response = [client.get(path) for _ in range(3)][-1]
        assert response.status_code == 429
        body = response.json()
        assert "limit" not in body
        assert {"retryAfter", "limitType", "remaining", "resetTime"} <= set(body)

    def test_fractional_retry_after_says_the_wait_to_the_millisecond(
        self, emulator_factory: EmulatorFactory, connect: Connect, clock: ManualClock
    ) -> None:
        """fractional_retry_after: the header is the wait for a token, rounded up to 1 ms."""
        server = emulator_factory(clock=clock, rate_limit_rps=4.0, fractional_retry_after=True)
        client = connect(server)
        path = "/api/steps-async/status/exec_x"
        for _ in range(4):
            client.get(path)
        clock.advance(0.1)
        response = client.get(path)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "0.150"
        clock.advance(0.149)
        client.get(path)  # 1 ms early: a violation of the fractional Retry-After
        assert server.stats().retry_after_violations == 1

    def test_injected_429_with_fractional_retry_after(
        self, emulator_factory: EmulatorFactory, connect: Connect
    ) -> None:
        """An injected 429 carries retry_after as is, e.g. 0.25, when fractions are on."""
        server = emulator_factory(
            rate_limit_rate=1.0, retry_after=0.25, fractional_retry_after=True
        )
        response = connect(server).get("/api/steps-async/status/exec_x")
        assert response.headers["Retry-After"] == "0.250"

    def test_answers_are_counted_per_second(
        self, emulator_factory: EmulatorFactory, connect: Connect, clock: ManualClock
    ) -> None:
        """responses_by_second counts each second's answers by status (rates over time)."""
        server = emulator_factory(clock=clock, rate_limit_rps=1.0)
        client = connect(server)
        for _ in range(3):
            client.get("/api/steps-async/status/exec_x")
        per_second = server.stats().responses_by_second
        totals: dict[int, int] = {}
        for counts in per_second.values():
            for status, count in counts.items():
                totals[status] = totals.get(status, 0) + count
        assert totals == {404: 1, 429: 2}

    def test_limit_can_be_switched_off(
        self, emulator_factory: EmulatorFactory, connect: Connect, clock: ManualClock
    ) -> None:
        """Setting rate_limit_rps to None lifts the limit at once."""
        server = emulator_factory(clock=clock, rate_limit_rps=1.0)
        client = connect(server)
        path = "/api/steps-async/status/exec_x"
        assert [client.get(path).status_code for _ in range(2)] == [404, 429]
        server.configure(rate_limit_rps=None)
        assert {client.get(path).status_code for _ in range(5)} == {404}


class TestRetryAfterViolations:
    def test_early_status_read_is_a_violation(
        self, emulator_factory: EmulatorFactory, connect: Connect, clock: ManualClock
    ) -> None:
        """Reading the same execution again before Retry-After elapsed counts a violation."""
        server = emulator_factory(clock=clock, rate_limit_rate=1.0, retry_after=2.0)
        client = connect(server)
        client.get("/api/steps-async/status/exec_a")
        clock.advance(1.0)
        client.get("/api/steps-async/status/exec_a")
        stats = server.stats()
        assert stats.retry_after_violations == 1
        assert stats.retry_after_violation_details[0].identity == "GET exec_a"
        assert stats.retry_after_violation_details[0].early_by == pytest.approx(1.0)

    def test_compliant_client_has_no_violation(
        self, emulator_factory: EmulatorFactory, connect: Connect, clock: ManualClock
    ) -> None:
        """Coming back after Retry-After, or asking about something else, is no violation."""
        server = emulator_factory(clock=clock, rate_limit_rate=1.0, retry_after=2.0)
        client = connect(server)
        client.get("/api/steps-async/status/exec_a")
        client.get("/api/steps-async/status/exec_b")
        clock.advance(2.0)
        server.configure(rate_limit_rate=0.0)
        client.get("/api/steps-async/status/exec_a")
        client.get("/api/steps-async/status/exec_a")
        assert server.stats().retry_after_violations == 0

    def test_early_resubmission_is_a_violation(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """Resubmitting the same document to the same step too early counts; another doesn't."""
        server = emulator_factory(clock=clock, rate_limit_rate=1.0, retry_after=5.0)
        client = connect(server)
        document = make_pdf()
        assert _upload(client, document).status_code == 429
        server.configure(rate_limit_rate=0.0)
        clock.advance(4.0)
        assert _upload(client, make_pdf()).status_code == 200
        assert server.stats().retry_after_violations == 0
        assert _upload(client, document).status_code == 200
        assert server.stats().retry_after_violations == 1

    def test_limiter_429_is_tracked_too(
        self, emulator_factory: EmulatorFactory, connect: Connect, clock: ManualClock
    ) -> None:
        """A 429 from the rate limiter sets a Retry-After window as well."""
        server = emulator_factory(clock=clock, rate_limit_rps=1.0)
        client = connect(server)
        client.get("/api/steps-async/status/exec_a")
        client.get("/api/steps-async/status/exec_b")
        clock.advance(0.5)
        early = client.get("/api/steps-async/status/exec_b")
        clock.advance(float(early.headers["Retry-After"]))
        on_time = client.get("/api/steps-async/status/exec_b")
        assert (early.status_code, on_time.status_code) == (429, 404)
        assert server.stats().retry_after_violations == 1
