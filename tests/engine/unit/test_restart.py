"""What a stop or a crash leaves in the store, and what the next engine on it does with it."""

from __future__ import annotations

import asyncio

import httpx

from docutray_watch.intake import inspect_file
from docutray_watch.samples import make_pdf
from tests.engine.unit.conftest import PIPELINE, STEP, Unit


async def _crashed_while_submitting(unit: Unit, *, uncertain: int) -> int:
    """A previous run hashed and journaled a.pdf, journaled the intent to submit (after
    `uncertain` submissions of unknown outcome), then died. Returns the step row."""
    path = unit.inbox / "a.pdf"
    path.write_bytes(make_pdf(["a.pdf"]))
    facts = inspect_file(path)
    await unit.store.open()
    _doc, (step,) = await unit.store.add_queued(
        PIPELINE,
        str(path),
        "a.pdf",
        sha256=facts.sha256,
        content_type=facts.content_type or "application/pdf",
        size=facts.size,
        mtime_ns=facts.mtime_ns,
        ctime_ns=facts.ctime_ns,
        inode=facts.inode,
        steps=[STEP],
    )
    await unit.store.step_submitting(step.id)
    for _ in range(uncertain):
        await unit.store.step_uncertain(step.id, "ReadTimeout")
    await unit.store.close()
    return step.id


async def test_a_step_caught_submitting_by_a_crash_is_resubmitted_once_and_flagged(
    unit: Unit,
) -> None:
    """A step journaled `submitting` at start may have started an execution: it counts as one
    uncertain submission, is submitted once more, and the document is flagged `resubmitted`."""
    step_row = await _crashed_while_submitting(unit, uncertain=0)
    await unit.start()
    await unit.settled()
    assert len(unit.fake.posts) == 1
    (interrupted,) = unit.store.calls_of("step_uncertain")[-1:]
    assert interrupted.args == (step_row, "interrupted while submitting")
    doc = await unit.document()
    assert doc.state == "archived"
    assert "resubmitted" in doc.flags
    assert (await unit.store.step(step_row)).uncertain == 1


async def test_a_crash_after_one_uncertain_submission_fails_without_another_post(
    unit: Unit,
) -> None:
    """Already one unknown outcome, then a crash mid-POST: two unknown outcomes, so the step
    fails without a third submission (`retry` can force one)."""
    step_row = await _crashed_while_submitting(unit, uncertain=1)
    await unit.start()
    await unit.settled()
    assert unit.fake.posts == []
    assert (await unit.store.step(step_row)).uncertain == 2
    doc = await unit.document()
    assert doc.outcome == "failed"
    assert "two submissions is unknown" in (doc.error or "")
    assert (unit.failed / "a.pdf").exists()


async def test_an_id_write_under_way_at_stop_is_kept_and_the_next_run_polls_it(
    unit: Unit,
) -> None:
    """The engine stops (grace 0) while the execution id is being written: the write still
    completes, and the next engine on the store polls that execution — no second POST."""
    release = unit.store.hold("step_accepted")
    engine = await unit.start()
    unit.drop()
    await unit.fake.wait_for(lambda f: len(f.posts) == 1)
    stopping = asyncio.ensure_future(engine.stop(grace=0))
    await unit.store.wait_for("close")  # the step task was cancelled; its write is held
    release.set()
    await asyncio.wait_for(stopping, 10)
    (execution_id,) = unit.fake.issued
    await unit.store.open()  # look at what the stopped engine left (as `status` would)
    doc = await unit.document()
    (step,) = await unit.store.steps_of(doc.id)
    assert (step.state, step.execution_id) == ("polling", execution_id)

    unit.engine = None
    await unit.start()  # a new engine on the same store: a restart
    await unit.settled()
    assert len(unit.fake.posts) == 1
    assert [r.key for r in unit.fake.status_reads] == [execution_id]
    assert (await unit.document()).state == "archived"


async def test_a_stop_between_connect_retries_leaves_the_step_unsent_not_uncertain(
    unit: Unit,
) -> None:
    """Stopped while the client waits to retry a connection never made: the step goes back to
    `pending` (nothing can have started), so the next run submits it as new — no uncertain
    count, no `resubmitted` flag."""
    unit.fake.submit(*[httpx.ConnectError("connection refused")] * 3)
    engine = await unit.start(api={"max_retries": 3})
    unit.drop()
    await unit.fake.wait_for(lambda fake: len(fake.posts) == 1)
    await engine.stop(grace=0)
    await unit.store.open()
    doc = await unit.document()
    (step,) = await unit.store.steps_of(doc.id)
    assert (step.state, step.uncertain) == ("pending", 0)
    await unit.store.close()

    unit.engine = None
    await unit.start()
    await unit.settled()
    doc = await unit.document()
    assert doc.state == "archived"
    assert "resubmitted" not in doc.flags
    assert (await unit.store.steps_of(doc.id))[0].uncertain == 0
