"""Upgrades keep every document: a journal written by the release before the journal package
(commit 91cc6c5, schema 1) is migrated in place on first start, and the new code finishes it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from docutray_watch.emulator import EmulatorServer
from docutray_watch.journal import SCHEMA_VERSION, Journal
from docutray_watch.samples import make_pdf
from tests.daemon.conftest import wait_for

OLD_COMMIT = "91cc6c5"
REPO = Path(__file__).resolve().parents[2]
PIPELINE = "invoices"
SINKS = ["filesystem", "filesystem-2"]  # the ids both releases give two unnamed sinks

# Run by the old code: check it is the old code, then call its entry point or build documents.
_OLD_CLI = """
import sys
from pathlib import Path
import docutray_watch.journal
assert Path(docutray_watch.journal.__file__).is_relative_to(Path(sys.argv[1])), "not the old code"
from docutray_watch.cli import main
sys.argv = ["docutray-watch", *sys.argv[2:]]
main()
"""

_OLD_BUILD = """
import json, sys
from pathlib import Path
import docutray_watch.journal
assert Path(docutray_watch.journal.__file__).is_relative_to(Path(sys.argv[1])), "not the old code"
from docutray_watch.journal import SCHEMA_VERSION, Journal
assert SCHEMA_VERSION == 1
spec = json.loads(Path(sys.argv[2]).read_text())
P, SINKS, files = spec["pipeline"], spec["sinks"], spec["files"]


def result(name, status="SUCCESS"):
    return {"status": status, "data": {"total": 1} if status == "SUCCESS" else None,
            "error": None if status == "SUCCESS" else {"message": "unreadable"},
            "original_filename": name, "request_timestamp": None, "response_timestamp": None}


def queue(j, name):
    f = files[name]
    doc, (step,) = j.add_queued(P, f["path"], name, sha256=f["sha256"],
                                content_type="application/pdf", size=f["size"],
                                mtime_ns=f["mtime_ns"], steps=["stp_a"])
    return doc, step


def accepted(j, step, execution_id):
    j.step_submitting(step.id)
    j.step_accepted(step.id, execution_id, "ENQUEUED")


with Journal(spec["journal"]) as j:
    # archived: every result delivered to every sink, the file moved to done/
    doc, step = queue(j, "archived.pdf")
    accepted(j, step, "exec-archived")
    j.step_finished(step.id, state="success", status="SUCCESS", result=result("archived.pdf"),
                    sinks=SINKS)
    for d in j.deliveries_of(doc.id):
        j.delivery_done(d.id, "receipt")
    j.mark_delivered(doc.id)
    j.archive_intent(doc.id, spec["archived_to"])
    j.finish(doc.id, spec["archived_to"])
    # failed: the step ended in ERROR, the file moved to failed/
    doc, step = queue(j, "failed.pdf")
    accepted(j, step, "exec-failed")
    j.step_finished(step.id, state="error", status="ERROR", result=result("failed.pdf", "ERROR"),
                    error="the step ended in ERROR: unreadable")
    j.mark_failed(doc.id, "the step ended in ERROR: unreadable", stage="result")
    j.finish(doc.id, spec["failed_to"])
    # rejected at intake
    f = files["rejected.pdf"]
    doc = j.add_document(P, f["path"], "rejected.pdf", f["size"], f["mtime_ns"])
    j.reject(doc.id, "not a supported document", stage="intake")
    j.finish(doc.id, spec["rejected_to"])
    # completed, delivered to the first sink only
    doc, step = queue(j, "partial.pdf")
    accepted(j, step, "exec-partial")
    j.step_finished(step.id, state="success", status="SUCCESS", result=result("partial.pdf"),
                    sinks=SINKS)
    first = next(d for d in j.deliveries_of(doc.id) if d.sink == SINKS[0])
    j.delivery_done(first.id, "receipt-first")
    # submitting: the intent is journaled, the POST's outcome unknown (a crash)
    doc, step = queue(j, "submitting.pdf")
    j.step_submitting(step.id)
    # queued, and discovered (not hashed yet)
    queue(j, "queued.pdf")
    f = files["discovered.pdf"]
    j.add_document(P, f["path"], "discovered.pdf", f["size"], f["mtime_ns"])
