"""One document's whole story from the journal, for `docutray-watch show`: where it was found and
went, its steps and executions, its deliveries with their receipts, errors and attempt counts.

Read-only, and safe while the daemon runs (the journal is SQLite in WAL mode).
"""

from __future__ import annotations

import json
from typing import Any

from docutray_watch.config import Config
from docutray_watch.journal import DeliveryRow, DocumentRow, Journal, StepRow
from docutray_watch.status import iso_utc

__all__ = ["document_stories", "render_story"]


def document_stories(config: Config, ref: str) -> list[dict[str, Any]]:
    """Every document whose path or archived path is `ref`, or whose sha256 is or starts with it."""
    if not config.journal_path.exists():
        return []
    with Journal(config.journal_path) as journal:
        return [
            _story(doc, journal.steps_of(doc.id), journal.deliveries_of(doc.id))
            for doc in journal.find_documents(ref)
        ]


def _when(value: float | None) -> str | None:
    return None if value is None else iso_utc(value)


def _receipt(text: str | None) -> Any:
    """A receipt as the sink returned it: a mapping was journaled as JSON, a string as is."""
    if text is None or not text.startswith(("{", "[")):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _story(doc: DocumentRow, steps: list[StepRow], deliveries: list[DeliveryRow]) -> dict[str, Any]:
    step_ids = {s.id: s.step_id for s in steps}
    return {
        "id": doc.id,
        "pipeline": doc.pipeline,
        "name": doc.name,
        "path": doc.path,
        "relative_path": doc.relative_path,
        "archived_to": doc.archived_to,
        "sha256": doc.sha256,
        "size": doc.size,
        "content_type": doc.content_type,
        "state": doc.state,
        "outcome": doc.outcome,
        "runs": doc.attempts,
        "flags": sorted(doc.flags),
        "duplicate_of": doc.duplicate_of,
        "error": doc.error,
        "error_stage": doc.error_stage,
        "error_detail": doc.error_detail,
        "identification": doc.identification,
        "created_at": _when(doc.created_at),
        "updated_at": _when(doc.updated_at),
        "finished_at": _when(doc.finished_at),
        "steps": [
            {
                "step_id": s.step_id,
                "state": s.state,
                "execution_id": s.execution_id,
                "status": s.status,
                "attempts": s.attempts,
                "http_status": s.http_status,
                "error": s.error,
                "submitted_at": _when(s.submitted_at),
                "completed_at": _when(s.completed_at),
            }
            for s in steps
        ],
        "deliveries": [
            {
                "step_id": step_ids.get(d.step_row),
                "sink": d.sink,
                "state": d.state,
                "attempts": d.attempts,
                "receipt": _receipt(d.receipt),
                "error": d.error,
                "delivered_at": _when(d.delivered_at),
            }
            for d in deliveries
        ],
    }


def render_story(story: dict[str, Any]) -> list[str]:
    """The story as lines of text for a terminal."""
    lines = [f"[{story['pipeline']}] {story['relative_path']} (document {story['id']})"]

    def field(label: str, value: Any) -> None:
        if value not in (None, "", []):
            lines.append(f"  {label + ':':<13}{value}")

    field("path", story["path"])
    if story["archived_to"] != story["path"]:
        field("archived to", story["archived_to"])
    field("sha256", story["sha256"])
    if story["size"] is not None:
        field("size", f"{story['size']} bytes, {story['content_type'] or 'unknown type'}")
    outcome = story["outcome"]
    field(
        "state", story["state"] + (f" ({outcome})" if outcome and outcome != story["state"] else "")
    )
    identification = story.get("identification")
    if identification:
        field(
            "identified",
            f"{identification['code']} ({identification['name']}, "
            f"confidence {identification['confidence']:.2f})",
        )
    field("runs", story["runs"] or None)
    field("flags", ", ".join(story["flags"]))
    field("seen", story["created_at"])
    field("finished", story["finished_at"])
    if story["error"]:
        field("error", f"[{story['error_stage']}] {story['error']}")
    if story["steps"]:
        lines.append("  steps:")
    for s in story["steps"]:
        parts = [s["state"], f"{s['attempts']} submission attempt(s)"]
        if s["execution_id"]:
            parts.append(f"execution {s['execution_id']}")
        if s["status"]:
            parts.append(f"status {s['status']}")
        if s["completed_at"]:
            parts.append(f"completed {s['completed_at']}")
        if s["error"]:
            parts.append(f"error: {s['error']}")
        lines.append(f"    {s['step_id']}: " + ", ".join(parts))
    if story["deliveries"]:
        lines.append("  deliveries:")
    for d in story["deliveries"]:
        text = f"    {d['step_id']} -> {d['sink']}: {d['state']}, {d['attempts']} attempt(s)"
        if d["receipt"] is not None:
            receipt = d["receipt"]
            text += f", receipt {receipt if isinstance(receipt, str) else json.dumps(receipt)}"
        if d["error"]:
            text += f", error: {d['error']}"
        lines.append(text)
    return lines
