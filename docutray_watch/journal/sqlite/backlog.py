"""A backlog taken in: many hashed files journaled `queued` in one transaction.

The hot path of a start with thousands of files waiting: one commit for a batch, and the rows
built from what was written instead of read back.
"""

from __future__ import annotations

from collections.abc import Sequence

from docutray_watch.journal.rows import DocumentRow, NewDocument, Queued, StepRow
from docutray_watch.journal.sqlite.reports import Reports
from docutray_watch.journal.sqlite.steps import INSERT_PENDING_STEP
from docutray_watch.journal.states import DocumentState, StepState

__all__ = ["BacklogWrites"]


class BacklogWrites(Reports):
    """`add_queued_batch`."""

    def add_queued_batch(self, items: Sequence[NewDocument]) -> list[Queued | None]:
        """Journal each item `queued` with its pending steps, all in one transaction. None for
        an item whose `skip_if_done` found a delivered document of the same content (one index
        lookup): the engine journals that one on its own, as a duplicate."""
        now = self._clock()
        out: list[Queued | None] = []
        with self._write() as conn:
            for item in items:
                if item.skip_if_done and self.find_done_by_sha(
                    item.pipeline, item.sha256, exclude=0
                ):
                    out.append(None)
                    continue
                cursor = conn.execute(
                    "INSERT INTO documents (pipeline, path, relative_path, size, mtime_ns,"
                    " ctime_ns, inode, sha256, content_type, source_version, state, attempts,"
                    " created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 1, ?, ?)",
                    (
                        item.pipeline,
                        item.path,
                        item.relative_path,
                        item.size,
                        item.mtime_ns,
                        item.ctime_ns,
                        item.inode,
                        item.sha256,
                        item.content_type,
                        item.source_version,
                        now,
                        now,
                    ),
                )
                doc_id = cursor.lastrowid
                assert doc_id is not None
                steps = []
                for step_id in dict.fromkeys(item.steps):
                    step_row = conn.execute(INSERT_PENDING_STEP, (doc_id, step_id)).lastrowid
                    assert step_row is not None
                    steps.append(_pending_step(step_row, doc_id, step_id))
                out.append(Queued(_queued_row(doc_id, item, now), steps))
        return out


def _queued_row(doc_id: int, item: NewDocument, now: float) -> DocumentRow:
    return DocumentRow(
        id=doc_id,
        pipeline=item.pipeline,
        path=item.path,
        relative_path=item.relative_path,
        size=item.size,
        mtime_ns=item.mtime_ns,
        sha256=item.sha256,
        content_type=item.content_type,
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
        created_at=now,
        updated_at=now,
        finished_at=None,
        ctime_ns=item.ctime_ns,
        inode=item.inode,
        source_version=item.source_version,
    )


def _pending_step(step_row: int, doc_id: int, step_id: str) -> StepRow:
    return StepRow(
        id=step_row,
        document_id=doc_id,
        step_id=step_id,
        state=StepState.PENDING,
        execution_id=None,
        status=None,
        attempts=0,
        uncertain=0,
        first_try_at=None,
        submitted_at=None,
        completed_at=None,
        result=None,
        error=None,
        http_status=None,
    )
