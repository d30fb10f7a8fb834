"""Plugins and a source's documents: hooks get the document's location intact
(`s3://bucket/key`), `ignore_document` is asked for each object as for a file (and `process
--dry-run` says so), and a listing of over a thousand objects is journaled in batches."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pluggy

from docutray_watch.emulator import EmulatorServer
from docutray_watch.emulator._markers import ERROR_MARKER
from docutray_watch.engine import Engine
from docutray_watch.engine.discovery import INTAKE_BATCH
from docutray_watch.hookspecs import hookimpl
from docutray_watch.journal import DocumentRow, StepRow
from docutray_watch.runner import dry_run_report
from docutray_watch.samples import make_pdf
from docutray_watch.testing import HookRecorder
from tests.s3kit import MotoServer
from tests.sources.conftest import pdf
from tests.sources.test_s3_engine import keys, pm_fixture, run, s3_config

__all__ = ["pm_fixture"]  # the `pm` fixture, used here


class SkipDrafts:
    """A plugin that leaves alone every document whose name starts with `draft`, and notes
    where each archived document was found and went."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Path]] = []
        self.archived: list[tuple[str, str, Any]] = []

    @hookimpl
    def ignore_document(self, pipeline: str, path: Path, location: str) -> str | None:
        self.asked.append((location, path))
        return "a draft" if path.name.startswith("draft") else None

    @hookimpl
    def after_document_archived(self, location: str, outcome: str, destination: Any) -> None:
        self.archived.append((location, outcome, destination))


