"""The journal's numbered migrations: the backup, one transaction, a newer journal refused."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from docutray_watch.cli import cli, main
from docutray_watch.journal import SCHEMA_VERSION, Journal, NewerJournalError
from docutray_watch.journal.sqlite import schema


def make_v1_journal(path: Path, *, keep_open: bool = False) -> sqlite3.Connection | None:
    """A journal as the first release wrote it (schema 1), with one queued document."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    schema.MIGRATIONS[1](conn)
    conn.execute("PRAGMA user_version=1")
    conn.execute("COMMIT")
    conn.execute(
        "INSERT INTO documents (pipeline, path, relative_path, size, mtime_ns, sha256,"
        " content_type, state, attempts, created_at, updated_at)"
        " VALUES ('p', '/in/a.pdf', 'a.pdf', 10, 5, 'ab', 'application/pdf', 'queued', 1, 1, 1)"
    )
    conn.execute("INSERT INTO steps (document_id, step_id, state) VALUES (1, 'stp_a', 'pending')")
    if keep_open:
        return conn  # its WAL is not checkpointed while this connection stays open
    conn.close()
    return None


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


class TestMigrations:
    def test_the_migrations_are_numbered_up_to_the_schema_version(self) -> None:
        """One migration per version, 1 to SCHEMA_VERSION."""
        assert sorted(schema.MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))

    def test_a_new_journal_gets_every_migration_and_no_backup(self, tmp_path: Path) -> None:
        """A fresh file is created at the current version; there is nothing to back up."""
        path = tmp_path / "journal.sqlite3"
        with Journal(path) as journal:
            assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert {"ctime_ns", "inode"} <= columns(journal.conn, "documents")
            assert journal.requeue_count() == 0
        assert not list(tmp_path.glob("*.bak"))

    def test_a_v1_journal_is_backed_up_then_migrated(self, tmp_path: Path) -> None:
        """Opening a schema-1 journal copies it to `journal.sqlite3.v1.bak` (still schema 1,
        same rows), then brings it to the current schema keeping every row."""
        path = tmp_path / "journal.sqlite3"
        make_v1_journal(path)
        with Journal(path) as journal:
            assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            doc = journal.document(1)
            assert doc.state == "queued"
            assert doc.ctime_ns is None
            assert [s.step_id for s in journal.steps_of(1)] == ["stp_a"]
        backup = tmp_path / "journal.sqlite3.v1.bak"
        assert backup.exists()
        with sqlite3.connect(backup) as old:
            assert old.execute("PRAGMA user_version").fetchone()[0] == 1
            assert "ctime_ns" not in columns(old, "documents")
            assert old.execute("SELECT state FROM documents").fetchall() == [("queued",)]
            assert old.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def test_the_backup_holds_what_was_still_in_the_wal(self, tmp_path: Path) -> None:
        """Rows committed to the WAL but not checkpointed into the file are in the backup."""
        path = tmp_path / "journal.sqlite3"
        holder = make_v1_journal(path, keep_open=True)
        assert holder is not None
        try:
            assert (tmp_path / "journal.sqlite3-wal").stat().st_size > 0
            Journal(path).open().close()
        finally:
            holder.close()
        with sqlite3.connect(tmp_path / "journal.sqlite3.v1.bak") as old:
            assert old.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 1

    def test_a_failed_migration_leaves_the_journal_as_it_was(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The migrations run in one transaction: one that fails half-way changes nothing."""
        path = tmp_path / "journal.sqlite3"
        make_v1_journal(path)

        def half_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute("ALTER TABLE documents ADD COLUMN ctime_ns INTEGER")
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setitem(schema.MIGRATIONS, 2, half_then_fail)
        with pytest.raises(sqlite3.OperationalError):
            Journal(path).open()
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
            assert "ctime_ns" not in columns(conn, "documents")
        monkeypatch.undo()
        with Journal(path) as journal:  # and the next start migrates it
            assert journal.document(1).state == "queued"


class TestNewerJournal:
    def make_newer(self, path: Path) -> bytes:
        with Journal(path):
            pass
        with sqlite3.connect(path) as conn:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        return path.read_bytes()

    def test_a_newer_journal_is_refused_untouched(self, tmp_path: Path) -> None:
        """NewerJournalError names the file and both versions; no byte changes, no backup."""
        path = tmp_path / "journal.sqlite3"
        before = self.make_newer(path)
        with pytest.raises(NewerJournalError, match=f"schema {SCHEMA_VERSION + 1}") as caught:
            Journal(path).open()
        assert str(path) in str(caught.value)
        assert path.read_bytes() == before
        assert not list(tmp_path.glob("*.bak"))

    def config(self, tmp_path: Path) -> Path:
        data = {
            "api": {"base_url": "http://127.0.0.1:9", "api_key": "k"},
            "state_dir": str(tmp_path / "state"),
            "pipelines": [
                {
                    "name": "p",
                    "watch": {"path": str(tmp_path / "inbox")},
                    "steps": ["stp_a"],
                    "on_success": {"action": "keep"},
                    "on_failure": {"action": "keep"},
                    "sinks": [{"type": "filesystem", "path": str(tmp_path / "out")}],
                }
            ],
        }
        (tmp_path / "inbox").mkdir()
        (tmp_path / "state").mkdir()
        self.make_newer(tmp_path / "state" / "journal.sqlite3")
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def test_process_on_a_newer_journal_exits_78(self, tmp_path: Path) -> None:
        """`process` refuses a newer journal with exit 78 and says why."""
        config = self.config(tmp_path)
        result = CliRunner().invoke(cli, ["process", "-c", str(config), "--no-progress"])
        assert result.exit_code == 78, result.output
        assert "newer docutray-watch" in result.output

    def test_status_on_a_newer_journal_exits_78(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`status` (which opens the journal itself) exits 78 too, not an internal error."""
        config = self.config(tmp_path)
        monkeypatch.setattr(sys, "argv", ["docutray-watch", "status", "-c", str(config)])
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 78
        assert "newer docutray-watch" in capsys.readouterr().err
