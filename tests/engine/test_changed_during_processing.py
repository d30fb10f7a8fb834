"""A file that changes while it is processed: its results never describe other bytes than the
ones archived (issue 15, item 1). The windows are opened with hooks, not sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pluggy
import pytest

from docutray_watch import Document, ResultRecord, hookimpl
from docutray_watch._testkit import MemorySink
from docutray_watch.config import Config
from docutray_watch.journal import SCHEMA_VERSION, Journal
from docutray_watch.runner import process_once, status_report
from docutray_watch.samples import make_pdf
from tests.engine.conftest import ConfigFactory, pipeline_data

OLD = make_pdf(["first version"])
NEW = make_pdf(["second version, a little longer than the first"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(config: Config, pm: pluggy.PluginManager) -> int:
    return asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _line: None))


def memory_records() -> list[ResultRecord]:
    return [r for sink in MemorySink.instances for r in sink.records.values()]


class Rewriter:
    """Rewrites the document once, from the hook named `at` (the first time it fires)."""

    def __init__(self, path: Path, at: str, data: bytes = NEW) -> None:
        self.path, self.at, self.data = path, at, data
        self.done = False

    def _rewrite(self, hook: str) -> None:
        if hook == self.at and not self.done:
            self.done = True
            self.path.write_bytes(self.data)

    @hookimpl
    def document_discovered(self, document: Document) -> None:
        if document.name == self.path.name:
            self._rewrite("document_discovered")

    @hookimpl
    def after_document_result(self, document: Document) -> None:
        self._rewrite("after_document_result")

    @hookimpl
    def after_document_delivered(self, document: Document) -> None:
        self._rewrite("after_document_delivered")


def pipeline(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return pipeline_data(tmp_path, sinks=[{"type": "memory"}], **overrides)


def documents(config: Config) -> list[dict[str, Any]]:
    with sqlite3.connect(config.journal_path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM documents ORDER BY id")]


def delivery_states(config: Config, doc_id: int) -> list[str]:
    with sqlite3.connect(config.journal_path) as conn:
        rows = conn.execute("SELECT state FROM deliveries WHERE document_id = ?", (doc_id,))
        return [r[0] for r in rows]


class TestChangedBeforeDelivery:
    def test_nothing_is_delivered_for_the_old_version_and_the_new_one_is_processed(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """A file rewritten after its result arrived: no delivery for the old bytes, the file is
        taken again, and what is delivered and archived is the new version."""
        config = make_config(pipeline(tmp_path))
        source = tmp_path / "invoices" / "inbox" / "a.pdf"
        source.write_bytes(OLD)
        pm.register(Rewriter(source, "after_document_result"), name="rewriter")
        assert run(config, pm) == 0
        records = memory_records()
        assert [(r.document.sha256, r.document.size) for r in records] == [(sha(NEW), len(NEW))]
        assert (tmp_path / "invoices" / "done" / "a.pdf").read_bytes() == NEW
        old, new = documents(config)
        assert (old["state"], old["sha256"]) == ("superseded", sha(OLD))
        assert old["error_stage"] == "changed"
        assert old["archived_to"] is None
        assert delivery_states(config, old["id"]) == ["dropped"]
        assert (new["state"], new["sha256"]) == ("archived", sha(NEW))

    def test_an_error_result_for_bytes_since_replaced_is_no_failure(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """An ERROR result for a version the file no longer holds (a half-written file, say):
        no on_document_error, nothing in failed/; the new version is processed."""
        config = make_config(pipeline(tmp_path))
        source = tmp_path / "invoices" / "inbox" / "a.pdf"
        source.write_bytes(OLD + b"DOCUTRAY-EMULATOR:ERROR")
        pm.register(Rewriter(source, "after_document_result"), name="rewriter")
        errors: list[str] = []

        class Errors:
            @hookimpl
            def on_document_error(self, error: str) -> None:
                errors.append(error)

        pm.register(Errors(), name="errors")
        assert run(config, pm) == 0
        assert errors == []
        assert not (tmp_path / "invoices" / "failed").exists()
        assert (tmp_path / "invoices" / "done" / "a.pdf").read_bytes() == NEW
        assert [d["state"] for d in documents(config)] == ["superseded", "archived"]

    def test_with_on_change_fail_the_file_goes_to_failed_with_the_reason(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """on_change: fail: nothing delivered, the file is in failed/ with a sidecar saying it
        changed while it was processed."""
        config = make_config(pipeline(tmp_path, on_change="fail"))
        source = tmp_path / "invoices" / "inbox" / "a.pdf"
        source.write_bytes(OLD)
        pm.register(Rewriter(source, "after_document_result"), name="rewriter")
        assert run(config, pm) == 1
        assert memory_records() == []
        failed = tmp_path / "invoices" / "failed"
        assert (failed / "a.pdf").read_bytes() == NEW
        sidecar = json.loads((failed / "a.pdf.error.json").read_text())
        assert sidecar["stage"] == "changed"
        assert "changed while it was processed" in sidecar["reason"]
        (doc,) = documents(config)
        assert doc["state"] == "failed"


class TestChangedBeforeTheFinalAction:
    @pytest.mark.parametrize("action", ["move", "keep", "delete"])
    def test_the_file_is_taken_again_and_the_delivered_results_are_superseded(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        action: str,
    ) -> None:
        """A change after delivery, just before the move/keep/delete: the file is taken again,
        the earlier results are marked superseded (journal and `status`), and the file ends
        where its action puts it with the results of its last version."""
        on_success: dict[str, Any] = {"action": action}
        if action == "move":
            on_success["to"] = str(tmp_path / "invoices" / "done")
        config = make_config(pipeline(tmp_path, on_success=on_success))
        source = tmp_path / "invoices" / "inbox" / "a.pdf"
        source.write_bytes(OLD)
        pm.register(Rewriter(source, "after_document_delivered"), name="rewriter")
        assert run(config, pm) == 0
        delivered = sorted((r.document.size, r.document.sha256) for r in memory_records())
        assert delivered == sorted([(len(OLD), sha(OLD)), (len(NEW), sha(NEW))])
        old, new = documents(config)
        assert old["state"] == "superseded"
        assert delivery_states(config, old["id"]) == ["superseded"]
        assert (new["state"], new["sha256"]) == ("archived", sha(NEW))
        if action == "move":
            assert (tmp_path / "invoices" / "done" / "a.pdf").read_bytes() == NEW
            assert sorted(p.name for p in (tmp_path / "invoices" / "done").iterdir()) == ["a.pdf"]
        elif action == "keep":
            assert source.read_bytes() == NEW
            assert new["archived_to"] == str(source)
        else:
            assert not source.exists()
        report = status_report(config)
        assert report["pipelines"]["invoices"]["superseded"] == 1
        assert report["superseded_results"] == {"invoices": 1}

    def test_with_on_change_fail_a_change_after_delivery_fails_the_document(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """on_change: fail and a change after delivery: the document fails (failed/, sidecar
        with the reason) and its delivered result is marked superseded."""
        config = make_config(pipeline(tmp_path, on_change="fail"))
        source = tmp_path / "invoices" / "inbox" / "a.pdf"
        source.write_bytes(OLD)
        pm.register(Rewriter(source, "after_document_delivered"), name="rewriter")
        assert run(config, pm) == 1
        failed = tmp_path / "invoices" / "failed"
        assert (failed / "a.pdf").read_bytes() == NEW
        sidecar = json.loads((failed / "a.pdf.error.json").read_text())
        assert "before the final action" in sidecar["reason"]
        (doc,) = documents(config)
        assert doc["state"] == "failed"
        assert delivery_states(config, doc["id"]) == ["superseded"]
        assert not (tmp_path / "invoices" / "done").exists()

    @pytest.mark.parametrize("on_change", ["retake", "fail"])
    def test_a_duplicate_that_changes_before_its_final_action_is_taken_again(
        self,
        tmp_path: Path,
        make_config: ConfigFactory,
        pm: pluggy.PluginManager,
        on_change: str,
    ) -> None:
        """A duplicate has no results of its own: when its file changes before it is archived,
        it is taken again as new content (with either on_change)."""
        config = make_config(pipeline(tmp_path, on_change=on_change))
        inbox = tmp_path / "invoices" / "inbox"
        (inbox / "first.pdf").write_bytes(OLD)
        assert run(config, pm) == 0
        twin = inbox / "twin.pdf"
        twin.write_bytes(OLD)
        pm.register(Rewriter(twin, "document_discovered"), name="rewriter")
        assert run(config, pm) == 0
        states = [(d["relative_path"], d["state"], d["outcome"]) for d in documents(config)]
        assert states == [
            ("first.pdf", "archived", "success"),
            ("twin.pdf", "superseded", "superseded"),
            ("twin.pdf", "archived", "success"),
        ]
        assert (tmp_path / "invoices" / "done" / "twin.pdf").read_bytes() == NEW

    def test_a_touch_that_keeps_the_bytes_is_no_new_version(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """Same bytes written again (mtime/ctime change): hashed again, found equal, archived
        once, nothing superseded."""
        config = make_config(pipeline(tmp_path))
        source = tmp_path / "invoices" / "inbox" / "a.pdf"
        source.write_bytes(OLD)
        pm.register(Rewriter(source, "after_document_delivered", data=OLD), name="rewriter")
        assert run(config, pm) == 0
        (doc,) = documents(config)
        assert doc["state"] == "archived"
        assert (tmp_path / "invoices" / "done" / "a.pdf").read_bytes() == OLD


class TestOldJournal:
    def test_a_schema_1_journal_is_migrated_and_its_rows_complete(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """A journal of schema 1 (no ctime_ns/inode) opens; a document queued there completes,
        checked by size and mtime alone."""
        config = make_config(pipeline(tmp_path))
        source = tmp_path / "invoices" / "inbox" / "old.pdf"
        source.write_bytes(OLD)
        st = source.stat()
        with Journal(config.journal_path) as journal:
            journal.add_queued(
                "invoices",
                str(source),
                "old.pdf",
                sha256=sha(OLD),
                content_type="application/pdf",
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                steps=["stp_one"],
            )
        # Make it what version 1 wrote: no identity columns, user_version 1.
        with sqlite3.connect(config.journal_path) as conn:
            conn.execute("ALTER TABLE documents DROP COLUMN ctime_ns")
            conn.execute("ALTER TABLE documents DROP COLUMN inode")
            conn.execute("PRAGMA user_version=1")
        assert run(config, pm) == 0
        (doc,) = documents(config)
        assert doc["state"] == "archived"
        assert doc["ctime_ns"] is None
        assert (tmp_path / "invoices" / "done" / "old.pdf").read_bytes() == OLD
        with sqlite3.connect(config.journal_path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
