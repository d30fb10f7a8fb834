"""Crash loop: `kill -9` the daemon at random moments while it works, restart it, lose nothing."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.samples import make_pdf
from tests.reliability.conftest import (
    PG_URL,
    DaemonFactory,
    Report,
    Sizes,
    base_config,
    elapsed_since,
    integrity_of,
    journal_rows,
    pipeline_config,
    sink_row_keys,
    wait_for,
)

# Full size runs for many minutes (pytest's default timeout is 300 s).
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(3600)]

ERROR_MARKER = b"DOCUTRAY-EMULATOR:ERROR"
STEPS = ["stp_extract", "stp_classify"]
SEED = 20260507


def documents(count: int, rng: random.Random) -> dict[str, bytes]:
    """`count` distinct PDFs; about one in twenty ends in ERROR at the service."""
    docs = {}
    for index in range(count):
        data = make_pdf([f"crash loop document {index}", f"seed {SEED}"])
        if rng.random() < 0.05:
            data += ERROR_MARKER
        docs[f"doc-{index:04d}.pdf"] = data
    return docs


def result_files(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]


class TestCrashLoop:
    # `keep` takes the other end of the journal: a kept file is `delivered` and `archived` in one
    # commit, a moved one in two with the move between them.
    @pytest.mark.parametrize("on_success", ["move", "keep"])
    def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
        self,
        on_success: str,
        tmp_path: Path,
        emulator_factory: Any,
        reliable_daemon: DaemonFactory,
        pg_table: str,
        sizes: Sizes,
        report: Report,
    ) -> None:
        """Every document ends delivered once per sink or failed with a reason, kills or not."""
        started = time.monotonic()
        rng = random.Random(SEED)
        count, kills = sizes.pick((100, 8), (1000, 50))
        emulator = emulator_factory(latency=0.4, latency_jitter=0.5, seed=SEED)
        root = tmp_path / "crash"
        sqlite_url = f"sqlite:///{tmp_path / 'results.db'}"
        spec = pipeline_config(
            tmp_path,
            "crash",
            steps=STEPS,
            sinks=[
                {"type": "filesystem", "path": str(root / "out")},
                {"type": "database", "id": "sqlite", "url": sqlite_url, "table": "results"},
                {"type": "database", "id": "postgres", "url": PG_URL, "table": pg_table},
            ],
        )
        if on_success == "keep":
            spec["on_success"] = {"action": "keep"}
        daemon = reliable_daemon(
            base_config(tmp_path, emulator, spec, shutdown_grace=2), log_level="info"
        )
        journal = tmp_path / "state" / "journal.sqlite3"
        docs = documents(count, rng)
        for name, data in docs.items():
            (root / "in" / name).write_bytes(data)
        expected_errors = {n for n, d in docs.items() if d.endswith(ERROR_MARKER)}

        # Kill at random moments after each start (some during start-up and resume, most while
        # documents are being submitted, polled, delivered and moved), check the journal each time.
        integrity: list[str] = []
        killed_after_ready = 0
        for _ in range(kills):
            after = daemon.spawn()
            time.sleep(rng.uniform(0.5, 4.0))
            if "READY=1" in daemon.read_messages()[after:]:
                killed_after_ready += 1
            assert daemon.alive, daemon.log()[-3000:]
            daemon.kill9()
            if journal.exists():  # not yet when killed during the very first start-up
                integrity.append(integrity_of(journal))
                assert integrity[-1] == "ok"

        daemon.start()

        def successes() -> set[str]:
            if on_success == "move":
                return {p.name for p in (root / "done").glob("*.pdf")}
            # Kept in in/: the journal says which ones succeeded and are finished.
            rows = journal_rows(
                journal,
                "SELECT path FROM documents WHERE state = 'archived' AND finished_at IS NOT NULL",
            )
            return {Path(r[0]).name for r in rows}

        def all_terminal() -> bool:
            done = successes()
            failed = {p.name for p in (root / "failed").glob("*.pdf")}
            left = {p.name for p in (root / "in").glob("*.pdf")} - done
            return len(done | failed) == count and not left

        wait_for(all_terminal, timeout=sizes.pick(240, 1800), interval=0.25)
        assert daemon.stop() == 0
        integrity.append(integrity_of(journal))
        assert integrity[-1] == "ok"

        # 0 lost: every document delivered (in done/, one result per step in every sink) or in
        # failed/ with a sidecar giving a reason; the journal agrees.
        done = successes()
        failed = {p.name for p in (root / "failed").glob("*.pdf")}
        assert not done & failed
        if on_success == "keep":
            assert {p.name for p in (root / "in").glob("*.pdf")} == done
        lost = set(docs) - done - failed
        assert not lost
        reasons = {}
        for name in failed:
            sidecar = json.loads((root / "failed" / f"{name}.error.json").read_text())
            assert sidecar["reason"], name
            reasons[name] = sidecar["reason"]
        assert expected_errors <= failed  # an ERROR result is never delivered as a success
        unfinished = journal_rows(
            journal, "SELECT path, state FROM documents WHERE finished_at IS NULL"
        )
        assert [tuple(r) for r in unfinished] == []

        # 0 duplicates: one file per (document, step) in the filesystem sink, one row per key in
        # SQLite and PostgreSQL — and exactly the successful results (a failed document keeps the
        # results of its successful steps); a document in done/ has all its steps' results.
        sha_of = {name: hashlib.sha256(data).hexdigest() for name, data in docs.items()}
        successes = journal_rows(
            journal,
            "SELECT d.pipeline, d.sha256, s.step_id FROM steps s"
            " JOIN documents d ON d.id = s.document_id WHERE s.state = 'success'",
        )
        expected_keys = Counter((r[0], r[1], r[2]) for r in successes)
        assert {("crash", sha_of[n], s) for n in done for s in STEPS} <= set(expected_keys)
        records = result_files(root / "out")
        files = Counter((r["pipeline"], r["document"]["sha256"], r["step_id"]) for r in records)
        sqlite_rows = Counter(sink_row_keys(sqlite_url, "results"))
        pg_rows = Counter(sink_row_keys(PG_URL, pg_table))
        duplicates = {
            "filesystem": sum(n - 1 for n in files.values() if n > 1),
            "sqlite": sum(n - 1 for n in sqlite_rows.values() if n > 1),
            "postgres": sum(n - 1 for n in pg_rows.values() if n > 1),
        }
        assert files == expected_keys
        assert sqlite_rows == expected_keys
        assert pg_rows == expected_keys
        leftovers = [p.name for p in (root / "out").rglob(".*")]

        # At most one extra submission per kill: executions started minus (document, step) pairs.
        stats = emulator.stats()
        pairs = sum(len(per_doc) for per_doc in stats.submissions.values())
        extra = stats.executions_created - pairs
        flagged = journal_rows(
            journal, "SELECT COUNT(*) FROM documents WHERE flags LIKE '%resubmitted%'"
        )
        # Submissions a kill left with an unknown outcome (each may be made once more).
        interrupted = journal_rows(journal, "SELECT COUNT(*) FROM steps WHERE uncertain > 0")[0][0]
        report(
            "crash-loop" if on_success == "move" else "crash-loop-keep",
            documents=count,
            steps=len(STEPS),
            kills=kills,
            kills_after_ready=killed_after_ready,
            delivered=len(done),
            failed=len(failed),
            failed_not_error_result=len(failed - expected_errors),
            lost=len(lost),
            duplicates_fs=duplicates["filesystem"],
            duplicates_sqlite=duplicates["sqlite"],
            duplicates_pg=duplicates["postgres"],
            submissions=stats.executions_created,
            extra_submissions=extra,
            flagged_resubmitted=flagged[0][0],
            submissions_interrupted=interrupted,
            integrity_checks_ok=f"{integrity.count('ok')}/{len(integrity)}",
            temp_files_left=len(leftovers),
            seconds=elapsed_since(started),
        )
        for name in failed - expected_errors:
            print(f"  failed without an ERROR result: {name}: {reasons[name]}")
        # The guarantee is per submission, not per kill: a submission a kill interrupted is made
        # at most once more (several may be in flight at one kill on a loaded machine).
        assert extra <= interrupted
        assert sum(duplicates.values()) == 0
        assert leftovers == []
