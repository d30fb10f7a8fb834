"""The `database` sink: one row per (pipeline, sha256, step_id) in a SQL table, upserted.

Any URL SQLAlchemy supports; SQLite works without extras, PostgreSQL through psycopg 3
(`pip install 'docutray-watch[postgres]'`), where `data` and `error` are JSONB columns. The table is
created if missing (unless `create_table: false`). Redelivery updates the same row. SQLAlchemy is
imported only when a database sink is configured.

Modules, each importing only those before it: `_url` (database URLs), `config` (the options),
`_sqltable` (the table and the writer, SQLAlchemy), `sink` (the sink class and its hook). This
package is the plugin registered for the built-in sink (`register_sink_types`).
"""

from __future__ import annotations

from typing import Any

from docutray_watch.sinks.database.config import DEFAULT_TABLE, KEY_COLUMNS, DatabaseConfig
from docutray_watch.sinks.database.sink import DatabaseSink, register_sink_types

__all__ = ["DEFAULT_TABLE", "KEY_COLUMNS", "DatabaseConfig", "DatabaseSink", "register_sink_types"]


def __getattr__(name: str) -> Any:
    # The SQLAlchemy helpers stay importable from here without importing SQLAlchemy up front.
    if name == "engine_url":
        from docutray_watch.sinks.database import _url

        return _url.engine_url
    if name in ("results_table", "record_row"):
        from docutray_watch.sinks.database import _sqltable

        return getattr(_sqltable, name)
    raise AttributeError(name)
