"""`validate`'s online check of routed pipelines: every route key (and `identify.options`) must
be a document type code of the account (`GET /api/document-types`, every page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from docutray_watch.config import Config, format_path

if TYPE_CHECKING:
    from docutray_watch.client import AsyncClient

__all__ = ["account_type_codes", "check_routes", "unknown_route_keys"]

_PAGE_LIMIT = 100  # the largest page the API honours: fewest requests


async def account_type_codes(client: AsyncClient) -> set[str]:
    """Every document type code of the account, across all pages."""
    first = await client.document_types.list(limit=_PAGE_LIMIT)
    return {item.codeType async for item in first.auto_paging_iter_async()}


def unknown_route_keys(config: Config, codes: set[str]) -> list[str]:
    """One line per route key or option that is not a code in `codes`, naming its YAML path
    (`pipelines[0].routes.foo: …`)."""
    known = ", ".join(sorted(codes)) or "none"
    lines = []
    for index, pipeline in enumerate(config.pipelines):
        if pipeline.identify is None:
            continue
        for code in pipeline.route_codes:
            if code not in codes:
                where = format_path(("pipelines", index, "routes", code))
                lines.append(f"{where}: no document type {code!r} in the account (known: {known})")
        for position, code in enumerate(pipeline.identify.options or ()):
            if code not in codes and code not in pipeline.route_codes:
                where = format_path(("pipelines", index, "identify", "options", position))
                lines.append(f"{where}: no document type {code!r} in the account (known: {known})")
    return lines


async def check_routes(client: AsyncClient, config: Config, echo: Callable[[str], None]) -> bool:
    """Report unknown route keys; True when every routed pipeline's keys are known."""
    if all(pipeline.identify is None for pipeline in config.pipelines):
        return True
    codes = await account_type_codes(client)
    lines = unknown_route_keys(config, codes)
    for line in lines:
        echo(line)
    if not lines:
        echo(f"routes: every document type code is known to the account ({len(codes)} types)")
    return not lines
