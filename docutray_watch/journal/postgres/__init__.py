"""The journal in PostgreSQL, for several nodes sharing the work (multi-node mode).

`PostgresStore` is a `StateStore` with the SQLite journal's semantics; `migrate(url)` creates or
upgrades the schema (idempotent, safe from every node at once); the rest is what several nodes
need beyond one machine's journal: leases and `LeaseLost` (fencing), source identities ("once
ever"), content generations and `ContentClaimed`. docs/cluster.md describes the tables and rules.
"""

from docutray_watch.journal.postgres.connection import ContentClaimed, LeaseLost
from docutray_watch.journal.postgres.migrations import (
    SCHEMA_VERSION,
    NewerSchemaError,
    SchemaNotReady,
    migrate,
)
from docutray_watch.journal.postgres.store import PostgresStore

__all__ = [
    "SCHEMA_VERSION",
    "ContentClaimed",
    "LeaseLost",
    "NewerSchemaError",
    "PostgresStore",
    "SchemaNotReady",
    "migrate",
]
