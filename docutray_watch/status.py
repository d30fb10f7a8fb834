"""`docutray-watch status`: what the journal says, read without loading the HTTP stack.

Kept apart from `runner` so that `status --json` imports only the config and the journal: it
answers in a fraction of a second whatever the history holds (the counts are kept by the
journal's triggers; the other reads are index lookups).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from docutray_watch.config import Config
from docutray_watch.journal import Journal

__all__ = ["REQUEST_RATE_KEY", "status_report"]

# The journal meta row the daemon keeps its request rate in: `engine.REQUEST_RATE_KEY` (not
# imported from there: that would load the HTTP client; a test checks they agree).
REQUEST_RATE_KEY = "request_rate"


def status_report(config: Config, *, failures: int = 10) -> dict[str, Any]:
    """Counts per pipeline (finished documents by outcome, the words `process` prints; the others
    by state), the age of each pipeline's oldest unfinished document (null when none) and recent
    failures; times are ISO 8601 UTC."""
    counts: dict[str, dict[str, int]] = {}
    oldest: dict[str, float] = {}
    recent: list[Any] = []
    superseded: dict[str, int] = {}
    rate: tuple[str, float] | None = None
    if config.journal_path.exists():
        with Journal(config.journal_path) as journal:
            counts = journal.counted_outcomes()  # kept by triggers: no scan
            oldest = journal.oldest_pending()
            recent = journal.recent_failures(failures)
            superseded = journal.superseded_results()
            rate = journal.get_meta(REQUEST_RATE_KEY)
    now = time.time()
    names = dict.fromkeys([*(p.name for p in config.pipelines), *counts])
    return {
        "journal": str(config.journal_path),
        "pipelines": counts,
        # Every pipeline is listed, so a script can read the key without checking it is there.
        "oldest_pending_age_s": {
            name: round(now - oldest[name], 1) if name in oldest else None for name in names
        },
        # Results delivered for a version of a file that changed before its final action.
        "superseded_results": superseded,
        # As the daemon last recorded it (every few seconds while it runs, when it changed).
        "request_rate": None
        if rate is None
        else {
            **json.loads(rate[0]),
            "recorded_at": _iso_utc(rate[1]),
            "recorded_age_s": round(max(0.0, now - rate[1]), 1),
        },
        "failures": [
            {
                "pipeline": d.pipeline,
                "path": d.archived_to or d.path,
                "state": d.state,
                "stage": d.error_stage,
                "reason": d.error,
                "when": _iso_utc(d.updated_at),
            }
            for d in recent
        ],
    }


def _iso_utc(timestamp: float) -> str:
    """`2026-12-05T11:13:09Z`: what the JSON logs use."""
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
