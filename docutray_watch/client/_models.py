"""The statuses the API reports (step executions, identifications), how to wait on them, and
the identification and document-type models."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from docutray_watch.client._polling import (
    poll_intervals,
    poll_until_complete,
    poll_until_complete_async,
)

__all__ = [
    "TERMINAL_STATUSES",
    "AsyncIdentificationStatus",
    "AsyncStepExecutionStatus",
    "DocumentType",
    "DocumentTypeMatch",
    "IdentificationResult",
    "IdentificationStatus",
    "Pagination",
    "PollableStatus",
    "StepExecutionStatus",
]

TERMINAL_STATUSES = frozenset({"SUCCESS", "ERROR"})


class _StatusSource(Protocol):
    def get_status(self, poll_id: str, /) -> Any: ...


class _AsyncStatusSource(Protocol):
    async def get_status(self, poll_id: str, /) -> Any: ...


def _timestamp_or_raw(value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        return value
    text = str(value)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return text


class PollableStatus(BaseModel):
    """What every asynchronous job's status shares: the status names, the ``is_*`` tests and
    ``wait()``. Subclasses name their id field in ``_id_field`` and the job in ``_job_name``.

    ``status`` is one of ``ENQUEUED``, ``PROCESSING``, ``SUCCESS``, ``ERROR``, or a status a newer
    service version introduced (kept as given, treated as not yet complete). Fields the service
    adds are kept (``model_extra``).
    """

    model_config = ConfigDict(extra="allow")

    ENQUEUED: ClassVar[str] = "ENQUEUED"
    PROCESSING: ClassVar[str] = "PROCESSING"
    SUCCESS: ClassVar[str] = "SUCCESS"
    ERROR: ClassVar[str] = "ERROR"

    _id_field: ClassVar[str]
    _job_name: ClassVar[str]
    _getter_hint: ClassVar[str]

    status: str = Field(description="ENQUEUED, PROCESSING, SUCCESS, ERROR, or a newer status.")

    # Where to poll, and what was uploaded (it picks the polling schedule).
    _resource: Any = PrivateAttr(default=None)
    _upload_content_type: str | None = PrivateAttr(default=None)
    _upload_size: int | None = PrivateAttr(default=None)

    @field_validator("status", mode="before")
    @classmethod
    def _status_upper_case(cls, value: Any) -> Any:
        # The API documents upper-case names; "success" from another implementation means the same.
        return value.upper() if isinstance(value, str) else value

    @property
    def _poll_id(self) -> str:
        """The job's id, whatever the subclass calls it."""
        return str(getattr(self, self._id_field))

    def _poll_name(self) -> str:
        """The job, as messages name it (``Step execution exec_1``)."""
        return f"{self._job_name} {self._poll_id}"

    def is_success(self) -> bool:
        """True when the job finished with a result."""
        return self.status == self.SUCCESS

    def is_error(self) -> bool:
        """True when the job failed."""
        return self.status == self.ERROR

    def is_complete(self) -> bool:
        """True once the job is SUCCESS or ERROR (it will not change any more)."""
        return self.status in TERMINAL_STATUSES

    def is_terminal(self) -> bool:
        """Same as ``is_complete()``."""
        return self.is_complete()

    def _bind(self, resource: object, *, content_type: str | None, size: int | None) -> Self:
        self._resource = resource
        self._upload_content_type = content_type
        self._upload_size = size
        return self

    def _intervals(self, poll_interval: float | None) -> Iterator[float]:
        return poll_intervals(
            poll_interval, content_type=self._upload_content_type, size=self._upload_size
        )

    def _adopt(self, fresh: PollableStatus) -> None:
        fresh._upload_content_type = self._upload_content_type
        fresh._upload_size = self._upload_size

    def _require_resource(self) -> Any:
        if self._resource is None:
            raise ValueError(
                "This status was not returned by a client, so it cannot poll; "
                f"use {self._getter_hint} to get one that can."
            )
        return self._resource

    def wait(
        self,
        *,
        poll_interval: float | None = None,
        timeout: float | None = None,
        on_status: Callable[[Self], object] | None = None,
    ) -> Self:
        """Poll until SUCCESS or ERROR and return that status.

        ``poll_interval`` fixes the interval (default: adapted to the uploaded document),
        ``timeout`` bounds the whole wait (default 300 s, then ``APITimeoutError``),
        ``on_status`` is called with every polled status.
        """
        resource: _StatusSource = self._require_resource()

        def fetch() -> Any:  # the resource answers a status of this class
            fresh = resource.get_status(self._poll_id)
            self._adopt(fresh)
            return fresh

        return poll_until_complete(
            self,
            fetch,
            intervals=self._intervals(poll_interval),
            timeout_s=timeout,
            on_status=on_status,
        )

    async def wait_async(
        self,
        *,
        poll_interval: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  # the official SDK's name
        on_status: Callable[[Self], object] | None = None,
    ) -> Self:
        """``wait()`` for async code: each status request runs in a worker thread so the event
        loop never blocks; ``on_status`` may be sync or async."""
        resource: _StatusSource = self._require_resource()

        async def fetch() -> Self:
            fresh: Self = await asyncio.to_thread(resource.get_status, self._poll_id)
            self._adopt(fresh)
            return fresh

        return await poll_until_complete_async(
            self,
            fetch,
            intervals=self._intervals(poll_interval),
            timeout_s=timeout,
            on_status=on_status,
        )


