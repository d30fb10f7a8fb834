"""Fixtures for the sink tests: a real S3 protocol server (moto), PostgreSQL, SQLite, a TCP proxy.

Everything listens on 127.0.0.1. The S3 fixtures isolate boto3 from the machine's AWS setup; the
PostgreSQL fixtures skip when the server at 127.0.0.1:5432 is unreachable, except under `CI=true`
where they fail, so a broken CI database never passes silently.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.s3kit import (
    REGION,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    MotoServer,
    client,
    hide_aws_setup,
    new_bucket,
    running_moto,
)

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_URL = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/test"


# --- S3 (moto server mode) ----------------------------------------------------------------------


@pytest.fixture(name="aws_isolation", autouse=False)
def aws_isolation_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide the machine's AWS configuration and credentials from boto3."""
    hide_aws_setup(monkeypatch, tmp_path)


@pytest.fixture(name="moto_server", scope="session")
def moto_server_fixture() -> Iterator[MotoServer]:
    """One moto S3 server for the whole session."""
    yield from running_moto()


@pytest.fixture(name="s3_client")
def s3_client_fixture(moto_server: MotoServer, aws_isolation: None) -> Any:
    """A plain boto3 client of the moto server, to look at what a sink stored."""
    return client("s3", moto_server, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY)


@pytest.fixture(name="bucket")
def bucket_fixture(s3_client: Any) -> Iterator[str]:
    """A fresh, empty bucket, removed with its objects afterwards."""
    with new_bucket(s3_client, "test") as name:
        yield name


S3Options = Callable[..., dict[str, Any]]


@pytest.fixture(name="s3_options")
def s3_options_fixture(moto_server: MotoServer) -> S3Options:
    """Build an s3 sink block aimed at the moto server with the test credentials."""

    def options(bucket: str, **overrides: Any) -> dict[str, Any]:
        block: dict[str, Any] = {
            "type": "s3",
            "bucket": bucket,
            "endpoint_url": moto_server.endpoint_url,
            "region": REGION,
            "aws_access_key_id": S3_ACCESS_KEY,
            "aws_secret_access_key": S3_SECRET_KEY,
            "max_attempts": 1,  # botocore retries would only slow the failure tests down
        }
        block.update(overrides)
        return block

    return options


@pytest.fixture(name="own_moto_server")
def own_moto_server_fixture(moto_server: MotoServer) -> Iterator[MotoServer]:
    """A second moto server (sharing the first one's buckets) that a test may stop and restart."""
    yield from running_moto()


# --- SQL databases ------------------------------------------------------------------------------


def _postgres_problem() -> str | None:
    import psycopg

    try:
        with psycopg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test", connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {exc}"


@pytest.fixture(name="postgres_url", scope="session")
def postgres_url_fixture() -> str:
    """The test PostgreSQL URL; skips when unreachable, fails instead when CI=true."""
    problem = _postgres_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return PG_URL


@dataclass
class Database:
    """A database URL and a table name of one test; the table is dropped afterwards."""

    url: str
    table: str
    engine: sa.Engine = field(repr=False)

    def rows(self, **where: Any) -> list[sa.RowMapping]:
        """The rows of the test table (optionally filtered by column values)."""
        table = sa.Table(self.table, sa.MetaData(), autoload_with=self.engine)
        query = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
        with self.engine.connect() as conn:
            return list(conn.execute(query).mappings())


def _database(url: str) -> Iterator[Database]:
    engine = sa.create_engine(url)
    database = Database(url=url, table=f"results_{uuid.uuid4().hex[:12]}", engine=engine)
    yield database
    sa.Table(database.table, sa.MetaData()).drop(engine, checkfirst=True)
    engine.dispose()


@pytest.fixture(name="sqlite_db")
def sqlite_db_fixture(tmp_path: Path) -> Iterator[Database]:
    """A SQLite file in the test's temporary folder."""
    yield from _database(f"sqlite:///{tmp_path / 'results.db'}")


@pytest.fixture(name="postgres_db")
def postgres_db_fixture(postgres_url: str) -> Iterator[Database]:
    """The test PostgreSQL database with a table name of this test's own."""
    yield from _database(postgres_url)


@pytest.fixture(name="db", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_fixture(request: pytest.FixtureRequest) -> Database:
    """Each database backend in turn."""
    database: Database = request.getfixturevalue(f"{request.param}_db")
    return database


# --- a TCP proxy that can play "database down" ---------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `down()` refuses and cuts connections, `up()` heals.

    Down closes the listening socket (new connections are refused, as with a stopped server) and
    every forwarded connection (pooled connections die, as with a restarted server).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        """Accept connections on the proxy port (the same one after a `down()`)."""
        listener = socket.create_server(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, listener)

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)  # shutdown() wakes the thread blocked in accept()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture(name="pg_proxy")
def pg_proxy_fixture(postgres_url: str) -> Iterator[TcpProxy]:
    """A proxy in front of the test PostgreSQL server, up at the start."""
    proxy = TcpProxy((PG_HOST, PG_PORT))
    proxy.up()
    yield proxy
    proxy.down()
