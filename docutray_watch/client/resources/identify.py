"""The identify resource: which document type a document is.

``run`` answers at once (``POST /api/identify``); ``run_async`` starts an identification
(``POST /api/identify-async``) whose status ``get_status`` reads and ``wait()`` polls. Requests
are built and sent by the same machinery as steps, so the same POST retry rule holds: resent
only when the service provably did not receive it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property, partial

import httpx

from docutray_watch.client._base import (
    IDENTIFY_ASYNC_PATH,
    IDENTIFY_PATH,
    RequestSpec,
    build_identify_request,
    build_identify_status_request,
    parse_status,
    validate_body,
)
from docutray_watch.client._files import FileInput
from docutray_watch.client._models import (
    AsyncIdentificationStatus,
    IdentificationResult,
    IdentificationStatus,
)
from docutray_watch.client._response import RawResponse
from docutray_watch.client.resources._common import AsyncSender, Sender, build_off_loop

__all__ = ["AsyncIdentify", "AsyncIdentifyWithRawResponse", "Identify", "IdentifyWithRawResponse"]


def _parse_result(response: httpx.Response) -> IdentificationResult:
    return validate_body(response, IdentificationResult)


class Identify:
    """Document type identification, for ``Client``."""

    def __init__(self, client: Sender) -> None:
        self._client = client

    def run(
        self,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_type_code_options: Sequence[str] | None = None,
        filename: str | None = None,
    ) -> IdentificationResult:
        """Identify one document's type and return ``document_type`` and ``alternatives``.

        Inputs as ``Steps.run_async``: exactly one of ``file`` (streamed), ``url`` or
        ``file_base64``, else ``ValueError``; ``content_type`` overrides the sniffed type.
        ``document_type_code_options`` limits the candidates to those codes.
        """
        return self.with_raw_response.run(
            file=file,
            url=url,
            file_base64=file_base64,
            content_type=content_type,
            document_type_code_options=document_type_code_options,
            filename=filename,
        ).parse()

    def run_async(
        self,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_type_code_options: Sequence[str] | None = None,
        filename: str | None = None,
    ) -> IdentificationStatus:
        """Start an identification and return its ENQUEUED status (``wait()`` polls it); the
        arguments are ``run``'s."""
        return self.with_raw_response.run_async(
            file=file,
            url=url,
            file_base64=file_base64,
            content_type=content_type,
            document_type_code_options=document_type_code_options,
            filename=filename,
        ).parse()

    def get_status(self, identification_id: str) -> IdentificationStatus:
        """The current status of identification ``identification_id``."""
        return self.with_raw_response.get_status(identification_id).parse()

    @cached_property
    def with_raw_response(self) -> IdentifyWithRawResponse:
        """The same methods, returning the ``RawResponse``."""
        return IdentifyWithRawResponse(self)


class IdentifyWithRawResponse:
    """``Identify`` methods that return the HTTP response (``.parse()`` gives the model)."""

    def __init__(self, identify: Identify) -> None:
        self._identify = identify

    def run(
        self,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_type_code_options: Sequence[str] | None = None,
        filename: str | None = None,
    ) -> RawResponse[IdentificationResult]:
        """``Identify.run`` returning the raw response."""
        spec = build_identify_request(
            IDENTIFY_PATH,
            file=file,
            url=url,
            file_base64=file_base64,
            content_type=content_type,
            document_type_code_options=document_type_code_options,
            filename=filename,
        )
        return RawResponse(self._identify._client._send(spec), _parse_result)

    def run_async(
        self,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_type_code_options: Sequence[str] | None = None,
        filename: str | None = None,
    ) -> RawResponse[IdentificationStatus]:
        """``Identify.run_async`` returning the raw response."""
        spec = build_identify_request(
            IDENTIFY_ASYNC_PATH,
            file=file,
            url=url,
            file_base64=file_base64,
            content_type=content_type,
            document_type_code_options=document_type_code_options,
            filename=filename,
        )
        return self._status(spec)

    def get_status(self, identification_id: str) -> RawResponse[IdentificationStatus]:
        """``Identify.get_status`` returning the raw response."""
        return self._status(build_identify_status_request(identification_id))

    def _status(self, spec: RequestSpec) -> RawResponse[IdentificationStatus]:
        response = self._identify._client._send(spec)
        parse = partial(
            parse_status, model=IdentificationStatus, resource=self._identify, hints=spec.hints
        )
        return RawResponse(response, parse)


