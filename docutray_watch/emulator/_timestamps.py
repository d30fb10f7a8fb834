"""ISO-8601 timestamps the way the DocuTray API writes them."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(epoch_seconds: float) -> str:
    """Format epoch seconds as ``2024-01-15T10:30:00.000Z`` (UTC, milliseconds)."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
