"""How an ERROR result's `error` becomes the one-line reason in the journal and the sidecar."""

from __future__ import annotations

from typing import Any

import pytest

from docutray_watch.engine import _error_text


@pytest.mark.parametrize(
    ("error", "text"),
    [
        ("unreadable scan", "unreadable scan"),
        ({"code": "E42", "message": "unreadable scan"}, "unreadable scan"),
        ({"detail": "no pages"}, "no pages"),
        ({"code": "E42"}, '{"code": "E42"}'),
        ([{"field": "total", "message": "missing"}], '[{"field": "total", "message": "missing"}]'),
        (None, "no error message"),
    ],
)
def test_error_text_is_the_message_or_json(error: Any, text: str) -> None:
    """A message is used as it is; objects without one and lists become JSON, never a repr."""
    assert _error_text(error) == text
