"""The document types resource: the account's document types (``GET /api/document-types``),
one page at a time."""

from __future__ import annotations

from functools import cached_property, partial
from typing import Any

import httpx

from docutray_watch.client._base import (
    build_list_document_types_request,
    json_object,
    validate_body,
)
from docutray_watch.client._models import DocumentType, Pagination
from docutray_watch.client._pagination import AsyncPage, Page
from docutray_watch.client._response import RawResponse
from docutray_watch.client.resources._common import AsyncSender, Sender

__all__ = [
    "AsyncDocumentTypes",
    "AsyncDocumentTypesWithRawResponse",
    "DocumentTypes",
    "DocumentTypesWithRawResponse",
]


def _page_parts(
    response: httpx.Response, page: int | None
) -> tuple[list[DocumentType], Pagination]:
    body = json_object(response)
    items = body.get("data", [])
    data = [validate_body(response, DocumentType, item) for item in items]
    raw_pagination: Any = body.get("pagination")
    if raw_pagination is None:
        # No pagination block: the answer is the whole listing, on one page.
        raw_pagination = {"total": len(data), "page": page or 1, "limit": max(len(data), 1)}
    return data, validate_body(response, Pagination, raw_pagination)


class DocumentTypes:
    """The account's document types, for ``Client``."""

    def __init__(self, client: Sender) -> None:
        self._client = client

    def list(
        self, *, page: int | None = None, limit: int | None = None, search: str | None = None
    ) -> Page[DocumentType]:
        """One page of document types (``page`` from 1, ``limit`` per page, ``search`` filters
        by name); the ``Page`` fetches the following pages on demand."""
        return self.with_raw_response.list(page=page, limit=limit, search=search).parse()

    @cached_property
    def with_raw_response(self) -> DocumentTypesWithRawResponse:
        """The same methods, returning the ``RawResponse``."""
        return DocumentTypesWithRawResponse(self)


class DocumentTypesWithRawResponse:
    """``DocumentTypes`` methods that return the HTTP response (``.parse()`` gives the page)."""

    def __init__(self, document_types: DocumentTypes) -> None:
        self._document_types = document_types

    def list(
        self, *, page: int | None = None, limit: int | None = None, search: str | None = None
    ) -> RawResponse[Page[DocumentType]]:
        """``DocumentTypes.list`` returning the raw response."""
        spec = build_list_document_types_request(page=page, limit=limit, search=search)
        response = self._document_types._client._send(spec)
        fetch = partial(self._fetch, limit=limit, search=search)

        def parse(answer: httpx.Response) -> Page[DocumentType]:
            return Page(*_page_parts(answer, page), fetch_page=fetch)

        return RawResponse(response, parse)

    def _fetch(self, number: int, *, limit: int | None, search: str | None) -> Page[DocumentType]:
        return self.list(page=number, limit=limit, search=search).parse()


class AsyncDocumentTypes:
    """The account's document types, for ``AsyncClient``."""

    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def list(
        self, *, page: int | None = None, limit: int | None = None, search: str | None = None
    ) -> AsyncPage[DocumentType]:
        """One page of document types (see ``DocumentTypes.list``)."""
        raw = await self.with_raw_response.list(page=page, limit=limit, search=search)
        return raw.parse()

    @cached_property
    def with_raw_response(self) -> AsyncDocumentTypesWithRawResponse:
        """The same methods, returning the ``RawResponse``."""
        return AsyncDocumentTypesWithRawResponse(self)


class AsyncDocumentTypesWithRawResponse:
    """``AsyncDocumentTypes`` methods that return the HTTP response (``.parse()`` gives the
    page)."""

    def __init__(self, document_types: AsyncDocumentTypes) -> None:
        self._document_types = document_types

    async def list(
        self, *, page: int | None = None, limit: int | None = None, search: str | None = None
    ) -> RawResponse[AsyncPage[DocumentType]]:
        """``AsyncDocumentTypes.list`` returning the raw response."""
        spec = build_list_document_types_request(page=page, limit=limit, search=search)
        response = await self._document_types._client._send(spec)
        fetch = partial(self._fetch, limit=limit, search=search)

        def parse(answer: httpx.Response) -> AsyncPage[DocumentType]:
            return AsyncPage(*_page_parts(answer, page), fetch_page=fetch)

        return RawResponse(response, parse)

    async def _fetch(
        self, number: int, *, limit: int | None, search: str | None
    ) -> AsyncPage[DocumentType]:
        raw = await self.list(page=number, limit=limit, search=search)
        return raw.parse()
