"""`FakeApi`: a scripted DocuTray API in process, for engine tests (an `httpx.MockTransport`).

Re-exported by `docutray_watch.testing`. Pass ``fake.transport`` to ``Engine(transport=...)``.
Two endpoints, each with a queue of answers a test scripts in advance:

- ``POST /api/steps-async/{step_id}`` (`fake.submit(...)`): when its queue is empty the
  submission is accepted (200, a new ``execution_id``, status ENQUEUED);
- ``GET /api/steps-async/status/{id}`` (`fake.status(...)`): when its queue is empty, an id the
  fake gave out is SUCCESS with `data`, any other id is 404 (which is what the engine's pause
  probe expects of a working key).

An answer is a `Reply` (status, JSON body, headers), an `httpx.Response`, an exception *instance*
raised by the transport (``httpx.ConnectError`` means the request never left, as a refused
connection; ``httpx.ReadTimeout`` that it was sent and the answer lost), or a callable taking
the request and returning one of those (it may be ``async``: to hold a request until an event).
A submission's body is read before its answer is chosen, so a timeout after sending really comes
after the upload, as on the wire.

Every request is recorded (`requests`, `posts`, `status_reads`), and a test waits for one with
``await fake.wait_for(lambda f: len(f.posts) >= 2)`` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Union

import httpx

__all__ = ["Answer", "FakeApi", "Reply", "SeenRequest"]

_SUBMIT = re.compile(r"/api/steps-async/(?P<step>[^/]+)$")
_STATUS = re.compile(r"/api/steps-async/status/(?P<id>[^/]+)$")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status code, JSON body, headers."""

    status_code: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> httpx.Response:
        """As an `httpx.Response`."""
        body = self.json
        if body is None and self.status_code >= 400:
            body = {"error": {"message": f"fake error {self.status_code}"}}
        return httpx.Response(self.status_code, json=body, headers=self.headers)


Answer = Union[  # noqa: UP007 - a runtime alias, readable in 3.11
    Reply,
    httpx.Response,
    BaseException,
    Callable[[httpx.Request], "Answer | Awaitable[Answer]"],
]


@dataclass(frozen=True)
class SeenRequest:
    """A request the fake received: what was asked, when (monotonic), and what it answered."""

    method: str
    path: str
    kind: str  # "submit", "status" or "other"
    key: str  # the step id (submit) or the execution id (status)
    at: float
    body_size: int
    answer: str  # e.g. "200", "401", "ReadTimeout"


class FakeApi:
    """A scripted DocuTray API (see the module docstring)."""

    def __init__(
        self,
        *,
        data: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data = data if data is not None else {"total": "42.00"}
        self.requests: list[SeenRequest] = []
        self._submit: deque[Answer] = deque()
        self._status: deque[Answer] = deque()
        self._ids = itertools.count(1)
        self.issued: list[str] = []
        self._clock = clock
        self._pulse = asyncio.Event()
        self.transport = httpx.MockTransport(self._handle)

    # -- scripting -----------------------------------------------------------------------------

    def submit(self, *answers: Answer) -> FakeApi:
        """Queue answers for the next submissions (then: accepted)."""
        self._submit.extend(answers)
        return self

    def status(self, *answers: Answer) -> FakeApi:
        """Queue answers for the next status reads, probes included (then: SUCCESS / 404)."""
        self._status.extend(answers)
        return self

    def accepted(self) -> Reply:
        """An accepted submission with a new execution id (what an empty queue answers)."""
        execution_id = f"exec_{next(self._ids)}"
        self.issued.append(execution_id)
        return Reply(200, {"execution_id": execution_id, "status": "ENQUEUED"})

    def result(self, execution_id: str, status: str = "SUCCESS", **fields: Any) -> Reply:
        """A status answer for `execution_id` (SUCCESS with `data` unless told otherwise)."""
        body: dict[str, Any] = {
            "execution_id": execution_id,
            "status": status,
            "original_filename": "document.pdf",
            "request_timestamp": "2026-01-15T10:30:00.000Z",
            "response_timestamp": "2026-01-15T10:30:01.000Z",
        }
        if status == "SUCCESS":
            body["data"] = self.data
        if status == "ERROR":
            body["error"] = "the step failed"
        body.update(fields)
        return Reply(200, body)

    # -- what a test reads ---------------------------------------------------------------------

    @property
    def posts(self) -> list[SeenRequest]:
        """The submissions received (whatever their answer)."""
        return [r for r in self.requests if r.kind == "submit"]

    @property
    def status_reads(self) -> list[SeenRequest]:
        """The status reads received, probes included."""
        return [r for r in self.requests if r.kind == "status"]

    async def wait_for(self, condition: Callable[[FakeApi], bool], *, within: float = 10.0) -> None:
        """Wait until `condition(self)` holds (checked at each request). TimeoutError after
        `within` seconds."""
        async with asyncio.timeout(within):
            while not condition(self):
                await self._pulse.wait()

    # -- the transport ---------------------------------------------------------------------------

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        status_match = _STATUS.search(path)
        submit_match = None if status_match else _SUBMIT.search(path)
        at = self._clock()
        size = 0
        answer: Answer
        if submit_match is not None and request.method == "POST":
            kind, key = "submit", submit_match["step"]
            answer = self._submit.popleft() if self._submit else self.accepted()
        elif status_match is not None and request.method == "GET":
            kind, key = "status", status_match["id"]
            if self._status:
                answer = self._status.popleft()
            elif key in self.issued:
                answer = self.result(key)
            else:
                answer = Reply(404, {"error": {"message": f"execution {key} not found"}})
        else:
            kind, key, answer = "other", "", Reply(404)
        while callable(answer) and not isinstance(answer, (Reply, httpx.Response)):
            produced = answer(request)
            answer = await produced if inspect.isawaitable(produced) else produced
        never_sent = isinstance(answer, (httpx.ConnectError, httpx.ConnectTimeout))
        if not never_sent:
            size = len(await request.aread())  # the upload happens before any answer
        label = (
            type(answer).__name__ if isinstance(answer, BaseException) else str(answer.status_code)
        )
        self.requests.append(SeenRequest(request.method, path, kind, key, at, size, label))
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()
        if isinstance(answer, BaseException):
            if isinstance(answer, httpx.RequestError):
                answer.request = request
            raise answer
        return answer if isinstance(answer, httpx.Response) else answer.response()
