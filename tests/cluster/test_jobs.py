"""Each cluster job on its own (no worker runs): what it does, and which job it defers next."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest

from docutray_watch.cluster.app import create_app, libpq_url
from docutray_watch.cluster.jobs import (
    PRIORITY_DRAIN,
    PRIORITY_SUBMIT,
    SHARED_QUEUE,
    ClusterHandoff,
    ClusterJobs,
    NodeServices,
)
from docutray_watch.cluster.limits import ClusterRate, ClusterSlots, open_pool
from docutray_watch.emulator import EmulatorServer
from docutray_watch.engine import Engine
from docutray_watch.engine.errors import Failure
from docutray_watch.journal import DocumentRow, StateStore, StepRow, StepState
from docutray_watch.journal.postgres import PostgresStore, claims
from docutray_watch.plugins import load_plugins
from docutray_watch.testing import EmulatorFactory, ManualClock
from tests.cluster.test_runtime import node_config

pytestmark = pytest.mark.postgres


@dataclass
class Node:
    jobs: ClusterJobs
    store: PostgresStore
    root: Path
    url: str
    emulator: EmulatorServer
    clock: ManualClock
    healthy: bool = True
    connected: float = 1e9

    def deferred(self) -> list[tuple[str, str, int, bool]]:
        """(task, queue, priority, scheduled later) of the jobs waiting, in id order."""
        with psycopg.connect(libpq_url(self.url)) as conn:
            rows = conn.execute(
                "SELECT task_name, queue_name, priority, scheduled_at > now()"
                " FROM procrastinate_jobs WHERE status = 'todo' ORDER BY id"
            ).fetchall()
        return [(str(t), str(q), int(p), bool(later)) for t, q, p, later in rows]

    async def queued_document(
        self, name: str = "a.pdf", *, marker: bytes = b""
    ) -> tuple[DocumentRow, StepRow]:
        path = self.root / "inbox" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%PDF-1.4\n" + marker + name.encode() * 30)
        st = path.stat()
        doc, steps = await self.store.add_queued(
            "invoices",
            str(path),
            name,
            sha256=f"{abs(hash(name)):064x}",
            content_type="application/pdf",
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            steps=["stp_test"],
        )
        return doc, steps[0]


@pytest.fixture(name="node")
async def node_fixture(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> AsyncIterator[Node]:
    """The services of node `n1` (shared inbox, max_in_flight 1), its jobs registered."""
    clock = ManualClock()
    emulator = emulator_factory(latency=0.2, clock=clock)
    config = node_config(tmp_path, initialised_url, emulator, "n1", max_in_flight=1)
    store = PostgresStore(initialised_url, node="n1", migrate=False)
    engine = Engine(config, plugin_manager=load_plugins().pm, store=cast(StateStore, store))
    holder: list[ClusterJobs] = []
    engine.discovery.handoff = ClusterHandoff(lambda: holder[0])
    async with open_pool(libpq_url(initialised_url)) as pool:
        await engine.start(resume=False)
        app = create_app(config.cluster)  # type: ignore[arg-type]
        node: Node
        services = NodeServices(
            ctx=engine.ctx,
            store=store,
            slots=ClusterSlots(pool, node="n1", cluster_cap=1),
            rate=ClusterRate(pool, fixed=1000.0),
            node="n1",
            discovery=engine.discovery,
            local_rate=engine.limiter,
            healthy=lambda: node.healthy,
            connected_for=lambda: node.connected,
            stalled_timeout=3.0,
            write_timeout=1.0,
        )
        jobs = ClusterJobs(app, services)
        holder.append(jobs)
        node = Node(jobs, store, tmp_path, initialised_url, emulator, clock)
        try:
            async with app.open_async():
                yield node
        finally:
            await engine.stop(grace=0)


async def test_submit_accepted_defers_a_poll(node: Node) -> None:
    """A submit with a free slot POSTs once and defers the step's first status read (shared
    queue, the draining priority)."""
    doc, step = await node.queued_document()
    await node.jobs._submit(doc.id, step.id, holder=None)
    assert (await node.store.step(step.id)).state == StepState.POLLING
    assert node.emulator.stats().posts == 1
    assert node.deferred() == [("dtw.poll", SHARED_QUEUE, PRIORITY_DRAIN, True)]


async def test_submit_with_the_cap_full_reschedules_itself(node: Node) -> None:
    """With the cluster's only slot taken, a submit sends nothing and defers itself for later,
    at the submit priority."""
    first, first_step = await node.queued_document("a.pdf")
    second, second_step = await node.queued_document("b.pdf")
    await node.jobs._submit(first.id, first_step.id, holder=None)
    await node.jobs._submit(second.id, second_step.id, holder=None)
    assert node.emulator.stats().posts == 1
    assert (await node.store.step(second_step.id)).state == StepState.PENDING
    assert ("dtw.submit", SHARED_QUEUE, PRIORITY_SUBMIT, True) in node.deferred()


async def test_an_unhealthy_node_starts_no_post(node: Node) -> None:
    """A node whose heartbeat is not healthy defers its submit instead of POSTing."""
    node.healthy = False
    doc, step = await node.queued_document()
    await node.jobs._submit(doc.id, step.id, holder=None)
    assert node.emulator.stats().posts == 0
    assert node.deferred() == [("dtw.submit", SHARED_QUEUE, PRIORITY_SUBMIT, True)]


async def test_a_submit_run_again_after_a_crash_counts_it_uncertain(node: Node) -> None:
    """A submit job that finds its step `submitting` (its earlier run died mid-POST) counts the
    submission as uncertain before it submits again."""
    doc, step = await node.queued_document()
    await node.store.step_submitting(step.id)
    await node.jobs._submit(doc.id, step.id, holder=None)
    step = await node.store.step(step.id)
    assert (step.state, step.uncertain) == (StepState.POLLING, 1)


async def test_poll_follows_the_execution_to_delivery(node: Node) -> None:
    """Poll reads until the execution ends (deferring itself meanwhile), then defers the
    delivery; deliver defers finalize; finalize moves the file and ends the document."""
    doc, step = await node.queued_document()
    await node.jobs._submit(doc.id, step.id, holder=None)
    await node.jobs._poll(doc.id, step.id, holder=None)
    assert node.deferred()[-1][0] == "dtw.poll"  # the emulator's clock has not moved
    node.clock.advance(1.0)
    await node.jobs._poll(doc.id, step.id, holder=None)
    assert (await node.store.step(step.id)).state == StepState.SUCCESS
    assert node.deferred()[-1] == ("dtw.deliver", SHARED_QUEUE, PRIORITY_DRAIN, False)
    await node.jobs._deliver(doc.id, holder=None)
    assert node.deferred()[-1] == ("dtw.finalize", SHARED_QUEUE, PRIORITY_DRAIN, False)
    node.healthy = False
    await node.jobs._finalize(doc.id, holder=None)
    assert Path(doc.path).exists()  # no move from an unhealthy node
    node.healthy = True
    await node.jobs._finalize(doc.id, holder=None)
    ended = await node.store.document(doc.id)
    assert (ended.state, ended.outcome) == ("archived", "success")
    assert not Path(doc.path).exists()


async def test_a_shared_file_is_taken_once_ever(node: Node) -> None:
    """The shared scan records a file's source identity with the defer of its intake; the next
    scan finds it known and defers nothing."""
    inbox = node.root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "x.pdf").write_bytes(b"%PDF-1.4\nx")
    await node.jobs._scan_shared(0)
    await node.jobs._scan_shared(0)
    assert [job[0] for job in node.deferred()] == ["dtw.intake"]


async def test_intake_journals_and_defers_the_submit(node: Node) -> None:
    """Intake hashes and journals a file found in a shared folder and defers its submit."""
    inbox = node.root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "x.pdf").write_bytes(b"%PDF-1.4\nx")
    await node.jobs._intake("invoices", str(inbox / "x.pdf"), "x.pdf")
    [doc] = await node.store.unfinished_documents()
    assert doc.state == "queued"
    assert node.deferred() == [("dtw.submit", SHARED_QUEUE, PRIORITY_SUBMIT, False)]


async def test_recovery_waits_until_the_node_knows_better(node: Node, monkeypatch: Any) -> None:
    """A node connected for less than the stalled timeout retries no stalled job (after an
    outage every node looks stale at once)."""
    asked: list[float] = []

    async def stalled(**kwargs: float) -> list[Any]:
        asked.append(kwargs["seconds_since_heartbeat"])
        return []

    monkeypatch.setattr(node.jobs.app.job_manager, "get_stalled_jobs", stalled)
    node.connected = 1.0
    await node.jobs._recover_stalled(0)
    assert asked == []
    node.connected = 10.0
    await node.jobs._recover_stalled(0)
    assert asked == [3.0 + 1.0]  # stalled timeout plus the API write timeout


async def test_a_stalled_job_whose_successor_waits_is_ended_not_retried(node: Node) -> None:
    """A poll job left `doing` by a killed worker after it deferred the next read (same
    queueing lock): recovery ends it instead of failing to retry it for ever, so the document's
    lock is free and the next read runs."""
    doc, step = await node.queued_document()
    await node.jobs._submit(doc.id, step.id, holder=None)  # defers the first read (todo)
    with psycopg.connect(libpq_url(node.url), autocommit=True) as conn:
        # The read that ran when its worker was killed: `doing`, its worker long silent.
        worker = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat)"
            " VALUES (now() - interval '1 hour') RETURNING id"
        ).fetchone()
        stalled = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args,"
            " status, worker_id) SELECT queue_name, task_name, lock, queueing_lock, args,"
            " 'doing', %s FROM procrastinate_jobs WHERE status = 'todo' RETURNING id",
            (worker[0] if worker else None,),
        ).fetchone()
    assert stalled is not None
    await node.jobs._recover_stalled(0)
    with psycopg.connect(libpq_url(node.url)) as conn:
        left = conn.execute("SELECT id, status FROM procrastinate_jobs ORDER BY id").fetchall()
    assert [status for _, status in left] == ["todo"]  # the successor alone
    assert stalled[0] not in [job_id for job_id, _ in left]


async def test_an_intake_run_again_defers_the_submit_its_first_run_never_deferred(
    node: Node,
) -> None:
    """An intake killed after journaling its document `queued` but before deferring the submit
    is run again (stalled-job recovery): the run again defers the submit, once."""
    inbox = node.root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / "k.pdf"
    path.write_bytes(b"%PDF-1.4\nkilled mid-intake")
    await node.jobs._intake("invoices", str(path), "k.pdf")
    with psycopg.connect(libpq_url(node.url), autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")  # the deferral that never committed
    await node.jobs._intake("invoices", str(path), "k.pdf")
    await node.jobs._intake("invoices", str(path), "k.pdf")
    assert [job[0] for job in node.deferred()] == ["dtw.submit"]
    assert [doc.state for doc in await node.store.unfinished_documents()] == ["queued"]


async def test_an_intake_whose_deferral_fails_fails_and_its_run_again_defers(
    node: Node, monkeypatch: Any
) -> None:
    """The database refusing the submit's deferral (out of connections) fails the intake job,
    so procrastinate runs it again, instead of leaving the document `queued` with no job."""
    from docutray_watch.cluster.handoff import DeferFailed

    path = node.root / "inbox" / "r.pdf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"%PDF-1.4\nrefused once")
    real = node.jobs.defer_submit

    async def refused(*args: Any, **kwargs: Any) -> None:
        raise psycopg.OperationalError("sorry, too many clients already")

    monkeypatch.setattr(node.jobs, "defer_submit", refused)
    with pytest.raises(DeferFailed):
        await node.jobs._intake("invoices", str(path), "r.pdf")
    assert node.deferred() == []
    monkeypatch.setattr(node.jobs, "defer_submit", real)
    await node.jobs._intake("invoices", str(path), "r.pdf")
    assert [job[0] for job in node.deferred()] == ["dtw.submit"]


async def test_two_intakes_of_one_file_at_once_journal_one_document(node: Node) -> None:
    """The same intake running twice at once (a live node's job judged stalled and run again
    elsewhere) journals one document for the file, not a second one as its duplicate."""
    import asyncio

    inbox = node.root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / "t.pdf"
    path.write_bytes(b"%PDF-1.4\ntwice at once")
    runs = [node.jobs._intake("invoices", str(path), "t.pdf") for _ in range(2)]
    await asyncio.gather(*runs, return_exceptions=True)  # the loser may fail; retried later
    await node.jobs._intake("invoices", str(path), "t.pdf")  # procrastinate's retry
    docs = await node.store.unfinished_documents()
    assert [(doc.name, doc.state) for doc in docs] == [("t.pdf", "queued")]
    assert [job[0] for job in node.deferred()] == ["dtw.submit"]


async def test_a_final_action_that_fails_is_retried_not_dropped(node: Node) -> None:
    """A finalize whose move fails (the archive not writable; the database refusing a
    connection in the chaos run) raises, so procrastinate runs it again, instead of ending with
    the document `delivered` and its file in the inbox for ever; once it can move, it ends."""
    from docutray_watch.cluster.jobs import FinalActionPending

    doc, _ = await node.queued_document("f.pdf")
    doc = await node.store.mark_failed(doc.id, "for the test", stage="submit")
    failed_dir = node.root / "failed"
    failed_dir.parent.mkdir(parents=True, exist_ok=True)
    failed_dir.write_text("a file where the archive folder should be")
    with pytest.raises(FinalActionPending):
        await node.jobs._finalize(doc.id, holder=None)
    assert not (await node.store.document(doc.id)).finished
    failed_dir.unlink()
    await node.jobs._finalize(doc.id, holder=None)
    assert (await node.store.document(doc.id)).finished


async def test_a_job_a_live_worker_lost_is_ended_once_its_successor_waits(node: Node) -> None:
    """A poll job left `doing` by a live worker (its status write failed as it finished) with its
    successor waiting is ended by recovery once it started longer ago than the stalled timeout
    plus the write timeout; a recent one is left alone."""
    doc, step = await node.queued_document()
    await node.jobs._submit(doc.id, step.id, holder=None)  # defers the first read (todo)
    with psycopg.connect(libpq_url(node.url), autocommit=True) as conn:
        worker = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now()) RETURNING id"
        ).fetchone()
        lost = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args,"
            " status, worker_id) SELECT queue_name, task_name, lock, queueing_lock, args,"
            " 'doing', %s FROM procrastinate_jobs WHERE status = 'todo' RETURNING id",
            (worker[0] if worker else None,),
        ).fetchone()
        assert lost is not None
        # Its successor was deferred after it (a newer job with the same queueing lock).
        conn.execute(
            "WITH old AS (DELETE FROM procrastinate_jobs WHERE status = 'todo' RETURNING *)"
            " INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args,"
            " status) SELECT queue_name, task_name, lock, queueing_lock, args, 'todo' FROM old"
        )
        conn.execute(
            "INSERT INTO procrastinate_events (job_id, type, at) VALUES (%s, 'started', now())",
            (lost[0],),
        )
    await node.jobs._recover_stalled(0)
    statuses = {job_id: status for job_id, status in _jobs(node)}
    assert statuses[lost[0]] == "doing"  # started just now: maybe still running
    with psycopg.connect(libpq_url(node.url), autocommit=True) as conn:
        conn.execute(
            "UPDATE procrastinate_events SET at = now() - interval '1 minute' WHERE job_id = %s",
            (lost[0],),
        )
    await node.jobs._recover_stalled(0)
    assert [status for _, status in _jobs(node)] == ["todo"]


def _jobs(node: Node) -> list[tuple[int, str]]:
    with psycopg.connect(libpq_url(node.url)) as conn:
        rows = conn.execute("SELECT id, status FROM procrastinate_jobs ORDER BY id").fetchall()
    return [(int(i), str(s)) for i, s in rows]


async def test_a_second_file_with_claimed_content_is_a_duplicate(node: Node) -> None:
    """A second file whose content another document is processing is journaled as its
    duplicate and goes straight to its final action."""
    inbox = node.root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for name in ("x.pdf", "y.pdf"):
        (inbox / name).write_bytes(b"%PDF-1.4\nsame content")
    await node.jobs._intake("invoices", str(inbox / "x.pdf"), "x.pdf")
    await node.jobs._intake("invoices", str(inbox / "y.pdf"), "y.pdf")
    states = {doc.name: doc.state for doc in await node.store.unfinished_documents()}
    assert states == {"x.pdf": "queued", "y.pdf": "duplicate"}
    assert [job[0] for job in node.deferred()] == ["dtw.submit", "dtw.finalize"]


async def test_a_job_already_waiting_does_not_abort_the_callers_transaction(node: Node) -> None:
    """Deferring, inside a caller's transaction, a job whose twin waits already is refused in
    a savepoint: the transaction's other writes still commit (PostgreSQL would otherwise abort
    it, and the file's source identity would be lost with the refused job)."""
    doc, step = await node.queued_document()
    await node.jobs.defer_submit(doc, step, None)  # the twin that waits
    async with node.store.transaction() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        await node.jobs.defer_submit(doc, step, None, connection=raw)  # refused: one waits
        recorded = await claims.record_source(
            conn,
            node=None,
            path=doc.path,
            size=doc.size or 0,
            mtime_ns=doc.mtime_ns or 0,
            inode=doc.inode,
            pipeline=doc.pipeline,
            document_id=doc.id,
            now=0.0,
        )
    assert recorded
    async with node.store.transaction() as conn:
        again = await claims.record_source(
            conn,
            node=None,
            path=doc.path,
            size=doc.size or 0,
            mtime_ns=doc.mtime_ns or 0,
            inode=doc.inode,
            pipeline=doc.pipeline,
            document_id=doc.id,
            now=0.0,
        )
    assert not again  # the first transaction committed it
    assert [job[0] for job in node.deferred()] == ["dtw.submit"]


