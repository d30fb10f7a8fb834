"""Polling rules: a lost status answer is read again; the service's verdict decides the end."""

from __future__ import annotations

import httpx

from docutray_watch.testing import Reply
from tests.engine.unit.conftest import Unit


async def test_a_status_read_that_times_out_is_read_again_never_resubmitted(unit: Unit) -> None:
    """A status read is idempotent: a timeout means read again (one POST, delivered)."""
    unit.fake.status(httpx.ReadTimeout("lost"))
    await unit.start()
    unit.drop()
    await unit.settled()
    assert len(unit.fake.posts) == 1
    assert [r.answer for r in unit.fake.status_reads] == ["ReadTimeout", "200"]
    assert (await unit.document()).state == "archived"


async def test_pending_statuses_are_remembered_until_the_result(unit: Unit) -> None:
    """ENQUEUED, then PROCESSING (journaled with `step_status`), then SUCCESS is delivered."""
    await unit.start()
    unit.fake.status(
        lambda request: unit.fake.result("exec_1", "ENQUEUED"),
        lambda request: unit.fake.result("exec_1", "PROCESSING"),
    )
    unit.drop()
    await unit.settled()
    assert [c.args[1] for c in unit.store.calls_of("step_status")] == ["PROCESSING"]
    assert len(unit.fake.status_reads) == 3
    assert len(unit.sink().records) == 1


async def test_an_error_result_fails_the_document_at_the_result_stage(unit: Unit) -> None:
    """A step that ends in ERROR fails the document (nothing delivered by default)."""
    unit.fake.status(lambda request: unit.fake.result("exec_1", "ERROR"))
    await unit.start()
    unit.drop()
    await unit.settled()
    doc = await unit.document()
    assert doc.outcome == "failed"
    assert doc.error_stage == "result"
    assert "the step failed" in (doc.error or "")
    assert unit.sink().records == {}


async def test_an_unknown_execution_fails_the_document_at_the_poll_stage(unit: Unit) -> None:
    """404 on a status read: the service does not know the execution; the document fails."""
    unit.fake.status(Reply(404, {"error": {"message": "not found"}}))
    await unit.start()
    unit.drop()
    await unit.settled()
    doc = await unit.document()
    assert doc.outcome == "failed"
    assert doc.error_stage == "poll"
    assert "does not know execution exec_1" in (doc.error or "")
    assert len(unit.fake.posts) == 1
