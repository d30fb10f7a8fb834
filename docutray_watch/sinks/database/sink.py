"""The `database` sink class and its plugin registration; the SQL work is in `_sqltable`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from docutray_watch.hookspecs import hookimpl
from docutray_watch.records import ResultRecord
from docutray_watch.sinks.base import Receipt, Sink
from docutray_watch.sinks.database.config import DatabaseConfig

if TYPE_CHECKING:
    import sqlalchemy as sa

    from docutray_watch.sinks.database._sqltable import SqlTableWriter

__all__ = ["DatabaseSink", "register_sink_types"]


class DatabaseSink(Sink[DatabaseConfig]):
    """Upserts each result record as one row of a SQL table."""

    type = "database"
    description = "Upsert one row per document and step into a SQL table (SQLite, PostgreSQL…)."
    config_model = DatabaseConfig

    def __init__(self, config: DatabaseConfig, *, pipeline: str, sink_id: str) -> None:
        super().__init__(config, pipeline=pipeline, sink_id=sink_id)
        from docutray_watch.sinks.database._sqltable import SqlTableWriter

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
