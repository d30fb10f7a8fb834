"""What a request is, independent of the sync/async client that sends it and of its retries.

Its own module so the retry policy (``_retry``) and the clients (``_base``) both depend on it
rather than on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from docutray_watch.client._multipart import MultipartBody

__all__ = ["RequestSpec", "UploadHints"]


@dataclass(frozen=True)
class UploadHints:
    """What was uploaded, as far as it is known; it picks the polling schedule."""

    content_type: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class RequestSpec:
    """A request, independent of the sync/async client that sends it."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str | int] | None = None
    multipart: MultipartBody | None = None
    hints: UploadHints = field(default_factory=UploadHints)

    @property
    def replayable(self) -> bool:
        """Whether the body can be sent again (False for an already-read stream)."""
        return self.multipart is None or self.multipart.replayable
