"""Submission rules of the engine, against the fake API and the memory store.

- a connection never made is retried (by the client) without a second execution;
- 400/422 fail the document as rejected by the service;
- a timeout after the upload, or a 500/502/504, is *uncertain*: resubmitted at most once, and
  the document is flagged `resubmitted`; a second uncertain outcome fails it without a third POST;
- 503 proves nothing started: the step goes back to pending and is submitted again, unflagged;
"""

from __future__ import annotations

import httpx
import pytest

from docutray_watch.client import _retry
from docutray_watch.testing import Reply
from tests.engine.unit.conftest import Unit


@pytest.fixture(autouse=True)
def no_client_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's retry waits are recorded, not slept (its module offers the seam)."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(_retry, "_async_sleep", record)
    return waits


async def test_a_connect_error_before_sending_is_retried_without_a_second_execution(
    unit: Unit,
) -> None:
    """ConnectError (never sent) then 200: one execution, nothing uncertain, delivered."""
    unit.fake.submit(httpx.ConnectError("connection refused"))
    await unit.start(api={"max_retries": 2})
    unit.drop()
    await unit.settled()
    assert [r.answer for r in unit.fake.posts] == ["ConnectError", "200"]
    assert len(unit.fake.issued) == 1
    doc = await unit.document()
    assert doc.state == "archived"
    assert "resubmitted" not in doc.flags
    assert unit.store.calls_of("step_uncertain") == []
    assert len(unit.sink().records) == 1


@pytest.mark.parametrize("status", [400, 422])
async def test_a_400_or_422_fails_the_document_as_rejected_by_the_service(
    unit: Unit, status: int
) -> None:
    """The service refused the document: failed at submit, one POST, file to failed/."""
    unit.fake.submit(Reply(status, {"error": {"message": "unsupported document"}}))
    await unit.start()
    unit.drop()
    await unit.settled()
    assert len(unit.fake.posts) == 1
    doc = await unit.document()
    assert doc.outcome == "failed"
    assert doc.error_stage == "submit"
    assert "the service rejected the document" in (doc.error or "")
    (step,) = await unit.store.steps_of(doc.id)
    assert step.state == "failed"
    assert step.http_status == status
    assert (unit.failed / "a.pdf").exists()
    assert unit.sink().records == {}


@pytest.mark.parametrize(
    "lost",
    [httpx.ReadTimeout("answer lost"), Reply(500), Reply(502), Reply(504)],
    ids=["read-timeout", "500", "502", "504"],
)
async def test_an_uncertain_submission_is_resubmitted_once_and_flagged(
    unit: Unit, lost: object
) -> None:
    """A timeout after the upload or a 500/502/504 may have started an execution: one more
    POST, the document flagged `resubmitted`, delivered."""
    unit.fake.submit(lost)  # type: ignore[arg-type]
    await unit.start(api={"max_retries": 2})
    unit.drop()
    await unit.settled()
    assert len(unit.fake.posts) == 2
    assert unit.fake.posts[0].body_size > 0  # the upload went out before the answer was lost
    doc = await unit.document()
    assert doc.state == "archived"
    assert "resubmitted" in doc.flags
    (step,) = await unit.store.steps_of(doc.id)
    assert step.uncertain == 1
    assert step.execution_id == unit.fake.issued[0]


async def test_two_uncertain_submissions_fail_the_step_without_a_third_post(unit: Unit) -> None:
    """The at-most-once-more rule: after two unknown outcomes, no third submission."""
    unit.fake.submit(httpx.ReadTimeout("lost"), httpx.ReadTimeout("lost again"))
    await unit.start()
    unit.drop()
    await unit.settled()
    assert len(unit.fake.posts) == 2
    doc = await unit.document()
    assert doc.outcome == "failed"
    assert "two submissions is unknown" in (doc.error or "")
    assert "resubmitted" in doc.flags
    assert len(unit.store.calls_of("step_uncertain")) == 2


async def test_a_503_is_not_accepted_the_step_goes_back_to_pending_unflagged(unit: Unit) -> None:
    """503 proves nothing started: `step_not_accepted`, submitted again, not `resubmitted`."""
    unit.fake.submit(Reply(503))
    await unit.start()  # max_retries 0: the engine, not the client, sees the 503
    unit.drop()
    await unit.settled()
    assert [r.answer for r in unit.fake.posts] == ["503", "200"]
    assert len(unit.store.calls_of("step_not_accepted")) == 1
    assert unit.store.calls_of("step_uncertain") == []
    doc = await unit.document()
    assert doc.state == "archived"
    assert "resubmitted" not in doc.flags
