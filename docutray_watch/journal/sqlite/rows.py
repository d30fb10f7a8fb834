"""Turning SQLite rows into the store's row objects: JSON columns and `flags` are text."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from docutray_watch.journal.row_mapping import delivery_row, document_row, step_row
from docutray_watch.journal.rows import DeliveryRow, DocumentRow, StepRow


def json_or_none(text: str | None) -> Any:
    """A stored JSON column, or None."""
    return json.loads(text) if text else None


def parse_flags(text: str) -> set[str]:
    """The `flags` column: comma-separated markers."""
    return {f for f in text.split(",") if f}


def document(row: sqlite3.Row) -> DocumentRow:
    """A `documents` row."""
    return document_row(row, decode_json=json_or_none, decode_flags=parse_flags)


def step(row: sqlite3.Row) -> StepRow:
    """A `steps` row."""
    return step_row(row, decode_json=json_or_none)


def delivery(row: sqlite3.Row) -> DeliveryRow:
    """A `deliveries` row."""
    return delivery_row(row)
