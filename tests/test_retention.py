"""Journal retention: which finished documents `prune` forgets, and which it must remember."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from docutray_watch.cli import cli
from docutray_watch.config import EX_CONFIG, ConfigError, parse_config
from docutray_watch.journal import Journal
from docutray_watch.retention import SECONDS_PER_DAY, prune, prune_journal_file

DAY = SECONDS_PER_DAY
NOW = 1_800_000_000.0


class Clock:
    """A settable wall clock for the journal's timestamps."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    return Clock(NOW - 100 * DAY)


@pytest.fixture(name="journal")
def journal_fixture(tmp_path: Path, clock: Clock) -> Iterator[Journal]:
    with Journal(tmp_path / "state" / "journal.sqlite3", clock=clock) as journal:
        yield journal


def finished_document(
    journal: Journal, path: str, *, sha: str, archived_to: str | None, pipeline: str = "p"
) -> int:
    """A document taken through one step and one sink to `archived`; returns its id."""
    doc = journal.add_document(pipeline, path, Path(path).name, 10, 1)
    journal.mark_queued(
        doc.id, sha256=sha, content_type="image/png", size=10, mtime_ns=1, steps=("stp",)
    )
    step = journal.steps_of(doc.id)[0]
    journal.step_submitting(step.id)
    journal.step_accepted(step.id, f"exec-{doc.id}", "ENQUEUED")
    journal.step_finished(
        step.id, state="success", status="SUCCESS", result={"n": doc.id}, sinks=("files",)
    )
    for delivery in journal.deliveries_of(doc.id):
        journal.delivery_done(delivery.id, "ok")
    journal.mark_delivered(doc.id)
    journal.finish(doc.id, archived_to)
    return doc.id


def ids_in(journal: Journal, table: str) -> set[int]:
    column = "id" if table == "documents" else "document_id"
    return {r[0] for r in journal.conn.execute(f"SELECT {column} FROM {table}")}  # noqa: S608


class TestPrune:
    def test_old_finished_documents_go_with_their_steps_and_deliveries(
        self, journal: Journal, clock: Clock
    ) -> None:
        """A document finished 100 days ago is forgotten at 30 days; one from yesterday stays."""
        old = finished_document(journal, "/in/old.png", sha="a" * 64, archived_to="/done/old.png")
        clock.now = NOW - DAY
        new = finished_document(journal, "/in/new.png", sha="b" * 64, archived_to="/done/new.png")
        result = prune(journal, finished_before=NOW - 30 * DAY)
        assert result.forgotten == 1
        assert ids_in(journal, "documents") == {new}
        assert ids_in(journal, "steps") == {new}
        assert ids_in(journal, "deliveries") == {new}
        assert journal.find_done_by_sha("p", "a" * 64, exclude=0) is None  # dedup forgot it
        assert old not in ids_in(journal, "documents")

    def test_unfinished_documents_are_never_forgotten(self, journal: Journal) -> None:
        """A document still queued since 100 days ago stays whatever the retention."""
        doc = journal.add_document("p", "/in/stuck.png", "stuck.png", 10, 1)
        result = prune(journal, finished_before=NOW)
        assert result.forgotten == 0
        assert ids_in(journal, "documents") == {doc.id}

    def test_a_kept_file_still_in_its_folder_is_remembered(
        self, journal: Journal, tmp_path: Path
    ) -> None:
        """A kept file's newest row stays while the file exists and goes once it is gone."""
        kept = tmp_path / "inbox" / "kept.png"
        kept.parent.mkdir()
        kept.write_bytes(b"x")
        superseded = finished_document(journal, str(kept), sha="a" * 64, archived_to=str(kept))
        newest = finished_document(journal, str(kept), sha="c" * 64, archived_to=str(kept))
        result = prune(journal, finished_before=NOW)
        assert (result.forgotten, result.kept_in_place) == (1, 1)
        assert ids_in(journal, "documents") == {newest}
        assert superseded not in ids_in(journal, "documents")
        kept.unlink()
        result = prune(journal, finished_before=NOW)
        assert result.forgotten == 1
        assert result.forgotten_kept == [("p", str(kept), newest)]
        assert ids_in(journal, "documents") == set()

    def test_dry_run_counts_without_deleting(self, journal: Journal) -> None:
        """--dry-run reports what would go and leaves the journal as it was."""
        for n in range(3):
            finished_document(journal, f"/in/{n}.png", sha=f"{n}" * 64, archived_to=None)
        result = prune(journal, finished_before=NOW, dry_run=True)
        assert result.forgotten == 3
        assert len(ids_in(journal, "documents")) == 3

    def test_works_through_many_batches(self, journal: Journal) -> None:
        """More candidates than one batch are all forgotten."""
        for n in range(25):
            finished_document(journal, f"/in/{n}.png", sha=f"{n:064d}", archived_to=None)
        result = prune(journal, finished_before=NOW, batch=4)
        assert result.forgotten == 25
        assert ids_in(journal, "documents") == set()

    def test_a_document_requeued_meanwhile_is_not_deleted(self, journal: Journal) -> None:
        """forget_documents re-checks: a document retried after it was listed stays."""
        doc_id = finished_document(journal, "/in/a.png", sha="a" * 64, archived_to=None)
        candidates = journal.prune_candidates(NOW)
        journal.requeue(doc_id, force=True)
        assert journal.forget_documents([c.id for c in candidates], NOW) == 0
        assert ids_in(journal, "documents") == {doc_id}

    def test_prune_journal_file_uses_days_before_now(self, tmp_path: Path, clock: Clock) -> None:
        """prune_journal_file forgets by age in days, on a connection of its own."""
        path = tmp_path / "state" / "journal.sqlite3"
        with Journal(path, clock=clock) as journal:
            finished_document(journal, "/in/a.png", sha="a" * 64, archived_to=None)  # 100 days
            clock.now = NOW - 10 * DAY
            finished_document(journal, "/in/b.png", sha="b" * 64, archived_to=None)
        result = prune_journal_file(path, older_than_days=30, now=lambda: NOW)
        assert result.forgotten == 1
        assert result.finished_before == NOW - 30 * DAY
        with Journal(path) as journal:
            assert len(ids_in(journal, "documents")) == 1


