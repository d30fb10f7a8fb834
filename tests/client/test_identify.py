"""The identify resource, sync and async: run, run_async, get_status, wait, raw responses,
candidates, the ``id``/``identification_id`` spelling, errors and the POST retry rule."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from docutray_watch.client import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncClient,
    AsyncIdentificationStatus,
    Client,
    DocumentTypeMatch,
    IdentificationResult,
    IdentificationStatus,
    InternalServerError,
    NotFoundError,
    RawResponse,
)

from .conftest import PDF, PNG, FakeAPI, FakeClock, Flavor, json_response, parse_multipart

INVOICE = {"code": "invoice", "name": "Invoice", "confidence": 0.93}
RECEIPT = {"code": "receipt", "name": "Receipt", "confidence": 0.05}


def identified(**fields: Any) -> httpx.Response:
    """The answer of the synchronous identify endpoint."""
    return json_response(200, {"document_type": INVOICE, "alternatives": [RECEIPT], **fields})


def ident_status(status: str, id_field: str = "identification_id", **fields: Any) -> httpx.Response:
    """An identification status, its id under ``id_field``."""
    body: dict[str, Any] = {id_field: "idn_1", "status": status, **fields}
    if status == "SUCCESS":
        body.setdefault("document_type", INVOICE)
        body.setdefault("alternatives", [RECEIPT])
    return json_response(200, body)


class TestRun:
    async def test_file_upload(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, pdf_path: Path
    ) -> None:
        """``run(file=...)`` posts multipart to /api/identify (image part and its declared type)
        and returns the typed result."""
        api.queue(identified())
        result = await flavor.call(client.identify.run, file=pdf_path)
        assert isinstance(result, IdentificationResult)
        assert result.document_type == DocumentTypeMatch(**INVOICE)
        assert [alt.code for alt in result.alternatives] == ["receipt"]
        (seen,) = api.seen
        assert (seen.method, seen.path) == ("POST", "/api/identify")
        parts = parse_multipart(seen.headers["content-type"], seen.body)
        assert parts["image"].data == PDF
        assert parts["image"].headers["Content-Type"] == "application/pdf"
        assert parts["image_content_type"].data == b"application/pdf"
        assert "document_type_code_options" not in parts

    async def test_candidates_in_multipart_are_a_json_string(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """``document_type_code_options`` goes as a JSON-encoded list part in multipart."""
        api.queue(identified())
        await flavor.call(
            client.identify.run, file=PNG, document_type_code_options=["invoice", "receipt"]
        )
        parts = parse_multipart(api.seen[0].headers["content-type"], api.seen[0].body)
        assert json.loads(parts["document_type_code_options"].data) == ["invoice", "receipt"]
        assert parts["image_content_type"].data == b"image/png"

    async def test_url_with_candidates_is_json(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """A URL goes as JSON ``image_url``, the candidates as a JSON list."""
        api.queue(identified())
        await flavor.call(
            client.identify.run,
            url="https://example.com/a.pdf",
            document_type_code_options=("invoice",),
        )
        assert json.loads(api.seen[0].body) == {
            "image_url": "https://example.com/a.pdf",
            "document_type_code_options": ["invoice"],
        }

    async def test_base64_input(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """Base64 goes as ``image_base64`` with the sniffed ``image_content_type``."""
        api.queue(identified())
        await flavor.call(client.identify.run, file_base64=base64.b64encode(PDF).decode())
        body = json.loads(api.seen[0].body)
        assert body["image_content_type"] == "application/pdf"
        assert base64.b64decode(body["image_base64"]) == PDF

    async def test_empty_candidate_list_is_left_out(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """An empty candidate list limits nothing and is not sent (as the official SDK)."""
        api.queue(identified())
        await flavor.call(
            client.identify.run, url="https://example.com/a.pdf", document_type_code_options=[]
        )
        assert "document_type_code_options" not in json.loads(api.seen[0].body)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {},
            {"file": PDF, "url": "https://example.com/a.pdf"},
            {"file": PDF, "document_type_code_options": "invoice"},
            {"file": PDF, "document_type_code_options": ["invoice", ""]},
        ],
    )
    async def test_bad_arguments_raise_before_sending(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, kwargs: dict[str, Any]
    ) -> None:
        """No input, two inputs, or candidates that are not a list of codes: ValueError, and
        nothing is sent."""
        with pytest.raises(ValueError, match=r"Must provide one of|document_type_code_options"):
            await flavor.call(client.identify.run, **kwargs)
        assert api.seen == []

    async def test_unexpected_body_is_an_api_error(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """An answer without ``document_type`` raises APIError carrying the body."""
        api.queue(json_response(200, {"alternatives": []}))
        with pytest.raises(APIError, match="unexpected body") as caught:
            await flavor.call(client.identify.run, file=PDF)
        assert caught.value.body == {"alternatives": []}


class TestRunAsync:
    @pytest.mark.parametrize("id_field", ["identification_id", "id"])
    async def test_enqueued_with_either_id_spelling(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, id_field: str
    ) -> None:
        """The answer's id is read from ``identification_id`` or ``id``."""
        api.queue(ident_status("ENQUEUED", id_field))
        status = await flavor.call(client.identify.run_async, file=PDF)
        assert status.identification_id == "idn_1"
        assert status.status == "ENQUEUED"
        assert not status.is_complete()
        expected = AsyncIdentificationStatus if flavor.is_async else IdentificationStatus
        assert type(status) is expected
        (seen,) = api.seen
        assert (seen.method, seen.path) == ("POST", "/api/identify-async")

    async def test_get_status_success(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """A SUCCESS status carries ``document_type`` and ``alternatives``; extra fields stay."""
        api.queue(ident_status("SUCCESS", "id", request_timestamp="2024-01-15T10:30:00Z", new=1))
        status = await flavor.call(client.identify.get_status, identification_id="idn_1")
        assert api.seen[0].path == "/api/identify-async/status/idn_1"
        assert status.is_success()
        assert status.is_complete()
        assert status.document_type.code == "invoice"
        assert status.document_type.confidence == pytest.approx(0.93)
        assert status.alternatives[0].name == "Receipt"
        assert status.request_timestamp.year == 2024
        assert status.model_extra == {"new": 1}

    async def test_get_status_error(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """An ERROR identification is a status carrying its error, not an exception."""
        api.queue(ident_status("ERROR", error="unreadable document"))
        status = await flavor.call(client.identify.get_status, "idn_1")
        assert status.is_error()
        assert status.error == "unreadable document"
        assert status.document_type is None

    async def test_get_status_not_found(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """An unknown identification raises NotFoundError."""
        api.queue(json_response(404, {"error": {"message": "no such identification"}}))
        with pytest.raises(NotFoundError, match="no such identification"):
            await flavor.call(client.identify.get_status, "idn_x")

    async def test_id_is_escaped_in_the_path(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """The id is one path segment, escaped; an empty id is refused."""
        api.queue(ident_status("PROCESSING"))
        await flavor.call(client.identify.get_status, "a/b")
        assert api.seen[0].path == "/api/identify-async/status/a%2Fb"
        with pytest.raises(ValueError, match="identification_id"):
            await flavor.call(client.identify.get_status, "")

    async def test_wait_polls_until_complete(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """``wait()`` polls the identify status endpoint until SUCCESS (``wait_async`` too)."""
        api.queue(
            ident_status("ENQUEUED"),
            ident_status("PROCESSING", "id"),
            ident_status("SUCCESS"),
            ident_status("ENQUEUED"),
            ident_status("SUCCESS"),
        )
        started = await flavor.call(client.identify.run_async, file=PNG)
        seen_statuses: list[str] = []
        final = await flavor.call(started.wait, on_status=lambda s: seen_statuses.append(s.status))
        assert final.is_success()
        assert final.document_type.code == "invoice"
        assert seen_statuses == ["PROCESSING", "SUCCESS"]
        assert [s.path for s in api.seen[1:]] == ["/api/identify-async/status/idn_1"] * 2
        again = await flavor.call(client.identify.run_async, file=PNG)
        assert (await again.wait_async(poll_interval=0.5)).is_success()

    async def test_wait_times_out_naming_the_identification(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, clock: FakeClock
    ) -> None:
        """A wait past its timeout raises APITimeoutError naming the identification."""
        api.queue(*[ident_status("PROCESSING")] * 20)
        started = await flavor.call(client.identify.get_status, "idn_1")
        with pytest.raises(APITimeoutError, match="Identification idn_1 did not complete"):
            await flavor.call(started.wait, poll_interval=1.0, timeout=3.0)

    async def test_unbound_status_cannot_wait(self) -> None:
        """A status built by hand says how to get one that can poll."""
        status = IdentificationStatus.model_validate({"id": "idn_1", "status": "ENQUEUED"})
        with pytest.raises(ValueError, match=r"client\.identify\.get_status"):
            status.wait()


class TestRawResponse:
    async def test_run_raw(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """``with_raw_response.run`` gives the HTTP answer; ``parse()`` the result."""
        api.queue(identified())
        raw = await flavor.call(client.identify.with_raw_response.run, file=PDF)
        assert isinstance(raw, RawResponse)
        assert raw.status_code == 200
        assert raw.json()["document_type"]["code"] == "invoice"
        assert isinstance(raw.parse(), IdentificationResult)

    async def test_run_async_and_get_status_raw(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """The raw run_async/get_status parse to statuses bound to the resource."""
        api.queue(ident_status("ENQUEUED", "id"), ident_status("SUCCESS"))
        raw = await flavor.call(
            client.identify.with_raw_response.run_async, url="https://example.com/a.png"
        )
        parsed = raw.parse()
        assert parsed.identification_id == "idn_1"
        assert parsed._resource is client.identify
        raw_status = await flavor.call(
            client.identify.with_raw_response.get_status, identification_id="idn_1"
        )
        assert raw_status.headers["content-type"] == "application/json"
        assert raw_status.parse().is_success()

    async def test_raw_error_raises(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """Error answers raise the typed errors from raw calls too."""
        api.queue(json_response(404, {"message": "gone"}))
        with pytest.raises(NotFoundError, match="gone"):
            await flavor.call(client.identify.with_raw_response.run, file=PDF)


class TestRetries:
    @pytest.mark.parametrize("method", ["run", "run_async"])
    async def test_post_retried_when_never_sent(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, method: str
    ) -> None:
        """An identify POST whose connection was never made is sent again."""
        answer = identified() if method == "run" else ident_status("ENQUEUED")
        api.queue(httpx.ConnectError, answer)
        await flavor.call(getattr(client.identify, method), file=PDF)
        assert len(api.seen) == 2

    @pytest.mark.parametrize("method", ["run", "run_async"])
    async def test_post_not_retried_when_maybe_received(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, method: str
    ) -> None:
        """An identify POST that timed out after sending, or got a 500, is not sent again."""
        api.queue(httpx.ReadTimeout)
        with pytest.raises(APIConnectionError) as caught:
            await flavor.call(getattr(client.identify, method), file=PDF)
        assert caught.value.request_sent is True
        api.queue(json_response(500, {"message": "boom"}))
        with pytest.raises(InternalServerError):
            await flavor.call(getattr(client.identify, method), file=PDF)
        assert len(api.seen) == 2

    async def test_status_get_is_retried(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """A status GET is retried on a read timeout and a 502."""
        api.queue(httpx.ReadTimeout, json_response(502), ident_status("SUCCESS"))
        status = await flavor.call(client.identify.get_status, "idn_1")
        assert status.is_success()
        assert len(api.seen) == 3
