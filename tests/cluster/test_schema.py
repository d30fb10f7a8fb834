"""`init_schema` / `check_schema` on a real PostgreSQL database of each test's own."""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import psycopg
import pytest

from docutray_watch.cluster.app import libpq_url
from docutray_watch.cluster.errors import ClusterSchemaError, ClusterUnreachableError
from docutray_watch.cluster.schema import (
    SCHEMA_VERSION,
    check_schema,
    init_schema,
    latest_procrastinate_migration,
)

pytestmark = pytest.mark.postgres


def _query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []


def _tables(url: str) -> set[str]:
    rows = _query(
        url,
        "SELECT table_schema || '.' || table_name FROM information_schema.tables"
        " WHERE table_schema IN ('public', 'docutray_cluster')",
    )
    return {row[0] for row in rows}


def test_init_creates_both_schemas(cluster_url: str) -> None:
    """A first init applies procrastinate's schema and ours, and records both versions."""
    report = init_schema(cluster_url)
    assert report.procrastinate == "applied"
    assert (report.schema_from, report.schema_to) == (0, SCHEMA_VERSION)
    tables = _tables(cluster_url)
    assert {"public.procrastinate_jobs", "public.procrastinate_workers"} <= tables
    assert {
        "docutray_cluster.cluster_meta",
        "docutray_cluster.nodes",
        "docutray_cluster.rate",
    } <= tables
    assert _query(
        cluster_url,
        "SELECT schema_version, procrastinate_migration FROM docutray_cluster.cluster_meta",
    ) == [(SCHEMA_VERSION, latest_procrastinate_migration())]
    assert _query(cluster_url, "SELECT rate, pause_until FROM docutray_cluster.rate") == [
        (None, None)
    ]
    check_schema(cluster_url)


def test_init_is_idempotent(cluster_url: str) -> None:
    """A second init changes nothing and says everything is up to date."""
    init_schema(cluster_url)
    _query(cluster_url, "UPDATE docutray_cluster.rate SET rate = 7")
    report = init_schema(cluster_url)
    assert report.procrastinate == "up to date"
    assert (report.schema_from, report.schema_to) == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert "up to date" in report.lines()[1]
    assert _query(cluster_url, "SELECT rate FROM docutray_cluster.rate") == [(7.0,)]


