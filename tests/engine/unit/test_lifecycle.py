"""A document's life read from the package: the documented hook order per path, resume at the
stored state, and the engine's in-memory bookkeeping (slots, outstanding work) that nobody
counts by hand."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

import docutray_watch.engine
from docutray_watch.engine.context import Documents
from docutray_watch.engine.limits import Slots
from docutray_watch.journal import DocumentRow, DocumentState
from docutray_watch.testing import HookRecorder, Reply
from tests.engine.unit.conftest import PIPELINE, Unit

DOCUMENTED = re.findall(r"^    ([a-z_]+)\s{2,}", docutray_watch.engine.__doc__ or "", re.MULTILINE)
HOOK_ORDER = [name for name in DOCUMENTED if "_" in name and not name.endswith(".py")]


def _in_documented_order(names: list[str]) -> bool:
    positions = [HOOK_ORDER.index(name) for name in names if name in HOOK_ORDER]
    return positions == sorted(positions)


def test_the_package_docstring_lists_every_document_hook() -> None:
    """The docstring's hook list is the one the code fires (the list the tests below check)."""
    assert HOOK_ORDER == [
        "ignore_document",
        "document_discovered",
        "after_document_identified",
        "before_document_submit",
        "after_document_result",
        "after_document_delivered",
        "on_document_error",
        "after_document_archived",
    ]


async def test_a_successful_document_fires_its_hooks_in_the_documented_order(unit: Unit) -> None:
    """Success: discovered, submit, result, delivered, archived — the docstring's order."""
    recorder = HookRecorder()
    unit.pm.register(recorder)
    await unit.start()
    unit.drop()
    await unit.settled()
    names = recorder.names(document="a.pdf")
    assert names == [
        "ignore_document",
        "document_discovered",
        "before_document_submit",
        "after_document_result",
        "after_document_delivered",
        "after_document_archived",
    ]
    assert _in_documented_order(names)


async def test_an_error_result_fires_on_document_error_before_archiving(unit: Unit) -> None:
    """An ERROR result: its result hook, then on_document_error, then archived (no delivery)."""
    recorder = HookRecorder()
    unit.pm.register(recorder)
    unit.fake.status(unit.fake.result("exec_1", "ERROR"))
    await unit.start()
    unit.drop()
    await unit.settled()
    names = recorder.names(document="a.pdf")
    assert names[-3:] == ["after_document_result", "on_document_error", "after_document_archived"]
    assert "after_document_delivered" not in names
    assert _in_documented_order(names)


async def test_a_rejected_file_skips_discovery_and_submission(unit: Unit) -> None:
    """A readable file that is rejected (empty) does not fire document_discovered."""
    recorder = HookRecorder()
    unit.pm.register(recorder)
    await unit.start()
    path = unit.inbox / "empty.pdf"
    path.write_bytes(b"")
    assert unit.engine is not None
    assert unit.engine.nominate(PIPELINE, path)
    await unit.settled()
    names = recorder.names(document="empty.pdf")
    assert names == ["ignore_document", "on_document_error", "after_document_archived"]


async def test_a_duplicate_goes_from_discovered_to_archived(unit: Unit) -> None:
    """The same content again: document_discovered, then straight to after_document_archived."""
    await unit.start()
    unit.drop("a.pdf")
    await unit.settled()
    recorder = HookRecorder()
    unit.pm.register(recorder)
    (unit.inbox / "again.pdf").write_bytes((unit.done / "a.pdf").read_bytes())
    assert unit.engine is not None
    assert unit.engine.nominate(PIPELINE, unit.inbox / "again.pdf")
    await unit.settled()
    names = recorder.names(document="again.pdf")
    assert names == ["ignore_document", "document_discovered", "after_document_archived"]
    assert (await unit.document("again.pdf")).outcome == "duplicate"


async def test_a_resumed_execution_fires_only_the_hooks_after_its_submission(unit: Unit) -> None:
    """Stopped while polling, then restarted on the same store: the new engine polls the stored
    id and fires result, delivered, archived — nothing before (no discovery, no submission)."""
    unit.fake.status(*[Reply(200, {"execution_id": "exec_1", "status": "PROCESSING"})] * 20)
    engine = await unit.start()
    unit.drop()
    await unit.fake.wait_for(lambda fake: len(fake.posts) == 1)
    await engine.stop(grace=0)
    recorder = HookRecorder()
    unit.pm.register(recorder)
    unit.engine = None
    await unit.start()
    await unit.settled()
    names = recorder.names(document="a.pdf")
    assert names == ["after_document_result", "after_document_delivered", "after_document_archived"]
    assert len(unit.fake.posts) == 1
    assert (await unit.document()).state == DocumentState.ARCHIVED


