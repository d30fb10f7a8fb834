"""The cluster database's schema: procrastinate's, ours (`docutray_cluster`), and the check that
a node runs before it starts.

`init_schema(url)` (behind `docutray-watch cluster init`) is idempotent and safe from every node
at once: one transaction, whose first statement is `pg_advisory_xact_lock`, applies what is
missing and records the versions in `docutray_cluster.cluster_meta`:

- procrastinate's schema: its `schema.sql` when its tables are absent, else the migrations it
  ships that are newer than the one recorded (procrastinate keeps no version table itself);
- ours: the numbered steps of `_MIGRATIONS` above the recorded `schema_version`.

The journal's PostgreSQL tables (`docutray_watch.journal.postgres`, when that module is present)
are migrated after that transaction by their own `migrate(url)`.

`check_schema(url)` raises `ClusterSchemaError` (exit 78) for a database that was never
initialised, or that a newer docutray-watch or procrastinate has upgraded; and for an older one,
since `cluster init` must upgrade it first.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg

from docutray_watch.cluster._db import (
    SCHEMA_LOCK,
    SCHEMA_NAME,
    connect,
    safe_url,
    take_lock,
)
from docutray_watch.cluster.errors import ClusterSchemaError

__all__ = [
    "SCHEMA_VERSION",
    "InitReport",
    "check_schema",
    "init_schema",
    "latest_procrastinate_migration",
]

_JOURNAL_MODULE = "docutray_watch.journal.postgres"
_INIT_HINT = "run `docutray-watch cluster init -c FILE` (from any one node)"

_V1 = """
CREATE SCHEMA IF NOT EXISTS docutray_cluster;

-- One row: the versions of the schemas, and the configuration every node must share.
CREATE TABLE docutray_cluster.cluster_meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version integer NOT NULL,
    procrastinate_migration text NOT NULL,
    config_fingerprint text,
    config_normalised jsonb,
    config_stored_at timestamptz,
    config_stored_by text,
    initialised_at timestamptz NOT NULL DEFAULT now(),
    upgraded_at timestamptz NOT NULL DEFAULT now()
);

-- The daemons that joined: a name is held by one live instance at a time.
CREATE TABLE docutray_cluster.nodes (
    name text PRIMARY KEY,
    instance uuid NOT NULL,
    host text NOT NULL,
    boot_id text NOT NULL,
    pid integer NOT NULL,
    version text NOT NULL,
    started_at timestamptz NOT NULL,
    last_heartbeat timestamptz NOT NULL,
    stopped_at timestamptz
);

