"""Readiness of shared-folder files across scans run by different nodes, kept in PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from docutray_watch.testing import EmulatorFactory
from tests.cluster.nodekit import hand_node, query, shared_config, waiting_jobs

pytestmark = pytest.mark.postgres

SETTLE = 1.0


def _rows(url: str) -> list[tuple[str, int]]:
    return [
        (str(path), int(size))
        for path, size in query(
            url,
            "SELECT relative_path, size FROM docutray_cluster.shared_readiness"
            " ORDER BY relative_path",
        )
    ]


def _intakes(url: str) -> list[str]:
    return [str(args["relative_path"]) for task, args in waiting_jobs(url) if task == "dtw.intake"]


async def test_a_growing_file_is_taken_once_stable_whichever_node_scans(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """A file that grew between a scan on node n1 and the next on n2 is not taken; once n1 sees
    it unchanged for `settle` seconds it is taken, once, and its readiness row is removed."""
    emulator = emulator_factory()
    watch = {"settle": SETTLE}
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    growing = inbox / "scan.pdf"
    growing.write_bytes(b"%PDF-1.4\n" + b"page one\n" * 100)
    old = 1_000_000_000
    os.utime(growing, (old, old))  # an old mtime says nothing: only what scans saw counts
    configs = [shared_config(tmp_path, initialised_url, emulator, n, watch=watch) for n in "ab"]
    async with hand_node(configs[0]) as n1, hand_node(configs[1]) as n2:
        await n1.jobs._scan_shared(0)
        assert _intakes(initialised_url) == []
        assert _rows(initialised_url) == [("scan.pdf", growing.stat().st_size)]

        with growing.open("ab") as handle:
            handle.write(b"page two\n" * 100)
        await asyncio.sleep(SETTLE + 0.2)
        await n2.jobs._scan_shared(0)
        assert _intakes(initialised_url) == []  # it changed since n1's scan
        assert _rows(initialised_url) == [("scan.pdf", growing.stat().st_size)]

        await asyncio.sleep(SETTLE + 0.2)
        await n1.jobs._scan_shared(0)
        assert _intakes(initialised_url) == ["scan.pdf"]
        assert _rows(initialised_url) == []
        await n2.jobs._scan_shared(0)
        await n1.jobs._scan_shared(0)
        assert _intakes(initialised_url) == ["scan.pdf"]  # taken once
        assert _rows(initialised_url) == []  # recorded: not tracked again


async def test_a_marker_gated_file_waits_for_its_marker(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """With `ready_marker`, a settled file is not taken until its marker exists; then the next
    scan (on any node) takes it, and the marker itself is never taken."""
    emulator = emulator_factory()
    watch = {"settle": 0, "ready_marker": ".done"}
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.pdf").write_bytes(b"%PDF-1.4\nmarked")
    configs = [shared_config(tmp_path, initialised_url, emulator, n, watch=watch) for n in "ab"]
    async with hand_node(configs[0]) as n1, hand_node(configs[1]) as n2:
        await n1.jobs._scan_shared(0)
        await n2.jobs._scan_shared(0)
        assert _intakes(initialised_url) == []
        assert [path for path, _ in _rows(initialised_url)] == ["a.pdf"]
        (inbox / "a.pdf.done").write_bytes(b"")
        await n2.jobs._scan_shared(0)
        assert _intakes(initialised_url) == ["a.pdf"]
        assert _rows(initialised_url) == []


async def test_a_file_changing_past_max_open_wait_is_taken_with_a_warning(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """A file seen changed at every scan for longer than `max_open_wait` is taken as it is,
    with single-node mode's `document_open_too_long` warning."""
    emulator = emulator_factory()
    watch = {"settle": 30, "max_open_wait": 1.0}
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    busy = inbox / "busy.pdf"
    busy.write_bytes(b"%PDF-1.4\n")
    configs = [shared_config(tmp_path, initialised_url, emulator, n, watch=watch) for n in "ab"]
    async with hand_node(configs[0]) as n1, hand_node(configs[1]) as n2:
        await n1.jobs._scan_shared(0)
        with busy.open("ab") as handle:
            handle.write(b"more\n")
        await n2.jobs._scan_shared(0)
        assert _intakes(initialised_url) == []
        await asyncio.sleep(1.2)
        with busy.open("ab") as handle:
            handle.write(b"more\n")
        with capture_logs() as logs:
            await n1.jobs._scan_shared(0)
        assert _intakes(initialised_url) == ["busy.pdf"]
        [warning] = [e for e in logs if e["event"] == "document_open_too_long"]
        assert warning["log_level"] == "warning"
        assert warning["path"] == str(busy)
        assert warning["open_s"] >= 1.0


