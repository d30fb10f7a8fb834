"""What an API failure means for the engine: one function, `classify`, used by submit and poll.

The client retries a single request by its own rules (`client._retry`: a connection never made,
and, for a status read, timeouts and "try later" answers); whatever it raises in the end comes
here, and the answer says what the engine does next — the engine no longer decides anywhere else:

============  ================================================================================
kind          what the engine does
============  ================================================================================
not_accepted  the service did not take the request: try again after a backoff (503, 5xx or a
              timeout on a status read)
uncertain     a submission may have started an execution (timeout or dropped connection after
              the body went out, 500/502/504 to a POST): the at-most-once-more rule applies
rejected      the document failed (400, 409, 413, 415, 422, any other 4xx; a local pre-check;
              404 on a status read: the service does not know the execution)
credentials   the API key was refused (401): pause everything until the key works again
throttled     429: pause every request for Retry-After
unreachable   no connection to the API at all: pause everything until it answers again
pipeline      403 or 404 on a submission: this pipeline's step id or permissions are wrong;
              pause only that pipeline
============  ================================================================================

Why `unreachable` is its own kind and not `not_accepted`: both are safe to retry, but they differ
in scope. A 503 or a slow status read concerns one request, and the document's own backoff and
deadline apply. A connection that cannot even be opened concerns every document at once: retrying
each one on its own would fail them all at their deadlines for something none of them caused, and
would flood the log. So it pauses everything (shared, not counted against `poll.timeout`), and
`process` can tell "the API is down" apart to give up after `--api-wait`. Only a connection never
established counts (``request_sent`` False, except a wait for a connection of our own pool, which
is local congestion); a timeout after sending is about that request.

Why 403/404 are `pipeline` on submit but not on poll: a submission names the pipeline's step id,
so 404 there means the step id is wrong and 403 that this key may not use it — true of every
document of that pipeline, and of none of the other pipelines. A status read names an execution the
service gave us: 404 means that execution is unknown (this document fails), and 403 means the key
lost access to it, which is again about the key and the pipeline, not the document.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import httpx

from docutray_watch.client import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    InvalidDocumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)

__all__ = ["Failure", "Stage", "classify"]

Stage = Literal["submit", "poll"]

# A 5xx that proves nothing was started, even for a POST.
_NOT_STARTED_STATUSES = frozenset({503})


class Failure(StrEnum):
    """What an API failure means (see the module docstring)."""

    NOT_ACCEPTED = "not_accepted"
    UNCERTAIN = "uncertain"
    REJECTED = "rejected"
    CREDENTIALS = "credentials"
    THROTTLED = "throttled"
    UNREACHABLE = "unreachable"
    PIPELINE = "pipeline"

    @property
    def pauses(self) -> bool:
        """Whether this failure pauses work (shared or per pipeline) instead of one document."""
        return self in _PAUSING


_PAUSING = frozenset(
    {Failure.CREDENTIALS, Failure.THROTTLED, Failure.UNREACHABLE, Failure.PIPELINE}
)


def classify(exc: BaseException, *, stage: Stage = "submit") -> Failure:
    """What `exc`, raised by a submission (`stage="submit"`) or a status read (`"poll"`), means.

    Any exception that is not an API error (a bug, a local file error) is `rejected`: the caller
    handles local file errors itself, before asking.
    """
    if isinstance(exc, APIConnectionError):
        if isinstance(exc.__cause__, httpx.PoolTimeout):
            return Failure.NOT_ACCEPTED  # our own connection pool was busy: not an outage
        if not exc.request_sent:
            return Failure.UNREACHABLE
        # A status read is idempotent: just read again. A submission may have started one.
        return Failure.NOT_ACCEPTED if stage == "poll" else Failure.UNCERTAIN
    if isinstance(exc, AuthenticationError):
        return Failure.CREDENTIALS
    if isinstance(exc, RateLimitError):
        return Failure.THROTTLED
    if isinstance(exc, PermissionDeniedError):
        return Failure.PIPELINE
    if isinstance(exc, NotFoundError):
        return Failure.PIPELINE if stage == "submit" else Failure.REJECTED
    if isinstance(exc, InvalidDocumentError):
        return Failure.REJECTED
    if isinstance(exc, APIError):
        status = exc.status_code
        if status == 401:
            return Failure.CREDENTIALS
        if status == 429:
            return Failure.THROTTLED
        if status >= 500:
            if stage == "poll" or status in _NOT_STARTED_STATUSES:
                return Failure.NOT_ACCEPTED
            return Failure.UNCERTAIN  # 500/502/504 to a POST: the execution may exist
        return Failure.REJECTED
    return Failure.REJECTED
