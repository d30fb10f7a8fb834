"""``Page`` and ``AsyncPage``: one page of a listing, and the way to the next ones.

The official SDK's names: ``data``, ``total``, ``page``, ``limit``, ``has_next_page()``,
``next_page()``, ``iter_pages()``/``auto_paging_iter()`` (``..._async`` on ``AsyncPage``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Generic, TypeVar

from docutray_watch.client._models import Pagination

__all__ = ["AsyncPage", "Page"]

T = TypeVar("T")


class _PageBase(Generic[T]):
    def __init__(self, data: list[T], pagination: Pagination) -> None:
        self._data = data
        self._pagination = pagination

    @property
    def data(self) -> list[T]:
        """The items of this page."""
        return self._data

    @property
    def total(self) -> int:
        """Items matching the query, across all pages."""
        return self._pagination.total

    @property
    def page(self) -> int:
        """This page's number, from 1."""
        return self._pagination.page

    @property
    def limit(self) -> int:
        """Items per page."""
        return self._pagination.limit

    def has_next_page(self) -> bool:
        """Whether more items follow this page (an empty page ends the listing)."""
        return bool(self._data) and self.page * self.limit < self.total

    def __iter__(self) -> Iterator[T]:
        """The items of this page only (``auto_paging_iter`` goes across pages)."""
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.page} ({len(self)} of {self.total})>"


class Page(_PageBase[T]):
    """A page of a listing, for ``Client``."""

    def __init__(
        self, data: list[T], pagination: Pagination, fetch_page: Callable[[int], Page[T]]
    ) -> None:
        super().__init__(data, pagination)
        self._fetch_page = fetch_page

    def next_page(self) -> Page[T]:
        """The next page (``StopIteration`` when there is none, as the official SDK)."""
        if not self.has_next_page():
            raise StopIteration("No more pages")
        return self._fetch_page(self.page + 1)

    def iter_pages(self) -> Iterator[Page[T]]:
        """This page, then each following one."""
        page = self
        yield page
        while page.has_next_page():
            page = page.next_page()
            yield page

    def auto_paging_iter(self) -> Iterator[T]:
        """Every item from this page on, fetching pages as needed."""
        for page in self.iter_pages():
            yield from page.data


class AsyncPage(_PageBase[T]):
    """A page of a listing, for ``AsyncClient``."""

    def __init__(
        self,
        data: list[T],
        pagination: Pagination,
        fetch_page: Callable[[int], Awaitable[AsyncPage[T]]],
    ) -> None:
        super().__init__(data, pagination)
        self._fetch_page = fetch_page

    async def next_page(self) -> AsyncPage[T]:
        """The next page (``StopAsyncIteration`` when there is none: a coroutine cannot raise
        the official SDK's ``StopIteration``, Python turns it into a ``RuntimeError``)."""
        if not self.has_next_page():
            raise StopAsyncIteration("No more pages")
        return await self._fetch_page(self.page + 1)

    async def iter_pages_async(self) -> AsyncIterator[AsyncPage[T]]:
        """This page, then each following one."""
        page = self
        yield page
        while page.has_next_page():
            page = await page.next_page()
            yield page

    async def auto_paging_iter_async(self) -> AsyncIterator[T]:
        """Every item from this page on, fetching pages as needed."""
        async for page in self.iter_pages_async():
            for item in page.data:
                yield item
