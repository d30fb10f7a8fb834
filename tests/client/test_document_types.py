"""The document types resource, sync and async: one page, its parameters, paging on, raw
responses and errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from docutray_watch.client import (
    APIError,
    AsyncClient,
    AsyncPage,
    AuthenticationError,
    Client,
    DocumentType,
    Page,
    RawResponse,
)

from .conftest import FakeAPI, Flavor, json_response


def _type(code: str) -> dict[str, Any]:
    return {"id": f"dt_{code}", "name": code.title(), "codeType": code, "isPublic": True}


def page_answer(codes: list[str], *, page: int, limit: int, total: int) -> httpx.Response:
    body = {
        "data": [_type(code) for code in codes],
        "pagination": {"total": total, "page": page, "limit": limit},
    }
    return json_response(200, body)


def _query(path: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(path).query))


async def _collect(flavor: Flavor, page: Page[DocumentType] | AsyncPage[DocumentType]) -> list[str]:
    if isinstance(page, AsyncPage):
        return [item.codeType async for item in page.auto_paging_iter_async()]
    return [item.codeType for item in page.auto_paging_iter()]


class TestList:
    async def test_first_page(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """``list()`` reads page 1 of /api/document-types into typed document types."""
        api.queue(page_answer(["invoice", "receipt"], page=1, limit=20, total=2))
        page = await flavor.call(client.document_types.list)
        assert isinstance(page, AsyncPage if flavor.is_async else Page)
        assert [t.codeType for t in page] == ["invoice", "receipt"]
        assert page.data[0] == DocumentType(**_type("invoice"))
        assert (page.total, page.page, page.limit, len(page)) == (2, 1, 20, 2)
        assert not page.has_next_page()
        (seen,) = api.seen
        assert seen.method == "GET"
        assert urlsplit(seen.path).path == "/api/document-types"
        assert _query(seen.path) == {"page": "1"}

    async def test_parameters_are_sent(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """``page``, ``limit`` and ``search`` go in the query string."""
        api.queue(page_answer(["invoice"], page=3, limit=5, total=11))
        page = await flavor.call(client.document_types.list, page=3, limit=5, search="inv oice")
        assert _query(api.seen[0].path) == {"page": "3", "limit": "5", "search": "inv oice"}
        assert page.page == 3

    async def test_auto_paging_fetches_the_following_pages(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """Iterating across pages asks for the next page with the same limit and search."""
        api.queue(
            page_answer(["a", "b"], page=1, limit=2, total=5),
            page_answer(["c", "d"], page=2, limit=2, total=5),
            page_answer(["e"], page=3, limit=2, total=5),
        )
        first = await flavor.call(client.document_types.list, limit=2, search="x")
        assert await _collect(flavor, first) == ["a", "b", "c", "d", "e"]
        assert [_query(s.path) for s in api.seen] == [
            {"page": str(n), "limit": "2", "search": "x"} for n in (1, 2, 3)
        ]

    async def test_next_page_past_the_end_stops(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """``next_page()`` on the last page raises StopIteration as the official SDK (the async
        page StopAsyncIteration, since a coroutine cannot raise StopIteration)."""
        api.queue(page_answer(["a"], page=1, limit=2, total=1))
        page = await flavor.call(client.document_types.list)
        if isinstance(page, AsyncPage):
            with pytest.raises(StopAsyncIteration):
                await page.next_page()
        else:
            with pytest.raises(StopIteration):
                page.next_page()
        assert len(api.seen) == 1

    async def test_answer_without_pagination_is_one_page(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """A body with ``data`` only is taken as the whole listing."""
        api.queue(json_response(200, {"data": [_type("invoice")]}))
        page = await flavor.call(client.document_types.list)
        assert (page.total, len(page), page.has_next_page()) == (1, 1, False)

    @pytest.mark.parametrize("kwargs", [{"page": 0}, {"limit": 0}])
    async def test_bad_paging_arguments(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI, kwargs: dict[str, int]
    ) -> None:
        """A page below 1 or a limit below 1 raises ValueError before sending."""
        with pytest.raises(ValueError, match="must be >= 1"):
            await flavor.call(client.document_types.list, **kwargs)
        assert api.seen == []

    async def test_errors(self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI) -> None:
        """A 401 raises AuthenticationError; a malformed item raises APIError."""
        api.queue(json_response(401, {"error": "Invalid API key"}))
        with pytest.raises(AuthenticationError):
            await flavor.call(client.document_types.list)
        api.queue(json_response(200, {"data": [{"name": "no id"}]}))
        with pytest.raises(APIError, match="unexpected body"):
            await flavor.call(client.document_types.list)

    async def test_raw_response(
        self, flavor: Flavor, client: Client | AsyncClient, api: FakeAPI
    ) -> None:
        """``with_raw_response.list`` gives the HTTP answer; ``parse()`` the page."""
        api.queue(page_answer(["invoice"], page=1, limit=20, total=1))
        raw = await flavor.call(client.document_types.with_raw_response.list, search="inv")
        assert isinstance(raw, RawResponse)
        assert raw.status_code == 200
        assert raw.json()["pagination"]["total"] == 1
        assert [t.codeType for t in raw.parse()] == ["invoice"]