async def test_an_api_pause_extends_the_deadlines_of_the_jobs(node: Node) -> None:
    """Time the API was paused (here unreachable) since a step's first try is added to its
    `poll.timeout` deadline, as in single-node mode: an outage of the API fails no document."""
    gate = node.jobs.svc.ctx.limits.pauses
    first_try = time.time()
    gate.report(Failure.UNREACHABLE, pipeline="invoices", error="connect", retry_after=None)
    await asyncio.sleep(0.3)
    gate.answered()
    deadline = node.jobs._deadline(first_try, 10.0, "invoices")
    assert deadline >= first_try + 10.3
    assert node.jobs._deadline(time.time(), 10.0, "invoices") < time.time() + 10.1


async def test_a_finished_document_is_not_held_in_the_nodes_memory(node: Node) -> None:
    """Intake remembers the document it journals; once its jobs ended it, the node holds
    nothing of it (a node runs for months: what it holds must not grow per document)."""
    inbox = node.root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "x.pdf").write_bytes(b"%PDF-1.4\nx")
    await node.jobs._intake("invoices", str(inbox / "x.pdf"), "x.pdf")
    [doc] = await node.store.unfinished_documents()
    (step,) = await node.store.steps_of(doc.id)
    await node.jobs._submit(doc.id, step.id, holder=None)
    node.clock.advance(1.0)
    await node.jobs._poll(doc.id, step.id, holder=None)
    await node.jobs._deliver(doc.id, holder=None)
    await node.jobs._finalize(doc.id, holder=None)
    assert (await node.store.document(doc.id)).state == "archived"
    documents = node.jobs.svc.ctx.documents
    assert doc.id not in documents.active
    assert doc.id not in documents.views
    assert doc.path not in documents.known.get("invoices", {})
