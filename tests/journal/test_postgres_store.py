"""What only the PostgreSQL journal has: migrations under an advisory lock, a refused newer schema,
lease fencing, the unique content index, source identities, counters, retried deadlocks.

The behaviour it shares with SQLite is in `test_store_contract.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from docutray_watch.journal import (
    DocumentState,
    InvalidTransition,
    NewDocument,
    NewerJournalError,
    SqliteStore,
    StepState,
)
from docutray_watch.journal.postgres import (
    SCHEMA_VERSION,
    ContentClaimed,
    LeaseLost,
    NewerSchemaError,
    PostgresStore,
    SchemaNotReady,
    migrate,
)
from docutray_watch.journal.postgres import connection as pg_connection
from docutray_watch.journal.postgres.connection import in_transaction, make_engine
from docutray_watch.journal.postgres.tables import metadata
from docutray_watch.journal.sqlite.counts import today_counts, utc_day

pytestmark = pytest.mark.postgres


def sha(n: int) -> str:
    return f"{n:064x}"


def plain(url: str) -> str:
    """The URL for psycopg itself."""
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def connections_refused(store: PostgresStore) -> Iterator[None]:
    """The store's database refuses new connections, and its open ones are cut, until the block
    ends."""
    server, name = plain(store.url).rsplit("/", 1)
    with psycopg.connect(f"{server}/test", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def cut_the_first_time(
    attempts: list[int],
) -> Callable[[AsyncConnection], Coroutine[Any, Any, int]]:
    """Work for `in_transaction` whose first run terminates its own backend mid-transaction
    (the server closing the connection under it); each run is counted in `attempts`."""

    async def work(conn: AsyncConnection) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            await conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return int(await conn.scalar(sa.text("SELECT 41 + 1")))

    return work


@pytest.fixture(name="store")
async def store_fixture(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_url, node="node-a")
    await store.open()
    yield store
    await store.close()


async def queued(store: PostgresStore, n: int, *, pipeline: str = "p") -> int:
    doc, _ = await store.add_queued(
        pipeline,
        f"/in/{n}.pdf",
        f"{n}.pdf",
        sha256=sha(n),
        content_type="application/pdf",
        size=n,
        mtime_ns=n,
        steps=["stp_a"],
    )
    return doc.id


class TestMigrations:
    async def test_migrate_creates_the_schema_once(self, pg_url: str) -> None:
        """The first migrate finds nothing (0) and creates version SCHEMA_VERSION; running it
        again changes nothing and keeps the data."""
        assert await migrate(pg_url) == 0
        store = PostgresStore(pg_url, migrate=False)
        await store.open()
        doc_id = await queued(store, 1)
        await store.close()
        assert await migrate(pg_url) == SCHEMA_VERSION
        with psycopg.connect(plain(pg_url)) as conn:
            version = conn.execute("SELECT version FROM docutray.schema_version").fetchall()
            count = conn.execute("SELECT count(*) FROM docutray.documents").fetchone()
        assert version == [(SCHEMA_VERSION,)]
        assert count == (1,)
        assert doc_id == 1

    def test_three_concurrent_migrations_apply_it_once(self, pg_url: str) -> None:
        """Three migrations started together: one creates the schema, the other two wait for
        its commit (the advisory lock) and find it done; none fails."""
        start = threading.Barrier(3)
        found: list[int] = []
        errors: list[BaseException] = []

        def run() -> None:
            start.wait(timeout=10)
            try:
                found.append(asyncio.run(migrate(pg_url)))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert sorted(found) == [0, SCHEMA_VERSION, SCHEMA_VERSION]

    async def test_a_newer_schema_is_refused_untouched(self, pg_url: str) -> None:
        """A schema written by a newer release: migrate and open raise NewerSchemaError (a
        NewerJournalError, as for SQLite) and leave the version as it was."""
        await migrate(pg_url)
        with psycopg.connect(plain(pg_url)) as conn:
            conn.execute("UPDATE docutray.schema_version SET version = version + 1")
        with pytest.raises(NewerSchemaError, match="newer docutray-watch"):
            await migrate(pg_url)
        with pytest.raises(NewerJournalError):
            await PostgresStore(pg_url).open()
        with pytest.raises(NewerSchemaError):
            await PostgresStore(pg_url, migrate=False).open()
        with psycopg.connect(plain(pg_url)) as conn:
            row = conn.execute("SELECT version FROM docutray.schema_version").fetchone()
        assert row == (SCHEMA_VERSION + 1,)

    async def test_without_migrate_a_missing_schema_is_refused(self, pg_url: str) -> None:
        """A store told not to migrate refuses a database without the journal."""
        with pytest.raises(SchemaNotReady, match="cluster init"):
            await PostgresStore(pg_url, migrate=False).open()

    async def test_two_schemas_in_one_database_are_separate_journals(self, pg_url: str) -> None:
        """The schema name keeps journals apart: a document in one is not in the other."""
        first, second = PostgresStore(pg_url), PostgresStore(pg_url, schema="staging")
        await first.open()
        await second.open()
        await queued(first, 1)
        assert await second.counts() == {}
        assert await first.counts() == {"p": {"queued": 1}}
        await first.close()
        await second.close()

    async def test_the_table_definitions_match_the_migrated_schema(self, pg_url: str) -> None:
        """Every table and column the queries are built from exists as migrations create it."""
        await migrate(pg_url)
        engine = sa.create_engine(pg_url)
        try:
            inspector = sa.inspect(engine)
            for table in metadata.tables.values():
                columns = {c["name"] for c in inspector.get_columns(table.name, schema="docutray")}
                assert columns == set(table.columns.keys()), table.name
        finally:
            engine.dispose()


class TestFencing:
    async def test_a_stale_lease_writes_nothing(self, store: PostgresStore) -> None:
        """Writes under lease 1 go through until another node takes lease 2; then every write
        under lease 1 (document, step or delivery) raises LeaseLost and changes nothing."""
        doc_id = await queued(store, 1)
        (step,) = await store.steps_of(doc_id)
        mine = await store.take_lease(doc_id)
        assert mine == 1
        fenced = store.fenced(mine)
        await fenced.step_submitting(step.id)
        await fenced.step_accepted(step.id, "exe-1", "RUNNING")
        await fenced.finish_step(step.id, state=StepState.SUCCESS, sinks=["fs"])
        (delivery,) = await store.deliveries_of(doc_id)

        assert await store.take_lease(doc_id) == 2
        before = await store.completion(doc_id)
        with pytest.raises(LeaseLost) as lost:
            await fenced.delivery_done(delivery.id, "late")
        assert (lost.value.doc_id, lost.value.lease) == (doc_id, 1)
        with pytest.raises(LeaseLost):
            await fenced.mark_delivered(doc_id)
        with pytest.raises(LeaseLost):
            await fenced.archive_intent(doc_id, "/done/1.pdf")
        assert await store.completion(doc_id) == before
        current = store.fenced(2)
        await current.delivery_done(delivery.id, "ok")
        assert (await current.mark_delivered(doc_id)).state == DocumentState.DELIVERED

    async def test_a_fenced_step_write_of_another_nodes_document_is_refused(
        self, store: PostgresStore
    ) -> None:
        """A step write fenced by a lease the document never had raises LeaseLost."""
        doc_id = await queued(store, 1)
        (step,) = await store.steps_of(doc_id)
        with pytest.raises(LeaseLost):
            await store.fenced(7).step_submitting(step.id)
        assert (await store.step(step.id)).state == StepState.PENDING

    async def test_take_lease_of_an_unknown_document_is_a_key_error(
        self, store: PostgresStore
    ) -> None:
        """There is no lease to take on a document that does not exist."""
        with pytest.raises(KeyError):
            await store.take_lease(404)


class TestContentOnce:
    async def test_the_same_content_is_claimed_once_per_generation(
        self, store: PostgresStore
    ) -> None:
        """A second document queued with content already claimed in its pipeline raises
        ContentClaimed and writes nothing; another pipeline, or the next generation, may."""
        first = await queued(store, 1)
        holder = await store.content_holder("p", sha(1))
        assert holder is not None
        assert holder.id == first
        with pytest.raises(ContentClaimed, match="already"):
            await store.add_queued(
                "p", "/in/copy.pdf", "copy.pdf", sha256=sha(1), content_type="x", size=1,
                mtime_ns=1, steps=["stp_a"],
            )  # fmt: skip
        assert await store.counts() == {"p": {"queued": 1}}
        await queued(store, 1, pipeline="other")
        again = await store.add_document("p", "/in/again.pdf", "again.pdf", 1, 1)
        generation = await store.next_generation("p", sha(1))
        assert generation == 1
        await store.set_generation(again.id, generation)
        row, _ = await store.mark_queued(
            again.id, sha256=sha(1), content_type="x", size=1, mtime_ns=1, steps=["stp_a"]
        )
        assert row.state == DocumentState.QUEUED

    async def test_duplicates_rejections_and_superseded_rows_do_not_claim(
        self, store: PostgresStore
    ) -> None:
        """Rows that keep the same content without processing it (duplicates, also once
        archived; rejected; superseded) sit beside the claiming row in the same generation."""
        original = await queued(store, 1)
        for n in range(2):
            copy = await store.add_document("p", f"/in/dup{n}.pdf", "d.pdf", 1, 1)
            await store.mark_duplicate(copy.id, sha256=sha(1), content_type="x", of=original)
            await store.finish(copy.id, None)
        refused = await store.add_document("p", "/in/big.pdf", "big.pdf", 1, 1)
        await store.reject(refused.id, "too large", sha256=sha(1), content_type="x")
        await store.mark_rediscovered(original)
        await store.reject(original, "changed")  # the claim is released when it leaves queued
        assert await store.content_holder("p", sha(1)) is None
        fresh = await queued(store, 1)
        assert (await store.document(fresh)).state == DocumentState.QUEUED

    async def test_a_batch_journals_claimed_content_per_item(self, store: PostgresStore) -> None:
        """In one batch, content another document claims is a `duplicate` of it (skip) or
        queued in the next generation (reprocess), a content twice in the batch claims once,
        and the other items are queued: nothing fails the batch."""
        holder = await queued(store, 1)

        def item(n: int, content: int, *, skip: bool = True) -> NewDocument:
            return NewDocument(
                pipeline="p", path=f"/in/b{n}.pdf", relative_path=f"b{n}.pdf",
                sha256=sha(content), content_type="application/pdf", size=n, mtime_ns=n,
                ctime_ns=None, inode=n, steps=["stp_a"], skip_if_done=skip,
            )  # fmt: skip

        batch = [item(2, 2), item(3, 1), item(4, 4), item(5, 4), item(6, 1, skip=False)]
        result = await store.add_queued_batch(batch)
        taken = [r.document for r in result if r is not None]
        assert [(d.path, d.state, d.duplicate_of) for d in taken] == [
            ("/in/b2.pdf", DocumentState.QUEUED, None),
            ("/in/b3.pdf", DocumentState.DUPLICATE, holder),
            ("/in/b4.pdf", DocumentState.QUEUED, None),
            ("/in/b5.pdf", DocumentState.DUPLICATE, taken[2].id),
            ("/in/b6.pdf", DocumentState.QUEUED, None),
        ]
        assert [len(r.steps) for r in result if r is not None] == [1, 0, 1, 0, 1]
        assert await store.next_generation("p", sha(1)) == 2  # b6 runs in generation 1
        assert (await store.document(taken[1].id)).outcome == "duplicate"

    async def test_a_batch_meeting_a_claim_made_meanwhile_is_journaled_again(
        self, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A content claimed by another node between a batch's lookup and its insert fails
        that attempt (nothing written); the batch is journaled again, that item a duplicate."""
        from docutray_watch.journal.postgres import batch as batch_module

        looked = batch_module._contents
        calls: list[int] = []

        async def late(tx: Any, items: Any) -> Any:
            found = await looked(tx, items)
            if not calls:
                await queued(store, 1)  # another node, committed after this lookup
            calls.append(1)
            return found

        monkeypatch.setattr(batch_module, "_contents", late)
        item = NewDocument(
            pipeline="p", path="/in/late.pdf", relative_path="late.pdf", sha256=sha(1),
            content_type="x", size=1, mtime_ns=1, ctime_ns=None, inode=None, steps=["stp_a"],
            skip_if_done=True,
        )  # fmt: skip
        (result,) = await store.add_queued_batch([item])
        assert result is not None
        assert (result.document.state, len(calls)) == (DocumentState.DUPLICATE, 2)
        assert await store.counts() == {"p": {"queued": 1, "duplicate": 1}}


