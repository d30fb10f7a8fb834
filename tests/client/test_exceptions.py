"""The error tree, the status → class mapping, message extraction and RateLimitError's fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from docutray_watch.client import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    DocuTrayError,
    FileTooLargeError,
    InternalServerError,
    InvalidDocumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    UnsupportedFileTypeError,
    _exceptions,
)
from docutray_watch.client._retry_after import parse_retry_after

from .conftest import PDF, FakeAPI, Flavor, json_response

_STATUS_CLASSES = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (409, ConflictError),
    (422, UnprocessableEntityError),
    (429, RateLimitError),
    (500, InternalServerError),
    (501, InternalServerError),
    (502, InternalServerError),
    (503, InternalServerError),
    (504, InternalServerError),
    (402, APIError),
    (410, APIError),
    (418, APIError),
]


class TestErrorTree:
    @pytest.mark.parametrize(
        ("child", "parent"),
        [
            (APIConnectionError, DocuTrayError),
            (APITimeoutError, APIConnectionError),
            (APIError, DocuTrayError),
            *((cls, APIError) for _, cls in _STATUS_CLASSES if cls is not APIError),
            (InvalidDocumentError, DocuTrayError),
            (InvalidDocumentError, ValueError),
            (FileTooLargeError, InvalidDocumentError),
            (UnsupportedFileTypeError, InvalidDocumentError),
        ],
    )
    def test_hierarchy(self, child: type[Exception], parent: type[Exception]) -> None:
        """Each class sits where the tree in the module docstring draws it."""
        assert issubclass(child, parent)

    def test_docstring_draws_every_class(self) -> None:
        """The module docstring's tree names every error class."""
        doc = _exceptions.__doc__ or ""
        for name in _exceptions.__all__:
            if name[0].isupper():
                assert name in doc, name

    def test_str_and_repr(self) -> None:
        """str() is the message; reprs show the useful fields."""
        error = NotFoundError("gone", status_code=404, request_id="req_1", body={}, headers={})
        assert str(error) == "gone"
        assert repr(error) == "NotFoundError(message='gone', status_code=404, request_id='req_1')"
        connection = APITimeoutError("slow", request_sent=False)
        assert repr(connection) == "APITimeoutError('slow', request_sent=False)"


class TestStatusMapping:
    @pytest.mark.parametrize(("code", "error_class"), _STATUS_CLASSES)
    @pytest.mark.parametrize("method", ["GET", "POST"])
    async def test_status_raises_its_class(
        self,
        flavor: Flavor,
        api: FakeAPI,
        code: int,
        error_class: type[APIError],
        method: str,
    ) -> None:
        """Each error status raises its class, carrying status, body, headers and request id."""
        client: Client | AsyncClient = flavor.make(max_retries=0)
        body = {"error": {"message": "nope", "code": "x"}}
        api.queue(json_response(code, body, X_Request_ID="req_42"))
        if method == "GET":
            request = flavor.call(client.steps.get_status, "exec_1")
        else:
            request = flavor.call(client.steps.run_async, "step_1", file=PDF)
        with pytest.raises(APIError) as caught:
            await request
        error = caught.value
        assert type(error) is error_class
        assert (error.status_code, error.body, error.request_id) == (code, body, "req_42")
        assert error.headers["x-request-id"] == "req_42"
        assert error.message == str(error) == "nope"

    async def test_non_json_body(self, flavor: Flavor, api: FakeAPI) -> None:
        """A non-JSON error body is kept as text, and the message falls back to HTTP <code>."""
        client = flavor.make(max_retries=0)
        api.queue(httpx.Response(502, text="<html>Bad Gateway</html>"))
        with pytest.raises(InternalServerError) as caught:
            await flavor.call(client.steps.get_status, "exec_1")
        assert caught.value.message == "HTTP 502"
        assert caught.value.body == "<html>Bad Gateway</html>"

    async def test_unparseable_success_body(self, flavor: Flavor, api: FakeAPI) -> None:
        """A 200 whose body is not a status raises APIError rather than a bare exception."""
        client = flavor.make()
        api.queue(json_response(200, {"unexpected": True}))
        with pytest.raises(APIError, match="unexpected body"):
            await flavor.call(client.steps.get_status, "exec_1")


class TestMessageExtraction:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ({"error": {"message": "nested"}, "message": "top", "detail": "d"}, "nested"),
            ({"error": {"code": "x"}, "message": "top", "detail": "d"}, "top"),
            ({"message": "", "detail": "from detail"}, "from detail"),
            (
                {"detail": [{"loc": ["file"], "msg": "missing"}]},
                '[{"loc":["file"],"msg":"missing"}]',
            ),
            ({"error": "plain string"}, "plain string"),
            ({"detail": "d", "error": "e"}, "d"),
            ({"error": {"message": ""}}, "HTTP 418"),
            ({}, "HTTP 418"),
            ([1, 2], "HTTP 418"),
            (None, "HTTP 418"),
        ],
    )
    def test_message_precedence(self, body: Any, expected: str) -> None:
        """error.message, then message, then detail, then a string error, else HTTP <code>."""
        assert _exceptions.extract_error_message(body, 418) == expected


class TestRateLimitError:
    def _error(self, body: Any = None, **headers: str) -> RateLimitError:
        return RateLimitError("slow down", status_code=429, body=body, headers=headers)

    def test_retry_after_header_seconds(self) -> None:
        """retry_after reads the Retry-After header in seconds."""
        assert self._error({"retryAfter": 99}, **{"Retry-After": "12"}).retry_after == 12.0

    def test_retry_after_header_date(self) -> None:
        """retry_after reads a Retry-After HTTP date as seconds from now."""
        when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
        retry_after = self._error(**{"Retry-After": when}).retry_after
        assert retry_after is not None
        assert 18.5 <= retry_after <= 20.0

    def test_retry_after_from_body(self) -> None:
        """Without the header, the body's retryAfter is used."""
        assert self._error({"retryAfter": 3.5}).retry_after == 3.5

    def test_retry_after_missing(self) -> None:
        """No header and no body field: None."""
        assert self._error({"message": "x"}).retry_after is None

    def test_limit_fields(self) -> None:
        """limit_type, limit, remaining and reset_time come from the body."""
        error = self._error(
            {"limitType": "minute", "limit": 60, "remaining": 0, "resetTime": 1700000000}
        )
        assert (error.limit_type, error.limit, error.remaining, error.reset_time) == (
            "minute",
            60,
            0,
            1700000000,
        )

    def test_limit_fields_absent_or_odd(self) -> None:
        """Missing or mistyped fields are None; a string reset time is kept as given."""
        error = self._error({"limitType": 5, "limit": "60", "resetTime": "2024-01-01T00:00:00Z"})
        assert (error.limit_type, error.limit, error.remaining) == (None, None, None)
        assert error.reset_time == "2024-01-01T00:00:00Z"


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("3", 3.0),
            (" 2.5 ", 2.5),
            (4, 4.0),
            ("-5", 0.0),
            ("soon", None),
            ("", None),
            (None, None),
            (True, None),
            ("nan", None),
            ("inf", None),
        ],
    )
    def test_values(self, value: Any, expected: float | None) -> None:
        """Numbers and numeric strings are seconds (never negative); junk is None."""
        assert parse_retry_after(value) == expected

    def test_http_date(self) -> None:
        """An HTTP date is measured from ``now``; a past date means no wait."""
        now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
        assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0
