"""Tests of `docutray_watch_webhook.sink`: the config model and deliveries to a local receiver."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from docutray_watch import PermanentSinkError, ResultRecord, SinkError
from docutray_watch.testing import make_record
from pydantic import ValidationError

from docutray_watch_webhook import WebhookConfig, WebhookSink, idempotency_key, verify_signature
from docutray_watch_webhook.testing import Reply, WebhookReceiver

MakeSink = Callable[..., Awaitable[WebhookSink]]
SECRET = "whsec_test_5f0c1d2e3a4b"


def _config(**options: Any) -> WebhookConfig:
    values: dict[str, Any] = {"type": "webhook", "url": "https://example.com/hook"}
    values.update(options)
    return WebhookConfig.model_validate(values)


def _error_locations(exc: ValidationError) -> list[tuple[str | int, ...]]:
    return [tuple(error["loc"]) for error in exc.errors()]


def _exception_texts(exc: BaseException) -> str:
    """Message and repr of an exception and of every exception chained to it."""
    texts = []
    current: BaseException | None = exc
    while current is not None:
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


class TestWebhookConfig:
    def test_defaults(self) -> None:
        """Only url and secret are needed; TLS is verified and the header names are standard."""
        config = _config(secret=SECRET)
        assert config.verify_tls is True
        assert config.signature_header == "X-DocuTray-Signature"
        assert config.timestamp_header == "X-DocuTray-Timestamp"
        assert config.headers == {}

    def test_secret_is_required(self) -> None:
        """Without a secret the config is invalid, and the error points at `secret`."""
        with pytest.raises(ValidationError) as info:
            _config()
        assert _error_locations(info.value) == [("secret",)]

    def test_allow_unsigned_makes_secret_optional(self) -> None:
        """`allow_unsigned: true` accepts a config without a secret."""
        assert _config(allow_unsigned=True).secret is None

    def test_empty_secret_is_rejected(self) -> None:
        """An empty secret (an unset variable expanded to "") is an error, not an unsigned hook."""
        with pytest.raises(ValidationError) as info:
            _config(secret="", allow_unsigned=True)
        assert _error_locations(info.value) == [("secret",)]

    def test_secret_is_hidden(self) -> None:
        """The secret appears neither in the repr nor in a dump of the config."""
        config = _config(secret=SECRET)
        assert SECRET not in repr(config)
        assert SECRET not in config.model_dump_json()

    @pytest.mark.parametrize(
        "url", ["ftp://example.com/hook", "example.com/hook", "http:///hook", "https://x/#f", ""]
    )
    def test_rejects_non_http_urls(self, url: str) -> None:
        """Only http:// and https:// URLs with a host (and no fragment) are accepted."""
        with pytest.raises(ValidationError) as info:
            _config(url=url, secret=SECRET)
        assert _error_locations(info.value) == [("url",)]

    @pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "https://example.com/h?x=1"])
    def test_accepts_http_urls(self, url: str) -> None:
        """http and https URLs, with port or query string, are accepted as given."""
        assert _config(url=url, secret=SECRET).url == url

    def test_rejects_bad_header_name(self) -> None:
        """A header name with a space or colon is an error."""
        with pytest.raises(ValidationError) as info:
            _config(secret=SECRET, headers={"Bad Name": "x"})
        assert _error_locations(info.value) == [("headers",)]

    def test_rejects_header_value_with_newline_without_echoing_it(self) -> None:
        """A header value with CR/LF is refused and the message does not show the value."""
        with pytest.raises(ValidationError) as info:
            _config(secret=SECRET, headers={"Authorization": "Bearer tok3n\r\nX: y"})
        assert "tok3n" not in str(info.value.errors()[0]["msg"])

    @pytest.mark.parametrize(
        "name", ["content-type", "Idempotency-Key", "x-docutray-signature", "X-DocuTray-Timestamp"]
    )
    def test_rejects_headers_the_sink_sets(self, name: str) -> None:
        """Extra headers cannot replace Content-Type, Idempotency-Key or the signing headers."""
        with pytest.raises(ValidationError, match="set by the sink"):
            _config(secret=SECRET, headers={name: "x"})

    def test_signature_and_timestamp_headers_must_differ(self) -> None:
        """Using one header name for both is an error."""
        with pytest.raises(ValidationError, match="must differ"):
            _config(secret=SECRET, signature_header="X-Sig", timestamp_header="x-sig")

    def test_timeout_must_be_positive(self) -> None:
        """A zero timeout is an error."""
        with pytest.raises(ValidationError) as info:
            _config(secret=SECRET, timeout=0)
        assert _error_locations(info.value) == [("timeout",)]


class TestIdempotencyKey:
    def test_is_pipeline_sha256_step(self, record: ResultRecord) -> None:
        """The key is `<pipeline>:<sha256>:<step_id>`."""
        expected = f"invoices:{record.document.sha256}:stp_invoice_fields"
        assert idempotency_key(record) == expected

    def test_unusual_characters_are_percent_encoded(self) -> None:
        """A colon or space inside a component is encoded, so the key stays unambiguous ASCII."""
        record = make_record(step_id="stp:a b")
        assert idempotency_key(record).endswith(":stp%3Aa%20b")


