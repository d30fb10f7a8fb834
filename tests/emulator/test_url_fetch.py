"""The emulator fetches a URL input when its host is a loopback address (a test's own server),
and describes any other URL from the URL alone (it never reaches out to the network)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from docutray_watch.emulator import EmulatorServer
from docutray_watch.emulator._documents import is_loopback_url

Connect = Callable[[EmulatorServer], httpx.Client]
PDF = b"%PDF-1.7\n" + b"fetched" * 50_000 + b"\n%%EOF\n"  # 350 KB: several chunks


class _Files(BaseHTTPRequestHandler):
    files = {"/doc.pdf": PDF, "/notes.txt": b"plain text, not a document"}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(name="file_server")
def file_server_fixture() -> Iterator[str]:
    """A loopback HTTP server of a few files; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_loopback_url_is_fetched_and_hashed(
    emulator: EmulatorServer, connect: Connect, file_server: str
) -> None:
    """The document is the fetched body: its sha256 is what the emulator counts."""
    accepted = connect(emulator).post(
        "/api/steps-async/step_1", json={"image_url": f"{file_server}/doc.pdf"}
    )
    assert accepted.status_code == 200
    assert accepted.json()["original_filename"] == "doc.pdf"
    assert emulator.stats().submissions["step_1"] == {hashlib.sha256(PDF).hexdigest(): 1}


@pytest.mark.parametrize(
    ("path", "status"), [("/missing.pdf", 400), ("/notes.txt", 415)], ids=["404", "not-a-doc"]
)
def test_a_loopback_url_that_is_not_a_document_is_refused(
    emulator: EmulatorServer, connect: Connect, file_server: str, path: str, status: int
) -> None:
    """A URL answering 404 is 400; a body that is no supported type is 415."""
    response = connect(emulator).post(
        "/api/steps-async/step_1", json={"image_url": file_server + path}
    )
    assert response.status_code == status
    assert emulator.stats().executions_created == 0


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:9/a.pdf", True),
        ("http://127.9.9.9/a.pdf", True),
        ("http://[::1]:8080/a.pdf", True),
        ("http://localhost/a.pdf", True),
        ("https://example.com/a.pdf", False),
        ("http://10.0.0.1/a.pdf", False),
        ("ftp://127.0.0.1/a.pdf", False),
        ("http://127.0.0.1.example.com/a.pdf", False),
    ],
)
def test_only_loopback_hosts_are_fetched(url: str, loopback: bool) -> None:
    """Loopback addresses (and localhost) over http(s) only."""
    assert is_loopback_url(url) is loopback
