"""The tables of the PostgreSQL journal, as SQLAlchemy Core objects the queries are built from.

They carry no schema name: the engine maps them to the store's schema (`schema_translate_map`),
so one database can hold several journals side by side (tests, staging). The DDL that creates
them is in `migrations.py` (versioned SQL, not `create_all`); a test checks the two agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = [
    "deliveries",
    "doc_counts",
    "documents",
    "meta",
    "metadata",
    "schema_version",
    "source_identity",
    "step_latency",
    "steps",
    "type_counts",
]

metadata = sa.MetaData()

# NULL stays SQL NULL (not the JSON word `null`): "no result" and "no detail" read back as None.
_JSON = sa.JSON(none_as_null=True)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("pipeline", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("relative_path", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger),
    sa.Column("mtime_ns", sa.BigInteger),
    sa.Column("ctime_ns", sa.BigInteger),
    sa.Column("inode", sa.BigInteger),
    sa.Column("sha256", sa.Text),
    sa.Column("content_type", sa.Text),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.Text),
    sa.Column("error_stage", sa.Text),
    sa.Column("error_detail", _JSON),
    sa.Column("flags", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("duplicate_of", sa.BigInteger),
    sa.Column("archive_to", sa.Text),
    sa.Column("archived_to", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double),
    # Multi-node: which node holds the file, the fencing counter, and the content generation.
    sa.Column("node", sa.Text),
    sa.Column("lease", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
    # Pipelines that identify (schema 2): the type code answered and the whole answer.
    sa.Column("identified_type", sa.Text),
    sa.Column("identification", _JSON),
    # A source document's version at intake (schema 3).
    sa.Column("source_version", sa.Text),
)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("document_id", sa.BigInteger, sa.ForeignKey("documents.id"), nullable=False),
    sa.Column("step_id", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("execution_id", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("uncertain", sa.Integer, nullable=False, server_default="0"),
    sa.Column("first_try_at", sa.Double),
    sa.Column("submitted_at", sa.Double),
    sa.Column("completed_at", sa.Double),
    sa.Column("result", _JSON),
    sa.Column("error", sa.Text),
    sa.Column("http_status", sa.Integer),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("step_row", sa.BigInteger, sa.ForeignKey("steps.id"), nullable=False),
    sa.Column("document_id", sa.BigInteger, sa.ForeignKey("documents.id"), nullable=False),
    sa.Column("sink", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("receipt", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("delivered_at", sa.Double),
)

step_latency = sa.Table(
    "step_latency",
    metadata,
    sa.Column("step_id", sa.Text, primary_key=True),
    sa.Column("size_class", sa.Integer, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("mean", sa.Double, nullable=False),
    sa.Column("variance", sa.Double, nullable=False),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

doc_counts = sa.Table(
    "doc_counts",
    metadata,
    sa.Column("pipeline", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, primary_key=True),
    sa.Column("word", sa.Text, primary_key=True),
    sa.Column("day", sa.Text, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

type_counts = sa.Table(
    "type_counts",
    metadata,
    sa.Column("pipeline", sa.Text, primary_key=True),
    sa.Column("identified_type", sa.Text, primary_key=True),
    sa.Column("word", sa.Text, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

source_identity = sa.Table(
    "source_identity",
    metadata,
    sa.Column("node", sa.Text, primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("size", sa.BigInteger, primary_key=True),
    sa.Column("mtime_ns", sa.BigInteger, primary_key=True),
    sa.Column("inode", sa.BigInteger, primary_key=True),
    sa.Column("pipeline", sa.Text, nullable=False),
    sa.Column("document_id", sa.BigInteger, sa.ForeignKey("documents.id", ondelete="SET NULL")),
    sa.Column("created_at", sa.Double, nullable=False),
)
