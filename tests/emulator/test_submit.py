"""Tests of POST /api/steps-async/{step_id}: authentication, inputs and document checks."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from docutray_watch.emulator import EmulatorServer
from docutray_watch.testing import EmulatorFactory

Connect = Callable[[EmulatorServer], httpx.Client]
MakePdf = Callable[..., bytes]
WaitTerminal = Callable[[httpx.Client, str], dict[str, Any]]

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


class TestAuthentication:
    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic abc"}],
        ids=["missing", "wrong", "not-bearer"],
    )
    def test_rejects_bad_credentials(
        self, emulator: EmulatorServer, make_pdf: MakePdf, headers: dict[str, str]
    ) -> None:
        """A missing, wrong or non-Bearer key gets 401 with a JSON message."""
        response = httpx.post(
            f"{emulator.base_url}/api/steps-async/step_1",
            headers=headers,
            files={"image": ("a.pdf", make_pdf(), "application/pdf")},
        )
        assert response.status_code == 401
        assert response.json()["error"]["message"]
        assert emulator.stats().executions_created == 0

    def test_status_read_needs_the_key(self, emulator: EmulatorServer) -> None:
        """Status reads are authenticated too."""
        response = httpx.get(f"{emulator.base_url}/api/steps-async/status/exec_1")
        assert response.status_code == 401

    def test_custom_key_is_accepted(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """The configured key, not the default one, is accepted."""
        server = emulator_factory(api_key="my-own-key")
        response = connect(server).post(
            "/api/steps-async/step_1", files={"image": ("a.pdf", make_pdf(), "application/pdf")}
        )
        assert response.status_code == 200


class TestStepLookup:
    def test_unknown_step_is_404(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """With a step list, an unknown step id gets 404 and a known one is accepted."""
        client = connect(emulator_factory(step_ids={"step_known"}))
        files = {"image": ("a.pdf", make_pdf(), "application/pdf")}
        unknown = client.post("/api/steps-async/step_other", files=files)
        known = client.post("/api/steps-async/step_known", files=files)
        assert unknown.status_code == 404
        assert "step_other" in unknown.json()["error"]["message"]
        assert known.status_code == 200

    def test_any_step_without_a_list(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """Without a step list every step id is accepted."""
        response = connect(emulator).post(
            "/api/steps-async/whatever", files={"image": ("a.pdf", make_pdf(), "application/pdf")}
        )
        assert response.status_code == 200


class TestMultipartUpload:
    def test_round_trip(
        self,
        emulator: EmulatorServer,
        connect: Connect,
        make_pdf: MakePdf,
        wait_terminal: WaitTerminal,
    ) -> None:
        """The result describes exactly the uploaded bytes: sha256, size, type, filename."""
        client = connect(emulator)
        document = make_pdf(padding=300_000)
        accepted = client.post(
            "/api/steps-async/step_1",
            files={"image": ("invoice.pdf", document, "application/pdf")},
        )
        assert accepted.status_code == 200
        body = accepted.json()
        assert body["status"] == "ENQUEUED"
        assert body["execution_id"].startswith("exec_")
        assert body["step_id"] == "step_1"
        assert body["original_filename"] == "invoice.pdf"
        assert body["request_timestamp"].endswith("Z")
        final = wait_terminal(client, body["execution_id"])
        assert final["status"] == "SUCCESS"
        assert final["data"] == {
            "sha256": hashlib.sha256(document).hexdigest(),
            "size": len(document),
            "content_type": "application/pdf",
            "step_id": "step_1",
            "original_filename": "invoice.pdf",
            "document_metadata": None,
        }

    def test_metadata_part(
        self,
        emulator: EmulatorServer,
        connect: Connect,
        make_pdf: MakePdf,
        wait_terminal: WaitTerminal,
    ) -> None:
        """A document_metadata part holding a JSON string comes back in the status and data."""
        client = connect(emulator)
        metadata = {"source": "email", "customer_id": "cust_456"}
        accepted = client.post(
            "/api/steps-async/step_1",
            files={"image": ("a.pdf", make_pdf(), "application/pdf")},
            data={"document_metadata": json.dumps(metadata)},
        ).json()
        final = wait_terminal(client, accepted["execution_id"])
        assert final["document_metadata"] == metadata
        assert final["data"]["document_metadata"] == metadata

    @pytest.mark.parametrize("metadata", ["{not json", "[1, 2]"], ids=["bad-json", "not-object"])
    def test_bad_metadata_is_400(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf, metadata: str
    ) -> None:
        """A document_metadata part that is not a JSON object gets 400."""
        response = connect(emulator).post(
            "/api/steps-async/step_1",
            files={"image": ("a.pdf", make_pdf(), "application/pdf")},
            data={"document_metadata": metadata},
        )
        assert response.status_code == 400
        assert "document_metadata" in response.json()["error"]["message"]

    def test_no_image_part_is_400(self, emulator: EmulatorServer, connect: Connect) -> None:
        """A multipart body without an image part gets 400."""
        response = connect(emulator).post(
            "/api/steps-async/step_1",
            files={"document_metadata": (None, "{}")},
        )
        assert response.status_code == 400

    def test_two_image_parts_are_400(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """Two image parts are two inputs: 400."""
        response = connect(emulator).post(
            "/api/steps-async/step_1",
            files=[
                ("image", ("a.pdf", make_pdf(), "application/pdf")),
                ("image", ("b.pdf", make_pdf(), "application/pdf")),
            ],
        )
        assert response.status_code == 400
        assert emulator.stats().executions_created == 0


class TestJsonInputs:
    def test_base64_input(
        self, emulator: EmulatorServer, connect: Connect, wait_terminal: WaitTerminal
    ) -> None:
        """A base64 document is decoded, sniffed and described like an upload."""
        client = connect(emulator)
        accepted = client.post(
            "/api/steps-async/step_1",
            json={
                "image_base64": base64.b64encode(PNG).decode(),
                "image_content_type": "image/png",
                "document_metadata": {"k": "v"},
            },
        )
        assert accepted.status_code == 200
        final = wait_terminal(client, accepted.json()["execution_id"])
        assert final["data"]["sha256"] == hashlib.sha256(PNG).hexdigest()
        assert final["data"]["size"] == len(PNG)
        assert final["data"]["content_type"] == "image/png"
        assert final["document_metadata"] == {"k": "v"}

    def test_base64_data_uri(
        self, emulator: EmulatorServer, connect: Connect, wait_terminal: WaitTerminal
    ) -> None:
        """A data-URI prefix before the base64 payload is accepted."""
        client = connect(emulator)
        encoded = "data:image/png;base64," + base64.b64encode(PNG).decode()
        accepted = client.post("/api/steps-async/step_1", json={"image_base64": encoded})
        assert accepted.status_code == 200
        final = wait_terminal(client, accepted.json()["execution_id"])
        assert final["data"]["sha256"] == hashlib.sha256(PNG).hexdigest()

    def test_base64_wrapped_lines(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """Base64 wrapped over several lines (as the base64 tool writes it) is accepted."""
        encoded = base64.encodebytes(make_pdf(padding=500)).decode()
        response = connect(emulator).post("/api/steps-async/s", json={"image_base64": encoded})
        assert response.status_code == 200

    @pytest.mark.parametrize("encoded", ["not base64 !!", "data:image/png,AAAA", "QUJ"], ids=str)
    def test_bad_base64_is_400(
        self, emulator: EmulatorServer, connect: Connect, encoded: str
    ) -> None:
        """Invalid base64 or a data URI that is not base64 gets 400."""
        response = connect(emulator).post("/api/steps-async/s", json={"image_base64": encoded})
        assert response.status_code == 400

    def test_url_input(
        self, emulator: EmulatorServer, connect: Connect, wait_terminal: WaitTerminal
    ) -> None:
        """A URL input is described from the URL: its sha256, size 0, type from the extension."""
        client = connect(emulator)
        url = "https://example.com/scans/receipt.png"
        accepted = client.post("/api/steps-async/step_1", json={"image_url": url})
        assert accepted.status_code == 200
        assert accepted.json()["original_filename"] == "receipt.png"
        final = wait_terminal(client, accepted.json()["execution_id"])
        assert final["data"]["sha256"] == hashlib.sha256(url.encode()).hexdigest()
        assert final["data"]["size"] == 0
        assert final["data"]["content_type"] == "image/png"

    def test_url_without_known_extension_is_pdf(
        self, emulator: EmulatorServer, connect: Connect, wait_terminal: WaitTerminal
    ) -> None:
        """A URL without a known extension is taken for a PDF."""
        client = connect(emulator)
        accepted = client.post(
            "/api/steps-async/s", json={"image_url": "https://example.com/get?id=7"}
        ).json()
        assert wait_terminal(client, accepted["execution_id"])["data"]["content_type"] == (
            "application/pdf"
        )

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"document_metadata": {"a": 1}},
            {"image_url": "https://example.com/a.pdf", "image_base64": "JVBERi0="},
        ],
        ids=["empty", "metadata-only", "two-inputs"],
    )
    def test_zero_or_two_inputs_are_400(
        self, emulator: EmulatorServer, connect: Connect, body: dict[str, object]
    ) -> None:
        """Exactly one input is required."""
        response = connect(emulator).post("/api/steps-async/s", json=body)
        assert response.status_code == 400
        assert "exactly one" in response.json()["error"]["message"]

    def test_bad_json_is_400(self, emulator: EmulatorServer, connect: Connect) -> None:
        """A body that is not JSON gets 400."""
        response = connect(emulator).post(
            "/api/steps-async/s",
            content=b"{nope",
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400

    def test_metadata_must_be_an_object(self, emulator: EmulatorServer, connect: Connect) -> None:
        """JSON document_metadata that is not an object gets 400."""
        response = connect(emulator).post(
            "/api/steps-async/s",
            json={"image_url": "https://example.com/a.pdf", "document_metadata": "text"},
        )
        assert response.status_code == 400

    def test_other_body_types_are_415(self, emulator: EmulatorServer, connect: Connect) -> None:
        """A body that is neither multipart nor JSON gets 415."""
        response = connect(emulator).post(
            "/api/steps-async/s", content=b"%PDF-1.7", headers={"Content-Type": "application/pdf"}
        )
        assert response.status_code == 415


class TestDocumentChecks:
    def test_text_file_is_415(self, emulator: EmulatorServer, connect: Connect) -> None:
        """A document whose bytes are not a supported format gets 415, whatever it claims."""
        response = connect(emulator).post(
            "/api/steps-async/s",
            files={"image": ("notes.pdf", b"just some text\n" * 10, "application/pdf")},
        )
        assert response.status_code == 415
        assert response.json()["message"]

    def test_base64_text_is_415(self, emulator: EmulatorServer, connect: Connect) -> None:
        """Base64 of an unsupported format gets 415."""
        encoded = base64.b64encode(b"plain text").decode()
        response = connect(emulator).post(
            "/api/steps-async/s", json={"image_base64": encoded, "image_content_type": "image/png"}
        )
        assert response.status_code == 415

    def test_upload_over_the_limit_is_413(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """An upload one byte over max_file_size gets 413; one at the limit is accepted."""
        client = connect(emulator_factory(max_file_size=64 * 1024))
        at_limit = make_pdf()
        at_limit += b"x" * (64 * 1024 - len(at_limit))
        over = at_limit + b"x"
        accepted = client.post("/api/steps-async/s", files={"image": ("a.pdf", at_limit)})
        rejected = client.post("/api/steps-async/s", files={"image": ("b.pdf", over)})
        assert accepted.status_code == 200
        assert rejected.status_code == 413
        assert rejected.json()["error"]["message"]

    def test_large_upload_rejected_early_keeps_the_connection_usable(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """A much larger upload still gets its 413 and the client can go on."""
        client = connect(emulator_factory(max_file_size=1024))
        rejected = client.post(
            "/api/steps-async/s", files={"image": ("big.pdf", make_pdf(padding=3_000_000))}
        )
        assert rejected.status_code == 413
        assert client.post("/api/steps-async/s", files={"image": ("a.pdf", b"%PDF-1")}).is_success

    def test_base64_over_the_limit_is_413(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """A base64 document over max_file_size gets 413."""
        client = connect(emulator_factory(max_file_size=1024))
        encoded = base64.b64encode(make_pdf(padding=2048)).decode()
        assert client.post("/api/steps-async/s", json={"image_base64": encoded}).status_code == 413
