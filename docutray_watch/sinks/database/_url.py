"""Database URLs of the `database` sink: parsing, driver check, SQLite paths relative to the config.

Apart from the table code (`_sqltable`), which depends on the config: the config model validates
its URL with these, so neither imports the other back.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

__all__ = ["engine_url", "safe_url", "sqlite_url_relative_to"]

_POSTGRES_EXTRA = "pip install 'docutray-watch[postgres]'"


def engine_url(raw: str) -> URL:
    """Parse a database URL and check its driver is installed; `ValueError` (without the URL)."""
    try:
        url = make_url(raw)
    except (sa_exc.ArgumentError, ValueError):
        raise ValueError(
            "not a database URL; examples: postgresql+psycopg://user@host/db, "
            "sqlite:////var/lib/docutray-watch/results.db"
        ) from None
    if url.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        # SQLAlchemy 2.0 maps plain postgresql:// to psycopg2; use psycopg 3 when that is absent.
        url = url.set(drivername="postgresql+psycopg")
    try:
        dialect = url.get_dialect()
    except sa_exc.NoSuchModuleError:
        raise ValueError(f"unknown database type {url.drivername!r}") from None
    if getattr(dialect, "is_async", False):
        raise ValueError(
            f"{url.drivername!r} is an asyncio driver; use a synchronous one "
            "(e.g. postgresql+psycopg)"
        )
    try:
        dialect.import_dbapi()
    except ImportError:
        hint = _POSTGRES_EXTRA if url.get_backend_name() == "postgresql" else "install it"
        raise ValueError(
            f"the database sink needs the {url.get_driver_name()!r} driver for "
            f"{url.get_backend_name()}: {hint}"
        ) from None
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError(
            "an in-memory SQLite database loses every result; give a file, "
            "e.g. sqlite:////var/lib/docutray-watch/results.db"
        )
    return url


def sqlite_url_relative_to(url: URL, base: str | os.PathLike[str] | None) -> URL:
    """A SQLite URL whose relative file path is made absolute under `base` (the config folder).

    Other databases, in-memory and `file:` URI databases, and absolute paths come back unchanged
    (the same object).
    """
    database = url.database
    if base is None or url.get_backend_name() != "sqlite" or not database:
        return url
    if database == ":memory:" or database.startswith("file:"):
        return url
    path = Path(database).expanduser()
    if path.is_absolute():
        return url if str(path) == database else url.set(database=str(path))
    return url.set(database=str(Path(base) / path))


def safe_url(url: URL) -> str:
    """The URL with its password masked, for messages."""
    return url.render_as_string(hide_password=True)
