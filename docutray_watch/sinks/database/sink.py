"""The `database` sink: one row per (pipeline, sha256, step_id) in a SQL table, upserted.

Any URL SQLAlchemy supports; SQLite works without extras, PostgreSQL through psycopg 3
(`pip install 'docutray-watch[postgres]'`), where `data` and `error` are JSONB columns. The table is
created if missing (unless `create_table: false`). Redelivery updates the same row. SQLAlchemy is
imported only when a database sink is configured (`_sqltable`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from docutray_watch.hookspecs import hookimpl
from docutray_watch.records import ResultRecord
from docutray_watch.sinks.base import Receipt, Sink, SinkConfig

if TYPE_CHECKING:
    import sqlalchemy as sa

    from docutray_watch.sinks._sqltable import SqlTableWriter

__all__ = ["KEY_COLUMNS", "DatabaseConfig", "DatabaseSink"]

DEFAULT_TABLE = "docutray_results"
KEY_COLUMNS = ("pipeline", "sha256", "step_id")
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


def __getattr__(name: str) -> Any:
    # The SQLAlchemy helpers stay importable from here without importing SQLAlchemy up front.
    if name in ("engine_url", "results_table", "record_row"):
        from docutray_watch.sinks import _sqltable

        return getattr(_sqltable, name)
    raise AttributeError(name)


# --- config -------------------------------------------------------------------------------------


class DatabaseConfig(SinkConfig):
    """Options of the database sink."""

    url: SecretStr = Field(
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:${DB_PASSWORD}@host/db or "
        "sqlite:////abs/path.db (a relative SQLite path, sqlite:///results.db, is relative to the "
        "config file's folder, like every other path). Never logged with its password."
    )
    table: str = Field(DEFAULT_TABLE, pattern=_IDENTIFIER, description="Table of the results.")
    schema_: str | None = Field(
        None,
        alias="schema",
        pattern=_IDENTIFIER,
        description="Database schema of the table (default: the connection's).",
    )
    create_table: bool = Field(
        True,
        description="Create the table if missing; when false, `validate` checks that it exists.",
    )
    pool_size: int | None = Field(
        None, ge=1, le=256, description="Connections kept open (default: `concurrency`)."
    )
    connect_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds to connect (PostgreSQL, MySQL) or to wait for a lock (SQLite).",
    )

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        from docutray_watch.sinks._sqltable import engine_url, sqlite_url_relative_to

        url = engine_url(value.get_secret_value())
        # A relative SQLite file follows the config file like every other path, not the working
        # directory (`/` under systemd) as SQLAlchemy would have it.
        resolved = sqlite_url_relative_to(url, (info.context or {}).get("config_dir"))
        if resolved is not url:
            return SecretStr(resolved.render_as_string(hide_password=False))
        return value


# --- the sink -----------------------------------------------------------------------------------


class DatabaseSink(Sink[DatabaseConfig]):
    """Upserts each result record as one row of a SQL table."""

    type = "database"
    description = "Upsert one row per document and step into a SQL table (SQLite, PostgreSQL…)."
    config_model = DatabaseConfig

    def __init__(self, config: DatabaseConfig, *, pipeline: str, sink_id: str) -> None:
        super().__init__(config, pipeline=pipeline, sink_id=sink_id)
        from docutray_watch.sinks._sqltable import SqlTableWriter

        self._writer: SqlTableWriter = SqlTableWriter(config, sink_id=sink_id)

    @property
    def table(self) -> sa.Table:
        """The SQLAlchemy table definition."""
        return self._writer.table

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, for messages."""
        return self._writer.safe_url

    @property
    def qualified_table(self) -> str:
        """`schema.table`, or `table` without a schema."""
        return self._writer.qualified_table

    def open(self) -> None:
        """Create the engine and its pool; connections are made on first use."""
        self._writer.open()

    def check(self) -> str | None:
        """The database answers and the table, if present, has its columns and unique key.

        Creates nothing; returns a note when the first delivery will create the file or table.
        """
        return self._writer.check()

    def deliver(self, record: ResultRecord) -> Receipt:
        """Upsert the record's row; delivering it again updates the same row."""
        return self._writer.deliver(record)

    def close(self) -> None:
        """Close every pooled connection."""
        self._writer.close()


@hookimpl
def register_sink_types(register: Callable[[type[Sink[Any]]], None]) -> None:
    """Register the database sink."""
    register(DatabaseSink)