-- One row: the cluster's API request rate (null until learned) and the pause a 429 asked for.
CREATE TABLE docutray_cluster.rate (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    rate double precision CHECK (rate > 0),
    pause_until timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO docutray_cluster.rate (singleton) VALUES (true);
"""

_V2 = """
-- An execution slot per step that took one (`cluster.limits`): counted only while its step is
-- pending, submitting or polling, so a step that ended frees its slot even if this row stays.
CREATE TABLE docutray_cluster.slots (
    step_row bigint PRIMARY KEY,
    node text NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX slots_node ON docutray_cluster.slots (node);

-- The cluster's token bucket for API requests (rate is in `rate`; null tokens: a full bucket).
ALTER TABLE docutray_cluster.rate
    ADD COLUMN tokens double precision,
    ADD COLUMN refilled_at timestamptz,
    ADD COLUMN throttled_at timestamptz;
"""

_V3 = """
-- What the scans of a shared folder saw of each file not taken yet (`cluster.readiness`): the next
-- scan may run on another node. Times are PostgreSQL's clock (the nodes' clocks need not agree).
CREATE TABLE docutray_cluster.shared_readiness (
    pipeline text NOT NULL,
    relative_path text NOT NULL,
    size bigint NOT NULL,
    mtime_ns bigint NOT NULL,
    inode bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    unchanged_since timestamptz NOT NULL,
    PRIMARY KEY (pipeline, relative_path)
);
"""

# Step N brings the schema from version N-1 to N. Never edit a released step: add one.
_MIGRATIONS: tuple[LiteralString, ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(_MIGRATIONS)
"""The version of the `docutray_cluster` schema this docutray-watch uses."""


@dataclass(frozen=True)
class InitReport:
    """What `init_schema` did."""

    procrastinate: str
    """`applied`, `upgraded (N migrations)` or `up to date`."""
    schema_from: int
    """Our schema version found (0: none)."""
    schema_to: int
    journal: str
    """What the journal's migration did, or why it did not run."""

    def lines(self) -> list[str]:
        """One line per part, for an operator."""
        if self.schema_from == self.schema_to:
            ours = f"up to date (version {self.schema_to})"
        elif self.schema_from == 0:
            ours = f"created (version {self.schema_to})"
        else:
            ours = f"upgraded from version {self.schema_from} to {self.schema_to}"
        return [
            f"procrastinate schema: {self.procrastinate}",
            f"{SCHEMA_NAME} schema: {ours}",
            f"journal tables: {self.journal}",
        ]


def _procrastinate_migrations() -> list[Path]:
    import procrastinate.schema

    folder = Path(procrastinate.schema.SchemaManager.get_migrations_path())
    return sorted(folder.glob("*.sql"), key=lambda path: path.name)


def latest_procrastinate_migration() -> str:
    """The name (without `.sql`) of the newest migration of the installed procrastinate, which
    its `schema.sql` includes: `03.04.00_50_post_add_retry_failed_job_procedure`."""
    return _procrastinate_migrations()[-1].stem


def _relation_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _meta(conn: psycopg.Connection[Any]) -> tuple[int, str] | None:
    if not _relation_exists(conn, "docutray_cluster.cluster_meta"):
        return None
    row = conn.execute(
        "SELECT schema_version, procrastinate_migration FROM docutray_cluster.cluster_meta"
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def _newer_schema_error(url: str, found: int) -> ClusterSchemaError:
    return ClusterSchemaError(
        f"the cluster database {safe_url(url)} has {SCHEMA_NAME} schema version {found}, newer "
        f"than this docutray-watch knows ({SCHEMA_VERSION}): upgrade docutray-watch on this node"
    )


def _newer_procrastinate_error(url: str, found: str) -> ClusterSchemaError:
    return ClusterSchemaError(
        f"the cluster database {safe_url(url)} has procrastinate's schema at migration "
        f"{found}, newer than the installed procrastinate's "
        f"({latest_procrastinate_migration()}): upgrade procrastinate on this node"
    )


def init_schema(url: str) -> InitReport:
    """Apply procrastinate's schema and ours where missing or older; then the journal's."""
    latest = latest_procrastinate_migration()
    with connect(url) as conn, conn.transaction():
        take_lock(conn, SCHEMA_LOCK)
        meta = _meta(conn)
        found_version = meta[0] if meta else 0
        if found_version > SCHEMA_VERSION:
            raise _newer_schema_error(url, found_version)
        procrastinate = _apply_procrastinate(conn, url, meta[1] if meta else None, latest)
        for step in _MIGRATIONS[found_version:]:
            conn.execute(step)
        conn.execute(
            (
                "INSERT INTO docutray_cluster.cluster_meta"
                " (schema_version, procrastinate_migration) VALUES (%s, %s)"
                " ON CONFLICT (singleton) DO UPDATE SET"
                " schema_version = EXCLUDED.schema_version,"
                " procrastinate_migration = EXCLUDED.procrastinate_migration,"
                " upgraded_at = CASE WHEN cluster_meta.schema_version = EXCLUDED.schema_version"
                " AND cluster_meta.procrastinate_migration = EXCLUDED.procrastinate_migration"
                " THEN cluster_meta.upgraded_at ELSE now() END"
            ),
            (SCHEMA_VERSION, latest),
        )
    return InitReport(
        procrastinate=procrastinate,
        schema_from=found_version,
        schema_to=SCHEMA_VERSION,
        journal=_migrate_journal(url),
    )


def _apply_procrastinate(
    conn: psycopg.Connection[Any], url: str, recorded: str | None, latest: str
) -> str:
    import procrastinate.schema

    if not _relation_exists(conn, "procrastinate_jobs"):
        conn.execute(procrastinate.schema.SchemaManager.get_schema())
        return "applied"
    if recorded is None:
        # Applied by someone else (procrastinate's own CLI): nothing says which version it is.
        return "present (applied outside docutray-watch; assumed current)"
    if recorded > latest:
        raise _newer_procrastinate_error(url, recorded)
    pending = [path for path in _procrastinate_migrations() if path.stem > recorded]
    for path in pending:
        # procrastinate's own SQL from its package; no parameters, so `%` is taken as is.
        conn.execute(path.read_text(encoding="utf-8"))
    return f"upgraded ({len(pending)} migration(s))" if pending else "up to date"


def _migrate_journal(url: str) -> str:
    """Run the journal store's own `migrate(url)` when this docutray-watch has one."""
    if importlib.util.find_spec(_JOURNAL_MODULE) is None:
        return "not part of this version"
    module = importlib.import_module(_JOURNAL_MODULE)
    migrate = getattr(module, "migrate", None)
    if migrate is None:
        return "not part of this version"
    result = migrate(url)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    version = getattr(module, "SCHEMA_VERSION", None)
    return f"migrated (version {version})" if version is not None else "migrated"


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def check_schema(url: str) -> None:
    """Refuse a database that `cluster init` has not prepared for this version (exit 78)."""
    with connect(url) as conn:
        meta = _meta(conn)
        if meta is None or not _relation_exists(conn, "procrastinate_jobs"):
            raise ClusterSchemaError(
                f"the cluster database {safe_url(url)} is not initialised: {_INIT_HINT}"
            )
    version, migration = meta
    if version > SCHEMA_VERSION:
        raise _newer_schema_error(url, version)
    if migration > latest_procrastinate_migration():
        raise _newer_procrastinate_error(url, migration)
    if version < SCHEMA_VERSION or migration < latest_procrastinate_migration():
        raise ClusterSchemaError(
            f"the cluster database {safe_url(url)} was initialised by an older docutray-watch "
            f"(schema version {version}, procrastinate migration {migration}): stop every node, "
            f"then {_INIT_HINT} to upgrade it"
        )
