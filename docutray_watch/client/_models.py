"""``StepExecutionStatus``: one execution's state as the API reports it, and how to wait on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, ClassVar, Protocol

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from docutray_watch.client._polling import (
    poll_intervals,
    poll_until_complete,
    poll_until_complete_async,
)

__all__ = ["TERMINAL_STATUSES", "AsyncStepExecutionStatus", "StepExecutionStatus"]

TERMINAL_STATUSES = frozenset({"SUCCESS", "ERROR"})


class _StatusSource(Protocol):
    def get_status(self, execution_id: str) -> StepExecutionStatus: ...


class _AsyncStatusSource(Protocol):
    async def get_status(self, execution_id: str) -> AsyncStepExecutionStatus: ...


class StepExecutionStatus(BaseModel):
    """The state of a step execution.

    ``status`` is one of ``ENQUEUED``, ``PROCESSING``, ``SUCCESS``, ``ERROR``, or a status a newer
    service version introduced (kept as given, treated as not yet complete). Fields the service
    adds are kept (``model_extra``). Statuses returned by ``Client`` can ``wait()`` for the end.
    """

    model_config = ConfigDict(extra="allow")

    ENQUEUED: ClassVar[str] = "ENQUEUED"
    PROCESSING: ClassVar[str] = "PROCESSING"
    SUCCESS: ClassVar[str] = "SUCCESS"
    ERROR: ClassVar[str] = "ERROR"

    execution_id: str = Field(
        validation_alias=AliasChoices("execution_id", "id", "conversion_id"),
        description="The execution's ID (the API also calls it id or conversion_id).",
    )
    status: str = Field(description="ENQUEUED, PROCESSING, SUCCESS, ERROR, or a newer status.")
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

    # Where to poll, and what was uploaded (it picks the polling schedule).
    _resource: Any = PrivateAttr(default=None)
    _upload_content_type: str | None = PrivateAttr(default=None)
    _upload_size: int | None = PrivateAttr(default=None)

    @field_validator("status", mode="before")
    @classmethod
    def _status_upper_case(cls, value: Any) -> Any:
        # The API documents upper-case names; "success" from another implementation means the same.
        return value.upper() if isinstance(value, str) else value

    @field_validator("request_timestamp", "response_timestamp", mode="before")
    @classmethod
    def _timestamp_or_raw(cls, value: Any) -> Any:
        if value is None or isinstance(value, datetime):
            return value
        text = str(value)
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return text

    def is_success(self) -> bool:
        """True when the execution finished with data."""
        return self.status == self.SUCCESS

    def is_error(self) -> bool:
        """True when the execution failed."""
        return self.status == self.ERROR

    def is_complete(self) -> bool:
        """True once the execution is SUCCESS or ERROR (it will not change any more)."""
        return self.status in TERMINAL_STATUSES

    def is_terminal(self) -> bool:
        """Same as ``is_complete()``."""
        return self.is_complete()

    def _bind(
        self, resource: object, *, content_type: str | None, size: int | None
    ) -> StepExecutionStatus:
        self._resource = resource
        self._upload_content_type = content_type
        self._upload_size = size
        return self

    def _intervals(self, poll_interval: float | None) -> Iterator[float]:
        return poll_intervals(
            poll_interval, content_type=self._upload_content_type, size=self._upload_size
        )

    def _adopt(self, fresh: StepExecutionStatus) -> None:
        fresh._upload_content_type = self._upload_content_type
        fresh._upload_size = self._upload_size

    def _require_resource(self) -> Any:
        if self._resource is None:
            raise ValueError(
                "This status was not returned by a client, so it cannot poll; "
                "use client.steps.get_status() to get one that can."
            )
        return self._resource

    def wait(
        self,
        *,
        poll_interval: float | None = None,
        timeout: float | None = None,
        on_status: Callable[[StepExecutionStatus], object] | None = None,
    ) -> StepExecutionStatus:
        """Poll until SUCCESS or ERROR and return that status.

        ``poll_interval`` fixes the interval (default: adapted to the uploaded document),
        ``timeout`` bounds the whole wait (default 300 s, then ``APITimeoutError``),
        ``on_status`` is called with every polled status.
        """
        resource: _StatusSource = self._require_resource()

        def fetch() -> StepExecutionStatus:
            fresh = resource.get_status(self.execution_id)
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
        on_status: Callable[[StepExecutionStatus], object] | None = None,
    ) -> StepExecutionStatus:
        """``wait()`` for async code: each status request runs in a worker thread so the event
        loop never blocks; ``on_status`` may be sync or async."""
        resource: _StatusSource = self._require_resource()

        async def fetch() -> StepExecutionStatus:
            fresh = await asyncio.to_thread(resource.get_status, self.execution_id)
            self._adopt(fresh)
            return fresh

        return await poll_until_complete_async(
            self,
            fetch,
            intervals=self._intervals(poll_interval),
            timeout_s=timeout,
            on_status=on_status,
        )


class AsyncStepExecutionStatus(StepExecutionStatus):
    """A status returned by ``AsyncClient``: ``wait()`` and ``wait_async()`` are coroutines."""

    async def _poll(
        self,
        poll_interval: float | None,
        timeout_s: float | None,
        on_status: Callable[[AsyncStepExecutionStatus], object] | None,
    ) -> AsyncStepExecutionStatus:
        resource: _AsyncStatusSource = self._require_resource()

        async def fetch() -> AsyncStepExecutionStatus:
            fresh = await resource.get_status(self.execution_id)
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
        on_status: Callable[[AsyncStepExecutionStatus], object] | None = None,
    ) -> AsyncStepExecutionStatus:
        """Poll until SUCCESS or ERROR and return that status (see ``StepExecutionStatus.wait``);
        ``on_status`` may be sync or async."""
        return await self._poll(poll_interval, timeout, on_status)

    async def wait_async(
        self,
        *,
        poll_interval: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  # the official SDK's name
        on_status: Callable[[AsyncStepExecutionStatus], object] | None = None,
    ) -> AsyncStepExecutionStatus:
        """Same as ``wait()`` (the official SDK's name for it)."""
        return await self._poll(poll_interval, timeout, on_status)
