"""After the result: delivery retries, a buggy sink, the final file action, and a journal that
refuses the execution id."""

from __future__ import annotations

from pathlib import Path

import pytest

from docutray_watch.sinks.base import BUG_ATTEMPTS
from tests.engine.unit.conftest import Unit

RETRY = {"initial": 0.01, "max": 0.02}


async def test_a_sink_failing_twice_then_succeeding_is_retried_and_delivers(unit: Unit) -> None:
    """Two failed attempts are journaled (not final), the third is delivered; one document."""
    await unit.start(sinks=[{"type": "memory", "fail_times": 2, "retry": RETRY}])
    unit.drop()
    await unit.settled()
    failed = unit.store.calls_of("delivery_attempt_failed")
    assert [c.kwargs["final"] for c in failed] == [False, False]
    assert len(unit.store.calls_of("delivery_done")) == 1
    doc = await unit.document()
    assert doc.state == "archived"
    (delivery,) = await unit.store.deliveries_of(doc.id)
    assert (delivery.state, delivery.attempts) == ("delivered", 3)
    assert unit.sink().deliveries == 3
    assert len(unit.sink().records) == 1


async def test_a_sink_with_a_bug_fails_the_document_after_bug_attempts(unit: Unit) -> None:
    """A TypeError from `deliver` means a bug: BUG_ATTEMPTS attempts, then the delivery gives
    up and the document fails at `deliver` (to failed/)."""
    await unit.start(sinks=[{"type": "memory", "retry": RETRY}])
    unit.sink().fail_with = lambda _record: TypeError("'NoneType' object is not subscriptable")
    unit.drop()
    await unit.settled()
    assert unit.sink().deliveries == BUG_ATTEMPTS
    assert len(unit.store.calls_of("delivery_attempt_failed")) == BUG_ATTEMPTS
    (gave_up,) = unit.store.calls_of("delivery_gave_up")
    assert "a bug in plugin" in gave_up.args[1]
    doc = await unit.document()
    assert doc.outcome == "failed"
    assert doc.error_stage == "deliver"
    (delivery,) = await unit.store.deliveries_of(doc.id)
    assert (delivery.state, delivery.attempts) == ("failed", BUG_ATTEMPTS)
    assert (unit.failed / "a.pdf").exists()


@pytest.mark.parametrize("action", ["move", "keep", "delete"])
async def test_the_final_action_is_done_and_journaled_as_the_documents_end(
    unit: Unit, action: str
) -> None:
    """on_success move/keep/delete: the file ends where the action says, and the store records
    `archived` with where it went (a kept file: its own path, in the same commit as
    `delivered`; a moved one: the destination, journaled as an intent before the move)."""
    on_success = {"action": action, **({"to": str(unit.done)} if action == "move" else {})}
    await unit.start(on_success=on_success)
    path = unit.drop()
    await unit.settled()
    doc = await unit.document()
    assert doc.state == "archived"
    assert doc.finished_at is not None
    names = unit.store.names()
    if action == "move":
        destination = unit.done / "a.pdf"
        assert destination.exists()
        assert not path.exists()
        assert doc.archived_to == str(destination)
        assert unit.store.calls_of("archive_intent")[0].args[1] == str(destination)
        assert names.index("archive_intent") < names.index("finish")
    elif action == "keep":
        assert path.exists()
        assert doc.archived_to == str(path)
        assert "deliver_and_finish" in names
        assert "mark_delivered" not in names
    else:
        assert not path.exists()
        assert not Path(unit.done).exists()
        assert doc.archived_to is None
        assert names.index("mark_delivered") < names.index("finish")


async def test_a_refused_execution_id_write_is_retried_into_the_store_never_resubmitted(
    unit: Unit,
) -> None:
    """The journal refuses `step_accepted` twice (disk I/O error): the engine keeps the id and
    writes it again until it is stored; one POST, the id polled, the document delivered."""
    unit.store.fail_next("step_accepted", 2)
    await unit.start()
    unit.drop()
    await unit.settled()
    assert len(unit.fake.posts) == 1
    (execution_id,) = unit.fake.issued
    accepted = unit.store.calls_of("step_accepted")
    assert [c.failed for c in accepted] == [True, True, False]
    assert {c.args[1] for c in accepted} == {execution_id}
    assert unit.store.calls_of("step_uncertain") == []
    assert unit.store.write_error is None
    assert [r.key for r in unit.fake.status_reads] == [execution_id]
    doc = await unit.document()
    assert doc.state == "archived"
    (step,) = await unit.store.steps_of(doc.id)
    assert step.execution_id == execution_id


async def test_a_successful_document_reads_its_rows_once_after_its_steps(unit: Unit) -> None:
    """The step's end reads the rows back in the same call (`finish_step`: whether every step
    ended, and what to deliver): no `completion` or `steps_of` after it, the state machine's
    calls each once: five per document."""
    await unit.start(on_success={"action": "keep"})
    unit.drop()
    await unit.settled()
    names = [call.name for call in unit.store.calls]
    assert "steps_of" not in names
    assert "completion" not in names
    for name in ("step_submitting", "step_accepted", "finish_step"):
        assert names.count(name) == 1, name
    assert names.count("delivery_done") == 1
    assert names.count("deliver_and_finish") == 1
