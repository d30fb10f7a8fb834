"""Tests of `docutray_watch.records`: the Document and the ResultRecord every sink receives."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from docutray_watch._testkit import make_document, make_record
from docutray_watch.records import (
    SCHEMA_VERSION,
    Document,
    Identification,
    ResultRecord,
    TypeMatch,
)

# The keys of design §4, in the order sinks see them.
RECORD_KEYS = [
    "schema_version",
    "pipeline",
    "document",
    "step_id",
    "execution_id",
    "status",
    "data",
    "error",
    "original_filename",
    "request_timestamp",
    "response_timestamp",
    "submitted_at",
    "completed_at",
    "identification",
]
DOCUMENT_KEYS = ["name", "path", "relative_path", "sha256", "size", "content_type"]


class TestDocument:
    @pytest.mark.parametrize(
        ("name", "stem"),
        [("a.pdf", "a"), ("scan.v2.pdf", "scan.v2"), ("README", "README"), (".pdf", ".pdf")],
    )
    def test_stem(self, name: str, stem: str) -> None:
        """The stem drops the last suffix; names without one (or dot-files) stay whole."""
        assert make_document(name).stem == stem

    @pytest.mark.parametrize(
        ("relative_dir", "expected"), [("", ""), ("2026", "2026"), ("2026/jan", "2026/jan")]
    )
    def test_relative_dir(self, relative_dir: str, expected: str) -> None:
        """relative_dir is the folder part of relative_path ('' at the top of the inbox)."""
        assert make_document("a.pdf", relative_dir=relative_dir).relative_dir == expected

    def test_is_frozen(self) -> None:
        """A Document cannot be changed after creation (it travels between tasks)."""
        document = make_document()
        with pytest.raises(ValidationError):
            document.name = "other.pdf"  # type: ignore[misc]


class TestResultRecord:
    def test_key_is_pipeline_sha_and_step(self) -> None:
        """The idempotency key is (pipeline, sha256, step_id), whatever the execution."""
        first = make_record(execution_id="e1")
        again = make_record(execution_id="e2")
        assert first.key == ("invoices", first.document.sha256, "stp_test")
        assert first.key == again.key
        assert make_record(step_id="stp_other").key != first.key

    def test_to_dict_has_the_documented_shape(self) -> None:
        """to_dict gives exactly the keys of design §4, with ISO-8601 timestamps."""
        record = make_record(completed_at=datetime(2026, 1, 15, 10, 30, 45, tzinfo=UTC))
        data = record.to_dict()
        assert list(data) == RECORD_KEYS
        assert list(data["document"]) == DOCUMENT_KEYS
        assert data["schema_version"] == SCHEMA_VERSION == 1
        assert data["completed_at"] == "2026-01-15T10:30:45Z"
        json.dumps(data)  # plain builtins only

    def test_json_round_trip(self) -> None:
        """to_json parses back into an equal record."""
        record = make_record(data={"total": 12.5, "lines": [{"sku": "A"}]})
        assert ResultRecord.model_validate_json(record.to_json(indent=2)) == record
        assert json.loads(record.to_json()) == record.to_dict()

    def test_identification_is_null_unless_the_pipeline_identifies(self) -> None:
        """A record of a pipeline without identify has identification null, version still 1."""
        data = make_record().to_dict()
        assert data["identification"] is None
        assert data["schema_version"] == 1

    def test_identification_travels_in_the_record(self) -> None:
        """A routed document's record carries code, name, confidence and alternatives."""
        identification = Identification(
            code="invoice",
            name="Invoice",
            confidence=0.87,
            alternatives=[TypeMatch(code="receipt", name="Receipt", confidence=0.1)],
        )
        record = make_record(identification=identification)
        data = record.to_dict()
        assert data["identification"] == {
            "code": "invoice",
            "name": "Invoice",
            "confidence": 0.87,
            "alternatives": [{"code": "receipt", "name": "Receipt", "confidence": 0.1}],
        }
        assert ResultRecord.model_validate_json(record.to_json()) == record

    def test_a_record_without_the_key_still_reads(self) -> None:
        """Records written before identification existed (no key at all) still validate."""
        fields = make_record().to_dict()
        del fields["identification"]
        assert ResultRecord.model_validate(fields).identification is None

    def test_error_record(self) -> None:
        """An ERROR record carries the error and no data."""
        record = make_record(status="ERROR", error={"message": "unreadable"})
        assert (record.status, record.data, record.error) == (
            "ERROR",
            None,
            {"message": "unreadable"},
        )

    def test_status_and_version_are_checked(self) -> None:
        """Only SUCCESS/ERROR statuses and schema version 1 are valid."""
        fields = make_record().model_dump()
        with pytest.raises(ValidationError):
            ResultRecord.model_validate(fields | {"status": "PROCESSING"})
        with pytest.raises(ValidationError):
            ResultRecord.model_validate(fields | {"schema_version": 2})

    def test_is_frozen(self) -> None:
        """A record cannot be changed by one sink before another sees it."""
        record = make_record()
        with pytest.raises(ValidationError):
            record.status = "ERROR"  # type: ignore[misc]

    def test_document_fields_are_required(self) -> None:
        """A document without its hash is not a valid Document."""
        with pytest.raises(ValidationError):
            Document.model_validate(
                {
                    "name": "a.pdf",
                    "path": "/a.pdf",
                    "relative_path": "a.pdf",
                    "size": 1,
                    "content_type": "application/pdf",
                }
            )
