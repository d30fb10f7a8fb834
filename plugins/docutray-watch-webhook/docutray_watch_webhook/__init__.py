"""docutray-watch-webhook: a docutray-watch sink that POSTs each result record, signed, to a URL.

Installing the distribution is enough: docutray-watch finds this module through the
`docutray_watch` entry-point group and it registers the `webhook` sink type. Receivers can check
requests with `verify_signature`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from docutray_watch import Sink, hookimpl

from docutray_watch_webhook._version import __version__
from docutray_watch_webhook.signing import DEFAULT_TOLERANCE, sign, verify_signature
from docutray_watch_webhook.sink import (
    DEFAULT_SIGNATURE_HEADER,
    DEFAULT_TIMESTAMP_HEADER,
    IDEMPOTENCY_HEADER,
    WebhookConfig,
    WebhookSink,
    idempotency_key,
)

__all__ = [
    "DEFAULT_SIGNATURE_HEADER",
    "DEFAULT_TIMESTAMP_HEADER",
    "DEFAULT_TOLERANCE",
    "IDEMPOTENCY_HEADER",
    "WebhookConfig",
    "WebhookSink",
    "__version__",
    "idempotency_key",
    "register_sink_types",
    "sign",
    "verify_signature",
]


@hookimpl
def register_sink_types(register: Callable[[type[Sink[Any]]], None]) -> None:
    """Register the webhook sink."""
    register(WebhookSink)