class TestConfigAndCli:
    def test_retention_days_must_be_positive(self, tmp_path: Path) -> None:
        """journal.retention_days: 0 is a config error naming the key."""
        data = {
            "state_dir": str(tmp_path / "state"),
            "journal": {"retention_days": 0},
            "pipelines": [
                {
                    "name": "p",
                    "watch": {"path": str(tmp_path / "inbox")},
                    "steps": ["s"],
                    "sinks": [{"type": "filesystem", "path": str(tmp_path / "out")}],
                }
            ],
        }
        with pytest.raises(ConfigError) as caught:
            parse_config(data, need_secrets=False)
        assert [issue.path for issue in caught.value.issues] == ["journal.retention_days"]

    def test_cli_exits_78_for_a_bad_retention(self, tmp_path: Path) -> None:
        """`prune` with journal.retention_days: -1 exits 78 naming the key."""
        config = self._config_file(tmp_path, -1)
        result = CliRunner().invoke(cli, ["prune", "-c", str(config)])
        assert result.exit_code == EX_CONFIG
        assert "journal.retention_days" in result.output

    def _config_file(self, tmp_path: Path, retention: float | None) -> Path:
        (tmp_path / "inbox").mkdir(exist_ok=True)
        journal = f"journal: {{retention_days: {retention}}}\n" if retention is not None else ""
        path = tmp_path / "c.yaml"
        path.write_text(
            f"state_dir: {tmp_path / 'state'}\n{journal}"
            f"pipelines:\n  - name: p\n    watch: {{path: {tmp_path / 'inbox'}}}\n"
            "    steps: [s]\n"
            f"    sinks: [{{type: filesystem, path: {tmp_path / 'out'}}}]\n"
        )
        return path

    def test_cli_prune_forgets_and_reports(self, tmp_path: Path) -> None:
        """`prune -c` uses journal.retention_days; --dry-run changes nothing."""
        config = self._config_file(tmp_path, 30)
        old = time.time() - 100 * DAY
        with Journal(tmp_path / "state" / "journal.sqlite3", clock=Clock(old)) as journal:
            finished_document(journal, "/in/a.png", sha="a" * 64, archived_to=None)
        runner = CliRunner()
        dry = runner.invoke(cli, ["prune", "-c", str(config), "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "would forget 1 document(s)" in dry.output
        done = runner.invoke(cli, ["prune", "-c", str(config)])
        assert done.exit_code == 0, done.output
        assert "forgot 1 document(s)" in done.output
        again = runner.invoke(cli, ["prune", "-c", str(config), "--older-than", "1"])
        assert "forgot 0 document(s)" in again.output

    def test_cli_prune_needs_a_retention(self, tmp_path: Path) -> None:
        """Without journal.retention_days or --older-than, prune is a usage error (exit 2)."""
        result = CliRunner().invoke(cli, ["prune", "-c", str(self._config_file(tmp_path, None))])
        assert result.exit_code == 2
        assert "--older-than" in result.output

    def test_cli_prune_without_a_journal(self, tmp_path: Path) -> None:
        """No journal yet: prune says so and creates nothing."""
        config = self._config_file(tmp_path, 30)
        result = CliRunner().invoke(cli, ["prune", "-c", str(config)])
        assert result.exit_code == 0
        assert "nothing to prune" in result.output
        assert not (tmp_path / "state" / "journal.sqlite3").exists()
