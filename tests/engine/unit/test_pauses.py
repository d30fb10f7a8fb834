"""Shared pauses: a refused key (401) and a 429 pause work; neither fails a document."""

from __future__ import annotations

import asyncio

from docutray_watch.engine.gate import PROBE_EXECUTION_ID
from docutray_watch.testing import Reply
from tests.engine.unit.conftest import Unit


async def test_a_401_pauses_work_until_the_probe_succeeds_and_fails_nothing(unit: Unit) -> None:
    """401 on submit: the step goes back to pending, the pause is journaled for `status`, the
    probe (a status read of an id that cannot exist) runs until it gets 404, then the document
    is submitted again and delivered."""
    unit.fake.submit(Reply(401, {"error": {"message": "invalid key"}}))
    unit.fake.status(Reply(401), Reply(401))  # the first two probes: key still refused
    engine = await unit.start(api={"pause_probe_interval": 0.02})
    unit.drop()
    (paused,) = await unit.store.wait_for("record_api_pause", where=lambda c: c.args[0] is not None)
    assert "refused the API key" in paused.args[0]
    assert engine.api_gate.state() == "key_refused"
    await unit.settled()
    probes = [r for r in unit.fake.status_reads if r.key == PROBE_EXECUTION_ID]
    assert [p.answer for p in probes] == ["401", "401", "404"]
    assert [r.answer for r in unit.fake.posts] == ["401", "200"]
    assert unit.fake.posts[1].at >= probes[-1].at  # nothing was sent while the key was refused
    assert engine.api_gate.state() == "ok"
    assert unit.store.calls_of("record_api_pause")[-1].args == (None,)
    assert unit.store.calls_of("mark_failed") == []
    assert len(unit.store.calls_of("step_not_accepted")) == 1
    doc = await unit.document()
    assert doc.state == "archived"
    assert doc.outcome in (None, "success")


async def test_a_429_pauses_every_request_for_its_retry_after(unit: Unit) -> None:
    """429 with Retry-After: no request of any document goes out before it has passed; then the
    throttled document is submitted again and nothing fails."""
    retry_after = 0.5
    unit.fake.submit(Reply(429, {"error": "slow down"}, {"Retry-After": str(retry_after)}))
    engine = await unit.start()
    unit.drop("a.pdf")
    async with asyncio.timeout(5):
        while engine.api_gate.state() != "paused":
            await engine.api_gate.wait_changed(None)  # woken when the 429 is reported
    throttled_at = unit.fake.posts[0].at
    unit.drop("b.pdf")  # another document: it waits too (the pause is shared)
    await unit.settled()
    later = unit.fake.requests[1:]
    assert len([r for r in later if r.kind == "submit"]) == 2
    # A small margin for the clocks' granularity; the wait itself is the full Retry-After.
    assert all(r.at - throttled_at >= retry_after - 0.02 for r in later), [
        (r.kind, round(r.at - throttled_at, 3)) for r in later
    ]
    assert unit.store.calls_of("mark_failed") == []
    for name in ("a.pdf", "b.pdf"):
        assert (await unit.document(name)).state == "archived"


async def test_a_429_is_handled_once_by_the_gate_not_retried_by_the_client(unit: Unit) -> None:
    """With client retries allowed, a 429 still reaches the engine at once: the client does not
    retry it on its own (no `http_429` retry counted); the gate pauses and the engine submits
    again, once."""
    unit.fake.submit(Reply(429, {"error": "slow down"}, {"Retry-After": "0.2"}))
    engine = await unit.start(api={"max_retries": 3})
    unit.drop("a.pdf")
    await unit.settled()
    assert len(unit.fake.posts) == 2
    retried = engine.metrics.api_retries.labels("POST", "http_429")._value.get()
    assert retried == 0
    assert len(unit.store.calls_of("step_not_accepted")) == 1
    assert (await unit.document()).state == "archived"
