"""End to end through the daemon: a file dropped in the inbox reaches the webhook, signed.

The example to copy for your own plugin. It needs no conftest set-up: the fixtures `emulator`,
`watch_config` and `hook_recorder` come from docutray-watch's pytest plugin, and the test is
`async def` without a marker. The daemon is the real one (`docutray-watch run`), in this event
loop, against the local emulator; the plugin is found through its installed entry point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from docutray_watch.plugins import load_plugins
from docutray_watch.samples import make_pdf
from docutray_watch.testing import HookRecorder, running_daemon

from docutray_watch_webhook import verify_signature
from docutray_watch_webhook.testing import WebhookReceiver


async def test_a_document_goes_through_the_daemon_to_the_webhook(
    watch_config: Callable[..., Path],
    hook_recorder: HookRecorder,
    receiver: WebhookReceiver,
    secret: str,
) -> None:
    """The daemon takes a new PDF, runs the step, POSTs the signed record, archives the file."""
    config_path = watch_config({"type": "webhook", "url": receiver.url, "secret": secret})
    inbox = config_path.parent / "invoices" / "inbox"
    plugins = load_plugins(extra=[("recorder", hook_recorder)])
    assert "webhook" in plugins.sink_types
    assert not plugins.broken

    async with running_daemon(config_path, plugins=plugins):
        (inbox / "invoice-17.pdf").write_bytes(make_pdf(["Invoice 17", "Total 42.00"]))
        [request] = await asyncio.to_thread(receiver.wait_for_requests, 1)
        [archived] = await hook_recorder.wait_for_async("after_document_archived")

    body = request.json()
    assert body["document"]["name"] == "invoice-17.pdf"
    assert body["status"] == "SUCCESS"
    assert verify_signature(request.body, request.headers["X-DocuTray-Signature"], secret)
    assert archived.kwargs["outcome"] == "success"
    assert (config_path.parent / "invoices" / "done" / "invoice-17.pdf").exists()
    assert hook_recorder.names(pipeline="invoices") == [
        "startup",
        "ignore_document",
        "document_discovered",
        "before_document_submit",
        "after_document_result",
        "after_document_delivered",
        "after_document_archived",
        "shutdown",
    ]
    [delivered] = hook_recorder.calls("after_document_delivered")
    assert delivered.kwargs["sink"] == "webhook"
