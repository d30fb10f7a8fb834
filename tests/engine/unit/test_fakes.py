"""The test doubles themselves: `MemoryStore` is a `StateStore`, faults and holds work."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3

import httpx
import pytest

from docutray_watch.journal import StateStore
from docutray_watch.testing import FakeApi, MemoryStore, Reply

PROTOCOL_METHODS = sorted(
    name
    for name, value in vars(StateStore).items()
    if not name.startswith("_") and (callable(value) or isinstance(value, property))
)


def test_a_memory_store_is_a_state_store() -> None:
    """The runtime check agrees with mypy: MemoryStore satisfies StateStore."""
    assert isinstance(MemoryStore(), StateStore)


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_the_memory_store_has_each_protocol_method_with_the_same_signature(name: str) -> None:
    """Every StateStore method exists on MemoryStore, async, with the protocol's parameters."""
    protocol_member = vars(StateStore)[name]
    implementation = inspect.getattr_static(MemoryStore, name)
    if isinstance(protocol_member, property):
        assert isinstance(implementation, property)
        return
    assert inspect.iscoroutinefunction(implementation), name
    expected = inspect.signature(protocol_member)
    found = inspect.signature(implementation)
    assert list(found.parameters) == list(expected.parameters), name
    for param, spec in expected.parameters.items():
        assert found.parameters[param].kind == spec.kind, (name, param)
        assert found.parameters[param].default == spec.default, (name, param)


async def _queued(store: MemoryStore) -> int:
    _doc, steps = await store.add_queued(
        "p",
        "/in/a.pdf",
        "a.pdf",
        sha256="0" * 64,
        content_type="application/pdf",
        size=3,
        mtime_ns=1,
        steps=["s"],
    )
    return steps[0].id


async def test_an_injected_fault_fails_the_next_calls_then_lets_them_through() -> None:
    """`fail_next` raises a disk I/O error (and sets write_error) without writing anything."""
    store = MemoryStore()
    await store.open()
    step = await _queued(store)
    store.fail_next("step_submitting", 2)
    for _ in range(2):
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            await store.step_submitting(step)
    assert store.write_error == "OperationalError: disk I/O error"
    assert (await store.step(step)).state == "pending"
    assert (await store.step_submitting(step)).state == "submitting"
    assert store.write_error is None
    assert [c.failed for c in store.calls_of("step_submitting")] == [True, True, False]


async def test_a_held_method_waits_for_its_event_and_calls_are_awaitable() -> None:
    """`hold` blocks a method until released; `wait_for` sees the call once it ran."""
    store = MemoryStore()
    await store.open()
    step = await _queued(store)
    release = store.hold("step_submitting")
    task = asyncio.ensure_future(store.step_submitting(step))
    await asyncio.sleep(0)  # one turn: the held call must not have run
    assert store.calls_of("step_submitting") == []
    release.set()
    await store.wait_for("step_submitting")
    assert (await task).state == "submitting"


async def test_the_contents_survive_close_and_open_like_a_restart() -> None:
    """Closing keeps the data (a new engine on the same store resumes it); calls fail closed."""
    store = MemoryStore()
    await store.open()
    step = await _queued(store)
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.step(step)
    await store.open()
    assert (await store.step(step)).state == "pending"


async def test_the_fake_api_answers_from_its_queues_then_by_default() -> None:
    """Scripted answers first; then accepted submissions, SUCCESS for issued ids, 404 else."""
    fake = FakeApi().submit(Reply(503), httpx.ConnectError("refused"))
    async with httpx.AsyncClient(transport=fake.transport, base_url="http://127.0.0.1:9") as c:
        assert (await c.post("/api/steps-async/stp", content=b"x")).status_code == 503
        with pytest.raises(httpx.ConnectError):
            await c.post("/api/steps-async/stp", content=b"x")
        accepted = (await c.post("/api/steps-async/stp", content=b"x")).json()
        status = await c.get(f"/api/steps-async/status/{accepted['execution_id']}")
        assert status.json()["status"] == "SUCCESS"
        assert (await c.get("/api/steps-async/status/nope")).status_code == 404
    assert [r.answer for r in fake.posts] == ["503", "ConnectError", "200"]
    assert [r.body_size for r in fake.posts] == [1, 0, 1]
    assert [r.key for r in fake.status_reads] == [accepted["execution_id"], "nope"]


async def test_an_async_answer_holds_the_request_until_released() -> None:
    """A callable answer may be `async`: the request waits inside it (e.g. for an event)."""
    release = asyncio.Event()

    async def held(_request: httpx.Request) -> Reply:
        await release.wait()
        return Reply(503)

    fake = FakeApi().submit(held)
    async with httpx.AsyncClient(transport=fake.transport, base_url="http://127.0.0.1:9") as c:
        pending = asyncio.ensure_future(c.post("/api/steps-async/stp", content=b"x"))
        await asyncio.sleep(0)  # one turn: the request is inside the handler, not answered
        assert not pending.done()
        release.set()
        assert (await pending).status_code == 503
    assert [r.answer for r in fake.posts] == ["503"]
