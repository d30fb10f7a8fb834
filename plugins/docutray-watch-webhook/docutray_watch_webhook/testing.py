"""A local webhook receiver for tests: records every request and answers scripted replies.

It runs a standard-library HTTP server on a free 127.0.0.1 port in a background thread, so it works
with any test runner and any event loop::

    with WebhookReceiver() as receiver:
        receiver.script(503, 200)              # first request gets 503, the next 200, then 200s
        ... deliver to receiver.url ...
        request = receiver.wait_for_requests(2)[-1]
        assert verify_signature(request.body, request.headers["X-DocuTray-Signature"], secret)
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx

__all__ = ["ReceivedRequest", "Reply", "WebhookReceiver"]


@dataclass(frozen=True)
class Reply:
    """What the receiver answers to one request."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    """Never answer (until the receiver stops): makes the sender time out."""


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the receiver got it."""

    method: str
    path: str
    headers: httpx.Headers
    body: bytes
    client_port: int
    """The sender's port: requests over one kept-alive connection share it."""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 recording requests; use it as a context manager."""

    def __init__(self, *, path: str = "/hook") -> None:
        self.path = path
        self.requests: list[ReceivedRequest] = []
        self._replies: deque[Reply] = deque()
        self._changed = threading.Condition()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The webhook URL to configure in a sink."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> WebhookReceiver:
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.02},  # how long stop() may wait for the loop
                name="webhook-receiver",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging requests, stop serving and free the port."""
        self._release.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def script(self, *replies: Reply | int) -> None:
        """Queue answers for the next requests (a bare int is a status); afterwards 200."""
        with self._changed:
            self._replies.extend(r if isinstance(r, Reply) else Reply(status=r) for r in replies)

    def wait_for_requests(self, count: int, *, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least `count` requests arrived; raise TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self.requests)} of {count} requests received")
                self._changed.wait(remaining)
            return list(self.requests)

    def _record(self, request: ReceivedRequest) -> Reply:
        with self._changed:
            self.requests.append(request)
            reply = self._replies.popleft() if self._replies else Reply()
            self._changed.notify_all()
        return reply


def _handler_for(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like real receivers

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_GET(self) -> None:
            self._handle()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = httpx.Headers(list(self.headers.items()))
            request = ReceivedRequest(
                self.command, self.path, headers, body, int(self.client_address[1])
            )
            reply = receiver._record(request)
            if reply.hang:
                receiver._release.wait()
                self.close_connection = True
                return
            self._answer(reply)

        def _answer(self, reply: Reply) -> None:
            try:
                self.send_response(reply.status)
                for name, value in _with_length(reply.headers.items(), len(reply.body)):
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:
                self.close_connection = True  # the client gave up (timeout): nothing to answer

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return _Handler


def _with_length(headers: Iterable[tuple[str, str]], length: int) -> list[tuple[str, str]]:
    items = [(k, v) for k, v in headers if k.lower() != "content-length"]
    return [*items, ("Content-Length", str(length))]