def test_init_from_three_processes_at_once(cluster_url: str) -> None:
    """Three processes initialising one empty database together all succeed: the advisory lock
    lets one create, the others find it done."""
    code = (
        "import sys\n"
        "from docutray_watch.cluster.schema import init_schema\n"
        "sys.stdin.read()\n"  # wait for the go, so the three start together
        "print(init_schema(sys.argv[1]).procrastinate)\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, cluster_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:  # the go: each one is past its imports, blocked on stdin
        assert process.stdin is not None
        process.stdin.close()
    outputs = []
    for process in processes:
        process.wait(timeout=120)
        assert process.stdout is not None
        assert process.stderr is not None
        outputs.append((process.stdout.read(), process.stderr.read()))
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert sorted(out.strip() for out, _ in outputs) == ["applied", "up to date", "up to date"]
    assert _query(cluster_url, "SELECT count(*) FROM docutray_cluster.cluster_meta") == [(1,)]
    assert _query(cluster_url, "SELECT count(*) FROM docutray_cluster.rate") == [(1,)]


def test_uninitialised_database_is_refused(cluster_url: str) -> None:
    """check_schema on an empty database says to run `cluster init`."""
    with pytest.raises(ClusterSchemaError, match=r"not initialised.*cluster init"):
        check_schema(cluster_url)


def test_procrastinate_alone_is_not_enough(cluster_url: str) -> None:
    """A database with procrastinate's tables but not ours is not initialised."""
    import procrastinate.schema

    _query(cluster_url, procrastinate.schema.SchemaManager.get_schema())
    with pytest.raises(ClusterSchemaError, match="not initialised"):
        check_schema(cluster_url)
    report = init_schema(cluster_url)
    assert report.procrastinate.startswith("present")
    check_schema(cluster_url)


def test_newer_schema_is_refused_by_check_and_init(initialised_url: str) -> None:
    """A schema version above this docutray-watch's is refused: upgrade this node."""
    _query(initialised_url, "UPDATE docutray_cluster.cluster_meta SET schema_version = 99")
    with pytest.raises(ClusterSchemaError, match=r"newer.*upgrade docutray-watch"):
        check_schema(initialised_url)
    with pytest.raises(ClusterSchemaError, match="newer"):
        init_schema(initialised_url)
    assert _query(initialised_url, "SELECT schema_version FROM docutray_cluster.cluster_meta") == [
        (99,)
    ]


def test_newer_procrastinate_schema_is_refused(initialised_url: str) -> None:
    """A procrastinate migration newer than the installed package's is refused."""
    _query(
        initialised_url,
        "UPDATE docutray_cluster.cluster_meta SET procrastinate_migration = '99.00.00_01_future'",
    )
    with pytest.raises(ClusterSchemaError, match="upgrade procrastinate"):
        check_schema(initialised_url)


def test_older_procrastinate_schema_is_upgraded_by_init(
    initialised_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database recorded at an older procrastinate migration is refused by check_schema;
    init applies exactly the migrations after the recorded one, in order."""
    from docutray_watch.cluster import schema

    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "90.00.00_01_first.sql").write_text("CREATE TABLE never_applied ();")
    (folder / "90.01.00_01_second.sql").write_text("CREATE TABLE second_applied (n int);")
    (folder / "90.01.00_50_third.sql").write_text("INSERT INTO second_applied VALUES (3);")
    monkeypatch.setattr(schema, "_procrastinate_migrations", lambda: sorted(folder.glob("*.sql")))
    _query(
        initialised_url,
        "UPDATE docutray_cluster.cluster_meta SET procrastinate_migration = '90.00.00_01_first'",
    )
    with pytest.raises(ClusterSchemaError, match=r"older.*cluster init"):
        check_schema(initialised_url)
    report = init_schema(initialised_url)
    assert report.procrastinate == "upgraded (2 migration(s))"
    assert _query(initialised_url, "SELECT n FROM second_applied") == [(3,)]
    assert "public.never_applied" not in _tables(initialised_url)
    check_schema(initialised_url)


def test_unreachable_database(cluster_url: str) -> None:
    """A database nobody listens for is an unreachable error naming it without its password."""
    url = "postgresql+psycopg://postgres:pw-hidden@127.0.0.1:9/nothing"
    with pytest.raises(ClusterUnreachableError) as caught:
        check_schema(url)
    assert "127.0.0.1:9/nothing" in str(caught.value)
    assert "pw-hidden" not in str(caught.value)


def test_journal_migration_runs_when_present(
    cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the journal's PostgreSQL store exists, init calls its `migrate(url)` too."""
    calls: list[str] = []
    module = types.ModuleType("docutray_watch.journal.postgres")
    module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    module.migrate = calls.append  # type: ignore[attr-defined]
    module.SCHEMA_VERSION = 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    report = init_schema(cluster_url)
    assert calls == [cluster_url]
    assert report.journal == "migrated (version 3)"


def test_version_2_is_upgraded_with_the_readiness_table(initialised_url: str) -> None:
    """A database at schema version 2 (before shared-folder readiness) is refused by
    check_schema; init adds `shared_readiness` and records the current version, keeping the rows
    it had."""
    _query(initialised_url, "DROP TABLE docutray_cluster.shared_readiness")
    _query(initialised_url, "UPDATE docutray_cluster.cluster_meta SET schema_version = 2")
    _query(initialised_url, "UPDATE docutray_cluster.rate SET rate = 7")
    with pytest.raises(ClusterSchemaError, match=r"older.*cluster init"):
        check_schema(initialised_url)
    report = init_schema(initialised_url)
    assert (report.schema_from, report.schema_to) == (2, SCHEMA_VERSION)
    assert "docutray_cluster.shared_readiness" in _tables(initialised_url)
    assert _query(initialised_url, "SELECT rate FROM docutray_cluster.rate") == [(7.0,)]
    check_schema(initialised_url)
    assert init_schema(initialised_url).schema_from == SCHEMA_VERSION