class TestWebhookSinkDelivery:
    async def test_body_is_exactly_the_record_json(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord
    ) -> None:
        """The request is a POST to the URL whose body is the bytes of `record.to_json()`."""
        sink = await make_sink()
        await sink.deliver(record)
        [request] = receiver.requests
        assert (request.method, request.path) == ("POST", "/hook")
        assert request.body == record.to_json().encode("utf-8")
        assert request.headers["Content-Type"] == "application/json"

    async def test_signature_verifies(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord, secret: str
    ) -> None:
        """The signature header verifies with `verify_signature` and the shared secret."""
        sink = await make_sink()
        await sink.deliver(record)
        [request] = receiver.requests
        assert verify_signature(request.body, request.headers["X-DocuTray-Signature"], secret)
        assert not verify_signature(request.body, request.headers["X-DocuTray-Signature"], "x")

    async def test_timestamp_header_is_the_signed_unix_time(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord
    ) -> None:
        """The timestamp header holds Unix seconds of now, the same value as the signature's t=."""
        sink = await make_sink()
        before = int(time.time())
        await sink.deliver(record)
        after = int(time.time())
        [request] = receiver.requests
        timestamp = request.headers["X-DocuTray-Timestamp"]
        assert before <= int(timestamp) <= after
        assert request.headers["X-DocuTray-Signature"].startswith(f"t={timestamp},v1=")

    async def test_idempotency_key_is_stable_across_redeliveries(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord
    ) -> None:
        """Delivering the same record twice sends the same Idempotency-Key."""
        sink = await make_sink()
        await sink.deliver(record)
        await sink.deliver(record)
        keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
        assert keys == [f"invoices:{record.document.sha256}:stp_invoice_fields"] * 2

    async def test_sends_extra_headers_and_custom_header_names(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord, secret: str
    ) -> None:
        """Configured headers are sent, and the signing headers use the configured names."""
        sink = await make_sink(
            headers={"Authorization": "Bearer abc"},
            signature_header="X-Sig",
            timestamp_header="X-Time",
        )
        await sink.deliver(record)
        [request] = receiver.requests
        assert request.headers["Authorization"] == "Bearer abc"
        assert verify_signature(request.body, request.headers["X-Sig"], secret)
        assert "X-Time" in request.headers
        assert "X-DocuTray-Signature" not in request.headers

    async def test_unsigned_sends_no_signature(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord
    ) -> None:
        """With `allow_unsigned` and no secret, there is no signature header (but a timestamp)."""
        sink = await make_sink(secret=None, allow_unsigned=True)
        await sink.deliver(record)
        [request] = receiver.requests
        assert "X-DocuTray-Signature" not in request.headers
        assert "X-DocuTray-Timestamp" in request.headers

    async def test_secret_is_never_sent(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord, secret: str
    ) -> None:
        """The secret itself travels in no header and not in the body."""
        sink = await make_sink()
        await sink.deliver(record)
        [request] = receiver.requests
        assert secret.encode() not in request.body
        assert all(secret not in value for value in request.headers.values())

    @pytest.mark.parametrize("status", [200, 201, 202, 204])
    async def test_success_receipt_has_url_and_status(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord, status: int
    ) -> None:
        """A 2xx answer returns the receipt `{"url": ..., "status": code}`."""
        receiver.script(status)
        sink = await make_sink()
        assert await sink.deliver(record) == {"url": receiver.url, "status": status}

    async def test_receipt_omits_credentials_in_url(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord
    ) -> None:
        """User info and query string (often tokens) stay out of the receipt, yet are sent."""
        url = f"http://user:pa55@127.0.0.1:{receiver.port}/hook?token=t0ken"
        sink = await make_sink(url=url)
        receipt = await sink.deliver(record)
        assert receipt == {"url": f"http://127.0.0.1:{receiver.port}/hook", "status": 200}
        [request] = receiver.requests
        assert request.path == "/hook?token=t0ken"
        assert "Authorization" in request.headers

    async def test_reuses_one_connection(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord
    ) -> None:
        """Consecutive deliveries go over the sink's one kept-alive connection."""
        sink = await make_sink()
        for _ in range(3):
            await sink.deliver(record)
        assert len({r.client_port for r in receiver.requests}) == 1

    async def test_deliver_without_open_works(
        self, receiver: WebhookReceiver, record: ResultRecord
    ) -> None:
        """A sink used before `open()` creates its client on demand, and `close()` releases it."""
        sink = WebhookSink(
            _config(url=receiver.url, secret=SECRET), pipeline="invoices", sink_id="webhook"
        )
        try:
            assert (await sink.deliver(record))["status"] == 200  # type: ignore[index]
        finally:
            await sink.close()
        await sink.close()  # closing twice is harmless


