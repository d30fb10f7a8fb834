"""The final action on a source file (move, delete or keep) and the failure sidecar beside it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import structlog

from docutray_watch import archive
from docutray_watch.engine.context import Context, now
from docutray_watch.engine.reading import absolute, exists
from docutray_watch.journal import DocumentRow

__all__ = ["failure_details", "file_action"]

log = structlog.get_logger("docutray_watch.engine")


async def file_action(
    ctx: Context, doc: DocumentRow, action: str, folder: Path | None, failed: bool
) -> Path | None:
    """Apply `action` to the document's file; where it went (None: deleted, kept or gone).

    A move journals its destination first (a crash between the two completes the same move),
    and a failed document's sidecar is written before the file moves next to it.
    """
    source = Path(doc.path)
    marker = ctx.pipelines[doc.pipeline].config.folder.ready_marker
    details = await failure_details(ctx, doc) if failed else None
    destination: Path | None = None
    if action == "move":
        assert folder is not None
        destination = Path(doc.archive_to) if doc.archive_to else None
        target_dir = Path(folder) / Path(doc.relative_path).parent
        if destination is None and absolute(target_dir / source.name) == absolute(source):
            destination = source  # a retried document already lives in that folder
        if destination is None:
            destination = await asyncio.to_thread(_choose_destination, target_dir, source.name)
            await ctx.store.archive_intent(doc.id, str(destination))
        if details is not None:
            details["moved_to"] = str(destination)
            await asyncio.to_thread(archive.write_sidecar, destination, details)
        try:
            if destination != source:
                destination = await asyncio.to_thread(
                    archive.move_file, source, destination, sha256=doc.sha256
                )
        except FileNotFoundError:
            log.warning(
                "document_vanished",
                pipeline=doc.pipeline,
                doc=doc.name,
                path=doc.path,
                note="the source file was gone before its final move",
            )
            destination = None
    elif action == "delete":
        await asyncio.to_thread(archive.remove_file, source)
    elif details is not None:
        await asyncio.to_thread(_sidecar_if_present, source, details)
    if not failed:
        # A retried document succeeded: its old sidecar no longer tells the truth.
        sidecar = archive.sidecar_path(source)
        if exists(sidecar):  # usually there is none: one lstat, no thread trip
            await asyncio.to_thread(archive.remove_file, sidecar)
    if marker:
        await asyncio.to_thread(archive.remove_file, Path(str(source) + marker))
    return destination


async def failure_details(ctx: Context, doc: DocumentRow) -> dict[str, object]:
    """What the `<name>.error.json` sidecar of a failed document says."""
    steps = await ctx.store.steps_of(doc.id)
    step_ids = {s.id: s.step_id for s in steps}
    detail = doc.error_detail or {}
    return {
        "document": doc.name,
        "pipeline": doc.pipeline,
        "source_path": doc.path,
        "outcome": doc.outcome or doc.state,
        "reason": doc.error,
        "stage": doc.error_stage,
        "step_id": detail.get("step_id"),
        "execution_id": detail.get("execution_id"),
        "http_status": detail.get("http_status"),
        "sink": detail.get("sink"),
        "sha256": doc.sha256,
        "size": doc.size,
        "content_type": doc.content_type,
        # A delivery failure counts its sink's attempts; others the document's runs.
        "attempts": detail.get("attempts", doc.attempts),
        "flags": sorted(doc.flags),
        "identification": doc.identification,
        "time": now().isoformat().replace("+00:00", "Z"),
        "steps": [
            {
                "step_id": s.step_id,
                "state": s.state,
                "execution_id": s.execution_id,
                "status": s.status,
                "error": s.error,
                "http_status": s.http_status,
            }
            for s in steps
        ],
        "deliveries": [
            {
                "sink": d.sink,
                "step_id": step_ids.get(d.step_row),
                "state": d.state,
                "attempts": d.attempts,
                "error": d.error,
            }
            for d in await ctx.store.deliveries_of(doc.id)
        ],
    }


def _sidecar_if_present(source: Path, details: dict[str, object]) -> None:
    if os.path.lexists(source):
        archive.write_sidecar(source, details)


def _choose_destination(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return archive.unique_destination(folder, name)
