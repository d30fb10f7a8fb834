"""The steps resource: start an execution (``run_async``) and read its status (``get_status``).

``Steps`` and ``AsyncSteps`` mirror each other name for name; the requests themselves are built
by ``_base`` and sent by the owning client.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property, partial
from typing import Any

from docutray_watch.client._base import (
    RequestSpec,
    build_get_status_request,
    build_run_async_request,
    parse_status,
)
from docutray_watch.client._files import FileInput
from docutray_watch.client._models import AsyncStepExecutionStatus, StepExecutionStatus
from docutray_watch.client._response import RawResponse
from docutray_watch.client.resources._common import AsyncSender, Sender, build_off_loop

__all__ = ["AsyncSteps", "AsyncStepsWithRawResponse", "Steps", "StepsWithRawResponse"]


class Steps:
    """Step executions, for ``Client``."""

    def __init__(self, client: Sender) -> None:
        self._client = client

    def run_async(
        self,
        step_id: str,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_metadata: Mapping[str, Any] | None = None,
        filename: str | None = None,
    ) -> StepExecutionStatus:
        """Start step ``step_id`` on one document and return its ENQUEUED status.

        Give exactly one of ``file`` (a path, bytes or a binary file object; streamed),
        ``url`` or ``file_base64`` (plain or a data URI), else ``ValueError``. ``content_type``
        overrides the sniffed type, ``filename`` the name sent with a file upload, and
        ``document_metadata`` is echoed back in the statuses. Documents over 100 MiB or of an
        unsupported type raise an ``InvalidDocumentError`` before anything is sent.
        """
        return self.with_raw_response.run_async(
            step_id,
            file=file,
            url=url,
            file_base64=file_base64,
            content_type=content_type,
            document_metadata=document_metadata,
            filename=filename,
        ).parse()

    def get_status(self, execution_id: str) -> StepExecutionStatus:
        """The current status of execution ``execution_id``."""
        return self.with_raw_response.get_status(execution_id).parse()

    @cached_property
    def with_raw_response(self) -> StepsWithRawResponse:
        """The same methods, returning the ``RawResponse``."""
        return StepsWithRawResponse(self)


class StepsWithRawResponse:
    """``Steps`` methods that return the HTTP response (``.parse()`` gives the status)."""

    def __init__(self, steps: Steps) -> None:
        self._steps = steps

    def run_async(
        self,
        step_id: str,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_metadata: Mapping[str, Any] | None = None,
        filename: str | None = None,
    ) -> RawResponse[StepExecutionStatus]:
        """``Steps.run_async`` returning the raw response."""
        spec = build_run_async_request(
            step_id,
            file=file,
            url=url,
            file_base64=file_base64,
            content_type=content_type,
            document_metadata=document_metadata,
            filename=filename,
        )
        return self._send(spec)

    def get_status(self, execution_id: str) -> RawResponse[StepExecutionStatus]:
        """``Steps.get_status`` returning the raw response."""
        return self._send(build_get_status_request(execution_id))

    def _send(self, spec: RequestSpec) -> RawResponse[StepExecutionStatus]:
        response = self._steps._client._send(spec)
        parse = partial(
            parse_status, model=StepExecutionStatus, resource=self._steps, hints=spec.hints
        )
        return RawResponse(response, parse)


class AsyncSteps:
    """Step executions, for ``AsyncClient``."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def run_async(
        self,
        step_id: str,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_metadata: Mapping[str, Any] | None = None,
        filename: str | None = None,
    ) -> AsyncStepExecutionStatus:
        """Start step ``step_id`` on one document and return its ENQUEUED status (see
        ``Steps.run_async``); file reads happen in worker threads."""
        raw = await self.with_raw_response.run_async(
            step_id,
            file=file,
            url=url,
            file_base64=file_base64,
            content_type=content_type,
            document_metadata=document_metadata,
            filename=filename,
        )
        return raw.parse()

    async def get_status(self, execution_id: str) -> AsyncStepExecutionStatus:
        """The current status of execution ``execution_id``."""
        raw = await self.with_raw_response.get_status(execution_id)
        return raw.parse()

    @cached_property
    def with_raw_response(self) -> AsyncStepsWithRawResponse:
        """The same methods, returning the ``RawResponse``."""
        return AsyncStepsWithRawResponse(self)


class AsyncStepsWithRawResponse:
    """``AsyncSteps`` methods that return the HTTP response (``.parse()`` gives the status)."""

    def __init__(self, steps: AsyncSteps) -> None:
        self._steps = steps

    async def run_async(
        self,
        step_id: str,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_metadata: Mapping[str, Any] | None = None,
        filename: str | None = None,
    ) -> RawResponse[AsyncStepExecutionStatus]:
        """``AsyncSteps.run_async`` returning the raw response."""
        spec = await build_off_loop(
            partial(
                build_run_async_request,
                step_id,
                file=file,
                url=url,
                file_base64=file_base64,
                content_type=content_type,
                document_metadata=document_metadata,
                filename=filename,
            )
        )
        return await self._send(spec)

    async def get_status(self, execution_id: str) -> RawResponse[AsyncStepExecutionStatus]:
        """``AsyncSteps.get_status`` returning the raw response."""
        return await self._send(build_get_status_request(execution_id))

    async def _send(self, spec: RequestSpec) -> RawResponse[AsyncStepExecutionStatus]:
        response = await self._steps._client._send(spec)
        parse = partial(
            parse_status, model=AsyncStepExecutionStatus, resource=self._steps, hints=spec.hints
        )
        return RawResponse(response, parse)
