"""Options of the `database` sink; only validating a URL imports SQLAlchemy (`_url`)."""

from __future__ import annotations

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from docutray_watch.sinks.base import SinkConfig

__all__ = ["DEFAULT_TABLE", "KEY_COLUMNS", "DatabaseConfig"]

DEFAULT_TABLE = "docutray_results"
KEY_COLUMNS = ("pipeline", "sha256", "step_id")
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


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
        from docutray_watch.sinks.database._url import engine_url, sqlite_url_relative_to

        url = engine_url(value.get_secret_value())
        # A relative SQLite file follows the config file like every other path, not the working
        # directory (`/` under systemd) as SQLAlchemy would have it.
        resolved = sqlite_url_relative_to(url, (info.context or {}).get("config_dir"))
        if resolved is not url:
            return SecretStr(resolved.render_as_string(hide_password=False))
        return value
