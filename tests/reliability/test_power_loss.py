"""Power-loss style checks: the journal killed while writing, its durability settings, and the
leftovers a crash can leave next to output files."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from docutray_watch import fsutil
from docutray_watch.fsutil import atomic_write_bytes, remove_stale_temp_files
from docutray_watch.journal import Journal
from tests.reliability.conftest import (
    REPO_ROOT,
    Report,
    Sizes,
    elapsed_since,
    integrity_of,
    journal_rows,
    wait_for,
)
from tests.reliability.journal_writer import STAGES

# Full size runs for many minutes (pytest's default timeout is 300 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SEED = 4242


def acknowledged(acks: Path) -> dict[int, int]:
    """The furthest stage acknowledged per document (a torn last line is ignored)."""
    furthest: dict[int, int] = defaultdict(int)
    if not acks.exists():
        return {}  # the writer has not acknowledged anything yet
    for line in acks.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            doc_id, stage = int(parts[0]), int(parts[1])
            furthest[doc_id] = max(furthest[doc_id], stage)
    return dict(furthest)


class TestJournalKilledWhileWriting:
    def test_kill_9_during_writes_keeps_the_journal_sound_and_every_commit(
        self, tmp_path: Path, sizes: Sizes, report: Report
    ) -> None:
        """SIGKILL during heavy journal writing: integrity_check "ok", every acknowledged commit."""
        started = time.monotonic()
        rng = random.Random(SEED)
        kills = sizes.pick(15, 200)
        journal = tmp_path / "journal.sqlite3"
        acks = tmp_path / "acks.txt"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        checks = []
        for _ in range(kills):
            child = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.journal_writer", str(journal), str(acks)],
                env=env,
                cwd=tmp_path,
            )
            # Kill while it writes: wait for its first acknowledged commit (its start-up takes a
            # while on a loaded machine; a kill before the journal exists checks nothing).
            before = len(acknowledged(acks))
            wait_for(lambda n=before: len(acknowledged(acks)) > n, timeout=60, interval=0.05)
            time.sleep(rng.uniform(0.2, 1.0))
            assert child.poll() is None, "the writer stopped by itself"
            child.kill()
            child.wait(30)
            checks.append(integrity_of(journal))
            assert checks[-1] == "ok"
            promised = acknowledged(acks)
            found = {
                row["id"]: STAGES.index(row["state"])
                for row in journal_rows(journal, "SELECT id, state FROM documents")
            }
            missing = {d: s for d, s in promised.items() if found.get(d, -1) < s}
            assert missing == {}, f"acknowledged but not in the journal: {list(missing)[:10]}"
        transactions = len(acks.read_text().splitlines())
        documents = journal_rows(journal, "SELECT COUNT(*) FROM documents")[0][0]
        report(
            "journal-kill-during-writes",
            kills=kills,
            acknowledged_commits=transactions,
            documents=documents,
            integrity_ok=f"{checks.count('ok')}/{len(checks)}",
            acknowledged_but_missing=0,
            seconds=elapsed_since(started),
        )


class TestDurabilitySettings:
    def test_the_journal_runs_in_wal_mode_with_full_synchronous(self, tmp_path: Path) -> None:
        """The settings the power-loss argument rests on are in force on its connection."""
        with Journal(tmp_path / "journal.sqlite3") as journal:
            conn = journal.conn
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


class TestCrashLeftovers:
    def test_a_write_after_a_crash_removes_the_temp_files_it_left(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The next write into a folder removes a crashed process's temp files, and only those."""
        stale = tmp_path / ".a.pdf.stp_one.json.k3j2h1g0.tmp"
        stale.write_bytes(b'{"half": ')
        old = time.time() - 3600
        os.utime(stale, (old, old))
        mine = tmp_path / ".b.json.abcdefgh.tmp"  # as if another thread were writing it now
        mine.write_bytes(b"in progress")
        other = tmp_path / ".notes.tmp"
        other.write_bytes(b"someone else's")
        os.utime(other, (old, old))
        monkeypatch.setattr(fsutil, "_swept", set())
        atomic_write_bytes(tmp_path / "c.json", b"{}", fsync=False)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [mine.name, other.name, "c.json"]
        )

    def test_each_folder_is_swept_once_per_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The folder listing happens on the first write only: later writes cost no scan."""
        monkeypatch.setattr(fsutil, "_swept", set())
        stale = tmp_path / ".x.json.k3j2h1g0.tmp"
        assert remove_stale_temp_files(tmp_path) == 0
        stale.write_bytes(b"late")
        os.utime(stale, (time.time() - 3600,) * 2)
        assert remove_stale_temp_files(tmp_path) == 0
        assert stale.exists()
