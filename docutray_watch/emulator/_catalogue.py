"""The emulated account's document types, as ``GET /api/document-types`` pages over them."""

from __future__ import annotations

from typing import Any

from docutray_watch.emulator.config import DocumentTypeSpec, EmulatorConfig

DEFAULT_PAGE_LIMIT = 20
"""Items per page when the request gives no ``limit``."""

MAX_PAGE_LIMIT = 100
"""The largest ``limit`` honoured (larger ones are cut to it)."""

_CREATED_AT = "2024-01-01T00:00:00.000Z"


def _item(spec: DocumentTypeSpec) -> dict[str, Any]:
    return {
        "id": f"dt_{spec.code}",
        "name": spec.name,
        "codeType": spec.code,
        "description": spec.description,
        "isPublic": False,
        "isDraft": False,
        "status": "active",
        "createdAt": _CREATED_AT,
        "updatedAt": _CREATED_AT,
    }


def document_types_page(
    config: EmulatorConfig, *, page: int, limit: int, search: str | None
) -> dict[str, Any]:
    """One page of the configured types; ``search`` keeps those whose name or code contains it
    (case-insensitive)."""
    specs = list(config.document_types)
    if search:
        needle = search.casefold()
        specs = [s for s in specs if needle in s.name.casefold() or needle in s.code.casefold()]
    start = (page - 1) * limit
    return {
        "data": [_item(spec) for spec in specs[start : start + limit]],
        "pagination": {"total": len(specs), "page": page, "limit": limit},
    }
