"""`engine_errors.classify`: one answer for every error the client raises, at submit and poll."""

from __future__ import annotations

import httpx
import pytest

from docutray_watch.client import _exceptions as errors
from docutray_watch.client._exceptions import error_class_for_status
from docutray_watch.engine.errors import Failure, classify

SUBMIT, POLL = "submit", "poll"


def http(status: int, **kwargs: object) -> errors.APIError:
    return error_class_for_status(status)(f"HTTP {status}", status_code=status, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "submit", "poll"),
    [
        # no connection at all: nothing reached the service, whatever the request
        (errors.APIConnectionError("refused", request_sent=False), "unreachable", "unreachable"),
        (errors.APITimeoutError("connect", request_sent=False), "unreachable", "unreachable"),
        # the request went out: a POST may have started an execution, a GET is read again
        (errors.APIConnectionError("reset", request_sent=True), "uncertain", "not_accepted"),
        (errors.APITimeoutError("read timeout", request_sent=True), "uncertain", "not_accepted"),
        (http(400), "rejected", "rejected"),
        (http(401), "credentials", "credentials"),
        (http(403), "pipeline", "pipeline"),
        (http(404), "pipeline", "rejected"),
        (http(409), "rejected", "rejected"),
        (http(413), "rejected", "rejected"),
        (http(415), "rejected", "rejected"),
        (http(422), "rejected", "rejected"),
        (http(418), "rejected", "rejected"),
        (http(429), "throttled", "throttled"),
        (http(429, headers={"Retry-After": "5"}), "throttled", "throttled"),
        # 5xx: 503 says "not taken"; 500/502/504 to a POST may hide a started execution
        (http(500), "uncertain", "not_accepted"),
        (http(502), "uncertain", "not_accepted"),
        (http(503), "not_accepted", "not_accepted"),
        (http(504), "uncertain", "not_accepted"),
        (http(599), "uncertain", "not_accepted"),
        (errors.InvalidDocumentError("bad", document="x"), "rejected", "rejected"),
        (
            errors.FileTooLargeError("big", document="x", size=2, limit=1),
            "rejected",
            "rejected",
        ),
        (
            errors.UnsupportedFileTypeError("txt", document="x", content_type="text/plain"),
            "rejected",
            "rejected",
        ),
        (errors.DocuTrayError("something else"), "rejected", "rejected"),
    ],
    ids=lambda v: repr(v) if isinstance(v, BaseException) else str(v),
)
def test_every_error_has_one_meaning_at_submit_and_at_poll(
    exc: BaseException, submit: str, poll: str
) -> None:
    """Each client error (every class, timeouts before/after sending, each status) is classified."""
    assert classify(exc, stage=SUBMIT) == submit
    assert classify(exc, stage=POLL) == poll


def test_a_busy_connection_pool_is_not_an_outage() -> None:
    """A PoolTimeout (our own pool was busy; nothing sent) is retried, not a shared pause."""
    exc = errors.APITimeoutError("pool", request_sent=False)
    exc.__cause__ = httpx.PoolTimeout("pool")
    assert classify(exc, stage=SUBMIT) is Failure.NOT_ACCEPTED
    assert classify(exc, stage=POLL) is Failure.NOT_ACCEPTED


def test_plain_api_errors_of_401_and_429_are_classified_by_status() -> None:
    """A bare APIError carrying 401 or 429 means the same as its dedicated class."""
    assert classify(errors.APIError("x", status_code=401)) is Failure.CREDENTIALS
    assert classify(errors.APIError("x", status_code=429)) is Failure.THROTTLED


def test_every_exception_class_of_the_client_is_covered() -> None:
    """No class of client/_exceptions.py is left to the catch-all by accident."""
    classes = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.DocuTrayError)
    }
    covered = {
        errors.DocuTrayError,
        errors.APIConnectionError,
        errors.APITimeoutError,
        errors.APIError,
        errors.BadRequestError,
        errors.AuthenticationError,
        errors.PermissionDeniedError,
        errors.NotFoundError,
        errors.ConflictError,
        errors.UnprocessableEntityError,
        errors.RateLimitError,
        errors.InternalServerError,
        errors.InvalidDocumentError,
        errors.FileTooLargeError,
        errors.UnsupportedFileTypeError,
    }
    assert classes == covered


def test_only_credentials_throttling_outages_and_refused_steps_pause() -> None:
    """The pausing kinds are exactly the ones that are not the document's fault."""
    assert {f for f in Failure if f.pauses} == {
        Failure.CREDENTIALS,
        Failure.THROTTLED,
        Failure.UNREACHABLE,
        Failure.PIPELINE,
    }
