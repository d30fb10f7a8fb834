"""The SQLAlchemy side of the `database` sink, imported only when a database sink is used.

SQLAlchemy takes a third of a second to import; a daemon without a database sink never pays it.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from docutray_watch.records import ResultRecord
from docutray_watch.sinks.base import PermanentSinkError, Receipt, SinkError
from docutray_watch.sinks.database._url import engine_url, safe_url
from docutray_watch.sinks.database.config import DEFAULT_TABLE, KEY_COLUMNS, DatabaseConfig

__all__ = [
    "ADDED_COLUMNS",
    "SqlTableWriter",
    "record_row",
    "results_table",
]

log = structlog.get_logger("docutray_watch.sinks.database")

# --- the table ----------------------------------------------------------------------------------


def _json_type() -> sa.types.TypeEngine[Any]:
    # none_as_null: a missing `error` is SQL NULL, not the JSON value null.
    generic = sa.JSON(none_as_null=True)
    return generic.with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


# Columns added after the first release: a table created before lacks them and gets them with
# ALTER TABLE at the sink's first delivery (they are nullable, so old rows stay valid).
ADDED_COLUMNS = ("identification",)


def results_table(name: str = DEFAULT_TABLE, schema: str | None = None) -> sa.Table:
    """The table definition: one row per `(pipeline, sha256, step_id)`."""
    return sa.Table(
        name,
        sa.MetaData(schema=schema),
        sa.Column("pipeline", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("step_id", sa.String(200), primary_key=True),
        sa.Column("document_name", sa.Text, nullable=False),
        sa.Column("document_path", sa.Text, nullable=False),
        sa.Column("relative_path", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("execution_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("data", _json_type()),
        sa.Column("error", _json_type()),
        sa.Column("original_filename", sa.Text),
        sa.Column("request_timestamp", sa.DateTime(timezone=True)),
        sa.Column("response_timestamp", sa.DateTime(timezone=True)),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        # The document's identified type (pipelines with `identify`); NULL for the others.
        sa.Column("identification", _json_type()),
    )


def _utc(moment: datetime) -> datetime:
    # SQLite keeps no zone: store every timestamp in UTC so all backends agree.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return _utc(datetime.fromisoformat(value))
    except ValueError:
        log.warning("database_timestamp_unparsed", value=value[:64])
        return None


def record_row(record: ResultRecord, *, delivered_at: datetime | None = None) -> dict[str, Any]:
    """The row stored for `record` (JSON columns hold JSON-ready values)."""
    document = record.document
    as_json = record.to_dict()
    return {
        "pipeline": record.pipeline,
        "sha256": document.sha256,
        "step_id": record.step_id,
        "document_name": document.name,
        "document_path": document.path,
        "relative_path": document.relative_path,
        "size": document.size,
        "content_type": document.content_type,
        "execution_id": record.execution_id,
        "status": record.status,
        "data": as_json["data"],
        "error": as_json["error"],
        "original_filename": record.original_filename,
        "request_timestamp": _parse_timestamp(record.request_timestamp),
        "response_timestamp": _parse_timestamp(record.response_timestamp),
        "submitted_at": _utc(record.submitted_at),
        "completed_at": _utc(record.completed_at),
        "delivered_at": _utc(delivered_at or datetime.now(UTC)),
        "schema_version": record.schema_version,
        "identification": as_json["identification"],
    }


# --- upserts ------------------------------------------------------------------------------------


def _on_conflict_upsert(
    insert: Callable[[sa.Table], Any],
) -> Callable[[Connection, sa.Table, dict[str, Any]], None]:
    def upsert(conn: Connection, table: sa.Table, row: dict[str, Any]) -> None:
        statement = insert(table).values(row)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c[name] for name in KEY_COLUMNS],
            set_={name: statement.excluded[name] for name in row if name not in KEY_COLUMNS},
        )
        conn.execute(statement)

    return upsert


def _update_or_insert(conn: Connection, table: sa.Table, row: dict[str, Any]) -> None:
    """Portable upsert: update the row with this key, insert it if there was none."""
    where = sa.and_(*(table.c[name] == row[name] for name in KEY_COLUMNS))
    changes = {name: value for name, value in row.items() if name not in KEY_COLUMNS}
    result = conn.execute(sa.update(table).where(where).values(changes))
    if result.rowcount == 0:
        try:
            conn.execute(sa.insert(table).values(row))
        except sa_exc.IntegrityError as exc:
            # Another delivery inserted this key since the update: the retry will update it.
            raise SinkError("the same result was inserted concurrently; retrying") from exc


_NATIVE_UPSERTS: dict[str, Callable[[Connection, sa.Table, dict[str, Any]], None]] = {
    "postgresql": _on_conflict_upsert(postgresql.insert),
    "sqlite": _on_conflict_upsert(sqlite.insert),
}


# --- the sink -----------------------------------------------------------------------------------


class SqlTableWriter:
    """What `DatabaseSink` does, with SQLAlchemy: upserts each record as one row of a table."""

    def __init__(self, config: DatabaseConfig, *, sink_id: str) -> None:
        self.config = config
        self.sink_id = sink_id
        self._url = engine_url(config.url.get_secret_value())
        self._password = self._url.password
        self.table = results_table(config.table, config.schema_)
        self._engine: Engine | None = None
        self._table_ready = False
        self._table_lock = threading.Lock()
        # Added columns the table still lacks (ALTER TABLE refused): left out of each row.
        self._absent: frozenset[str] = frozenset()

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, for messages."""
        return safe_url(self._url)

    @property
    def qualified_table(self) -> str:
        """`schema.table`, or `table` without a schema."""
        return self.table.fullname

    def open(self) -> None:
        """Create the engine and its pool; connections are made on first use."""
        if self._engine is not None:
            return
        backend = self._url.get_backend_name()
        pool_size = self.config.pool_size or self.config.concurrency
        try:
            self._engine = sa.create_engine(
                self._url,
                pool_pre_ping=True,  # a restarted database costs one failed ping, not a delivery
                pool_size=pool_size,
                hide_parameters=True,  # extracted data can be personal: keep it out of errors
                connect_args=_connect_args(backend, self.config.connect_timeout),
            )
        except (ImportError, sa_exc.ArgumentError, TypeError) as exc:
            raise SinkError(f"cannot set up {self.safe_url}: {self._reason(exc)}") from exc

    def close(self) -> None:
        """Close every pooled connection."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def _require_engine(self) -> Engine:
        if self._engine is None:
            self.open()
        assert self._engine is not None
        return self._engine

    def _ensure_table(self, engine: Engine) -> None:
        """Once per sink: create the table if configured to, and add the columns of
        `ADDED_COLUMNS` it lacks (later calls cost nothing)."""
        if self._table_ready:
            return
        with self._table_lock:
            if not self._table_ready:  # another thread may have done it meanwhile
                if self.config.create_table:
                    self._create_table(engine)
                self._absent = self._add_missing_columns(engine)
                self._table_ready = True

    def _add_missing_columns(self, engine: Engine) -> frozenset[str]:
        """ALTER TABLE ... ADD COLUMN for each added column an existing table lacks; returns
        those it still lacks (the database refused: rows are then stored without them)."""
        name, schema = self.table.name, self.table.schema
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(name, schema):
                return frozenset()  # not created here (create_table: false): the insert says so
            present = {column["name"] for column in inspector.get_columns(name, schema)}
        absent = set()
        for column_name in ADDED_COLUMNS:
            if column_name in present:
                continue
            column = self.table.c[column_name]
            preparer = engine.dialect.identifier_preparer
            ddl = (
                f"ALTER TABLE {preparer.format_table(self.table)} ADD COLUMN "
                f"{preparer.quote(column_name)} {column.type.compile(dialect=engine.dialect)}"
            )
            try:
                with engine.begin() as conn:
                    conn.execute(sa.text(ddl))
            except sa_exc.SQLAlchemyError as exc:
                with engine.connect() as conn:  # another process may have added it meanwhile
                    columns = sa.inspect(conn).get_columns(name, schema)
                if column_name not in {c["name"] for c in columns}:
                    log.warning(
                        "sink_column_not_added",
                        sink=self.sink_id,
                        table=self.qualified_table,
                        column=column_name,
                        error=self._reason(exc),
                    )
                    absent.add(column_name)
                continue
            log.info(
                "sink_column_added",
                sink=self.sink_id,
                table=self.qualified_table,
                column=column_name,
            )
        return frozenset(absent)

    def _create_table(self, engine: Engine) -> None:
        try:
            with engine.begin() as conn:
                existed = sa.inspect(conn).has_table(self.table.name, self.table.schema)
                self.table.metadata.create_all(conn, checkfirst=True)
        except (sa_exc.ProgrammingError, sa_exc.IntegrityError):
            # Another process created it between the check and the CREATE: fine if it exists.
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table(self.table.name, self.table.schema):
                    raise
            existed = True
        if not existed:
            log.info("sink_table_created", sink=self.sink_id, table=self.qualified_table)

    def check(self) -> str | None:
        """The database answers and the table, if present, is usable; creates nothing.

        Not even a SQLite file: `validate` must not have side effects. Returns a note when the
        file or the table will be created by the first delivery.
        """
        sqlite_file = self._sqlite_file()
        if sqlite_file is not None and not sqlite_file.exists():
            if not self.config.create_table:
                raise SinkError(
                    f"table {self.qualified_table} in {self.safe_url} does not exist (nor does "
                    "the file); create it or set create_table: true"
                )
            return self._sqlite_folder_note(sqlite_file)
        engine = self._check_engine(sqlite_file)
        try:
            with engine.connect() as conn:
                exists = sa.inspect(conn).has_table(self.table.name, self.table.schema)
                if not exists and self.config.create_table:
                    return f"table {self.qualified_table} will be created at the first delivery"
                self._check_table(conn)
                return self._added_columns_note(conn)
        except SinkError:
            raise
        except sa_exc.SQLAlchemyError as exc:
            raise self._translate(exc, "cannot use") from exc
        finally:
            if engine is not self._engine:
                engine.dispose()

    def _added_columns_note(self, conn: Connection) -> str | None:
        name, schema = self.table.name, self.table.schema
        present = {column["name"] for column in sa.inspect(conn).get_columns(name, schema)}
        lacking = [column for column in ADDED_COLUMNS if column not in present]
        if not lacking:
            return None
        return (
            f"table {self.qualified_table} lacks the column(s) {', '.join(lacking)}: "
            "added (ALTER TABLE) at the first delivery"
        )

    def _sqlite_file(self) -> Path | None:
        database = self._url.database
        if self._url.get_backend_name() != "sqlite" or not database:
            return None
        if database.startswith("file:"):
            return None  # a URI database: too many forms to second-guess; checked by connecting
        return Path(database)

    def _sqlite_folder_note(self, path: Path) -> str:
        folder = path.parent
        if not folder.is_dir():
            raise SinkError(f"{self.safe_url}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SinkError(f"{self.safe_url}: the folder {folder} is not writable by this user")
        return f"{path} will be created at the first delivery"

    def _check_engine(self, sqlite_file: Path | None) -> Engine:
        if sqlite_file is None:
            return self._require_engine()
        # Read-only: connecting normally would create a missing file or WAL side files.
        uri = f"file:{quote(str(sqlite_file))}?mode=ro"
        return sa.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(
                uri, uri=True, timeout=self.config.connect_timeout, check_same_thread=False
            ),
            poolclass=sa.pool.NullPool,
        )

    def _check_table(self, conn: Connection) -> None:
        inspector = sa.inspect(conn)
        where = f"table {self.qualified_table} in {self.safe_url}"
        if not inspector.has_table(self.table.name, self.table.schema):
            raise SinkError(f"{where} does not exist; create it or set create_table: true")
        present = {
            column["name"] for column in inspector.get_columns(self.table.name, self.table.schema)
        }
        missing = [
            column.name
            for column in self.table.columns
            if column.name not in present and column.name not in ADDED_COLUMNS
        ]
        if missing:
            raise SinkError(f"{where} lacks the columns {', '.join(missing)}")
        name, schema = self.table.name, self.table.schema
        primary = inspector.get_pk_constraint(name, schema).get("constrained_columns") or []
        keys: list[set[str | None]] = [set(primary)]
        keys += [set(u["column_names"]) for u in inspector.get_unique_constraints(name, schema)]
        keys += [set(i["column_names"]) for i in inspector.get_indexes(name, schema) if i["unique"]]
        if set(KEY_COLUMNS) not in keys:
            raise SinkError(
                f"{where} needs a primary key or unique constraint on "
                f"({', '.join(KEY_COLUMNS)}) so redelivery updates rows instead of adding them"
            )

    def deliver(self, record: ResultRecord) -> Receipt:
        """Upsert the record's row; delivering it again updates the same row."""
        engine = self._require_engine()
        row = record_row(record)
        upsert = _NATIVE_UPSERTS.get(engine.dialect.name, _update_or_insert)
        try:
            self._ensure_table(engine)
            for column in self._absent:
                row.pop(column, None)
            with engine.begin() as conn:
                upsert(conn, self.table, row)
        except sa_exc.SQLAlchemyError as exc:
            raise self._translate(exc, "cannot write to") from exc
        return {"database": self.safe_url, "table": self.qualified_table}

    def _translate(self, exc: Exception, doing: str) -> SinkError:
        """A `SinkError` (or permanent one) in operator terms, never showing the password."""
        where = f"{doing} table {self.qualified_table} in {self.safe_url}"
        reason = self._reason(exc)
        if isinstance(exc, sa_exc.DataError):
            return PermanentSinkError(f"{where}: the database refused the record: {reason}")
        if isinstance(exc, sa_exc.IntegrityError):
            return PermanentSinkError(f"{where}: the record breaks a constraint: {reason}")
        if isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError
        ):
            return SinkError(f"{where}: database unavailable: {reason}")
        if isinstance(exc, sa_exc.TimeoutError):
            return SinkError(f"{where}: no free connection in the pool: {reason}")
        return SinkError(f"{where}: {reason}")

    def _reason(self, exc: BaseException) -> str:
        original = getattr(exc, "orig", None)
        text = str(original if original is not None else exc).strip()
        reason = text.splitlines()[0].strip() if text else type(exc).__name__
        if self._password:
            reason = reason.replace(self._password, "***")
        return reason


def _connect_args(backend: str, timeout: float) -> Mapping[str, Any]:
    if backend == "postgresql" or backend in ("mysql", "mariadb"):
        return {"connect_timeout": max(1, math.ceil(timeout))}
    if backend == "sqlite":
        return {"timeout": timeout}
    return {}
