"""Tests of the identify endpoints and GET /api/document-types: the type rules (marker, content
type, default), confidence, candidates, the id spelling, status over time, faults."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from docutray_watch.emulator import EmulatorServer
from docutray_watch.emulator._markers import scan_markers
from docutray_watch.testing import EmulatorFactory, ManualClock

Connect = Callable[[EmulatorServer], httpx.Client]
MakePdf = Callable[..., bytes]

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 32


def _identify(
    client: httpx.Client,
    data: bytes,
    *,
    path: str = "/api/identify",
    options: list[str] | None = None,
    content_type: str = "application/pdf",
) -> httpx.Response:
    fields = {"image_content_type": content_type}
    if options is not None:
        fields["document_type_code_options"] = json.dumps(options)
    return client.post(path, files={"image": ("doc", data, content_type)}, data=fields)


class TestTypeRules:
    def test_marker_sets_type_and_confidence(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """TYPE and CONFIDENCE markers decide the answer; alternatives share the rest, in
        decreasing confidence."""
        pdf = make_pdf(b"DOCUTRAY-EMULATOR:TYPE=receipt DOCUTRAY-EMULATOR:CONFIDENCE=0.41\n")
        response = _identify(connect(emulator), pdf)
        assert response.status_code == 200
        body = response.json()
        assert body["document_type"] == {"code": "receipt", "name": "Receipt", "confidence": 0.41}
        confidences = [alt["confidence"] for alt in body["alternatives"]]
        assert [alt["code"] for alt in body["alternatives"]] == ["invoice", "bank_statement"]
        assert confidences == sorted(confidences, reverse=True)
        assert sum(confidences) < 1 - 0.41

    def test_content_type_rule_then_default_confidence(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """Without markers a PDF is an invoice and a PNG a receipt, at the configured
        confidence."""
        client = connect(emulator)
        pdf = _identify(client, make_pdf()).json()["document_type"]
        png = _identify(client, PNG, content_type="image/png").json()["document_type"]
        assert (pdf["code"], pdf["confidence"]) == ("invoice", 0.9)
        assert png["code"] == "receipt"

    def test_rules_are_configurable(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """The catalogue, the per-content-type rule and the confidence are configuration."""
        server = emulator_factory(
            document_types=[{"code": "memo", "name": "Memo"}, {"code": "letter", "name": "Letter"}],
            identify_by_content_type={"application/pdf": "letter"},
            identify_confidence=0.6,
        )
        client = connect(server)
        body = _identify(client, make_pdf()).json()
        assert body["document_type"] == {"code": "letter", "name": "Letter", "confidence": 0.6}
        assert [alt["code"] for alt in body["alternatives"]] == ["memo"]
        # A content type without a rule gets the first type of the catalogue.
        assert _identify(client, PNG).json()["document_type"]["code"] == "memo"

    def test_unlisted_marker_type_is_answered_as_is(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """A TYPE marker naming a type the account lacks is answered as given."""
        pdf = make_pdf(b"DOCUTRAY-EMULATOR:TYPE=payslip\n")
        assert _identify(connect(emulator), pdf).json()["document_type"]["code"] == "payslip"

    def test_candidates_limit_the_answer(
        self, emulator: EmulatorServer, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """``document_type_code_options`` limits type and alternatives; a marker outside them is
        ignored; an unknown code is 400."""
        client = connect(emulator)
        pdf = make_pdf(b"DOCUTRAY-EMULATOR:TYPE=contract\n")
        body = _identify(client, pdf, options=["receipt", "id_card"]).json()
        assert body["document_type"]["code"] == "receipt"
        assert [alt["code"] for alt in body["alternatives"]] == ["id_card"]
        response = client.post(
            "/api/identify",
            json={
                "image_base64": base64.b64encode(make_pdf()).decode(),
                "document_type_code_options": ["nope"],
            },
        )
        assert response.status_code == 400
        assert "nope" in response.json()["error"]["message"]

    def test_type_marker_split_across_chunks(self) -> None:
        """A TYPE marker cut by a chunk boundary is still found whole."""
        from docutray_watch.emulator._markers import MarkerScanner

        data = b"x" * 100 + b"DOCUTRAY-EMULATOR:TYPE=bank_statement\n" + b"y" * 100
        for cut in range(90, 150):
            scanner = MarkerScanner()
            scanner.feed(data[:cut])
            scanner.feed(data[cut:])
            assert scanner.finish().document_type == "bank_statement"
        assert scan_markers(b"DOCUTRAY-EMULATOR:CONFIDENCE=1.5").confidence is None


class TestAsync:
    @pytest.mark.parametrize("id_field", ["identification_id", "id"])
    def test_enqueued_then_success(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
        id_field: str,
    ) -> None:
        """identify-async answers ENQUEUED with the configured id name; the status follows the
        clock to SUCCESS with the type."""
        server = emulator_factory(clock=clock, latency=10.0, identify_id_field=id_field)
        client = connect(server)
        started = _identify(client, make_pdf(), path="/api/identify-async").json()
        assert started["status"] == "ENQUEUED"
        identification_id = started[id_field]
        status_path = f"/api/identify-async/status/{identification_id}"
        assert client.get(status_path).json()["status"] == "ENQUEUED"
        clock.advance(5.0)
        assert client.get(status_path).json()["status"] == "PROCESSING"
        clock.advance(5.0)
        done = client.get(status_path).json()
        assert done["status"] == "SUCCESS"
        assert done["document_type"]["code"] == "invoice"
        assert done[id_field] == identification_id
        assert server.stats().identifications_created == 1

    def test_error_marker_ends_in_error(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """The ERROR marker makes the async identification ERROR and the sync one a 422."""
        client = connect(emulator_factory(clock=clock, latency=1.0))
        pdf = make_pdf(b"DOCUTRAY-EMULATOR:ERROR DOCUTRAY-EMULATOR:LATENCY=0\n")
        assert _identify(client, pdf).status_code == 422
        started = _identify(
            client, make_pdf(b"DOCUTRAY-EMULATOR:ERROR\n"), path="/api/identify-async"
        )
        status_path = f"/api/identify-async/status/{started.json()['identification_id']}"
        clock.advance(1.0)
        body = client.get(status_path).json()
        assert body["status"] == "ERROR"
        assert "ERROR marker" in body["error"]

    def test_unknown_identification_is_404(
        self, emulator: EmulatorServer, connect: Connect
    ) -> None:
        """An unknown id is 404."""
        assert connect(emulator).get("/api/identify-async/status/idn_x").status_code == 404


class TestFaults:
    def test_server_errors_and_auth_apply(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """The steps' fault options apply to identify and document types alike."""
        server = emulator_factory(server_error_rate=1.0, server_error_statuses=[503])
        client = connect(server)
        assert _identify(client, make_pdf()).status_code == 503
        assert client.get("/api/document-types").status_code == 503
        server.configure(server_error_rate=0.0)
        assert httpx.get(f"{server.base_url}/api/document-types").status_code == 401

    def test_rate_limit_answers_429(
        self, emulator_factory: EmulatorFactory, connect: Connect, make_pdf: MakePdf
    ) -> None:
        """``rate_limit_rate`` answers identify with 429 and Retry-After."""
        server = emulator_factory(rate_limit_rate=1.0, retry_after=2.0)
        response = _identify(connect(server), make_pdf(), path="/api/identify-async")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "2"
        assert server.stats().identifications_created == 0


