"""`type_counts`: identified documents per pipeline, type code and word, kept by triggers (SQLite
schema 5, PostgreSQL schema 4) so that `status`'s table per type does not count `documents`.

The oracle is the query `outcomes_by_type` and `counts_by_type` ran before (a scan of the
identified documents): after any mix of inserts, moves, (re-)identifications, retries and
deletes, and after a journal of the previous schema gains the table, both methods answer what it
answers; and they read no `documents` row.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from docutray_watch.journal import DOCUMENT_STATES, IDENTIFY_STEP, Journal, SqliteStore, StateStore
from docutray_watch.journal.postgres import PostgresStore, migrate, migrations
from docutray_watch.journal.postgres import reports as pg_reports
from docutray_watch.journal.postgres.tx import Tx
from docutray_watch.journal.sqlite import SCHEMA_VERSION, schema
from tests.journal.test_store_contract import queued
from tests.journal.test_store_contract_routing import (
    INVOICE,
    RECEIPT,
    identified,
    requeue,
    run_step,
)

# The queries `outcomes_by_type` and `counts_by_type` ran before `type_counts` (SQL that both
# SQLite and PostgreSQL read): the oracle.
SCAN_OUTCOMES = (
    "SELECT pipeline, identified_type, CASE WHEN state = 'archived'"
    " THEN COALESCE(outcome, 'success') ELSE state END AS word, COUNT(*)"
    " FROM documents WHERE identified_type IS NOT NULL"
    " GROUP BY pipeline, identified_type, word ORDER BY pipeline, identified_type, word"
)
SCAN_TYPES = (
    "SELECT pipeline, identified_type, COUNT(*) FROM documents"
    " WHERE identified_type IS NOT NULL GROUP BY pipeline, identified_type"
    " ORDER BY pipeline, identified_type"
)

Outcomes = dict[str, dict[str, dict[str, int]]]
Types = dict[str, dict[str, int]]


def nested(outcomes: Any, types: Any) -> tuple[Outcomes, Types]:
    """The two scans' rows as `outcomes_by_type` and `counts_by_type` return them."""
    by_word: Outcomes = {}
    for pipeline, code, word, n in outcomes:
        by_word.setdefault(pipeline, {}).setdefault(code, {})[word] = int(n)
    by_type: Types = {}
    for pipeline, code, n in types:
        by_type.setdefault(pipeline, {})[code] = int(n)
    return by_word, by_type


def sqlite_scan(conn: sqlite3.Connection) -> tuple[Outcomes, Types]:
    return nested(conn.execute(SCAN_OUTCOMES).fetchall(), conn.execute(SCAN_TYPES).fetchall())


async def scan(store: StateStore) -> tuple[Outcomes, Types]:
    """The oracle on any store: a full count of its identified documents."""
    if isinstance(store, PostgresStore):
        async with store.transaction() as conn:
            outcomes = (await conn.execute(sa.text(SCAN_OUTCOMES))).all()
            types = (await conn.execute(sa.text(SCAN_TYPES))).all()
        return nested(outcomes, types)
    assert isinstance(store, SqliteStore)
    return await store.call(sqlite_scan, store.journal.conn)


async def kept(store: StateStore) -> tuple[Outcomes, Types]:
    assert isinstance(store, SqliteStore | PostgresStore)
    return await store.outcomes_by_type(), await store.counts_by_type()


async def forget(store: StateStore, ids: list[int]) -> int:
    """`prune`'s delete (outside the protocol), as `requeue` is called."""
    if isinstance(store, PostgresStore):
        return await store.forget_documents(ids, float("inf"))
    assert isinstance(store, SqliteStore)
    return await store.call(store.journal.forget_documents, ids, float("inf"))