async def test_rows_of_vanished_files_are_removed(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """A file seen once and then gone (deleted or renamed away) leaves no readiness row, and a
    renamed file starts settling afresh under its new name."""
    emulator = emulator_factory()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.pdf").write_bytes(b"%PDF-1.4\na")
    (inbox / "b.pdf").write_bytes(b"%PDF-1.4\nb")
    config = shared_config(tmp_path, initialised_url, emulator, "a", watch={"settle": 60})
    async with hand_node(config) as n1:
        await n1.jobs._scan_shared(0)
        assert [path for path, _ in _rows(initialised_url)] == ["a.pdf", "b.pdf"]
        (inbox / "a.pdf").unlink()
        (inbox / "b.pdf").rename(inbox / "c.pdf")
        await n1.jobs._scan_shared(0)
        assert [path for path, _ in _rows(initialised_url)] == ["c.pdf"]
        assert _intakes(initialised_url) == []


async def test_a_scan_under_way_elsewhere_makes_this_one_skip(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """While another transaction holds the folder's scan lock, a scan writes nothing (the next
    period's scan does the work)."""
    import psycopg

    from docutray_watch.cluster.app import libpq_url
    from docutray_watch.cluster.readiness import READINESS_LOCK_NAMESPACE

    emulator = emulator_factory()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.pdf").write_bytes(b"%PDF-1.4\na")
    config = shared_config(tmp_path, initialised_url, emulator, "a", watch={"settle": 0})
    async with hand_node(config) as n1:
        with psycopg.connect(libpq_url(initialised_url)) as other, other.transaction():
            other.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (READINESS_LOCK_NAMESPACE, "invoices"),
            )
            await n1.jobs._scan_shared(0)
            assert _intakes(initialised_url) == []
        await n1.jobs._scan_shared(0)
        assert _intakes(initialised_url) == ["a.pdf"]


async def test_a_file_settling_before_the_next_period_gets_one_scan_then(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """A file that will have settled before the next periodic scan gets one more scan job
    deferred for that moment; further scans meanwhile add none (and do not fail)."""
    emulator = emulator_factory()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.pdf").write_bytes(b"%PDF-1.4\na")
    config = shared_config(tmp_path, initialised_url, emulator, "a", watch={"settle": SETTLE})
    async with hand_node(config) as n1:
        assert n1.jobs.svc.scan_period > SETTLE
        await n1.jobs._scan_shared(0)
        (inbox / "b.pdf").write_bytes(b"%PDF-1.4\nb")
        await n1.jobs._scan_shared(0)
        scans = query(
            initialised_url,
            "SELECT extract(epoch FROM scheduled_at - now()) FROM procrastinate_jobs"
            " WHERE task_name = 'dtw.scan_shared' AND status = 'todo'",
        )
        assert len(scans) == 1
        assert 0 < float(scans[0][0]) <= SETTLE + 0.2
        assert [path for path, _ in _rows(initialised_url)] == ["a.pdf", "b.pdf"]


async def test_a_missing_shared_folder_keeps_its_rows(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """While the shared folder is not there (an unmounted share) scans leave its readiness rows
    alone and say so once; once it is back the files go on settling where they were."""
    emulator = emulator_factory()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.pdf").write_bytes(b"%PDF-1.4\na")
    config = shared_config(tmp_path, initialised_url, emulator, "a", watch={"settle": 60})
    async with hand_node(config) as n1:
        await n1.jobs._scan_shared(0)
        seen = query(initialised_url, "SELECT * FROM docutray_cluster.shared_readiness")
        inbox.rename(tmp_path / "unmounted")
        with capture_logs() as logs:
            await n1.jobs._scan_shared(0)
            await n1.jobs._scan_shared(0)
        assert [e["event"] for e in logs] == ["watch_folder_missing"]
        assert query(initialised_url, "SELECT * FROM docutray_cluster.shared_readiness") == seen
        (tmp_path / "unmounted").rename(inbox)
        await n1.jobs._scan_shared(0)
        assert query(initialised_url, "SELECT * FROM docutray_cluster.shared_readiness") == seen