class TestWebhookSinkFailures:
    @pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
    async def test_server_errors_and_rate_limits_are_retryable(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord, status: int
    ) -> None:
        """5xx, 429 and 408 raise `SinkError` (retried), not `PermanentSinkError`."""
        receiver.script(status)
        sink = await make_sink()
        with pytest.raises(SinkError, match=str(status)) as info:
            await sink.deliver(record)
        assert not isinstance(info.value, PermanentSinkError)

    async def test_retry_after_an_outage_succeeds(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord
    ) -> None:
        """After a 503 the next delivery of the same record goes through."""
        receiver.script(503)
        sink = await make_sink()
        with pytest.raises(SinkError):
            await sink.deliver(record)
        assert (await sink.deliver(record))["status"] == 200  # type: ignore[index]

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
    async def test_client_errors_are_permanent(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord, status: int
    ) -> None:
        """Other 4xx raise `PermanentSinkError` naming the status."""
        receiver.script(status)
        sink = await make_sink()
        with pytest.raises(PermanentSinkError, match=f"answered {status}"):
            await sink.deliver(record)

    @pytest.mark.parametrize("status", [301, 302, 307, 308])
    async def test_redirects_are_not_followed(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord, status: int
    ) -> None:
        """A redirect is a `PermanentSinkError`; the sink does not follow it."""
        receiver.script(Reply(status=status, headers={"Location": "/elsewhere"}))
        sink = await make_sink()
        with pytest.raises(PermanentSinkError, match="redirects are not followed"):
            await sink.deliver(record)
        assert len(receiver.requests) == 1

    async def test_connection_refused_is_retryable(
        self, make_sink: MakeSink, record: ResultRecord, refused_port: int
    ) -> None:
        """A refused connection raises `SinkError` (retried) that says why."""
        sink = await make_sink(url=f"http://127.0.0.1:{refused_port}/hook")
        with pytest.raises(SinkError, match="cannot connect: Connection refused") as info:
            await sink.deliver(record)
        assert not isinstance(info.value, PermanentSinkError)

    async def test_timeout_is_retryable(
        self, make_sink: MakeSink, receiver: WebhookReceiver, record: ResultRecord
    ) -> None:
        """A receiver that does not answer within `timeout` raises `SinkError` saying so."""
        receiver.script(Reply(hang=True))
        sink = await make_sink(timeout=0.2)
        with pytest.raises(SinkError, match=r"no answer within 0\.2 s") as info:
            await sink.deliver(record)
        assert not isinstance(info.value, PermanentSinkError)

    @pytest.mark.parametrize("reply", [Reply(500), Reply(400), Reply(302), Reply(hang=True)])
    async def test_secret_and_url_credentials_not_in_errors(
        self,
        make_sink: MakeSink,
        receiver: WebhookReceiver,
        record: ResultRecord,
        reply: Reply,
        secret: str,
    ) -> None:
        """Failure messages (and chained exceptions) show neither the secret nor URL credentials."""
        receiver.script(reply)
        url = f"http://user:pa55@127.0.0.1:{receiver.port}/hook?token=t0ken"
        sink = await make_sink(url=url, timeout=0.2)
        with pytest.raises(SinkError) as info:
            await sink.deliver(record)
        texts = _exception_texts(info.value)
        assert f"127.0.0.1:{receiver.port}/hook" in str(info.value)
        for hidden in (secret, "pa55", "t0ken"):
            assert hidden not in texts

    async def test_secret_not_in_connection_error(
        self, make_sink: MakeSink, record: ResultRecord, refused_port: int, secret: str
    ) -> None:
        """A connection failure's message and its cause do not show the secret."""
        sink = await make_sink(url=f"http://127.0.0.1:{refused_port}/hook")
        with pytest.raises(SinkError) as info:
            await sink.deliver(record)
        assert secret not in _exception_texts(info.value)


class TestWebhookSinkCheck:
    async def test_check_sends_no_request(
        self, make_sink: MakeSink, receiver: WebhookReceiver
    ) -> None:
        """`check()` succeeds for a valid config without probing the receiver."""
        sink = await make_sink()
        await sink.check()
        assert receiver.requests == []

    async def test_check_reports_unusable_client(
        self, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When no HTTP client can be built (say a broken CA bundle), `check()` raises SinkError."""
        sink = await make_sink()

        def broken() -> None:
            raise OSError("no CA certificates")

        monkeypatch.setattr(sink, "_new_client", broken)
        with pytest.raises(SinkError, match="cannot build an HTTP client"):
            await sink.check()

    def test_repr_names_pipeline_and_sink_only(self) -> None:
        """The sink's repr shows where it belongs, never its URL credentials or secret."""
        sink = WebhookSink(
            _config(url="https://u:pa55@example.com/h?token=t0ken", secret=SECRET),
            pipeline="invoices",
            sink_id="hook",
        )
        assert repr(sink) == "<WebhookSink invoices/hook>"
