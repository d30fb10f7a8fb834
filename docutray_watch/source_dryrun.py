"""`process --dry-run` for a pipeline whose source is not a folder (an S3 bucket…): what the
source lists, each document taken or ignored and why — the pipeline's name rules and the
plugins' `ignore_document` answers included, as the engine applies them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy

from docutray_watch import intake
from docutray_watch.delivery import describe
from docutray_watch.plugins import call_first
from docutray_watch.sources.base import DryRunEntry
from docutray_watch.sources.registry import build_source, collect_source_types

__all__ = ["dry_run_source"]


async def dry_run_source(
    pipeline: Any, echo: Callable[[str], Any], pm: pluggy.PluginManager
) -> None:
    """Echo one line per document the pipeline's source lists, then the tally."""
    source_config = pipeline.source_config()
    source = build_source(pipeline.name, source_config, collect_source_types(pm)[0])
    echo(f"pipeline {pipeline.name} ({getattr(source_config, 'root', source_config.type)}):")
    try:
        entries = await source.dry_run_listing(
            lambda relative: intake.rule_for_name(pipeline, relative)
        )
    except Exception as exc:  # noqa: BLE001 - reported, then the next pipeline
        echo(f"  cannot list it: {describe(exc)}")
        return
    finally:
        await source.stop()
    taken = 0
    for entry in entries:
        if entry.decision == "taken":
            reason = call_first(
                pm,
                "ignore_document",
                pipeline=pipeline.name,
                path=Path(entry.identity),
                location=entry.identity,
            )
            if reason:
                entry = DryRunEntry(entry.identity, "ignored", f"plugin: {reason}")
        verb = "take" if entry.decision == "taken" else "ignore"
        echo(f"  {verb:<7} {entry.identity}" + ("" if verb == "take" else f": {entry.why}"))
        taken += verb == "take"
    echo(f"  → would take {taken}, ignore {len(entries) - taken}")
