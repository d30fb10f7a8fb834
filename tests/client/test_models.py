"""StepExecutionStatus: aliases, unknown fields and statuses, timestamps, predicates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from docutray_watch.client import AsyncStepExecutionStatus, StepExecutionStatus


class TestStepExecutionStatus:
    @pytest.mark.parametrize("key", ["execution_id", "id", "conversion_id"])
    def test_id_aliases(self, key: str) -> None:
        """execution_id also accepts the API's ``id`` and ``conversion_id`` spellings."""
        status = StepExecutionStatus.model_validate({key: "exec_1", "status": "ENQUEUED"})
        assert status.execution_id == "exec_1"

    def test_unknown_fields_are_kept(self) -> None:
        """Fields the service adds are kept, not rejected."""
        status = StepExecutionStatus.model_validate(
            {"execution_id": "e", "status": "SUCCESS", "document_metadata": {"a": 1}, "cost": 3}
        )
        assert status.model_extra == {"document_metadata": {"a": 1}, "cost": 3}
        assert status.cost == 3  # type: ignore[attr-defined]

    def test_unknown_status_is_accepted(self) -> None:
        """A status a newer service introduces parses and counts as not complete."""
        status = StepExecutionStatus.model_validate({"execution_id": "e", "status": "QUEUED_V2"})
        assert status.status == "QUEUED_V2"
        assert not status.is_complete()
        assert not status.is_terminal()
        assert not status.is_success()
        assert not status.is_error()

    @pytest.mark.parametrize(
        ("status", "success", "error", "complete"),
        [
            ("ENQUEUED", False, False, False),
            ("PROCESSING", False, False, False),
            ("SUCCESS", True, False, True),
            ("ERROR", False, True, True),
        ],
    )
    def test_predicates(self, status: str, success: bool, error: bool, complete: bool) -> None:
        """is_success, is_error, is_complete and is_terminal follow the status."""
        parsed = StepExecutionStatus(execution_id="e", status=status)
        assert parsed.is_success() is success
        assert parsed.is_error() is error
        assert parsed.is_complete() is parsed.is_terminal() is complete

    def test_status_constants(self) -> None:
        """The four documented statuses are class constants."""
        assert (
            StepExecutionStatus.ENQUEUED,
            StepExecutionStatus.PROCESSING,
            StepExecutionStatus.SUCCESS,
            StepExecutionStatus.ERROR,
        ) == ("ENQUEUED", "PROCESSING", "SUCCESS", "ERROR")

    def test_iso_timestamps_become_datetimes(self) -> None:
        """ISO-8601 timestamps (with Z) parse to aware datetimes."""
        status = StepExecutionStatus.model_validate(
            {
                "execution_id": "e",
                "status": "SUCCESS",
                "request_timestamp": "2024-01-15T10:30:00.000Z",
                "response_timestamp": "2024-01-15T10:30:45+00:00",
            }
        )
        assert status.request_timestamp == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
        assert status.response_timestamp == datetime(2024, 1, 15, 10, 30, 45, tzinfo=UTC)

    @pytest.mark.parametrize("raw", ["yesterday", "15/01/2024 10:30", 1705314600])
    def test_other_timestamps_stay_raw(self, raw: Any) -> None:
        """Timestamps that are not ISO-8601 are kept as the raw string."""
        status = StepExecutionStatus.model_validate(
            {"execution_id": "e", "status": "ENQUEUED", "request_timestamp": raw}
        )
        assert status.request_timestamp == str(raw)

    @pytest.mark.parametrize(
        ("raw", "success", "error"), [("success", True, False), ("Error", False, True)]
    )
    def test_status_names_are_case_insensitive(self, raw: str, success: bool, error: bool) -> None:
        """A lower- or mixed-case status means the documented upper-case one."""
        status = StepExecutionStatus.model_validate({"execution_id": "e", "status": raw})
        assert status.status == raw.upper()
        assert status.is_success() is success
        assert status.is_error() is error
        assert status.is_complete()

    @pytest.mark.parametrize(
        "error", ["boom", {"code": "E1", "message": "boom"}, [{"field": "total", "message": "?"}]]
    )
    def test_error_is_string_or_object(self, error: Any) -> None:
        """``error`` may be a message, an object or a list of problems."""
        status = StepExecutionStatus.model_validate(
            {"execution_id": "e", "status": "ERROR", "error": error}
        )
        assert status.error == error

    def test_documented_fields(self) -> None:
        """The fields the docs print are there, with data of any JSON shape."""
        status = StepExecutionStatus.model_validate(
            {
                "execution_id": "exec_abc123",
                "status": "SUCCESS",
                "data": {"invoice_number": "INV-2024-001", "total": 1160.0},
                "original_filename": "document.pdf",
                "step_id": "step_abc123",
            }
        )
        assert status.data == {"invoice_number": "INV-2024-001", "total": 1160.0}
        assert (status.original_filename, status.step_id) == ("document.pdf", "step_abc123")

    def test_wait_needs_a_client(self) -> None:
        """A status built by hand cannot poll: wait() explains why."""
        status = StepExecutionStatus(execution_id="e", status="ENQUEUED")
        with pytest.raises(ValueError, match="not returned by a client"):
            status.wait()

    async def test_async_wait_needs_a_client(self) -> None:
        """The async status explains the same."""
        status = AsyncStepExecutionStatus(execution_id="e", status="ENQUEUED")
        with pytest.raises(ValueError, match="not returned by a client"):
            await status.wait()
