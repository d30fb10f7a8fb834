"""The SQLite journal's row writes: the row an update hands back is the stored row, whether
SQLite returns it with the update (`UPDATE … RETURNING`, 3.35+) or it is read back after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from docutray_watch.journal import DocumentRow, Journal, StepRow
from docutray_watch.journal.sqlite import connection


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _lifecycle(folder: Path) -> tuple[list[DocumentRow | StepRow], list[DocumentRow | StepRow]]:
    """One document through its usual writes: what each write returned, and what is stored."""
    with Journal(folder / "journal.sqlite3", clock=_Clock()) as journal:
        doc, (step,) = journal.add_queued(
            "p", "/in/a.pdf", "a.pdf", sha256="a" * 64, content_type="application/pdf",
            size=10, mtime_ns=123, steps=["stp_a"],
        )  # fmt: skip
        returned: list[DocumentRow | StepRow] = [doc, step]
        returned.append(journal.step_submitting(step.id))
        returned.append(journal.step_accepted(step.id, "exec-1", "ENQUEUED"))
        ended, completed = journal.step_finished(
            step.id, state="success", status="SUCCESS", result={"ok": True}, sinks=["files"]
        )
        assert completed
        returned.append(ended)
        (delivery,) = journal.deliveries_of(doc.id)
        journal.delivery_done(delivery.id, None)
        returned.append(journal.deliver_and_finish(doc.id, "/in/a.pdf"))
        stored: list[DocumentRow | StepRow] = [journal.document(doc.id), *journal.steps_of(doc.id)]
        return returned, stored


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "read-back"])
def test_each_write_returns_the_row_as_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    """Every write hands back the row as it is stored, with RETURNING or with a read-back."""
    monkeypatch.setattr(connection, "_RETURNING", returning)
    returned, stored = _lifecycle(tmp_path)
    document, step = stored
    assert returned[-1] == document
    assert returned[-2] == step
    assert (document.state, document.outcome, document.archived_to) == (
        "archived",
        "success",
        "/in/a.pdf",
    )
    assert (step.state, step.execution_id, step.status) == ("success", "exec-1", "SUCCESS")


def test_both_ways_store_and_return_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same writes give the same rows with RETURNING as with a read-back after the update."""
    with_returning = _lifecycle(tmp_path / "a")
    monkeypatch.setattr(connection, "_RETURNING", False)
    read_back = _lifecycle(tmp_path / "b")
    assert with_returning == read_back


def test_deliver_and_finish_counts_the_document_once_as_archived(tmp_path: Path) -> None:
    """`completed → delivered → archived` in one update leaves the counts as two updates did:
    one archived document, nothing completed or delivered."""
    _lifecycle(tmp_path)
    with Journal(tmp_path / "journal.sqlite3") as journal:
        counts = {
            word: n
            for word, n in journal.conn.execute(
                "SELECT word, SUM(n) FROM doc_counts GROUP BY word HAVING SUM(n) != 0"
            )
        }
    assert len(counts) == 1
    assert next(iter(counts.values())) == 1
