"""The status page: one HTML page with hand-drawn SVG plots, served by the daemon on its own
listener (`web.listen`), with `GET /api/status` (the `status --json` document) and
`GET /api/live` (the daemon's in-memory figures: throughput ring, API state, sinks)."""

from __future__ import annotations

from docutray_watch.web.app import StatusPage
from docutray_watch.web.live import MinuteRing, api_state_of

__all__ = ["MinuteRing", "StatusPage", "api_state_of"]
