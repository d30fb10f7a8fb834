"""`docutray-watch status` and the status page's `/api/status`: what the journal says, read
without loading the HTTP stack.

Kept apart from `runner` so that `status --json` imports only the config and the journal: it
answers in a fraction of a second whatever the history holds (the counts are kept by the
journal's triggers; the other reads are index lookups).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from docutray_watch.config import Config
from docutray_watch.journal import REQUEST_RATE_KEY, Journal
from docutray_watch.journal.rows import DocumentRow, LatencyRow
from docutray_watch.journal.sqlite.counts import (
    IN_FLIGHT_STATES,
    WAITING_STATES,
    pipeline_counts,
    today_counts,
    utc_day,
)
from docutray_watch.log import hide_signed_urls, mask_secrets

__all__ = ["REQUEST_RATE_KEY", "StatusFacts", "iso_utc", "status_document", "status_report"]


def status_report(
    config: Config, *, failures: int = 10, journal: Journal | None = None
) -> dict[str, Any]:
    """The `status --json` document, which the status page's `GET /api/status` serves as is.

    Built from counts the journal keeps (`journal/sqlite/counts.py`) and indexed reads, so it
    costs the same with a million finished documents as with ten: per pipeline, documents by
    word (finished ones by outcome, the words `process` prints; the others by state), what
    waits, is in flight, and was done or failed today (UTC); the age of the oldest unfinished
    document (null when none); the latest failures; the processing times learned per step.
    Times are ISO 8601 UTC.
    `journal` is an open journal to read (the daemon's page keeps one); else the file is opened.
    """
    if journal is None:
        if not config.journal_path.exists():
            return _status_document(config, None, failures)
        with Journal(config.journal_path) as opened:
            return _status_document(config, opened, failures)
    return _status_document(config, journal, failures)


def _status_document(config: Config, journal: Journal | None, limit: int) -> dict[str, Any]:
    facts = StatusFacts()
    now = time.time()
    if journal is not None:
        conn = journal.conn
        conn.execute("BEGIN")  # one snapshot: counts and failures agree with each other
        try:
            facts = StatusFacts(
                counts=pipeline_counts(conn),
                today=today_counts(conn, utc_day(now)),
                oldest=journal.oldest_pending(),
                recent=journal.recent_failures(limit) if limit > 0 else [],
                superseded=journal.superseded_results(),
                by_type=journal.counts_by_type(),
                type_outcomes=journal.outcomes_by_type(),
                latencies=journal.load_latencies(),
                rate=journal.get_meta(REQUEST_RATE_KEY),
                pause=journal.api_pause(),
            )
        finally:
            conn.execute("COMMIT")
    return status_document(config, facts, journal=str(config.journal_path), now=now)


@dataclass
class StatusFacts:
    """What a journal (SQLite, or the cluster's PostgreSQL) says for `status`."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Documents per pipeline and word (finished ones by outcome, others by state)."""
    today: dict[str, dict[str, int]] = field(default_factory=dict)
    oldest: dict[str, float] = field(default_factory=dict)
    recent: list[DocumentRow] = field(default_factory=list)
    superseded: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    type_outcomes: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """Identified documents per pipeline, type code and word (as `counts`)."""
    latencies: list[LatencyRow] = field(default_factory=list)
    rate: tuple[str, float] | None = None
    pause: tuple[str, float] | None = None


def status_document(
    config: Config, facts: StatusFacts, *, journal: str, now: float
) -> dict[str, Any]:
    """The `status --json` document built from `facts` (`journal` says where they come from)."""
    counts, today, oldest = facts.counts, facts.today, facts.oldest
    rate, pause, recent = facts.rate, facts.pause, facts.recent
    names = list(dict.fromkeys([*(p.name for p in config.pipelines), *counts]))
    return {
        "journal": journal,
        "generated_at": iso_utc(now),
        "pipelines": counts,
        # Every pipeline is listed below, so a script can read a key without checking it is there.
        "queue": {
            name: {
                "waiting": sum(counts.get(name, {}).get(s, 0) for s in WAITING_STATES),
                "in_flight": sum(counts.get(name, {}).get(s, 0) for s in IN_FLIGHT_STATES),
            }
            for name in names
        },
        # Documents whose final action was done today (UTC), by outcome.
        "today": {
            name: {
                "date": utc_day(now),
                "done": sum(today.get(name, {}).get(w, 0) for w in ("success", "duplicate")),
                "failed": sum(today.get(name, {}).get(w, 0) for w in ("failed", "rejected")),
                # Identified as a type no route takes (`otherwise: keep`): left for a person.
                "unrouted": today.get(name, {}).get("unrouted", 0),
            }
            for name in names
        },
        "oldest_pending_age_s": {
            name: round(now - oldest[name], 1) if name in oldest else None for name in names
        },
        # Pipelines with `identify`: documents per identified type code (whatever came next).
        "identified_types": facts.by_type,
        # The same documents per type and word (finished ones by outcome, `unrouted` included;
        # the others by state): the status page's table per type.
        # Every pipeline with `identify` is listed (`{}` before its first identified document).
        "identified_outcomes": {
            **{p.name: {} for p in config.pipelines if p.identify is not None},
            **facts.type_outcomes,
        },
        # Results delivered for a version of a file that changed before its final action.
        "superseded_results": facts.superseded,
        # As the daemon last recorded it (every few seconds while it runs, when it changed).
        "request_rate": None
        if rate is None
        else {
            **json.loads(rate[0]),
            "recorded_at": iso_utc(rate[1]),
            "recorded_age_s": round(max(0.0, now - rate[1]), 1),
        },
        # Why the daemon is not using the API now (key refused, unreachable, a pipeline's step
        # refused), as it last recorded it; null when it is not paused.
        "api_paused": {"reasons": pause[0], "since": iso_utc(pause[1])} if pause else None,
        "failures": [
            {
                "id": d.id,
                "pipeline": d.pipeline,
                "path": d.archived_to or d.path,
                "state": d.state,
                "stage": d.error_stage,
                "reason": hide_signed_urls(mask_secrets(d.error)) if d.error else d.error,
                "when": iso_utc(d.updated_at),
            }
            for d in recent
        ],
        # What the engine learned of each step's processing time, by file size class
        # (0: < 1 MiB, 1: < 10 MiB, 2: larger); it shapes how soon results are polled.
        "learned_latency": [
            {
                "step_id": step_id,
                "size_class": size_class,
                "samples": count,
                "mean_s": round(mean, 3),
                "stdev_s": round(max(variance, 0.0) ** 0.5, 3),
            }
            for step_id, size_class, count, mean, variance in sorted(facts.latencies)
        ],
    }


def iso_utc(timestamp: float) -> str:
    """`2026-12-05T11:13:09Z`: what the JSON logs use."""
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
