"""SIGTERM under load, then restart: exit within the grace period, resubmit nothing, finish all."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.samples import make_pdf
from tests.reliability.conftest import (
    DaemonFactory,
    Report,
    Sizes,
    base_config,
    elapsed_since,
    journal_rows,
    pipeline_config,
    wait_for,
)

# Full size runs for many minutes (pytest's default timeout is 300 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

GRACE = 2.0
# systemd gives the daemon TimeoutStopSec = shutdown_grace + 10 s (docs/operations.md).
STOP_BUDGET = GRACE + 10.0


class TestSigtermUnderLoad:
    def test_stop_with_executions_in_flight_then_restart(
        self,
        tmp_path: Path,
        emulator_factory: Any,
        reliable_daemon: DaemonFactory,
        sizes: Sizes,
        report: Report,
    ) -> None:
        """SIGTERM with N in flight exits in time; the restart resubmits none and finishes all."""
        started = time.monotonic()
        in_flight = sizes.pick(40, 200)
        queued = in_flight // 4
        emulator = emulator_factory(latency=sizes.pick(6.0, 10.0))
        spec = pipeline_config(tmp_path, "load")
        config = base_config(tmp_path, emulator, spec, shutdown_grace=GRACE)
        config["api"].update(max_in_flight=in_flight, requests_per_second=1000)
        daemon = reliable_daemon(config).start()
        docs = {f"l{i:04d}.pdf": make_pdf([f"load {i}"]) for i in range(in_flight + queued)}
        for name, data in docs.items():
            (tmp_path / "load" / "in" / name).write_bytes(data)
        wait_for(lambda: emulator.stats().executions_created == in_flight, timeout=120)

        daemon.signal(signal.SIGTERM)
        stop_started = time.monotonic()
        code = daemon.wait_exit(timeout=STOP_BUDGET + 30)
        stop_seconds = round(time.monotonic() - stop_started, 2)
        assert code == 0
        assert stop_seconds < STOP_BUDGET

        journal = tmp_path / "state" / "journal.sqlite3"
        stored = journal_rows(
            journal,
            "SELECT d.sha256, s.step_id FROM steps s JOIN documents d ON d.id = s.document_id"
            " WHERE s.execution_id IS NOT NULL",
        )
        with_id = {(r[1], r[0]) for r in stored}
        assert len(with_id) == in_flight  # every accepted submission was journaled before exit
        before = emulator.stats().submissions

        daemon.start()
        done = tmp_path / "load" / "done"
        wait_for(lambda: len(list(done.glob("*.pdf"))) == len(docs), timeout=sizes.pick(120, 300))
        assert daemon.stop() == 0

        stats = emulator.stats()
        counts = {
            (step, sha): n for step, per in stats.submissions.items() for sha, n in per.items()
        }
        resubmitted_with_id = sum(counts[key] - 1 for key in with_id)
        assert resubmitted_with_id == 0
        assert {key: before[key[0]][key[1]] for key in with_id} == dict.fromkeys(with_id, 1)
        shas = {hashlib.sha256(d).hexdigest() for d in docs.values()}
        assert {sha for _, sha in counts} == shas
        assert stats.executions_created == len(docs)
        assert not list((tmp_path / "load" / "failed").glob("*.pdf"))
        report(
            "sigterm",
            in_flight=in_flight,
            queued=queued,
            grace_s=GRACE,
            exit_s=stop_seconds,
            exit_code=code,
            execution_ids_stored=len(with_id),
            resubmitted_with_stored_id=resubmitted_with_id,
            completed_after_restart=len(docs),
            executions_total=stats.executions_created,
            seconds=elapsed_since(started),
        )