class TestSourcesAndNodes:
    async def test_a_source_identity_is_recorded_once_ever(self, store: PostgresStore) -> None:
        """The same (node, path, size, mtime_ns, inode) is new only the first time; a change in
        any part of it is a new file."""
        facts = {"pipeline": "p", "path": "/in/a.pdf", "size": 1, "mtime_ns": 2, "inode": 3}
        assert await store.record_source(**facts)
        assert not await store.record_source(**facts)
        assert await store.record_source(**{**facts, "inode": 4})
        shared = PostgresStore(store.url)  # no node: a shared folder
        await shared.open()
        assert await shared.record_source(**facts)
        assert not await shared.record_source(**facts)
        await shared.close()

    async def test_documents_carry_the_node_that_created_them(self, store: PostgresStore) -> None:
        """The store's node is written on the documents it creates."""
        doc_id = await queued(store, 1)
        async with store.transaction() as conn:
            node = await conn.scalar(
                sa.text("SELECT node FROM documents WHERE id = :i"), {"i": doc_id}
            )
        assert node == "node-a"


class TestCounts:
    async def test_counts_come_from_the_counters_and_match_the_rows(
        self, store: PostgresStore
    ) -> None:
        """After inserts, moves and deletes the counters equal a count of the rows, and
        counts() reads them only (emptied counters give empty counts)."""
        ids = [await queued(store, n) for n in range(5)]
        await queued(store, 9, pipeline="q")
        await store.mark_rediscovered(ids[0])
        await store.reject(ids[0], "gone")
        await store.finish(ids[0], None)
        async with store.transaction() as conn:
            await conn.execute(sa.text("DELETE FROM documents WHERE id = :i"), {"i": ids[1]})
            truth = await _group_by(conn)
        assert await store.counts() == truth
        assert truth == {"p": {"queued": 3, "rejected": 1}, "q": {"queued": 1}}
        assert await store.outcome_counts() == truth
        async with store.transaction() as conn:
            await conn.execute(sa.text("DELETE FROM doc_counts"))
        assert await store.counts() == {}


