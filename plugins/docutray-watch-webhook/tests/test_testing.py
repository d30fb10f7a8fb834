"""Tests of `docutray_watch_webhook.testing.WebhookReceiver`, the receiver other tests rely on."""

from __future__ import annotations

import httpx
import pytest

from docutray_watch_webhook.testing import Reply, WebhookReceiver


class TestWebhookReceiver:
    def test_records_requests_and_follows_the_script(self, receiver: WebhookReceiver) -> None:
        """Scripted statuses are answered in order, then 200; every request is recorded."""
        receiver.script(503, Reply(status=201, body=b"ok", headers={"X-A": "1"}))
        with httpx.Client() as client:
            answers = [client.post(receiver.url, content=b"%d" % i) for i in range(3)]
        assert [a.status_code for a in answers] == [503, 201, 200]
        assert (answers[1].content, answers[1].headers["X-A"]) == (b"ok", "1")
        assert [r.body for r in receiver.requests] == [b"0", b"1", b"2"]

    def test_wait_for_requests_times_out(self, receiver: WebhookReceiver) -> None:
        """Waiting for requests that never come raises TimeoutError after the deadline."""
        with pytest.raises(TimeoutError, match="0 of 1"):
            receiver.wait_for_requests(1, timeout=0.05)

    def test_stop_frees_the_port(self) -> None:
        """After the context exits, nothing listens on the receiver's port any more."""
        with WebhookReceiver() as receiver:
            url = receiver.url
        with httpx.Client() as client, pytest.raises(httpx.ConnectError):
            client.post(url, content=b"{}")
