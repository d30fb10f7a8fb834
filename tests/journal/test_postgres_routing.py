"""What only the PostgreSQL journal has for pipelines that route by document type: schema 2 (the
identification columns, the per-type index, `unrouted` in the content-once index) reached from a
schema-1 journal, and `unrouted` in the counters and the content claim.

The behaviour shared with SQLite is in `test_store_contract_routing.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
import sqlalchemy as sa

from docutray_watch.journal import IDENTIFY_STEP, DocumentState, StepState
from docutray_watch.journal.postgres import (
    SCHEMA_VERSION,
    ContentClaimed,
    PostgresStore,
    migrate,
    migrations,
)
from docutray_watch.journal.sqlite.counts import utc_day
from docutray_watch.records import Identification

pytestmark = pytest.mark.postgres

INVOICE = Identification(code="invoice", name="Invoice", confidence=0.9)
SHA = "c" * 64


def plain(url: str) -> str:
    """The URL for psycopg itself."""
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(name="store")
async def store_fixture(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_url)
    await store.open()
    yield store
    await store.close()


async def unrouted(store: PostgresStore, path: str = "/in/a.pdf") -> int:
    """A document identified as an invoice that no route takes, ended `unrouted`; its id."""
    doc, (step,) = await store.add_queued(
        "p", path, path.rsplit("/", 1)[-1], sha256=SHA, content_type="application/pdf",
        size=1, mtime_ns=1, steps=[IDENTIFY_STEP],
    )  # fmt: skip
    await store.step_submitting(step.id)
    await store.step_accepted(step.id, "exe-1", "ENQUEUED")
    await store.finish_step(step.id, state=StepState.SUCCESS)
    await store.set_identification(doc.id, INVOICE.model_dump_json(), "invoice")
    await store.mark_unrouted(doc.id, "no route")
    return doc.id


class TestSchema2:
    async def test_a_schema_1_journal_gains_the_columns_and_indexes(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """migrate on a schema-1 journal reports 1, adds identified_type and identification
        (NULL for its documents), the per-type index, and `unrouted` to the content index."""
        with monkeypatch.context() as patch:
            patch.setattr(migrations, "SCHEMA_VERSION", 1)
            assert await migrate(pg_url) == 0
        with psycopg.connect(plain(pg_url)) as conn:
            conn.execute(
                "INSERT INTO docutray.documents (pipeline, path, relative_path, sha256, state,"
                " attempts, created_at, updated_at) VALUES ('p', '/in/a.pdf', 'a.pdf', %s,"
                " 'queued', 1, 1, 1)",
                (SHA,),
            )
        assert SCHEMA_VERSION >= 2
        assert await migrate(pg_url) == 1
        store = PostgresStore(pg_url, migrate=False)
        await store.open()
        try:
            doc = await store.document(1)
            assert (doc.state, doc.identified_type, doc.identification) == ("queued", None, None)
            await store.set_identification(1, INVOICE.model_dump_json(), "invoice")
            assert await store.counts_by_type() == {"p": {"invoice": 1}}
        finally:
            await store.close()
        with psycopg.connect(plain(pg_url)) as conn:
            indexes = dict(
                conn.execute(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'docutray'"
                ).fetchall()
            )
        assert "identified_type IS NOT NULL" in indexes["documents_by_type"]
        assert "'unrouted'" in indexes["documents_content_once"]

    async def test_counting_by_type_can_use_the_partial_index(self, store: PostgresStore) -> None:
        """`status` stays fast with history: the per-type count can read `documents_by_type`
        (sequential scans off, as a large table would make the planner choose)."""
        async with store.transaction() as conn:
            await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = await conn.execute(
                sa.text(
                    "EXPLAIN SELECT pipeline, identified_type, count(*) FROM documents"
                    " WHERE identified_type IS NOT NULL GROUP BY pipeline, identified_type"
                )
            )
            assert "documents_by_type" in " ".join(str(r[0]) for r in plan)


class TestUnroutedInPostgres:
    async def test_the_counters_count_unrouted_like_the_rows(self, store: PostgresStore) -> None:
        """The trigger-kept counters follow a document to `unrouted`, to its finish (today's
        counts) and back to queued by retry."""
        doc_id = await unrouted(store)
        assert await store.counts() == {"p": {"unrouted": 1}}
        assert await store.outcome_counts() == {"p": {"unrouted": 1}}
        await store.finish(doc_id, "/in/a.pdf")
        assert await store.today_counts(utc_day()) == {"p": {"unrouted": 1}}
        await store.requeue(doc_id)
        assert await store.counts() == {"p": {"queued": 1}}
        assert await store.today_counts(utc_day()) == {}

    async def test_an_unrouted_document_keeps_its_content_claim(self, store: PostgresStore) -> None:
        """Its identification was paid for and retry runs the same row again: another file of
        the same content meets ContentClaimed (a duplicate of it, or a new generation), and
        the retry of the unrouted one still claims generation 0."""
        doc_id = await unrouted(store)
        holder = await store.content_holder("p", SHA)
        assert holder is not None
        assert holder.id == doc_id
        with pytest.raises(ContentClaimed):
            await store.add_queued(
                "p", "/in/copy.pdf", "copy.pdf", sha256=SHA, content_type="x", size=1,
                mtime_ns=1, steps=[IDENTIFY_STEP],
            )  # fmt: skip
        await store.finish(doc_id, "/in/a.pdf")
        row = await store.requeue(doc_id)
        assert row.state == DocumentState.QUEUED
        assert await store.next_generation("p", SHA) == 1
