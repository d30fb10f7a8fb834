"""Journal retention while the daemon runs: long-finished documents are forgotten at start and
then daily (`journal.retention_days`); a kept file whose row is forgotten is forgotten in memory
too once it is gone, so a new file at that path is a new document."""

from __future__ import annotations

import asyncio
import time

import structlog

from docutray_watch import retention
from docutray_watch.delivery import describe
from docutray_watch.engine.context import Context
from docutray_watch.engine.reading import exists

__all__ = ["PRUNE_INTERVAL", "prune_journal", "retention_loop"]

log = structlog.get_logger("docutray_watch.engine")

PRUNE_INTERVAL = 86_400.0  # journal retention runs at start and then daily


async def retention_loop(ctx: Context) -> None:
    """Forget long-finished documents at start and then every PRUNE_INTERVAL seconds."""
    while True:
        days = ctx.config.journal.retention_days
        if days is not None:
            try:
                await prune_journal(ctx, days)
            except Exception as exc:  # noqa: BLE001 - retention must never stop the engine
                log.error("journal_prune_failed", error=describe(exc))
        await asyncio.sleep(PRUNE_INTERVAL)


async def prune_journal(ctx: Context, older_than_days: float) -> retention.PruneResult:
    """Forget documents that finished more than `older_than_days` days ago."""
    started = time.monotonic()
    result = await asyncio.to_thread(
        retention.prune_journal_file,
        ctx.config.journal_path,
        older_than_days=older_than_days,
    )
    for pipeline, path, _doc_id in result.forgotten_kept:
        # The kept file is gone: a new file there is a new document. (Checked again: one
        # kept there since the prune read its rows stays remembered.)
        kept = ctx.documents.kept.get(pipeline)
        if kept is not None and not exists(path):
            kept.pop(path, None)
    log.info(
        "journal_pruned",
        forgotten=result.forgotten,
        kept_in_place=result.kept_in_place,
        retention_days=older_than_days,
        duration_s=round(time.monotonic() - started, 3),
    )
    return result