class TestDocumentTypes:
    def test_pages_and_search(self, emulator: EmulatorServer, connect: Connect) -> None:
        """The catalogue pages by ``page``/``limit``; ``search`` filters by name or code."""
        client = connect(emulator)
        first = client.get("/api/document-types", params={"limit": 4}).json()
        assert [item["codeType"] for item in first["data"]] == [
            "invoice",
            "receipt",
            "bank_statement",
            "purchase_order",
        ]
        assert first["pagination"] == {"total": 6, "page": 1, "limit": 4}
        assert first["data"][0]["id"] == "dt_invoice"
        second = client.get("/api/document-types", params={"limit": 4, "page": 2}).json()
        assert [item["codeType"] for item in second["data"]] == ["id_card", "contract"]
        found = client.get("/api/document-types", params={"search": "ORDER"}).json()
        assert [item["name"] for item in found["data"]] == ["Purchase order"]
        assert found["pagination"]["total"] == 1

    @pytest.mark.parametrize("query", [{"page": "0"}, {"limit": "x"}])
    def test_bad_paging_is_400(
        self, emulator: EmulatorServer, connect: Connect, query: dict[str, Any]
    ) -> None:
        """A page below 1 or a non-numeric limit is 400."""
        assert connect(emulator).get("/api/document-types", params=query).status_code == 400


class TestOfficialSdk:
    @pytest.mark.parametrize("id_field", ["identification_id", "id"])
    def test_official_sdk_reads_the_answers(
        self, emulator_factory: EmulatorFactory, make_pdf: MakePdf, id_field: str
    ) -> None:
        """The official SDK's identify and document_types parse the emulator's answers."""
        docutray = pytest.importorskip("docutray")
        server = emulator_factory(latency=0.0, identify_id_field=id_field)
        pdf = make_pdf(b"DOCUTRAY-EMULATOR:TYPE=contract\n")
        with docutray.Client(api_key=server.api_key, base_url=server.base_url) as sdk:
            result = sdk.identify.run(file=pdf, document_type_code_options=["contract", "invoice"])
            assert result.document_type.code == "contract"
            started = sdk.identify.run_async(file=pdf)
            final = sdk.identify.get_status(started.identification_id)
            assert final.is_success()
            assert final.document_type.code == "contract"
            page = sdk.document_types.list(limit=5)
            assert [t.codeType for t in page.auto_paging_iter()][-1] == "contract"
