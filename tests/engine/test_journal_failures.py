"""A journal that refuses writes (disk full): nothing paid twice, nothing wedged, nothing hidden."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy
import pytest

from docutray_watch.emulator import EmulatorServer
from docutray_watch.intake import inspect_file
from docutray_watch.journal import AsyncJournal, Journal
from docutray_watch.runner import process_once
from docutray_watch.samples import make_png
from tests.engine.conftest import ConfigFactory, pipeline_data

DISK_FULL = "database or disk is full"


def failing(monkeypatch: pytest.MonkeyPatch, method: str, times: int) -> Callable[[], int]:
    """Make `Journal.<method>` fail with SQLite's disk-full error `times` times; count calls."""
    original = getattr(Journal, method)
    calls = {"n": 0}

    def flaky(self: Journal, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            raise sqlite3.OperationalError(DISK_FULL)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Journal, method, flaky)
    return lambda: calls["n"]


def fill_inbox(root: Path, count: int) -> None:
    for n in range(count):
        (root / "invoices" / "inbox" / f"d{n}.png").write_bytes(make_png(4 + n, 4))


def run(config: Any, pm: pluggy.PluginManager) -> tuple[int, list[str]]:
    lines: list[str] = []
    # A wedged engine would never go idle: fail after a minute instead of hanging CI.
    code = asyncio.run(
        asyncio.wait_for(process_once(config, plugin_manager=pm, echo=lines.append), timeout=60)
    )
    return code, lines


def test_an_execution_id_the_journal_refuses_is_kept_and_written_later(
    tmp_path: Path,
    make_config: ConfigFactory,
    pm: pluggy.PluginManager,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The id of an accepted submission is retried into the journal, never resubmitted."""
    calls = failing(monkeypatch, "step_accepted", times=2)
    monkeypatch.setattr("docutray_watch.engine.submit.asyncio.sleep", _no_wait(asyncio.sleep))
    config = make_config(pipeline_data(tmp_path))
    fill_inbox(tmp_path, 3)
    code, lines = run(config, pm)
    assert code == 0, lines
    assert calls() == 5  # two refusals, then one write per document
    assert emulator.stats().executions_created == 3
    assert len(list((tmp_path / "invoices" / "results").rglob("*.json"))) == 3


def test_the_dispatcher_survives_a_refused_write_and_says_what_is_left(
    tmp_path: Path,
    make_config: ConfigFactory,
    pm: pluggy.PluginManager,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One document's failed dispatch leaves the others running; `process` reports it, exit 1,
    and the next run finishes it."""
    config = make_config(pipeline_data(tmp_path))
    fill_inbox(tmp_path, 4)
    # Queued by an earlier run that stopped before submitting: dispatching them journals their
    # step rows again (a document queued in the same run hands its rows over in memory).
    with Journal(config.journal_path) as journal:
        for path in sorted((tmp_path / "invoices" / "inbox").iterdir()):
            facts = inspect_file(path)
            assert facts.content_type is not None
            journal.add_queued(
                "invoices",
                str(path),
                path.name,
                sha256=facts.sha256,
                content_type=facts.content_type,
                size=facts.size,
                mtime_ns=facts.mtime_ns,
                steps=["stp_one"],
            )
    failing(monkeypatch, "ensure_steps", times=1)
    code, lines = run(config, pm)
    assert code == 1
    assert any("1 document(s) could not be finished" in line for line in lines), lines
    assert len(list((tmp_path / "invoices" / "results").rglob("*.json"))) == 3
    monkeypatch.undo()
    code, lines = run(config, pm)
    assert code == 0, lines
    assert len(list((tmp_path / "invoices" / "results").rglob("*.json"))) == 4
    assert emulator.stats().executions_created == 4


def test_write_error_is_reported_until_a_write_goes_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AsyncJournal.write_error (what /readyz shows) is set by a refused write, cleared by one that
    commits."""

    async def scenario() -> tuple[str | None, str | None]:
        journal = AsyncJournal(Journal(tmp_path / "journal.sqlite3"))
        await journal.open()
        try:
            failing(monkeypatch, "add_document", times=1)
            with pytest.raises(sqlite3.OperationalError):
                await journal.add_document("p", "/in/a.png", "a.png", 1, 1)
            during = journal.write_error
            await journal.counts()  # a read commits nothing: still not writable
            assert journal.write_error == during
            await journal.add_document("p", "/in/a.png", "a.png", 1, 1)
            return during, journal.write_error
        finally:
            await journal.close()

    during, after = asyncio.run(scenario())
    assert during is not None
    assert DISK_FULL in during
    assert after is None


def _no_wait(sleep: Callable[[float], Any]) -> Callable[[float], Any]:
    """asyncio.sleep without the engine's journal back-off waits (others unchanged)."""

    async def quick(delay: float, *args: Any, **kwargs: Any) -> Any:
        return await sleep(min(delay, 0.01), *args, **kwargs)

    return quick


def test_a_step_resumed_past_its_deadline_is_asked_once_before_failing(
    tmp_path: Path,
    make_config: ConfigFactory,
    pm: pluggy.PluginManager,
    emulator: EmulatorServer,
) -> None:
    """After a downtime longer than poll.timeout, the finished (paid) result is still collected."""
    from docutray_watch.engine import Engine

    emulator.configure(latency=0.5)
    config = make_config(pipeline_data(tmp_path, poll={"initial": 0.1, "max": 0.2, "timeout": 1}))
    fill_inbox(tmp_path, 2)

    async def submit_then_stop() -> None:
        engine = Engine(config, plugin_manager=pm)
        await engine.start()
        try:
            await engine.scan()
            for _ in range(200):
                with Journal(config.journal_path) as journal:
                    if len(journal.steps_in("polling")) == 2:
                        break
                await asyncio.sleep(0.02)
        finally:
            await engine.stop(grace=0)  # "down": the executions go on at the service

    asyncio.run(submit_then_stop())
    assert emulator.stats().executions_created == 2
    time.sleep(1.5)  # past poll.timeout, and the executions have finished meanwhile
    code, lines = run(config, pm)
    assert code == 0, lines
    assert emulator.stats().executions_created == 2
    assert len(list((tmp_path / "invoices" / "results").rglob("*.json"))) == 2


def test_a_kept_document_whose_final_commit_is_refused_is_finished_without_delivering_again(
    tmp_path: Path,
    make_config: ConfigFactory,
    pm: pluggy.PluginManager,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`delivered` and `archived` share one commit for a kept file: when it is lost the document
    stays `completed` with its delivery journaled as done, and the next run only finishes it."""
    config = make_config(pipeline_data(tmp_path, on_success={"action": "keep"}))
    fill_inbox(tmp_path, 1)
    failing(monkeypatch, "deliver_and_finish", times=1)
    code, lines = run(config, pm)
    assert code == 1, lines
    with Journal(config.journal_path) as journal:
        (doc,) = journal.unfinished_documents()
        assert doc.state == "completed"
        (delivery,) = journal.deliveries_of(doc.id)
        assert (delivery.state, delivery.attempts) == ("delivered", 1)
    monkeypatch.undo()
    code, lines = run(config, pm)
    assert code == 0, lines
    with Journal(config.journal_path) as journal:
        finished = journal.document(doc.id)
        assert (finished.state, finished.outcome) == ("archived", "success")
        assert journal.deliveries_of(doc.id)[0].attempts == 1  # not delivered a second time
    assert len(list((tmp_path / "invoices" / "results").rglob("*.json"))) == 1
    assert emulator.stats().executions_created == 1
    assert (tmp_path / "invoices" / "inbox" / "d0.png").exists()
