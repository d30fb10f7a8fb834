"""Files kept in place (`on_success: keep`): remembered across restarts as one stamp each."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pluggy

from docutray_watch.emulator import EmulatorServer
from docutray_watch.engine import Engine
from docutray_watch.runner import process_once
from docutray_watch.samples import make_pdf
from tests.engine.conftest import ConfigFactory, pipeline_data


def test_kept_files_are_not_taken_again_after_restart_unless_changed(
    tmp_path: Path,
    make_config: ConfigFactory,
    pm: pluggy.PluginManager,
    emulator: EmulatorServer,
) -> None:
    """Three kept files, a restart: the two unchanged ones are left alone, the rewritten one
    is a new document."""
    config = make_config(pipeline_data(tmp_path, on_success={"action": "keep"}))
    inbox = tmp_path / "invoices" / "inbox"
    for name in ("a", "b", "c"):
        (inbox / f"{name}.pdf").write_bytes(make_pdf([name]))
    assert asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _: None)) == 0
    assert emulator.stats().executions_created == 3
    changed = inbox / "b.pdf"
    changed.write_bytes(make_pdf(["b, second version"]))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _: None)) == 0
    assert emulator.stats().executions_created == 4
    assert asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _: None)) == 0
    assert emulator.stats().executions_created == 4


def test_kept_files_are_remembered_as_stamps_not_rows(
    tmp_path: Path,
    make_config: ConfigFactory,
    pm: pluggy.PluginManager,
    emulator: EmulatorServer,
) -> None:
    """After a restart the engine holds one int per kept file and no document row for it."""
    config = make_config(pipeline_data(tmp_path, on_success={"action": "keep"}))
    inbox = tmp_path / "invoices" / "inbox"
    for name in ("a", "b"):
        (inbox / f"{name}.pdf").write_bytes(make_pdf([name]))
    assert asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _: None)) == 0

    async def started() -> tuple[dict[str, object], dict[str, int]]:
        engine = Engine(config, plugin_manager=pm)
        await engine.start()
        try:
            await engine.ctx.documents.kept["invoices"].ready()  # read while the engine starts
            return dict(engine.ctx.documents.known["invoices"]), dict(
                engine.ctx.documents.kept["invoices"]
            )
        finally:
            await engine.stop(grace=0)

    known, kept = asyncio.run(started())
    assert known == {}
    assert sorted(kept) == [str(inbox / "a.pdf"), str(inbox / "b.pdf")]
    assert all(type(stamp) is int for stamp in kept.values())