class TestKeptCounts:
    async def test_the_counts_follow_identification_retry_and_prune(
        self, store: StateStore
    ) -> None:
        """Through identification, routing, unrouted, retry (the type kept), retry --force (the
        type cleared), a re-identification as another type, a failure and prune, the per-type
        counts equal the old scan after every change (SQLite, memory and PostgreSQL stores)."""

        async def check() -> None:
            assert await kept(store) == await scan(store)

        await check()
        routed = await identified(store, 1)
        await check()
        await store.ensure_steps(routed, ["stp_inv"])
        await run_step(store, routed, "stp_inv")
        await check()
        await store.deliver_and_finish(routed, "/done/1.pdf")
        await check()
        kept_in_place = await identified(store, 2, RECEIPT)
        await store.mark_unrouted(kept_in_place, "no route for `receipt`")
        await store.finish(kept_in_place, "/in/2.pdf")
        await check()
        await requeue(store, kept_in_place)  # `retry`: routed again, identification kept
        await check()
        failed = await identified(store, 3, pipeline="q")
        await store.mark_failed(failed, "identified as `invoice` (0.40)", stage="route")
        await store.finish(failed, "/failed/3.pdf")
        await check()
        await requeue(store, routed, force=True)  # `retry --force`: identified again
        await check()
        await store.set_identification(routed, RECEIPT.model_dump_json(), RECEIPT.code)
        await check()
        await queued(store, 4, steps=(IDENTIFY_STEP,))  # not identified yet: not counted
        await check()
        assert await forget(store, [failed]) == 1  # `prune`
        await check()
        assert await kept(store) == (
            {"p": {"receipt": {"queued": 2}}},
            {"p": {"receipt": 2}},
        )

    def test_random_changes_to_documents_keep_the_counts_right(self, tmp_path: Path) -> None:
        """SQLite: random inserts (identified or not), moves of state, outcome, pipeline and type
        (set, changed, cleared) and deletes: the kept rows equal the scan after every one."""
        rng = random.Random(11)
        with Journal(tmp_path / "j.sqlite3") as journal:
            conn = journal.conn
            for _ in range(500):
                ids = [r[0] for r in conn.execute("SELECT id FROM documents")]
                action = rng.random()
                if action < 0.3 or not ids:
                    conn.execute(
                        "INSERT INTO documents (pipeline, path, relative_path, state, outcome,"
                        " identified_type, created_at, updated_at)"
                        " VALUES (?, ?, 'x', ?, ?, ?, 0, 0)",
                        (
                            rng.choice(["a", "b"]),
                            f"/in/{rng.random()}",
                            rng.choice(DOCUMENT_STATES),
                            rng.choice([None, "success", "duplicate", "failed", "unrouted"]),
                            rng.choice([None, "invoice", "receipt"]),
                        ),
                    )
                elif action < 0.6:
                    conn.execute(
                        "UPDATE documents SET state = ?, outcome = ? WHERE id = ?",
                        (
                            rng.choice(DOCUMENT_STATES),
                            rng.choice([None, "success", "duplicate", "failed"]),
                            rng.choice(ids),
                        ),
                    )
                elif action < 0.8:
                    conn.execute(
                        "UPDATE documents SET identified_type = ? WHERE id = ?",
                        (rng.choice([None, "invoice", "receipt", "id_card"]), rng.choice(ids)),
                    )
                elif action < 0.9:
                    conn.execute(
                        "UPDATE documents SET pipeline = ?, state = ? WHERE id = ?",
                        (rng.choice(["a", "c"]), rng.choice(DOCUMENT_STATES), rng.choice(ids)),
                    )
                else:
                    conn.execute("DELETE FROM documents WHERE id = ?", (rng.choice(ids),))
                assert (journal.outcomes_by_type(), journal.counts_by_type()) == sqlite_scan(conn)
            assert journal.outcomes_by_type() != {}

    @pytest.mark.postgres
    async def test_random_changes_in_postgres_keep_the_counts_right(self, pg_url: str) -> None:
        """PostgreSQL: the same random mix of plain SQL writes, in transactions of a few
        statements each; the kept rows equal the scan after every transaction."""
        store = PostgresStore(pg_url)
        await store.open()
        rng = random.Random(13)
        try:
            for _ in range(120):
                async with store.transaction() as conn:
                    for _ in range(rng.randint(1, 4)):
                        await _random_change(conn, rng)
                assert await kept(store) == await scan(store)
            assert await store.outcomes_by_type() != {}
        finally:
            await store.close()