class StepExecutionStatus(PollableStatus):
    """The state of a step execution (see ``PollableStatus``); statuses returned by ``Client``
    can ``wait()`` for the end."""

    _id_field: ClassVar[str] = "execution_id"
    _job_name: ClassVar[str] = "Step execution"
    _getter_hint: ClassVar[str] = "client.steps.get_status()"

    execution_id: str = Field(
        validation_alias=AliasChoices("execution_id", "id", "conversion_id"),
        description="The execution's ID (the API also calls it id or conversion_id).",
    )
    data: Any = Field(default=None, description="The extracted data, when SUCCESS.")
    error: str | dict[str, Any] | list[Any] | None = Field(
        default=None, description="What went wrong, when ERROR: a message or an object."
    )
    original_filename: str | None = Field(default=None, description="The uploaded file's name.")
    request_timestamp: datetime | str | None = Field(
        default=None, description="When the execution started (raw string if not ISO-8601)."
    )
    response_timestamp: datetime | str | None = Field(
        default=None, description="When it finished (raw string if not ISO-8601)."
    )
    step_id: str | None = Field(default=None, description="The step that ran.")

    @field_validator("request_timestamp", "response_timestamp", mode="before")
    @classmethod
    def _timestamp_or_raw(cls, value: Any) -> Any:
        return _timestamp_or_raw(value)


class _AsyncWaiting(PollableStatus):
    """For statuses returned by ``AsyncClient``: ``wait()`` and ``wait_async()`` are coroutines
    that await the async resource's ``get_status``."""

    async def _poll(
        self,
        poll_interval: float | None,
        timeout_s: float | None,
        on_status: Callable[[Self], object] | None,
    ) -> Self:
        resource: _AsyncStatusSource = self._require_resource()

        async def fetch() -> Self:
            fresh: Self = await resource.get_status(self._poll_id)
            self._adopt(fresh)
            return fresh

        return await poll_until_complete_async(
            self,
            fetch,
            intervals=self._intervals(poll_interval),
            timeout_s=timeout_s,
            on_status=on_status,
        )

    async def wait(  # type: ignore[override]  # the async client's wait is awaited
        self,
        *,
        poll_interval: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  # the official SDK's name
        on_status: Callable[[Self], object] | None = None,
    ) -> Self:
        """Poll until SUCCESS or ERROR and return that status (see ``PollableStatus.wait``);
        ``on_status`` may be sync or async."""
        return await self._poll(poll_interval, timeout, on_status)

    async def wait_async(
        self,
        *,
        poll_interval: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  # the official SDK's name
        on_status: Callable[[Self], object] | None = None,
    ) -> Self:
        """Same as ``wait()`` (the official SDK's name for it)."""
        return await self._poll(poll_interval, timeout, on_status)


class AsyncStepExecutionStatus(_AsyncWaiting, StepExecutionStatus):
    """A step execution status returned by ``AsyncClient``: ``wait()`` and ``wait_async()`` are
    coroutines."""


class DocumentTypeMatch(BaseModel):
    """A document type the identification matched, with its confidence (0-1)."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(description="The document type's code (e.g. invoice).")
    name: str = Field(description="The document type's name.")
    confidence: float = Field(description="How sure the service is, from 0 to 1.")


class IdentificationResult(BaseModel):
    """The answer of a synchronous identification (``identify.run``)."""

    model_config = ConfigDict(extra="allow")

    document_type: DocumentTypeMatch = Field(description="The most likely document type.")
    alternatives: list[DocumentTypeMatch] = Field(
        default_factory=list, description="Other candidates, by decreasing confidence."
    )


class IdentificationStatus(PollableStatus):
    """The state of an asynchronous identification (see ``PollableStatus``); on SUCCESS it
    carries ``document_type`` and ``alternatives``, on ERROR ``error``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    _id_field: ClassVar[str] = "identification_id"
    _job_name: ClassVar[str] = "Identification"
    _getter_hint: ClassVar[str] = "client.identify.get_status()"

    identification_id: str = Field(
        validation_alias=AliasChoices("identification_id", "id"),
        description="The identification's ID (some answers call it id).",
    )
    status_url: str | None = Field(default=None, description="Where to read the status.")
    document_type: DocumentTypeMatch | None = Field(
        default=None, description="The most likely document type, when SUCCESS."
    )
    alternatives: list[DocumentTypeMatch] | None = Field(
        default=None, description="Other candidates by decreasing confidence, when SUCCESS."
    )
    error: str | dict[str, Any] | list[Any] | None = Field(
        default=None, description="What went wrong, when ERROR: a message or an object."
    )
    original_filename: str | None = Field(default=None, description="The uploaded file's name.")
    request_timestamp: datetime | str | None = Field(
        default=None, description="When the identification started (raw string if not ISO)."
    )
    response_timestamp: datetime | str | None = Field(
        default=None, description="When it finished (raw string if not ISO-8601)."
    )

    @field_validator("request_timestamp", "response_timestamp", mode="before")
    @classmethod
    def _timestamp_or_raw(cls, value: Any) -> Any:
        return _timestamp_or_raw(value)


class AsyncIdentificationStatus(_AsyncWaiting, IdentificationStatus):
    """An identification status returned by ``AsyncClient``: ``wait()`` and ``wait_async()``
    are coroutines."""


class Pagination(BaseModel):
    """Where a page sits in a listing."""

    model_config = ConfigDict(extra="allow")

    total: int = Field(description="Items matching the query, across all pages.")
    page: int = Field(description="This page's number, from 1.")
    limit: int = Field(description="Items per page.")


class DocumentType(BaseModel):
    """A document type of the account (``document_types.list``); the API's camelCase names."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    codeType: str  # the API's and the official SDK's name
    description: str | None = None
    isPublic: bool = False
    isDraft: bool = False
    status: str | None = None
    createdAt: datetime | None = None
    updatedAt: datetime | None = None
    jsonSchema: dict[str, Any] | None = None