def test_hooks_get_the_object_location_intact(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """A plugin sees `location` = `s3://bucket/in/key` (with its `//`) in ignore_document,
    on_document_error and after_document_archived, and the move's destination as an s3:// URI;
    `path` keeps the name and suffix."""
    recorder = HookRecorder()
    pm.register(recorder)
    s3.put_object(Bucket=bucket, Key="in/a.pdf", Body=make_pdf(["good"]))
    s3.put_object(Bucket=bucket, Key="in/bad.pdf", Body=make_pdf(["bad"]) + ERROR_MARKER)
    code, lines = run(s3_config(tmp_path, emulator, pm, moto, bucket), pm)
    assert code == 1, lines  # the one failure
    asked = {c.kwargs["location"]: c.kwargs["path"] for c in recorder.calls("ignore_document")}
    assert sorted(asked) == [f"s3://{bucket}/in/a.pdf", f"s3://{bucket}/in/bad.pdf"]
    assert asked[f"s3://{bucket}/in/a.pdf"].name == "a.pdf"
    [error] = recorder.calls("on_document_error")
    assert error.kwargs["location"] == f"s3://{bucket}/in/bad.pdf"
    archived = {
        c.kwargs["location"]: (c.kwargs["outcome"], c.kwargs["destination"])
        for c in recorder.calls("after_document_archived")
    }
    assert archived == {
        f"s3://{bucket}/in/a.pdf": ("success", f"s3://{bucket}/done/a.pdf"),
        f"s3://{bucket}/in/bad.pdf": ("failed", f"s3://{bucket}/failed/bad.pdf"),
    }


def test_a_folder_file_location_is_its_absolute_path(
    tmp_path: Path, emulator: EmulatorServer, pm: pluggy.PluginManager
) -> None:
    """For a watched folder nothing changes: `path` is the file's Path, `location` the same
    path as a string."""
    from docutray_watch.config import parse_config
    from docutray_watch.plugins import config_sink_types

    recorder = HookRecorder()
    pm.register(recorder)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.pdf").write_bytes(make_pdf(["file"]))
    data = {
        "api": {"base_url": emulator.base_url, "api_key": emulator.api_key},
        "state_dir": str(tmp_path / "state"),
        "pipelines": [
            {
                "name": "files",
                "watch": {"path": str(inbox), "settle": 0},
                "steps": ["stp_one"],
                "poll": {"initial": 0.05, "max": 0.2, "timeout": 30},
                "on_success": {"action": "move", "to": str(tmp_path / "done")},
                "sinks": [{"type": "filesystem", "path": str(tmp_path / "results")}],
            }
        ],
    }
    config = parse_config(data, config_dir=tmp_path, sink_types=config_sink_types(pm), environ={})
    code, lines = run(config, pm)
    assert code == 0, lines
    [asked] = recorder.calls("ignore_document")
    assert asked.kwargs["path"] == inbox / "a.pdf"
    assert asked.kwargs["location"] == str(inbox / "a.pdf")
    [archived] = recorder.calls("after_document_archived")
    assert archived.kwargs["location"] == str(inbox / "a.pdf")
    assert archived.kwargs["destination"] == tmp_path / "done" / "a.pdf"


def test_a_plugin_leaves_an_object_alone(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """`ignore_document` is asked for each object: the one it refuses stays in the inbox,
    unsubmitted, and `process` counts it as ignored; the others are processed."""
    plugin = SkipDrafts()
    pm.register(plugin)
    s3.put_object(Bucket=bucket, Key="in/draft-1.pdf", Body=make_pdf(["draft"]))
    s3.put_object(Bucket=bucket, Key="in/final.pdf", Body=make_pdf(["final"]))
    code, lines = run(s3_config(tmp_path, emulator, pm, moto, bucket), pm)
    assert code == 0, lines
    assert keys(s3, bucket, "in/") == ["draft-1.pdf"]
    assert keys(s3, bucket, "done/") == ["final.pdf"]
    assert emulator.stats().executions_created == 1
    assert [loc for loc, _outcome, _dest in plugin.archived] == [f"s3://{bucket}/in/final.pdf"]
    assert any(line.startswith("ignored 1 file(s)") for line in lines), lines


def test_dry_run_shows_a_plugin_reason(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """`process --dry-run` asks the plugins too and prints their reason."""
    pm.register(SkipDrafts())
    s3.put_object(Bucket=bucket, Key="in/draft-1.pdf", Body=pdf("d"))
    s3.put_object(Bucket=bucket, Key="in/final.pdf", Body=pdf("f"))
    lines: list[str] = []
    config = s3_config(tmp_path, emulator, pm, moto, bucket)
    assert dry_run_report(config, echo=lines.append, plugin_manager=pm) == 0
    assert lines[1:] == [
        f"  ignore  s3://{bucket}/in/draft-1.pdf: plugin: a draft",
        f"  take    s3://{bucket}/in/final.pdf",
        "  → would take 1, ignore 1",
    ]


async def test_a_listing_of_over_a_thousand_objects_is_journaled_in_batches(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    moto: MotoServer,
    emulator: EmulatorServer,
    pm: pluggy.PluginManager,
) -> None:
    """1,050 listed objects are all journaled `queued`, in batches of up to INTAKE_BATCH
    (one journal transaction per batch, not per object)."""
    count = 1050
    names = [f"in/doc-{i:04d}.pdf" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=pdf(k)), names))
    engine = Engine(s3_config(tmp_path, emulator, pm, moto, bucket), plugin_manager=pm)
    journaled: list[str] = []

    class Handoff:
        def queued(self, doc: DocumentRow, steps: list[StepRow] | None) -> None:
            journaled.append(doc.path)

        def to_the_end(self, doc: DocumentRow) -> None:
            journaled.append(doc.path)

    engine.discovery.handoff = Handoff()
    batches: list[int] = []
    store = engine.ctx.store
    real = store.add_queued_batch

    async def counted(items: Any) -> Any:
        batches.append(len(items))
        return await real(items)

    store.add_queued_batch = counted  # type: ignore[method-assign]
    await engine.start()
    try:
        async with asyncio.timeout(240):
            while len(journaled) < count:
                await asyncio.sleep(0.2)
    finally:
        await engine.stop(grace=0)
    assert sorted(journaled) == [f"s3://{bucket}/{k}" for k in names]
    assert sum(batches) == count
    assert max(batches) <= INTAKE_BATCH
    assert len(batches) <= 2 * math.ceil(count / INTAKE_BATCH)
