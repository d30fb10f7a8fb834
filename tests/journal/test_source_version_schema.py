"""Journal schemas gain `documents.source_version` (a source document's ETag…): SQLite schema 4
from a schema-3 journal, PostgreSQL schema 3 from a schema-2 one, existing rows untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from docutray_watch.journal import Journal
from docutray_watch.journal.postgres import PostgresStore, migrate, migrations
from docutray_watch.journal.sqlite import SCHEMA_VERSION, schema


def _v3_journal(path: Path) -> None:
    """A journal as the release before sources wrote it (schema 3), with one document."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for version in (1, 2, 3):
        schema.MIGRATIONS[version](conn)
    conn.execute("PRAGMA user_version=3")
    conn.execute("COMMIT")
    conn.execute(
        "INSERT INTO documents (pipeline, path, relative_path, size, mtime_ns, sha256,"
        " content_type, state, attempts, created_at, updated_at)"
        " VALUES ('p', '/in/a.pdf', 'a.pdf', 10, 5, 'ab', 'application/pdf', 'queued', 1, 1, 1)"
    )
    conn.close()


def test_a_sqlite_v3_journal_gains_source_version(tmp_path: Path) -> None:
    """Opening a schema-3 journal backs it up and adds source_version (NULL for its rows);
    new rows store one."""
    path = tmp_path / "journal.sqlite3"
    _v3_journal(path)
    with Journal(path) as journal:
        assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
        old = journal.document(1)
        assert (old.state, old.path, old.source_version) == ("queued", "/in/a.pdf", None)
        new = journal.add_document("p", "s3://b/k.pdf", "k.pdf", 3, 0, source_version='"e"')
        assert journal.document(new.id).source_version == '"e"'
    with sqlite3.connect(tmp_path / "journal.sqlite3.v3.bak") as backup:
        columns = {r[1] for r in backup.execute("PRAGMA table_info(documents)")}
        assert "source_version" not in columns


@pytest.mark.postgres
async def test_a_postgres_schema_2_journal_gains_source_version(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """migrate on a schema-2 journal reports 2 and adds source_version (NULL for its rows)."""
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "SCHEMA_VERSION", 2)
        assert await migrate(pg_url) == 0
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(
            "INSERT INTO docutray.documents (pipeline, path, relative_path, sha256, state,"
            " attempts, created_at, updated_at) VALUES ('p', '/in/a.pdf', 'a.pdf', %s,"
            " 'queued', 1, 1, 1)",
            ("d" * 64,),
        )
    assert migrations.SCHEMA_VERSION >= 3
    assert await migrate(pg_url) == 2
    store = PostgresStore(pg_url, migrate=False)
    await store.open()
    try:
        assert (await store.document(1)).source_version is None
        doc = await store.add_document("p", "s3://b/k.pdf", "k.pdf", 3, 0, source_version='"e"')
        assert (await store.document(doc.id)).source_version == '"e"'
    finally:
        await store.close()
