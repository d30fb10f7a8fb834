"""Fixtures for the journal's tests: a fresh PostgreSQL database per test, and an open store of
each kind for the `StateStore` contract.

The database is created on the server at 127.0.0.1:5432 (user postgres) and dropped afterwards.
When the server is unreachable the PostgreSQL tests skip, except under `CI=true` where they fail,
so a broken CI database never passes silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from docutray_watch._memstore import MemoryStore
from docutray_watch.journal import SqliteStore, StateStore
from docutray_watch.journal.postgres import PostgresStore

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(name="pg_server", scope="session")
def pg_server_fixture() -> str:
    """The PostgreSQL server's URL (no database); skips when unreachable, fails when CI=true."""
    import psycopg

    try:
        with psycopg.connect(f"{PG_SERVER}/test", connect_timeout=3):
            pass
    except psycopg.Error as exc:
        problem = f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return PG_SERVER


@pytest.fixture(name="pg_url")
def pg_url_fixture(pg_server: str) -> Iterator[str]:
    """The URL of a database of this test's own, dropped (with its connections) afterwards."""
    import psycopg

    name = f"dw_journal_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(f"{pg_server}/test", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(f"{pg_server}/test", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


BACKENDS = ["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(name="store", params=BACKENDS)
async def store_fixture(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StateStore]:
    """An open, empty store of each kind; closed afterwards (a module may define its own)."""
    store: StateStore
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "journal.sqlite3")
    elif request.param == "memory":
        store = MemoryStore()
    else:
        store = PostgresStore(request.getfixturevalue("pg_url"))
    await store.open()
    yield store
    await store.close()
