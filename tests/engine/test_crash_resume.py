"""Crash resume: `kill -9` between submission and completion, restart, nothing paid twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from docutray_watch.emulator import EmulatorServer
from docutray_watch.journal import Journal
from docutray_watch.samples import make_pdf
from tests.daemon.conftest import wait_for
from tests.engine.conftest import pipeline_data


def write_config(tmp_path: Path, emulator: EmulatorServer) -> Path:
    data = {
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 500,
        },
        "state_dir": str(tmp_path / "state"),
        "pipelines": [pipeline_data(tmp_path, steps=["stp_a", "stp_b"])],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def process(config: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DOCUTRAY_API_KEY"}
    return subprocess.Popen(
        [sys.executable, "-m", "docutray_watch.cli", "process", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


class TestCrashResume:
    def test_killed_between_submit_and_completion_polls_instead_of_resubmitting(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """After kill -9 with executions in flight, the restart polls them: no new submission."""
        emulator.configure(latency=3.0)
        config = write_config(tmp_path, emulator)
        inbox = tmp_path / "invoices" / "inbox"
        for i in range(3):
            (inbox / f"c{i}.pdf").write_bytes(make_pdf([f"c{i}"]))
        first = process(config)
        wait_for(lambda: emulator.stats().executions_created == 6)
        time.sleep(0.3)  # let the execution ids reach the journal
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        with Journal(tmp_path / "state" / "journal.sqlite3") as journal:
            assert journal.integrity_check() == "ok"
            polling = journal.steps_in("polling")
        assert len(polling) == 6
        assert list((tmp_path / "invoices" / "results").glob("*.json")) == []

        second = process(config)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, err.decode()
        assert emulator.stats().executions_created == 6  # resumed, not resubmitted
        results = [json.loads(p.read_text()) for p in (tmp_path / "invoices" / "results").glob("*")]
        assert len(results) == 6
        assert sorted(p.name for p in (tmp_path / "invoices" / "done").iterdir()) == [
            "c0.pdf",
            "c1.pdf",
            "c2.pdf",
        ]
        assert b"processed 3 document(s)" in out

    def test_killed_while_submitting_resubmits_at_most_once_and_flags(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """A step caught in `submitting` by a crash is submitted once more and flagged."""
        config = write_config(tmp_path, emulator)
        (tmp_path / "invoices" / "inbox" / "s.pdf").write_bytes(make_pdf(["s"]))
        # Simulate the crash window: the intent is journaled, the POST outcome unknown.
        with Journal(tmp_path / "state" / "journal.sqlite3") as journal:
            doc = journal.add_document(
                "invoices",
                str(tmp_path / "invoices" / "inbox" / "s.pdf"),
                "s.pdf",
                (tmp_path / "invoices" / "inbox" / "s.pdf").stat().st_size,
                (tmp_path / "invoices" / "inbox" / "s.pdf").stat().st_mtime_ns,
            )
            import hashlib

            data = (tmp_path / "invoices" / "inbox" / "s.pdf").read_bytes()
            journal.mark_queued(
                doc.id,
                sha256=hashlib.sha256(data).hexdigest(),
                content_type="application/pdf",
                size=len(data),
                mtime_ns=(tmp_path / "invoices" / "inbox" / "s.pdf").stat().st_mtime_ns,
                steps=["stp_a", "stp_b"],
            )
            for step in journal.steps_of(doc.id):
                journal.step_submitting(step.id)
        proc = process(config)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert emulator.stats().executions_created == 2  # one per step, not more
        with Journal(tmp_path / "state" / "journal.sqlite3") as journal:
            (row,) = journal.documents_in("archived")
            assert "resubmitted" in row.flags
            assert all(s.uncertain == 1 for s in journal.steps_of(row.id))
