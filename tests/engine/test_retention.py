"""The engine's journal retention: documents older than journal.retention_days go at start."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pluggy
import pytest

from docutray_watch.config import Config
from docutray_watch.engine import Engine
from docutray_watch.engine import housekeeping as engine_module
from docutray_watch.journal import Journal
from tests.engine.conftest import ConfigFactory, pipeline_data
from tests.test_retention import DAY, Clock, finished_document


class TestEngine:
    def test_engine_prunes_at_start(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """With retention_days set, a started engine forgets documents older than that."""
        monkeypatch.setattr(engine_module, "PRUNE_INTERVAL", 3600.0)
        config: Config = make_config(
            pipeline_data(tmp_path, on_success={"action": "keep"}), journal={"retention_days": 7}
        )
        with Journal(config.journal_path, clock=Clock(time.time() - 30 * DAY)) as journal:
            old = finished_document(
                journal, "/gone/a.png", sha="a" * 64, archived_to=None, pipeline="invoices"
            )
            journal.conn.execute("PRAGMA wal_checkpoint")
        with Journal(config.journal_path) as journal:
            recent = finished_document(
                journal, "/gone/b.png", sha="b" * 64, archived_to=None, pipeline="invoices"
            )

        async def scenario() -> set[int]:
            engine = Engine(config, plugin_manager=pm)
            await engine.start()
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    with sqlite3.connect(config.journal_path) as db:
                        ids = {r[0] for r in db.execute("SELECT id FROM documents")}
                    if old not in ids:
                        return ids
                    await asyncio.sleep(0.05)
                return ids
            finally:
                await engine.stop()

        ids = asyncio.run(scenario())
        assert old not in ids
        assert recent in ids