class AsyncIdentify:
    """Document type identification, for ``AsyncClient``."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def run(
        self,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_type_code_options: Sequence[str] | None = None,
        filename: str | None = None,
    ) -> IdentificationResult:
        """Identify one document's type (see ``Identify.run``); file reads happen in worker
        threads."""
        raw = await self.with_raw_response.run(
            file=file,
            url=url,
            file_base64=file_base64,
            content_type=content_type,
            document_type_code_options=document_type_code_options,
            filename=filename,
        )
        return raw.parse()

    async def run_async(
        self,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_type_code_options: Sequence[str] | None = None,
        filename: str | None = None,
    ) -> AsyncIdentificationStatus:
        """Start an identification and return its ENQUEUED status (``await status.wait()``
        polls it); see ``Identify.run``."""
        raw = await self.with_raw_response.run_async(
            file=file,
            url=url,
            file_base64=file_base64,
            content_type=content_type,
            document_type_code_options=document_type_code_options,
            filename=filename,
        )
        return raw.parse()

    async def get_status(self, identification_id: str) -> AsyncIdentificationStatus:
        """The current status of identification ``identification_id``."""
        raw = await self.with_raw_response.get_status(identification_id)
        return raw.parse()

    @cached_property
    def with_raw_response(self) -> AsyncIdentifyWithRawResponse:
        """The same methods, returning the ``RawResponse``."""
        return AsyncIdentifyWithRawResponse(self)


class AsyncIdentifyWithRawResponse:
    """``AsyncIdentify`` methods that return the HTTP response (``.parse()`` gives the model)."""

    def __init__(self, identify: AsyncIdentify) -> None:
        self._identify = identify

    async def run(
        self,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_type_code_options: Sequence[str] | None = None,
        filename: str | None = None,
    ) -> RawResponse[IdentificationResult]:
        """``AsyncIdentify.run`` returning the raw response."""
        spec = await build_off_loop(
            partial(
                build_identify_request,
                IDENTIFY_PATH,
                file=file,
                url=url,
                file_base64=file_base64,
                content_type=content_type,
                document_type_code_options=document_type_code_options,
                filename=filename,
            )
        )
        return RawResponse(await self._identify._client._send(spec), _parse_result)

    async def run_async(
        self,
        *,
        file: FileInput | None = None,
        url: str | None = None,
        file_base64: str | None = None,
        content_type: str | None = None,
        document_type_code_options: Sequence[str] | None = None,
        filename: str | None = None,
    ) -> RawResponse[AsyncIdentificationStatus]:
        """``AsyncIdentify.run_async`` returning the raw response."""
        spec = await build_off_loop(
            partial(
                build_identify_request,
                IDENTIFY_ASYNC_PATH,
                file=file,
                url=url,
                file_base64=file_base64,
                content_type=content_type,
                document_type_code_options=document_type_code_options,
                filename=filename,
            )
        )
        return await self._status(spec)

    async def get_status(self, identification_id: str) -> RawResponse[AsyncIdentificationStatus]:
        """``AsyncIdentify.get_status`` returning the raw response."""
        return await self._status(build_identify_status_request(identification_id))

    async def _status(self, spec: RequestSpec) -> RawResponse[AsyncIdentificationStatus]:
        response = await self._identify._client._send(spec)
        parse = partial(
            parse_status,
            model=AsyncIdentificationStatus,
            resource=self._identify,
            hints=spec.hints,
        )
        return RawResponse(response, parse)
