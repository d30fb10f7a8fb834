"""The `webhook` sink: POST each result record, signed, to an HTTP(S) endpoint."""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from docutray_watch import (
    PermanentSinkError,
    Receipt,
    ResultRecord,
    Sink,
    SinkConfig,
    SinkError,
)
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from docutray_watch_webhook._version import __version__
from docutray_watch_webhook.signing import sign

if TYPE_CHECKING:
    import httpx

# httpx is imported where it is used: loading the plugin (every command of docutray-watch that
# reads a config does) costs no HTTP client until a webhook sink is configured.

__all__ = [
    "DEFAULT_SIGNATURE_HEADER",
    "DEFAULT_TIMESTAMP_HEADER",
    "IDEMPOTENCY_HEADER",
    "WebhookConfig",
    "WebhookSink",
    "idempotency_key",
    "public_url",
]

DEFAULT_SIGNATURE_HEADER = "X-DocuTray-Signature"
DEFAULT_TIMESTAMP_HEADER = "X-DocuTray-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"

# RFC 9110 token: what a header name may contain.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Printable ASCII and tab; httpx sends header values as ASCII and CR/LF would split headers.
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
# Set by the sink on every request; a configured header must not silently replace them.
_RESERVED_HEADERS = {
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "idempotency-key",
}
# Idempotency-Key components stay readable for ordinary IDs; anything else is percent-encoded.
_KEY_SAFE = "-_.~"