"""


def old_release(tmp_path: Path) -> Path:
    """The package as it was at OLD_COMMIT, extracted under `tmp_path`; skips without git."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed: the old release cannot be extracted")
    inside = subprocess.run(
        [git, "-C", str(REPO), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
        check=False,
    )
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        pytest.skip(f"{REPO} is not a git checkout: the old release cannot be extracted")
    found = subprocess.run(
        [git, "-C", str(REPO), "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if found.returncode != 0:
        reason = (
            f"commit {OLD_COMMIT} (the release before the journal package) is not in this clone"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must check out the full history")
        pytest.skip(f"{reason} (a shallow clone?)")
    archive = subprocess.run(
        [git, "-C", str(REPO), "archive", OLD_COMMIT, "docutray_watch"],
        capture_output=True,
        check=True,
    )
    root = tmp_path / "old-release"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    return root


def old_env(old: Path) -> dict[str, str]:
    """The environment of a process running the old code (same dependencies, old package)."""
    env = {k: v for k, v in os.environ.items() if k != "DOCUTRAY_API_KEY"}
    env["PYTHONPATH"] = str(old)
    env["DOCUTRAY_WATCH_DISABLE_PLUGINS"] = "webhook"  # installed for the new code
    return env


def write_config(tmp_path: Path, emulator: EmulatorServer) -> Path:
    data = {
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 500,
        },
        "state_dir": str(tmp_path / "state"),
        "pipelines": [
            {
                "name": PIPELINE,
                "watch": {"path": str(tmp_path / "inbox"), "settle": 0},
                "steps": ["stp_a"],
                "poll": {"initial": 0.05, "max": 0.2, "timeout": 60},
                "on_success": {"action": "move", "to": str(tmp_path / "done")},
                "on_failure": {"action": "move", "to": str(tmp_path / "failed")},
                "sinks": [
                    {"type": "filesystem", "path": str(tmp_path / "out-1")},
                    {"type": "filesystem", "path": str(tmp_path / "out-2")},
                ],
            }
        ],
    }
    for folder in ("inbox", "done", "failed"):
        (tmp_path / folder).mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def read_only(path: Path, query: str) -> list[Any]:
    """Rows of `query` on the journal, without migrating it (the new `Journal` would)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def polling_ids(journal: Path) -> list[str]:
    try:
        rows = read_only(journal, "SELECT execution_id FROM steps WHERE state = 'polling'")
    except sqlite3.Error:
        return []  # not created yet
    return [r[0] for r in rows if r[0]]


def file_facts(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    st = path.stat()
    return {
        "path": str(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


class TestUpgradeFromTheLastRelease:
    def test_a_journal_of_the_last_release_is_migrated_and_finished(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """Documents in every state survive: in-flight executions are polled by their stored
        ids (no new POST), a partial delivery completes at the missing sink only, ended
        documents stay as they were, and the old file is kept as `journal.sqlite3.v1.bak`."""
        old = old_release(tmp_path)
        config = write_config(tmp_path, emulator)
        journal = tmp_path / "state" / "journal.sqlite3"
        inbox = tmp_path / "inbox"

        # 1. The old daemon submits two documents and is killed while they are being polled.
        emulator.configure(latency=4.0)
        for name in ("poll0.pdf", "poll1.pdf"):
            (inbox / name).write_bytes(make_pdf([name]))
        daemon = subprocess.Popen(
            [sys.executable, "-c", _OLD_CLI, str(old), "process", "-c", str(config)],
            env=old_env(old),
            cwd=old,  # `-c` puts the working directory first on sys.path
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

        def submitted() -> list[str] | bool:
            assert daemon.poll() is None, daemon.communicate()[1].decode()
            ids = polling_ids(journal)
            return len(ids) == 2 and ids

        try:
            in_flight = wait_for(submitted)
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGKILL)
            _out, err = daemon.communicate(timeout=10)
        assert daemon.returncode == -signal.SIGKILL, err.decode()
        emulator.configure(latency=0.2)

        # 2. The old code's Journal records documents in every other state.
        for name in ("partial.pdf", "submitting.pdf", "queued.pdf", "discovered.pdf"):
            (inbox / name).write_bytes(make_pdf([name]))
        (tmp_path / "done" / "archived.pdf").write_bytes(make_pdf(["archived"]))
        (tmp_path / "failed" / "failed.pdf").write_bytes(make_pdf(["failed"]))
        (tmp_path / "failed" / "rejected.pdf").write_bytes(b"not a document")
        files = {p.name: file_facts(p) for p in inbox.iterdir()}
        files["archived.pdf"] = file_facts(tmp_path / "done" / "archived.pdf")
        files["failed.pdf"] = file_facts(tmp_path / "failed" / "failed.pdf")
        files["rejected.pdf"] = file_facts(tmp_path / "failed" / "rejected.pdf")
        for name in ("archived.pdf", "failed.pdf", "rejected.pdf"):  # where they were found
            files[name]["path"] = str(inbox / name)
        spec = {
            "journal": str(journal),
            "pipeline": PIPELINE,
            "sinks": SINKS,
            "files": files,
            "archived_to": str(tmp_path / "done" / "archived.pdf"),
            "failed_to": str(tmp_path / "failed" / "failed.pdf"),
            "rejected_to": str(tmp_path / "failed" / "rejected.pdf"),
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        subprocess.run(
            [sys.executable, "-c", _OLD_BUILD, str(old), str(tmp_path / "spec.json")],
            env=old_env(old),
            cwd=old,
            check=True,
            capture_output=True,
        )
        assert read_only(journal, "PRAGMA user_version") == [(1,)]
        before = dict(read_only(journal, "SELECT relative_path, state FROM documents"))
        every_state = ["polling", "polling", "archived", "failed", "rejected", "completed"]
        every_state += ["submitting", "queued", "discovered"]
        assert sorted(before.values()) == sorted(every_state)
        ended = read_only(
            journal,
            "SELECT relative_path, finished_at, archived_to FROM documents"
            " WHERE state IN ('archived', 'failed', 'rejected')",
        )
        created_before = emulator.stats().executions_created
        assert created_before == 2

        # 3. The new code's first start: migrate, then finish everything.
        env = {k: v for k, v in os.environ.items() if k not in ("DOCUTRAY_API_KEY", "PYTHONPATH")}
        new = subprocess.run(
            [sys.executable, "-m", "docutray_watch.cli", "process", "-c", str(config)],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert new.returncode == 0, new.stderr.decode()

        backup = tmp_path / "state" / "journal.sqlite3.v1.bak"
        assert read_only(backup, "PRAGMA user_version") == [(1,)]
        assert dict(read_only(backup, "SELECT relative_path, state FROM documents")) == before
        with Journal(journal) as upgraded:
            assert upgraded.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            docs = {d.relative_path: d for d in upgraded.unfinished_documents()}
            assert docs == {}, "every document finished"
            rows = upgraded.conn.execute("SELECT id FROM documents").fetchall()
            by_name = {
                d.relative_path: d for d in (upgraded.document(r[0]) for r in rows)
            }  # nothing lost, nothing taken twice: the same documents, no new ones
            assert sorted(by_name) == sorted(before)
            states = {name: d.state for name, d in by_name.items()}
            assert states == {
                **dict.fromkeys(before, "archived"),
                "failed.pdf": "failed",
                "rejected.pdf": "rejected",
            }
            # Polled by the ids the old daemon stored, never submitted again.
            polled = {
                s.execution_id
                for name in ("poll0.pdf", "poll1.pdf")
                for s in upgraded.steps_of(by_name[name].id)
            }
            assert polled == set(in_flight)
            (submitting_step,) = upgraded.steps_of(by_name["submitting.pdf"].id)
            assert submitting_step.uncertain == 1
            assert "resubmitted" in by_name["submitting.pdf"].flags
            # The partial delivery completed at the second sink; the first was not redone.
            partial = {d.sink: d for d in upgraded.deliveries_of(by_name["partial.pdf"].id)}
            assert partial[SINKS[0]].receipt == "receipt-first"
            assert partial[SINKS[0]].attempts == 1
            assert partial[SINKS[1]].state == "delivered"
            for name, finished_at, archived_to in ended:  # ended documents were left alone
                assert (by_name[name].finished_at, by_name[name].archived_to) == (
                    finished_at,
                    archived_to,
                )
        stats = emulator.stats()
        # New executions only for what had none: queued, discovered, and the uncertain one.
        assert stats.executions_created == created_before + 3
        assert stats.resubmissions == 0
        assert stats.executions is not None
        assert all(stats.executions[i].status_reads > 0 for i in in_flight)
        assert not list((tmp_path / "out-1").glob("partial*"))
        assert len(list((tmp_path / "out-2").glob("partial*"))) == 1
        assert sorted(p.name for p in (tmp_path / "done").glob("*.pdf")) == sorted(
            [*(n for n in before if n not in ("failed.pdf", "rejected.pdf"))]
        )
