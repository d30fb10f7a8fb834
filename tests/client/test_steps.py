"""The steps resource, sync and async: every input kind, metadata, raw responses, local checks."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from docutray_watch import __version__
from docutray_watch.client import (
    AsyncClient,
    AsyncStepExecutionStatus,
    Client,
    FileTooLargeError,
    NotFoundError,
    RawResponse,
    StepExecutionStatus,
    UnsupportedFileTypeError,
)

from .conftest import API_KEY, JPEG, PDF, PNG, FakeAPI, Flavor, enqueued, parse_multipart


class _PathLike(os.PathLike[str]):
    """A path-like that is not a pathlib.Path."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __fspath__(self) -> str:
        return str(self._path)


def _file_inputs(path: Path) -> dict[str, Any]:
    return {
        "Path": path,
        "str": str(path),
        "PathLike": _PathLike(path),
        "bytes": path.read_bytes(),
        "file object": path.open("rb"),
    }


class TestRunAsyncFileInputs:
    @pytest.mark.parametrize("kind", ["Path", "str", "PathLike", "bytes", "file object"])
    async def test_file_is_sent_as_multipart_image_part(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, pdf_path: Path, kind: str
    ) -> None:
        """Every file input kind is uploaded as the multipart ``image`` part with its type."""
        file = _file_inputs(pdf_path)[kind]
        status = await flavor.call(client.steps.run_async, "step_123", file=file)
        if hasattr(file, "close"):
            file.close()
        assert status.status == "ENQUEUED"
        assert status.execution_id == "exec_1"
        (seen,) = api.seen
        assert (seen.method, seen.path) == ("POST", "/api/steps-async/step_123")
        assert seen.headers["content-length"] == str(len(seen.body))
        parts = parse_multipart(seen.headers["content-type"], seen.body)
        assert list(parts) == ["image"]
        image = parts["image"]
        assert image.data == PDF
        assert image.headers["Content-Type"] == "application/pdf"
        expected_name = "document" if kind == "bytes" else "invoice.pdf"
        assert image.filename == expected_name

    async def test_metadata_is_a_json_string_part(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, pdf_path: Path
    ) -> None:
        """With a file, document_metadata travels as a JSON string part before the file."""
        metadata = {"source": "email", "customer_id": "cust_456", "n": [1, 2]}
        await flavor.call(
            client.steps.run_async, "step_1", file=pdf_path, document_metadata=metadata
        )
        parts = parse_multipart(api.seen[0].headers["content-type"], api.seen[0].body)
        assert list(parts) == ["document_metadata", "image"]
        assert json.loads(parts["document_metadata"].data) == metadata
        assert "Content-Type" not in parts["document_metadata"].headers

    async def test_filename_and_content_type_overrides(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """``filename`` names the part and an explicit ``content_type`` beats sniffing."""
        await flavor.call(
            client.steps.run_async,
            "step_1",
            file=PNG,
            filename='scan "1".png',
            content_type="image/jpg",
        )
        image = parse_multipart(api.seen[0].headers["content-type"], api.seen[0].body)["image"]
        assert image.filename == "scan %221%22.png"
        assert image.headers["Content-Type"] == "image/jpeg"

    @pytest.mark.parametrize(("data", "expected"), [(PNG, "image/png"), (JPEG, "image/jpeg")])
    async def test_type_is_sniffed_from_bytes(
        self,
        flavor: Flavor,
        client: Client | AsyncClient,
        api: FakeAPI,
        data: bytes,
        expected: str,
    ) -> None:
        """Without ``content_type`` the part's type comes from the magic bytes."""
        await flavor.call(client.steps.run_async, "step_1", file=data)
        image = parse_multipart(api.seen[0].headers["content-type"], api.seen[0].body)["image"]
        assert image.headers["Content-Type"] == expected

    async def test_file_object_is_sent_from_its_position(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """A file object already advanced is uploaded from where it stands."""
        handle = io.BytesIO(b"junk" + PDF)
        handle.seek(4)
        await flavor.call(client.steps.run_async, "step_1", file=handle)
        image = parse_multipart(api.seen[0].headers["content-type"], api.seen[0].body)["image"]
        assert image.data == PDF

    async def test_headers_carry_auth_and_user_agent(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """Requests carry the bearer key, our User-Agent and accept JSON."""
        await flavor.call(client.steps.run_async, "step_1", file=PDF)
        headers = api.seen[0].headers
        assert headers["authorization"] == f"Bearer {API_KEY}"
        assert headers["user-agent"] == f"docutray-watch/{__version__}"
        assert headers["accept"] == "application/json"

    async def test_step_id_keyword_and_escaping(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """``step_id=`` works as a keyword (the seeds' spelling) and is escaped in the path."""
        await flavor.call(client.steps.run_async, step_id="step/../x", file=PDF)
        assert api.seen[0].path == "/api/steps-async/step%2F..%2Fx"

    async def test_status_remembers_the_upload(
        self, flavor: Flavor, client: Client | AsyncClient, pdf_path: Path
    ) -> None:
        """The returned status knows the upload's type and size (for the polling schedule)."""
        status = await flavor.call(client.steps.run_async, "step_1", file=pdf_path)
        assert status._upload_content_type == "application/pdf"
        assert status._upload_size == len(PDF)
        expected = AsyncStepExecutionStatus if flavor.is_async else StepExecutionStatus
        assert type(status) is expected


class TestRunAsyncJsonInputs:
    async def test_url_input(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """A URL goes as ``{"image_url": ...}`` JSON."""
        await flavor.call(
            client.steps.run_async, step_id="step_123", url="https://example.com/doc.pdf"
        )
        seen = api.seen[0]
        assert seen.headers["content-type"] == "application/json"
        assert json.loads(seen.body) == {"image_url": "https://example.com/doc.pdf"}

    async def test_url_with_content_type_and_metadata(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """URL input carries an explicit content type and metadata as a JSON object."""
        await flavor.call(
            client.steps.run_async,
            "step_1",
            url="https://example.com/x",
            content_type="application/pdf",
            document_metadata={"a": 1},
        )
        assert json.loads(api.seen[0].body) == {
            "image_url": "https://example.com/x",
            "image_content_type": "application/pdf",
            "document_metadata": {"a": 1},
        }

    async def test_base64_input(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """Base64 goes as ``image_base64`` with the sniffed ``image_content_type``."""
        encoded = base64.b64encode(PDF).decode()
        status = await flavor.call(
            client.steps.run_async, "step_1", file_base64=encoded, document_metadata={"k": "v"}
        )
        assert json.loads(api.seen[0].body) == {
            "image_base64": encoded,
            "image_content_type": "application/pdf",
            "document_metadata": {"k": "v"},
        }
        assert status._upload_size == len(PDF)

    async def test_base64_explicit_content_type(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """An explicit content type is sent as given (canonicalised)."""
        encoded = base64.b64encode(PNG).decode()
        await flavor.call(
            client.steps.run_async, "step_1", file_base64=encoded, content_type="IMAGE/PNG"
        )
        assert json.loads(api.seen[0].body)["image_content_type"] == "image/png"

    async def test_data_uri_carries_its_own_type(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """A data URI is sent whole, without a separate content type."""
        uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
        status = await flavor.call(client.steps.run_async, "step_1", file_base64=uri)
        assert json.loads(api.seen[0].body) == {"image_base64": uri}
        assert status._upload_content_type == "image/png"


class TestRunAsyncLocalChecks:
    @pytest.mark.parametrize(
        "inputs",
        [
            {},
            {"file": PDF, "url": "https://example.com/a.pdf"},
            {"file": PDF, "file_base64": "JVBERi0="},
            {"url": "https://example.com/a.pdf", "file_base64": "JVBERi0="},
        ],
        ids=["none", "file+url", "file+base64", "url+base64"],
    )
    async def test_exactly_one_input(
        self, flavor: Flavor, client: Client | AsyncClient, no_network: FakeAPI, inputs: Any
    ) -> None:
        """No input or several inputs raise ValueError before any request."""
        with pytest.raises(ValueError, match="Must provide one of: file, url, or file_base64"):
            await flavor.call(client.steps.run_async, "step_1", **inputs)

    async def test_no_input_error_starts_as_the_official_sdks(
        self, flavor: Flavor, client: Client | AsyncClient, no_network: FakeAPI
    ) -> None:
        """run_async with no input (plain and raw) raises the official SDK's ValueError wording."""
        for run_async in (client.steps.run_async, client.steps.with_raw_response.run_async):
            with pytest.raises(ValueError, match="got none") as caught:
                await flavor.call(run_async, "step_1")
            assert str(caught.value).startswith("Must provide one of: file, url, or file_base64")

    async def test_oversize_file_rejected(
        self, flavor: Flavor, client: Client | AsyncClient, no_network: FakeAPI, tmp_path: Path
    ) -> None:
        """A file over 100 MiB (sparse on disk) is refused, naming the file, before sending."""
        path = tmp_path / "huge.pdf"
        with path.open("wb") as handle:
            handle.write(PDF)
            handle.truncate(100 * 1024 * 1024 + 1)
        with pytest.raises(FileTooLargeError, match=r"huge\.pdf: file is too large") as caught:
            await flavor.call(client.steps.run_async, "step_1", file=path)
        assert caught.value.size == 100 * 1024 * 1024 + 1

    async def test_unsupported_type_rejected(
        self, flavor: Flavor, client: Client | AsyncClient, no_network: FakeAPI, tmp_path: Path
    ) -> None:
        """A text file is refused as unsupported, naming the file, before sending."""
        path = tmp_path / "notes.txt"
        path.write_text("hello")
        with pytest.raises(UnsupportedFileTypeError, match=r"notes\.txt: unsupported file type"):
            await flavor.call(client.steps.run_async, "step_1", file=path)

    async def test_unsupported_explicit_type_rejected(
        self, flavor: Flavor, client: Client | AsyncClient, no_network: FakeAPI
    ) -> None:
        """An explicit content type outside the supported list is refused too."""
        with pytest.raises(UnsupportedFileTypeError, match="image/tiff"):
            await flavor.call(client.steps.run_async, "step_1", file=PDF, content_type="image/tiff")

    async def test_unsupported_base64_rejected(
        self, flavor: Flavor, client: Client | AsyncClient, no_network: FakeAPI
    ) -> None:
        """Base64 of an unsupported type is refused before sending."""
        encoded = base64.b64encode(b"plain text, not a document").decode()
        with pytest.raises(UnsupportedFileTypeError):
            await flavor.call(client.steps.run_async, "step_1", file_base64=encoded)

    async def test_unserialisable_metadata_rejected(
        self, flavor: Flavor, client: Client | AsyncClient, no_network: FakeAPI
    ) -> None:
        """Metadata that is not JSON raises TypeError before sending."""
        with pytest.raises(TypeError):
            await flavor.call(
                client.steps.run_async, "step_1", url="https://e.x/a", document_metadata={"a": {1j}}
            )

    async def test_empty_step_id_rejected(
        self, flavor: Flavor, client: Client | AsyncClient, no_network: FakeAPI
    ) -> None:
        """An empty step id is a ValueError, not a request to the wrong path."""
        with pytest.raises(ValueError, match="step_id"):
            await flavor.call(client.steps.run_async, "", file=PDF)


class TestGetStatus:
    async def test_positional_and_keyword(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """``get_status`` takes the id positionally or as ``execution_id=``."""
        first = await flavor.call(client.steps.get_status, "exec_123")
        second = await flavor.call(client.steps.get_status, execution_id="exec_123")
        assert [seen.path for seen in api.seen] == ["/api/steps-async/status/exec_123"] * 2
        assert (first.status, second.status) == ("SUCCESS", "SUCCESS")
        assert first.data == {"total": 1160.0}

    async def test_error_status_is_returned(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """An ERROR execution is a status (with its error), not an exception."""
        api.queue(enqueued("exec_9", status="ERROR", error={"code": "bad_scan"}))
        status = await flavor.call(client.steps.get_status, "exec_9")
        assert status.is_error()
        assert status.error == {"code": "bad_scan"}

    async def test_not_found_raises(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """An unknown execution raises NotFoundError."""
        from .conftest import json_response

        api.queue(json_response(404, {"error": {"message": "no such execution"}}))
        with pytest.raises(NotFoundError, match="no such execution"):
            await flavor.call(client.steps.get_status, "exec_x")


class TestRawResponse:
    async def test_run_async_raw(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """The raw run_async answer exposes status, headers, body and parses to the status."""
        api.queue(enqueued("exec_raw", request_timestamp="2024-01-15T10:30:00.000Z"))
        raw = await flavor.call(client.steps.with_raw_response.run_async, "step_1", file=PDF)
        assert isinstance(raw, RawResponse)
        assert raw.status_code == 200
        assert raw.headers["content-type"] == "application/json"
        assert raw.http_response.status_code == 200
        assert json.loads(raw.content) == raw.json() == json.loads(raw.text)
        parsed = raw.parse()
        assert parsed.execution_id == "exec_raw"
        expected = AsyncStepExecutionStatus if flavor.is_async else StepExecutionStatus
        assert type(parsed) is expected
        assert parsed._resource is client.steps

    async def test_get_status_raw_keyword(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """The raw get_status takes ``execution_id=`` like the plain one."""
        raw = await flavor.call(client.steps.with_raw_response.get_status, execution_id="exec_5")
        assert raw.json()["execution_id"] == "exec_5"
        assert raw.parse().is_success()

    async def test_raw_error_raises_typed_error(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """Error statuses raise from raw calls too."""
        from .conftest import json_response

        api.queue(json_response(404, {"message": "step not found"}))
        with pytest.raises(NotFoundError, match="step not found"):
            await flavor.call(client.steps.with_raw_response.run_async, "nope", file=PDF)