def _check_header_name(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError("must be a valid HTTP header name (letters, digits, '-', …)")
    return value


class WebhookConfig(SinkConfig):
    """Options of the webhook sink."""

    url: str = Field(
        description="Where to POST each result record: an http:// or https:// URL.",
        examples=["https://example.com/hooks/docutray"],
    )
    allow_unsigned: bool = Field(
        False, description="Send requests without a signature when no `secret` is set."
    )
    secret: SecretStr | None = Field(
        None,
        validate_default=True,
        description="Shared secret for the HMAC-SHA256 signature, e.g. ${WEBHOOK_SECRET}. "
        "Required unless `allow_unsigned` is true. Never logged.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers, e.g. an Authorization header for the receiver.",
    )
    timeout: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Give up on one delivery attempt after this many seconds (connecting, "
        "sending and waiting for the answer together); the engine retries.",
    )
    signature_header: str = Field(
        DEFAULT_SIGNATURE_HEADER, description="Header carrying `t=<timestamp>,v1=<hex HMAC>`."
    )
    timestamp_header: str = Field(
        DEFAULT_TIMESTAMP_HEADER, description="Header carrying the signing time, Unix seconds."
    )
    verify_tls: bool = Field(
        True, description="Verify the server's TLS certificate (turn off only for testing)."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        import httpx

        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError):
            raise ValueError("must be an http:// or https:// URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        if url.fragment:
            raise ValueError("must not have a #fragment (it is never sent)")
        return value

    @field_validator("secret")
    @classmethod
    def _secret_unless_unsigned(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is None:
            if not info.data.get("allow_unsigned", False):
                raise ValueError("required unless allow_unsigned is true")
        elif not value.get_secret_value():
            raise ValueError("must not be empty (is its environment variable set?)")
        return value

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            _check_header_name(name)
            if not _HEADER_VALUE.match(header_value):
                # Never echo the value: it is often a credential.
                raise ValueError(f"{name}: value must be printable ASCII on one line")
        return value

    @field_validator("signature_header", "timestamp_header")
    @classmethod
    def _valid_header_name(cls, value: str) -> str:
        return _check_header_name(value)

    @model_validator(mode="after")
    def _headers_do_not_clash(self) -> WebhookConfig:
        if self.signature_header.lower() == self.timestamp_header.lower():
            raise ValueError("signature_header and timestamp_header must differ")
        reserved = _RESERVED_HEADERS | {
            self.signature_header.lower(),
            self.timestamp_header.lower(),
        }
        clashes = sorted(name for name in self.headers if name.lower() in reserved)
        if clashes:
            raise ValueError(f"headers: {', '.join(clashes)} is set by the sink itself")
        return self


def idempotency_key(record: ResultRecord) -> str:
    """``<pipeline>:<sha256>:<step_id>``, the value of the Idempotency-Key header."""
    return ":".join(quote(part, safe=_KEY_SAFE) for part in record.key)


def _transport_reason(exc: httpx.TransportError) -> str:
    """The most specific reason in the chain ("Connection refused", not "All attempts failed")."""
    import httpx

    prefix = "cannot connect: " if isinstance(exc, httpx.ConnectError) else ""
    reason = str(exc) or type(exc).__name__
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, OSError) and current.errno:
            # os.strerror for errno values; getaddrinfo's negative codes carry their own text.
            reason = os.strerror(current.errno) if current.errno > 0 else str(current.strerror)
        current = current.__cause__ or current.__context__
    return prefix + reason


def public_url(url: str) -> str:
    """`url` without user info, query string or fragment: safe for receipts and messages."""
    import httpx

    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


class WebhookSink(Sink[WebhookConfig]):
    """POSTs each result record as JSON, signed with HMAC-SHA256, to the configured URL.

    One `httpx.AsyncClient` (and so one connection pool) serves every delivery; it is created by
    `open()` on the engine's event loop and closed by `close()`.
    """

    type = "webhook"
    description = "POST each result record as signed JSON to an HTTP(S) endpoint."
    config_model = WebhookConfig

    def __init__(self, config: WebhookConfig, *, pipeline: str, sink_id: str) -> None:
        super().__init__(config, pipeline=pipeline, sink_id=sink_id)
        self._client: httpx.AsyncClient | None = None
        self._target = public_url(config.url)

    def _new_client(self) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.config.timeout),
            verify=self.config.verify_tls,
            # A redirected POST may turn into a GET or lose its body: report it instead.
            follow_redirects=False,
            headers={"User-Agent": f"docutray-watch-webhook/{__version__}"},
        )

    async def open(self) -> None:
        """Create the HTTP client (and its connection pool)."""
        self._client_or_new()

    def _client_or_new(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    async def check(self) -> None:
        """The URL is well-formed and a client can be built; no request is sent.

        Webhook endpoints often accept nothing but real deliveries, so a probe could fail (or
        worse, be taken for a delivery) on a healthy receiver.
        """
        import httpx

        try:
            public_url(self.config.url)
            client = self._new_client()
        except (httpx.InvalidURL, ValueError, OSError) as exc:
            raise SinkError(f"webhook {self._target}: cannot build an HTTP client: {exc}") from exc
        await client.aclose()

    async def deliver(self, record: ResultRecord) -> Receipt:
        """POST the record; the same record always carries the same Idempotency-Key."""
        import httpx

        client = self._client_or_new()  # normally made by open(); tolerate a direct call
        body = record.to_json().encode("utf-8")
        try:
            async with asyncio.timeout(self.config.timeout):
                response = await client.post(
                    self.config.url, content=body, headers=self._headers(record, body)
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise SinkError(
                f"webhook {self._target}: no answer within {self.config.timeout:g} s"
            ) from exc
        except httpx.TransportError as exc:
            raise SinkError(f"webhook {self._target}: {_transport_reason(exc)}") from exc
        return self._receipt(response)

    def _headers(self, record: ResultRecord, body: bytes) -> dict[str, str]:
        timestamp = int(time.time())
        headers = dict(self.config.headers)
        headers["Content-Type"] = "application/json"
        headers[IDEMPOTENCY_HEADER] = idempotency_key(record)
        headers[self.config.timestamp_header] = str(timestamp)
        if self.config.secret is not None:
            secret = self.config.secret.get_secret_value()
            headers[self.config.signature_header] = sign(body, secret, timestamp)
        return headers

    def _receipt(self, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        answer = f"webhook {self._target} answered {status} {response.reason_phrase}".rstrip()
        if 200 <= status < 300:
            return {"url": self._target, "status": status}
        # 408 (request timeout) and 429 (rate limited) are invitations to try again.
        if status >= 500 or status in (408, 429):
            raise SinkError(answer)
        if 300 <= status < 400:
            raise PermanentSinkError(
                f"{answer}; redirects are not followed, configure the final URL"
            )
        raise PermanentSinkError(answer)

    async def close(self) -> None:
        """Close the HTTP client."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