class TestSlots:
    async def test_waiters_get_released_slots_in_arrival_order(self) -> None:
        """First come, first served: each release wakes exactly the longest waiter."""
        slots = Slots(1)
        await slots.acquire()
        order: list[int] = []

        async def wait(n: int) -> None:
            await slots.acquire()
            order.append(n)

        waiters = [asyncio.ensure_future(wait(n)) for n in range(3)]
        await asyncio.sleep(0)
        for expected in range(3):
            slots.release()
            await asyncio.wait_for(asyncio.shield(waiters[expected]), 1)
            assert order == list(range(expected + 1))
        assert slots.used == 1

    async def test_a_cancelled_waiter_takes_nothing(self) -> None:
        """A waiter cancelled before its turn leaves the slot for the next one."""
        slots = Slots(1)
        await slots.acquire()
        first = asyncio.ensure_future(slots.acquire())
        second = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        first.cancel()
        slots.release()
        await asyncio.wait_for(second, 1)
        assert first.cancelled()
        assert slots.used == 1

    async def test_resumed_executions_overfill_and_new_work_waits(self) -> None:
        """`take` counts a running execution over the cap; `acquire` waits until below it."""
        slots = Slots(1)
        slots.take()
        slots.take()
        waiter = asyncio.ensure_future(slots.acquire())
        slots.release()
        await asyncio.sleep(0)
        assert not waiter.done()  # 1 in use, cap 1
        slots.release()
        await asyncio.wait_for(waiter, 1)
        assert slots.used == 1

    async def test_a_larger_cap_wakes_waiters_at_once(self) -> None:
        """A reload raising max_in_flight lets waiting documents go without a release."""
        slots = Slots(1)
        await slots.acquire()
        waiter = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        slots.resize(2)
        await asyncio.wait_for(waiter, 1)
        assert slots.used == 2


def _row(doc_id: int, path: str) -> DocumentRow:
    return DocumentRow(
        id=doc_id,
        pipeline=PIPELINE,
        path=path,
        relative_path=Path(path).name,
        size=1,
        mtime_ns=1,
        sha256=f"{doc_id:064x}",
        content_type="application/pdf",
        state=DocumentState.QUEUED,
        outcome=None,
        attempts=1,
        error=None,
        error_stage=None,
        error_detail=None,
        flags=frozenset(),
        duplicate_of=None,
        archive_to=None,
        archived_to=None,
        created_at=0.0,
        updated_at=0.0,
        finished_at=None,
    )


class TestDocuments:
    async def test_outstanding_work_is_what_is_held_not_a_counter(self) -> None:
        """Nominations and documents in hand are the outstanding work; idle when both are
        empty; letting go of the same document twice changes nothing."""
        documents = Documents()
        assert documents.idle.is_set()
        documents.nominate((PIPELINE, "/in/a.pdf"))
        doc = _row(1, "/in/a.pdf")
        documents.remember(doc)
        documents.release((PIPELINE, "/in/a.pdf"))
        assert documents.outstanding == 1
        assert not documents.idle.is_set()
        documents.forget(doc)
        documents.forget(doc)
        documents.release((PIPELINE, "/in/a.pdf"))
        assert documents.outstanding == 0
        assert documents.idle.is_set()

    def test_files_left_alone_are_remembered_in_a_bounded_set(self) -> None:
        """A daemon running for months notes each ignored file once, in bounded memory."""
        documents = Documents()
        for n in range(10_050):
            assert documents.note_ignored((PIPELINE, f"/in/{n}.tmp"), (n, n))
        assert len(documents.ignored) == 10_000
        assert not documents.note_ignored((PIPELINE, "/in/10049.tmp"), (10049, 10049))


ENGINE_DIR = Path(docutray_watch.engine.__file__).parent


@pytest.mark.parametrize("module", sorted(p.name for p in ENGINE_DIR.glob("*.py")))
def test_no_engine_module_is_over_500_lines(module: str) -> None:
    """One concern per module: none of the engine package's files is over ~500 lines."""
    assert len((ENGINE_DIR / module).read_text().splitlines()) <= 500
