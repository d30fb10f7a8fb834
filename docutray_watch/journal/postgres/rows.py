"""Turning PostgreSQL rows into the store's row objects: JSON and arrays arrive decoded."""

from __future__ import annotations

from sqlalchemy import RowMapping

from docutray_watch.journal.row_mapping import delivery_row, document_row, step_row
from docutray_watch.journal.rows import DeliveryRow, DocumentRow, StepRow

__all__ = ["delivery", "document", "step"]


def document(row: RowMapping) -> DocumentRow:
    """A `documents` row."""
    return document_row(row)


def step(row: RowMapping) -> StepRow:
    """A `steps` row."""
    return step_row(row)


def delivery(row: RowMapping) -> DeliveryRow:
    """A `deliveries` row."""
    return delivery_row(row)
