"""Parse a ``Retry-After`` value (RFC 9110: delay seconds or an HTTP date) into seconds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["parse_retry_after", "rate_limit_wait"]


def rate_limit_wait(headers: Mapping[str, str], body: Any) -> float | None:
    """Seconds a 429 answer asks to wait: its ``Retry-After`` header, else the body's
    ``retryAfter`` (the header takes precedence); None when neither says."""
    from_header = parse_retry_after(headers.get("retry-after"))
    if from_header is not None:
        return from_header
    return parse_retry_after(body.get("retryAfter")) if isinstance(body, dict) else None


def parse_retry_after(value: Any, *, now: datetime | None = None) -> float | None:
    """Seconds to wait, never negative; None when ``value`` is missing or unreadable.

    Accepts a number, a numeric string, or an HTTP date (``Wed, 21 Oct 2015 07:28:00 GMT``),
    which is measured from ``now`` (default: the current UTC time).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _seconds_until(text, now)
    else:
        return None
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def _seconds_until(http_date: str, now: datetime | None) -> float:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return math.nan
    if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses as naive
        when = when.replace(tzinfo=UTC)
    return (when - (now or datetime.now(UTC))).total_seconds()
