"""Shared fixtures: a local receiver, a sample record, and webhook sinks that get closed."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from docutray_watch import ResultRecord
from docutray_watch.testing import make_record

from docutray_watch_webhook import WebhookConfig, WebhookSink
from docutray_watch_webhook.testing import WebhookReceiver

MakeSink = Callable[..., Awaitable[WebhookSink]]


@pytest.fixture(name="secret")
def fixture_secret() -> str:
    """The shared secret the sinks under test sign with."""
    return "whsec_test_5f0c1d2e3a4b"


@pytest.fixture(name="receiver")
def fixture_receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver on a free 127.0.0.1 port, recording requests (200 unless scripted)."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(name="record")
def fixture_record() -> ResultRecord:
    """A successful result record."""
    return make_record(pipeline="invoices", step_id="stp_invoice_fields")


@pytest.fixture(name="make_sink")
async def fixture_make_sink(receiver: WebhookReceiver, secret: str) -> AsyncIterator[MakeSink]:
    """Build and open webhook sinks aimed at `receiver` (options override); closed afterwards."""
    sinks: list[WebhookSink] = []

    async def make(**options: Any) -> WebhookSink:
        values: dict[str, Any] = {"type": "webhook", "url": receiver.url, "secret": secret}
        values.update(options)
        sink = WebhookSink(
            WebhookConfig.model_validate(values), pipeline="invoices", sink_id="webhook"
        )
        await sink.open()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


@pytest.fixture(name="refused_port")
def fixture_refused_port() -> Iterator[int]:
    """A loopback port that is bound but not listening, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