async def _group_by(conn: AsyncConnection) -> dict[str, dict[str, int]]:
    found = await conn.execute(
        sa.text("SELECT pipeline, state, count(*) FROM documents GROUP BY 1, 2")
    )
    result: dict[str, dict[str, int]] = {}
    for pipeline, state, n in found:
        result.setdefault(pipeline, {})[state] = n
    return result


class TestRetries:
    async def test_a_deadlock_victim_is_run_again(self, pg_url: str) -> None:
        """A transaction aborted as a deadlock victim (40P01) or for a serialization failure
        (40001) runs again from its start; its second run's result is returned."""
        engine = make_engine(pg_url, "docutray")
        attempts: list[int] = []

        async def work(conn: AsyncConnection) -> int:
            attempts.append(1)
            if len(attempts) == 1:
                raise sa.exc.OperationalError("SELECT", {}, psycopg.errors.DeadlockDetected())
            if len(attempts) == 2:
                raise sa.exc.OperationalError("SELECT", {}, psycopg.errors.SerializationFailure())
            return int(await conn.scalar(sa.text("SELECT 41 + 1")))

        try:
            assert await in_transaction(engine, work) == 42
            assert len(attempts) == 3
        finally:
            await engine.dispose()

    async def test_other_errors_are_not_retried(self, pg_url: str) -> None:
        """A unique violation (or any other error) reaches the caller on its first run."""
        engine = make_engine(pg_url, "docutray")
        attempts: list[int] = []

        async def work(conn: AsyncConnection) -> None:
            attempts.append(1)
            await conn.execute(sa.text("SELECT 1 / 0"))

        try:
            with pytest.raises(sa.exc.DataError):
                await in_transaction(engine, work)
            assert len(attempts) == 1
        finally:
            await engine.dispose()

    async def test_connections_the_server_terminated_are_replaced(
        self, store: PostgresStore
    ) -> None:
        """After `pg_terminate_backend` of every connection of the store, the next call opens a
        new one (pre-ping) and goes through."""
        await queued(store, 1)
        with psycopg.connect(plain(store.url)) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        # pool_pre_ping replaces the dead connection: the call goes through.
        await queued(store, 2)
        assert store.write_error is None

    async def test_a_read_whose_connection_is_terminated_mid_query_runs_again(
        self, pg_url: str
    ) -> None:
        """A read-only transaction whose backend is terminated under it (the server closes the
        connection mid-query) runs again on a new connection; a write is not run again (its
        COMMIT may have landed) and reaches the caller."""
        engine = make_engine(pg_url, "docutray")
        attempts: list[int] = []
        work = cut_the_first_time(attempts)

        try:
            assert await in_transaction(engine, work, read_only=True) == 42
            assert len(attempts) == 2
            attempts.clear()
            with pytest.raises(sa.exc.OperationalError):
                await in_transaction(engine, work)
            assert len(attempts) == 1
        finally:
            await engine.dispose()

    async def test_a_refused_connection_is_the_write_error_until_a_write_goes_through(
        self, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While the database refuses connections a call raises (once its retries are spent)
        and write_error says why (for /readyz); the first write after it accepts them again
        clears it."""
        monkeypatch.setattr(pg_connection, "_UNSENT_RETRY_S", 0.5)
        await queued(store, 1)
        with connections_refused(store):
            with pytest.raises(sa.exc.OperationalError):
                await queued(store, 2)
            assert store.write_error is not None
            assert "connections" in store.write_error
        await queued(store, 3)
        assert store.write_error is None

    async def test_a_write_that_could_not_connect_is_tried_again_until_it_can(
        self, store: PostgresStore
    ) -> None:
        """No connection could be had (the database refusing them for a moment): nothing was
        sent, so the write is tried again and goes through once connections are accepted."""
        await queued(store, 1)
        with connections_refused(store):
            write = asyncio.ensure_future(queued(store, 2))
            await asyncio.sleep(1.0)
            assert not write.done()
        assert await asyncio.wait_for(write, 30) > 0

    async def test_an_idempotent_write_whose_connection_is_cut_runs_again(
        self, pg_url: str
    ) -> None:
        """An `idempotent` write whose backend is terminated under it runs again on a new
        connection (it finds out itself whether its first COMMIT landed)."""
        engine = make_engine(pg_url, "docutray")
        attempts: list[int] = []
        work = cut_the_first_time(attempts)

        try:
            assert await in_transaction(engine, work, idempotent=True) == 42
            assert len(attempts) == 2
        finally:
            await engine.dispose()

    async def test_step_accepted_run_again_finds_its_own_commit(self, store: PostgresStore) -> None:
        """`step_accepted` run a second time with the same execution id (its first COMMIT
        landed, its answer was lost with the connection) returns the step as it is: polling
        that execution, not an uncertain submission."""
        doc_id = await queued(store, 1)
        [step] = await store.steps_of(doc_id)
        await store.take_lease(doc_id)
        await store.step_submitting(step.id)
        first = await store.step_accepted(step.id, "exec-1", "ENQUEUED")
        again = await store.step_accepted(step.id, "exec-1", "ENQUEUED")
        assert again.state == "polling"
        assert (again.execution_id, again.uncertain) == ("exec-1", 0)
        assert again.submitted_at == first.submitted_at


class TestConcurrency:
    async def test_two_nodes_moving_documents_at_once_keep_counts_exact(self, pg_url: str) -> None:
        """Two stores (two nodes' connection pools) run 20 documents each through their whole
        life at the same time: every call succeeds (lock waits, not errors) and the counters
        equal a count of the rows."""
        nodes = [PostgresStore(pg_url, node=f"n{i}") for i in range(2)]
        for node in nodes:
            await node.open()

        async def life(store: PostgresStore, n: int) -> None:
            doc_id = await queued(store, n)
            (step,) = await store.steps_of(doc_id)
            await store.step_submitting(step.id)
            await store.step_accepted(step.id, f"exe-{n}", "RUNNING")
            await store.finish_step(step.id, state=StepState.SUCCESS, sinks=["fs"])
            for delivery in await store.deliveries_of(doc_id):
                await store.delivery_done(delivery.id, None)
            await store.mark_delivered(doc_id)
            await store.finish(doc_id, None)

        try:
            await asyncio.gather(*(life(nodes[n % 2], n) for n in range(40)))
            async with nodes[0].transaction() as conn:
                truth = await _group_by(conn)
            assert truth == {"p": {"archived": 40}}
            assert await nodes[1].counts() == truth
        finally:
            for node in nodes:
                await node.close()

    async def test_a_write_whose_caller_was_cancelled_still_commits(
        self, store: PostgresStore
    ) -> None:
        """Cancelling the task that awaits a write does not undo it (as with SQLite's writer
        thread): the execution id asked to be stored is stored."""
        doc_id = await queued(store, 1)
        (step,) = await store.steps_of(doc_id)
        await store.step_submitting(step.id)
        task = asyncio.ensure_future(store.step_accepted(step.id, "exe-1", "RUNNING"))
        await asyncio.sleep(0)  # let the call start, then cancel its caller
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.close()  # waits for the call under way
        await store.open()
        assert (await store.step(step.id)).execution_id == "exe-1"

    async def test_a_source_recorded_in_a_rolled_back_transaction_is_not_recorded(
        self, store: PostgresStore
    ) -> None:
        """record_source in the cluster's own transaction commits or rolls back with it."""
        from docutray_watch.journal.postgres import claims

        facts = {"node": "n", "path": "/a", "size": 1, "mtime_ns": 1, "inode": 1, "pipeline": "p"}

        async def record_then_fail() -> None:
            async with store.transaction() as conn:
                assert await claims.record_source(conn, **facts, document_id=None, now=1.0)
                raise RuntimeError("defer failed")

        with pytest.raises(RuntimeError, match="defer failed"):
            await record_then_fail()
        async with store.transaction() as conn:
            assert await claims.record_source(conn, **facts, document_id=None, now=1.0)

    async def test_known_sources_lists_the_identities_recorded_for_paths(
        self, store: PostgresStore
    ) -> None:
        """One query answers, for a folder listing, which (path, size, mtime_ns, inode) were
        recorded for that node: other nodes' and other paths' are not listed."""
        from docutray_watch.journal.postgres import claims

        async with store.transaction() as conn:
            for node, path, size in ((None, "/a", 1), (None, "/a", 2), ("n", "/b", 1)):
                await claims.record_source(
                    conn,
                    node=node,
                    path=path,
                    size=size,
                    mtime_ns=5,
                    inode=None,
                    pipeline="p",
                    document_id=None,
                    now=1.0,
                )
            shared = await claims.known_sources(conn, node=None, paths=["/a", "/b", "/c"])
            local = await claims.known_sources(conn, node="n", paths=["/a", "/b"])
            nothing = await claims.known_sources(conn, node=None, paths=[])
        assert shared == {("/a", 1, 5, 0), ("/a", 2, 5, 0)}
        assert local == {("/b", 1, 5, 0)}
        assert nothing == set()


async def _operator_call(
    store: SqliteStore | PostgresStore, name: str, *args: Any, **kw: Any
) -> Any:
    """A call outside the protocol: the PostgreSQL store's method, or the SQLite Journal's on
    its writer thread."""
    if isinstance(store, PostgresStore):
        return await getattr(store, name)(*args, **kw)
    if name == "today_counts":  # SQLite's is a function of the connection
        return await store.call(today_counts, store.journal.conn, *args)
    return await store.call(getattr(store.journal, name), *args, **kw)


async def _operator_scenario(store: SqliteStore | PostgresStore) -> dict[str, Any]:
    """Documents ending every way, then what `status`, `prune` and `retry` see and do."""

    async def run(n: int, end: StepState) -> int:
        doc_id = await queued(store, n)
        (step,) = await store.steps_of(doc_id)
        await store.step_submitting(step.id)
        await store.step_accepted(step.id, f"exe-{n}", "RUNNING")
        await store.finish_step(step.id, state=end, sinks=["fs"])
        return doc_id

    archived = await run(1, StepState.SUCCESS)
    await store.delivery_done((await store.deliveries_of(archived))[0].id, None)
    await store.mark_delivered(archived)
    await store.finish(archived, "/in/1.pdf")  # kept where it was found
    failed = await run(2, StepState.ERROR)
    await store.mark_failed(failed, "ERROR result", stage="step")
    await store.finish(failed, "/failed/2.pdf")
    rejected = await store.add_document("p", "/in/big.pdf", "big.pdf", 1, 1)
    await store.reject(rejected.id, "too large")
    await store.finish(rejected.id, None)
    changed = await run(4, StepState.SUCCESS)
    await store.delivery_done((await store.deliveries_of(changed))[0].id, None)
    await store.supersede(changed, "file changed")
    await store.record_api_pause("credentials refused")
    later = time.time() + 1000
    seen: dict[str, Any] = {
        "failures": [d.id for d in await _operator_call(store, "recent_failures", 10)],
        "superseded": await _operator_call(store, "superseded_results"),
        "outcomes": await _operator_call(store, "outcome_counts"),
        "today": await _operator_call(store, "today_counts", utc_day()),
        "pause": (await _operator_call(store, "api_pause"))[0],
        "candidates": await _operator_call(store, "prune_candidates", later, limit=10),
    }
    with pytest.raises(InvalidTransition, match="--force"):
        await _operator_call(store, "requeue", archived)
    requeued = [await _operator_call(store, "requeue", i) for i in (failed, rejected.id)]
    requeued.append(await _operator_call(store, "requeue", archived, force=True))
    seen["requeued"] = [(d.state, d.attempts, d.finished) for d in requeued]
    seen["failed_steps"] = await store.steps_of(failed)
    seen["requeue_count"] = await store.requeue_count()
    seen["forgotten"] = await _operator_call(store, "forget_documents", [changed, failed], later)
    seen["left"] = [d.id for d in await store.unfinished_documents()]
    return seen


class TestOperatorCalls:
    async def test_status_prune_and_retry_see_and_do_what_they_do_with_sqlite(
        self, store: PostgresStore, tmp_path: Path
    ) -> None:
        """recent_failures, superseded_results, outcome/today counts, api_pause,
        prune_candidates, forget_documents and requeue give the SQLite journal's answers for the
        same history."""
        sqlite_store = SqliteStore(tmp_path / "journal.sqlite3")
        await sqlite_store.open()
        try:
            expected = await _operator_scenario(sqlite_store)
        finally:
            await sqlite_store.close()
        found = await _operator_scenario(store)
        assert found == expected
        assert found["forgotten"] == 1  # the superseded one; the failed one was requeued
        assert [c.kept_latest for c in found["candidates"]] == [True, False, False, False]

    async def test_retry_force_runs_the_content_in_its_next_generation(
        self, store: PostgresStore
    ) -> None:
        """Requeued with force, an archived document moves to the next generation of its
        content, so it can claim it again while its old results stay what they were."""
        doc_id = await queued(store, 1)
        await store.mark_rediscovered(doc_id)
        await store.mark_duplicate(doc_id, sha256=sha(1), content_type="x", of=doc_id)
        await store.finish(doc_id, None)
        other = await queued(store, 2)
        await store.mark_rediscovered(other)
        await store.reject(other, "gone")
        await store.requeue(other)
        row = await store.requeue(doc_id, force=True)
        assert row.state == DocumentState.QUEUED
        async with store.transaction() as conn:
            generation = await conn.scalar(
                sa.text("SELECT generation FROM documents WHERE id = :i"), {"i": doc_id}
            )
        assert generation == 1


def test_a_missing_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg the store says which extra brings it (no database needed)."""
    from docutray_watch.journal.postgres.connection import DriverMissing

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(DriverMissing, match=r"docutray-watch\[cluster\]"):
        make_engine("postgresql://u@127.0.0.1/db", "docutray")