async def _random_change(conn: Any, rng: random.Random) -> None:
    ids = [r[0] for r in await conn.execute(sa.text("SELECT id FROM documents"))]
    action = rng.random()
    if action < 0.3 or not ids:
        await conn.execute(
            sa.text(
                "INSERT INTO documents (pipeline, path, relative_path, state, outcome,"
                " identified_type, created_at, updated_at)"
                " VALUES (:p, :path, 'x', :s, :o, :t, 0, 0)"
            ),
            {
                "p": rng.choice(["a", "b"]),
                "path": f"/in/{rng.random()}",
                "s": rng.choice(DOCUMENT_STATES),
                "o": rng.choice([None, "success", "duplicate", "failed", "unrouted"]),
                "t": rng.choice([None, "invoice", "receipt"]),
            },
        )
    elif action < 0.6:
        await conn.execute(
            sa.text("UPDATE documents SET state = :s, outcome = :o WHERE id = :i"),
            {
                "s": rng.choice(DOCUMENT_STATES),
                "o": rng.choice([None, "success", "duplicate", "failed"]),
                "i": rng.choice(ids),
            },
        )
    elif action < 0.8:
        await conn.execute(
            sa.text("UPDATE documents SET identified_type = :t WHERE id = :i"),
            {"t": rng.choice([None, "invoice", "receipt", "id_card"]), "i": rng.choice(ids)},
        )
    elif action < 0.9:
        await conn.execute(
            sa.text("UPDATE documents SET pipeline = :p, state = :s WHERE id = :i"),
            {"p": rng.choice(["a", "c"]), "s": rng.choice(DOCUMENT_STATES), "i": rng.choice(ids)},
        )
    else:
        await conn.execute(sa.text("DELETE FROM documents WHERE id = :i"), {"i": rng.choice(ids)})


# Rows of a journal written before `type_counts`: identified documents of two pipelines in
# several states (archived with and without an outcome, unrouted, failed, in flight) and two not
# identified. (pipeline, path, state, outcome, identified_type)
OLD_ROWS = [
    ("p", "/in/1.pdf", "archived", None, "invoice"),
    ("p", "/in/2.pdf", "archived", "success", "invoice"),
    ("p", "/in/3.pdf", "unrouted", "unrouted", "receipt"),
    ("p", "/in/4.pdf", "failed", "failed", "receipt"),
    ("p", "/in/5.pdf", "polling", None, "invoice"),
    ("q", "/in/6.pdf", "archived", "duplicate", "invoice"),
    ("p", "/in/7.pdf", "queued", None, None),
    ("q", "/in/8.pdf", "archived", "success", None),
]
OLD_EXPECTED: tuple[Outcomes, Types] = (
    {
        "p": {
            "invoice": {"success": 2, "polling": 1},
            "receipt": {"failed": 1, "unrouted": 1},
        },
        "q": {"invoice": {"duplicate": 1}},
    },
    {"p": {"invoice": 3, "receipt": 2}, "q": {"invoice": 1}},
)


