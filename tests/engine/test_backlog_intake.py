"""A backlog already waiting is taken in batches: one worker-thread trip and one journal
transaction for many files, not one each."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pluggy
import pytest

from docutray_watch.emulator import EmulatorServer
from docutray_watch.journal import Journal
from docutray_watch.journal.sqlite.counts import pipeline_counts
from docutray_watch.runner import process_once
from docutray_watch.samples import make_png
from tests.engine.conftest import ConfigFactory, pipeline_data


def test_a_backlog_is_journaled_in_batches(
    tmp_path: Path,
    make_config: ConfigFactory,
    pm: pluggy.PluginManager,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 files waiting at start are journaled by a few add_queued_batch calls, each file once,
    and every one is processed."""
    sizes: list[int] = []
    original = Journal.add_queued_batch

    def counting(self: Journal, items: Any) -> Any:
        sizes.append(len(items))
        return original(self, items)

    monkeypatch.setattr(Journal, "add_queued_batch", counting)
    config = make_config(pipeline_data(tmp_path))
    inbox = tmp_path / "invoices" / "inbox"
    for i in range(100):
        (inbox / f"{i:03}.png").write_bytes(make_png(4, 4, color=(i, 0, 0)))
    assert asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _: None)) == 0
    assert sum(sizes) == 100
    assert len(sizes) <= 10
    assert emulator.stats().executions_created == 100
    assert len(list((tmp_path / "invoices" / "done").iterdir())) == 100


def test_a_bad_file_in_a_batch_is_rejected_alone(
    tmp_path: Path,
    make_config: ConfigFactory,
    pm: pluggy.PluginManager,
    emulator: EmulatorServer,
) -> None:
    """An empty file and a duplicate among good ones: only they leave the batch path."""
    config = make_config(pipeline_data(tmp_path))
    inbox = tmp_path / "invoices" / "inbox"
    for i in range(10):
        (inbox / f"{i:02}.png").write_bytes(make_png(4, 4, color=(i, 0, 0)))
    (inbox / "empty.png").write_bytes(b"")
    assert asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _: None)) == 1
    (inbox / "again.png").write_bytes(make_png(4, 4, color=(3, 0, 0)))
    assert asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _: None)) == 0
    with Journal(config.journal_path) as journal:
        assert pipeline_counts(journal.conn) == {
            "invoices": {"success": 10, "rejected": 1, "duplicate": 1}
        }
        assert pipeline_counts(journal.conn) == journal.outcome_counts()
    assert emulator.stats().executions_created == 10


def test_kept_counts_match_a_group_by_after_a_mixed_run(
    tmp_path: Path,
    make_config: ConfigFactory,
    pm: pluggy.PluginManager,
    emulator: EmulatorServer,
) -> None:
    """Successes, an ERROR result, a rejection and a duplicate, then `retry` of the failures, a
    second run and a prune: the counts `status` reads equal a GROUP BY over the documents."""
    from docutray_watch import retention
    from docutray_watch.runner import retry_documents
    from docutray_watch.samples import make_pdf

    config = make_config(pipeline_data(tmp_path))
    inbox = tmp_path / "invoices" / "inbox"
    for i in range(5):
        (inbox / f"{i}.png").write_bytes(make_png(4, 4, color=(i, 1, 1)))
    (inbox / "bad.pdf").write_bytes(make_pdf(["x"]) + b"DOCUTRAY-EMULATOR:ERROR")
    (inbox / "empty.png").write_bytes(b"")
    assert asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _: None)) == 1
    (inbox / "twin.png").write_bytes(make_png(4, 4, color=(0, 1, 1)))
    assert asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _: None)) == 0
    requeued, problems = retry_documents(config, paths=[], failed=True, force=False)
    assert (requeued, problems) == (2, [])
    assert asyncio.run(process_once(config, plugin_manager=pm, echo=lambda _: None)) == 1
    with Journal(config.journal_path) as journal:
        assert pipeline_counts(journal.conn) == journal.outcome_counts()
        before = sum(pipeline_counts(journal.conn)["invoices"].values())
    result = retention.prune_journal_file(config.journal_path, older_than_days=1, now=lambda: 4e9)
    assert result.forgotten > 0
    assert result.forgotten + result.kept_in_place == before
    with Journal(config.journal_path) as journal:
        assert sum(pipeline_counts(journal.conn)["invoices"].values()) == result.kept_in_place
        assert pipeline_counts(journal.conn) == journal.outcome_counts()
