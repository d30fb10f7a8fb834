"""Fixtures for the journal's tests: a fresh PostgreSQL database per test.

The database is created on the server at 127.0.0.1:5432 (user postgres) and dropped afterwards.
When the server is unreachable the PostgreSQL tests skip, except under `CI=true` where they fail,
so a broken CI database never passes silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

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