class TestExistingJournal:
    def test_a_sqlite_v4_journal_is_counted_once_when_it_gains_the_table(
        self, tmp_path: Path
    ) -> None:
        """Opening a schema-4 journal creates type_counts filled from its identified documents
        (what the scan says); opening it again counts nothing twice; new changes are kept."""
        path = tmp_path / "journal.sqlite3"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN")
        for version in (1, 2, 3, 4):
            schema.MIGRATIONS[version](conn)
        conn.execute("PRAGMA user_version=4")
        conn.execute("COMMIT")
        conn.executemany(
            "INSERT INTO documents (pipeline, path, relative_path, state, outcome,"
            " identified_type, created_at, updated_at) VALUES (?, ?, 'x', ?, ?, ?, 1, 1)",
            OLD_ROWS,
        )
        assert "type_counts" not in {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        conn.close()
        for _ in range(2):
            with Journal(path) as journal:
                assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
                got = (journal.outcomes_by_type(), journal.counts_by_type())
                assert got == sqlite_scan(journal.conn) == OLD_EXPECTED
        with Journal(path) as journal:
            journal.set_identification(7, INVOICE.model_dump_json(), "invoice")
            expected = sqlite_scan(journal.conn)
            assert (journal.outcomes_by_type(), journal.counts_by_type()) == expected
            assert expected[1]["p"]["invoice"] == 4
        assert (tmp_path / "journal.sqlite3.v4.bak").exists()

    @pytest.mark.postgres
    async def test_a_postgres_schema_3_journal_is_counted_once_when_it_gains_the_table(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """migrate on a schema-3 journal reports 3 and fills type_counts from its identified
        documents (what the scan says); migrating again counts nothing twice; the triggers
        keep it from then on."""
        with monkeypatch.context() as patch:
            patch.setattr(migrations, "SCHEMA_VERSION", 3)
            assert await migrate(pg_url) == 0
        with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            conn.cursor().executemany(
                "INSERT INTO docutray.documents (pipeline, path, relative_path, state, outcome,"
                " identified_type, created_at, updated_at) VALUES (%s, %s, 'x', %s, %s, %s, 1, 1)",
                OLD_ROWS,
            )
            assert conn.execute("SELECT to_regclass('docutray.type_counts')").fetchone() == (None,)
        assert migrations.SCHEMA_VERSION == 4
        assert await migrate(pg_url) == 3
        assert await migrate(pg_url) == 4
        store = PostgresStore(pg_url, migrate=False)
        await store.open()
        try:
            assert await kept(store) == await scan(store) == OLD_EXPECTED
            await store.set_identification(7, RECEIPT.model_dump_json(), "receipt")
            assert await kept(store) == await scan(store)
            assert (await store.counts_by_type())["p"]["receipt"] == 3
        finally:
            await store.close()


class TestNoScan:
    def test_sqlite_reads_no_document(self, tmp_path: Path) -> None:
        """outcomes_by_type and counts_by_type read type_counts and no column of `documents`
        (SQLite's authorizer sees every table a statement reads; it does see the old scan's)."""
        with Journal(tmp_path / "j.sqlite3") as journal:
            doc = journal.add_document("p", "/in/a.pdf", "a.pdf", 1, 1)
            journal.set_identification(doc.id, INVOICE.model_dump_json(), "invoice")
            read: set[str] = set()

            def note(action: int, table: str | None, *_: object) -> int:
                if action == sqlite3.SQLITE_READ and table is not None:
                    read.add(table)
                return sqlite3.SQLITE_OK

            journal.conn.set_authorizer(note)
            try:
                assert journal.outcomes_by_type() == {"p": {"invoice": {"discovered": 1}}}
                assert journal.counts_by_type() == {"p": {"invoice": 1}}
                assert read == {"type_counts"}
                sqlite_scan(journal.conn)  # the detector works: the scan reads documents
                assert "documents" in read
            finally:
                journal.conn.set_authorizer(None)

    @pytest.mark.postgres
    async def test_postgres_reads_no_document(self, pg_url: str) -> None:
        """outcomes_by_type and counts_by_type make no scan of `documents`, sequential or by an
        index (pg_stat_xact_user_tables counts the scans this connection makes; it counts the
        old scan's)."""
        store = PostgresStore(pg_url)
        await store.open()
        try:
            await identified(store, 1)

            async def scans_of_documents(conn: Any) -> int:
                found = await conn.scalar(
                    sa.text(
                        "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0)"
                        " FROM pg_stat_xact_user_tables"
                        " WHERE schemaname = 'docutray' AND relname = 'documents'"
                    )
                )
                return int(found)

            # The view also holds this connection's earlier transactions not reported yet (it
            # reports when idle), so compare before and after, inside one transaction.
            async with store.transaction() as conn:
                before = await scans_of_documents(conn)
                tx = Tx(conn, 0.0)
                outcomes = await pg_reports.outcomes_by_type(tx)
                types = await pg_reports.counts_by_type(tx)
                assert await scans_of_documents(conn) == before
            assert types == {"p": {"invoice": 1}}
            assert list(outcomes) == ["p"]
            async with store.transaction() as conn:
                before = await scans_of_documents(conn)
                await conn.execute(sa.text(SCAN_OUTCOMES))
                assert await scans_of_documents(conn) > before
        finally:
            await store.close()
