"""The SQLite journal: the single source of truth about every document, on one machine.

`Journal` is synchronous, each public method one transaction. Command-line tools (`status`,
`retry`, `show`, `prune`) use it directly; the daemon goes through `SqliteStore`
(`docutray_watch.journal.sqlite.store`), which runs these methods on one writer thread with group
commit. Every state change is committed *before* the side effect that depends on it can be seen
as done, and checked against the tables in `docutray_watch.journal.states`.

A document whose file changed while it was processed (found by the checks before delivery and
before the final action) ends `superseded` (nothing is moved, its delivered results are marked
`superseded`) and the file is taken again as a new document; with `on_change: fail` it goes to
`failed` instead. `failed` and `rejected` documents get their on_failure action; `finished_at`
records that the final file action (move/delete/keep + sidecar) is done, for every end state.

Step rows count in `uncertain` the submissions whose outcome is unknown (a crash or an ambiguous
network failure while submitting): one such submission may be repeated, never two.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from docutray_watch.journal.rows import DocumentRow, JSONObject, LatencyRow, StepRow
from docutray_watch.journal.sqlite import rows
from docutray_watch.journal.sqlite.backlog import BacklogWrites
from docutray_watch.journal.sqlite.reports import API_PAUSE_KEY, REQUEUED_KEY
from docutray_watch.journal.sqlite.steps import INSERT_PENDING_STEP, StepWrites
from docutray_watch.journal.states import (
    DeliveryState,
    DocumentState,
    InvalidTransition,
)

__all__ = ["Journal"]

_D = DocumentState


class Journal(StepWrites, BacklogWrites):
    """Synchronous access to the journal; each public method is one transaction."""

    # -- documents ---------------------------------------------------------------------------

    def add_document(
        self,
        pipeline: str,
        path: str,
        relative_path: str,
        size: int,
        mtime_ns: int,
        *,
        ctime_ns: int | None = None,
        inode: int | None = None,
        source_version: str | None = None,
    ) -> DocumentRow:
        """Record a newly found file as `discovered`."""
        now = self._clock()
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO documents (pipeline, path, relative_path, size, mtime_ns, ctime_ns,"
                " inode, source_version, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'discovered', ?, ?)",
                (
                    pipeline,
                    path,
                    relative_path,
                    size,
                    mtime_ns,
                    ctime_ns,
                    inode,
                    source_version,
                    now,
                    now,
                ),
            )
            doc_id = cursor.lastrowid
            assert doc_id is not None
            return self._document_row(conn, doc_id)

    def mark_queued(
        self,
        doc_id: int,
        *,
        sha256: str,
        content_type: str,
        size: int,
        mtime_ns: int,
        steps: Sequence[str],
        ctime_ns: int | None = None,
        inode: int | None = None,
    ) -> tuple[DocumentRow, list[StepRow]]:
        """A hashed, checked document waits for submission; one pending row per step.

        Returns the document and all its step rows (the engine submits them without asking).
        """
        with self._write() as conn:
            row = self._set_state(
                conn,
                doc_id,
                _D.QUEUED,
                sha256=sha256,
                content_type=content_type,
                size=size,
                mtime_ns=mtime_ns,
                ctime_ns=ctime_ns,
                inode=inode,
                attempts=1,
            )
            conn.executemany(INSERT_PENDING_STEP, [(doc_id, step) for step in steps])
            return row, self.steps_of(doc_id)

    def add_queued(
        self,
        pipeline: str,
        path: str,
        relative_path: str,
        *,
        sha256: str,
        content_type: str,
        size: int,
        mtime_ns: int,
        steps: Sequence[str],
        ctime_ns: int | None = None,
        inode: int | None = None,
    ) -> tuple[DocumentRow, list[StepRow]]:
        """`add_document` and `mark_queued` in one transaction: a file hashed and checked before
        it was journaled (the engine's usual path: one commit instead of two)."""
        with self._write():
            doc = self.add_document(pipeline, path, relative_path, size, mtime_ns)
            return self.mark_queued(
                doc.id,
                sha256=sha256,
                content_type=content_type,
                size=size,
                mtime_ns=mtime_ns,
                steps=steps,
                ctime_ns=ctime_ns,
                inode=inode,
            )

    def mark_rediscovered(self, doc_id: int) -> DocumentRow:
        """The file changed before submission: hash it again."""
        with self._write() as conn:
            conn.execute("DELETE FROM steps WHERE document_id = ? AND state = 'pending'", (doc_id,))
            return self._set_state(conn, doc_id, _D.DISCOVERED)

    def reject(
        self,
        doc_id: int,
        reason: str,
        *,
        stage: str = "intake",
        detail: JSONObject | None = None,
        sha256: str | None = None,
        content_type: str | None = None,
    ) -> DocumentRow:
        """The document will not be submitted (unsupported, empty, too large, vanished…)."""
        columns: dict[str, Any] = {}
        if sha256 is not None:
            columns.update(sha256=sha256, content_type=content_type)
        with self._write() as conn:
            return self._set_state(
                conn,
                doc_id,
                _D.REJECTED,
                outcome="rejected",
                error=reason,
                error_stage=stage,
                error_detail=json.dumps(detail) if detail else None,
                **columns,
            )

    def mark_duplicate(
        self, doc_id: int, *, sha256: str, content_type: str, of: int
    ) -> DocumentRow:
        """Same content as a document already processed: no submission."""
        with self._write() as conn:
            return self._set_state(
                conn,
                doc_id,
                _D.DUPLICATE,
                sha256=sha256,
                content_type=content_type,
                duplicate_of=of,
                outcome="duplicate",
            )

    def add_flag(self, doc_id: int, flag: str) -> None:
        """Attach a marker (e.g. `resubmitted`) to a document."""
        with self._write() as conn:
            self._add_flag(conn, doc_id, flag)

    def set_path(self, doc_id: int, path: str) -> None:
        """The source file now lives at `path` (retrying a document from the failed folder)."""
        with self._write() as conn:
            conn.execute("UPDATE documents SET path = ? WHERE id = ?", (path, doc_id))

    def refresh_identity(self, doc_id: int, *, mtime_ns: int, ctime_ns: int, inode: int) -> None:
        """The file's metadata changed but its bytes are the ones hashed (e.g. a chmod, or the
        same content renamed over it): remember the new facts so the next check is one lstat."""
        with self._write() as conn:
            conn.execute(
                "UPDATE documents SET mtime_ns = ?, ctime_ns = ?, inode = ? WHERE id = ?",
                (mtime_ns, ctime_ns, inode, doc_id),
            )

    # -- identification (pipelines that route by document type) ------------------------------

    def set_identification(self, doc_id: int, identification_json: str, code: str) -> DocumentRow:
        """Remember the type the service identified (`code`) and its whole answer (JSON text of
        a `docutray_watch.records.Identification`), once its `@identify` step succeeded."""
        json.loads(identification_json)  # refuse what could not be read back
        with self._write() as conn:
            conn.execute(
                "UPDATE documents SET identified_type = ?, identification = ?, updated_at = ?"
                " WHERE id = ?",
                (code, identification_json, self._clock(), doc_id),
            )
            return self._document_row(conn, doc_id)

    def mark_unrouted(
        self, doc_id: int, reason: str, *, detail: JSONObject | None = None
    ) -> DocumentRow:
        """Identified as a type no route takes, with `otherwise: keep`: the document ends
        `unrouted` (left for a person; `retry` releases it once a route exists)."""
        with self._write() as conn:
            return self._set_state(
                conn,
                doc_id,
                _D.UNROUTED,
                outcome="unrouted",
                error=reason,
                error_stage="route",
                error_detail=json.dumps(detail) if detail else None,
            )

    # -- ends --------------------------------------------------------------------------------

    def mark_delivered(self, doc_id: int) -> DocumentRow:
        """Every result reached every sink."""
        with self._write() as conn:
            return self._set_state(conn, doc_id, _D.DELIVERED, outcome="success")

    def mark_failed(
        self, doc_id: int, reason: str, *, stage: str, detail: JSONObject | None = None
    ) -> DocumentRow:
        """The document failed (an ERROR result, a timeout, a rejected submission, a sink)."""
        with self._write() as conn:
            return self._set_state(
                conn,
                doc_id,
                _D.FAILED,
                outcome="failed",
                error=reason,
                error_stage=stage,
                error_detail=json.dumps(detail) if detail else None,
            )

    def archive_intent(self, doc_id: int, destination: str | None) -> None:
        """Journal where the file is about to go, before moving it (crash-safe moves)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE documents SET archive_to = ?, updated_at = ? WHERE id = ?",
                (destination, self._clock(), doc_id),
            )

    def deliver_and_finish(self, doc_id: int, archived_to: str | None) -> DocumentRow:
        """`mark_delivered` and `finish` in one transaction, for a file with no action left
        between them (it is kept where it was found)."""
        with self._write() as conn:
            # Both moves checked; one UPDATE writes where they end (`delivered` lasts no longer
            # than the transaction, so no reader could ever see it).
            row = self._checked_update(
                conn,
                "documents",
                doc_id,
                _D.DELIVERED,
                {
                    "outcome": "success",
                    "archived_to": archived_to,
                    "archive_to": None,
                    "finished_at": self._clock(),
                    "updated_at": self._clock(),
                },
                then=_D.ARCHIVED,
            )
            if row is None:
                raise KeyError(f"document {doc_id} is not in the journal")
            return rows.document(row)

    def finish(self, doc_id: int, archived_to: str | None) -> DocumentRow:
        """The final file action is done; a delivered or duplicate document becomes archived."""
        with self._write() as conn:
            state = self._state_of(conn, "documents", doc_id)
            if state not in (
                _D.DELIVERED,
                _D.DUPLICATE,
                _D.FAILED,
                _D.REJECTED,
                _D.ARCHIVED,
                _D.UNROUTED,
            ):
                raise InvalidTransition(f"document {doc_id}: cannot finish in state {state}")
            new_state = _D.ARCHIVED if state in (_D.DELIVERED, _D.DUPLICATE) else state
            return self._set_state(
                conn,
                doc_id,
                new_state,
                known_state=state,
                archived_to=archived_to,
                archive_to=None,
                finished_at=self._clock(),
            )

    # -- a file that changed while it was processed ------------------------------------------

    def supersede(self, doc_id: int, reason: str) -> tuple[DocumentRow, int]:
        """The file changed while this version was processed and is taken again as a new
        document: finish this one as `superseded` (nothing moved) and mark its results.

        Results already delivered become `superseded` (they describe bytes the file no longer
        holds), undelivered ones `dropped` (never delivered). Returns the document and how many
        delivered results were superseded.
        """
        with self._write() as conn:
            superseded = self._mark_results_stale(conn, doc_id)
            doc = self._set_state(
                conn,
                doc_id,
                _D.SUPERSEDED,
                outcome="superseded",
                error=reason,
                error_stage="changed",
                archive_to=None,
                archived_to=None,
                finished_at=self._clock(),
            )
            return doc, superseded

    def fail_changed(self, doc_id: int, reason: str) -> DocumentRow:
        """`on_change: fail`: the file changed while it was processed; results already
        delivered are marked `superseded`, undelivered ones `dropped`, the document fails."""
        with self._write() as conn:
            self._mark_results_stale(conn, doc_id)
            return self._set_state(
                conn,
                doc_id,
                _D.FAILED,
                outcome="failed",
                error=reason,
                error_stage="changed",
                error_detail=None,
            )

    def _mark_results_stale(self, conn: sqlite3.Connection, doc_id: int) -> int:
        superseded = self._move_deliveries(
            conn, doc_id, (DeliveryState.DELIVERED,), DeliveryState.SUPERSEDED
        )
        self._move_deliveries(
            conn, doc_id, (DeliveryState.PENDING, DeliveryState.FAILED), DeliveryState.DROPPED
        )
        return superseded

    # -- retry -------------------------------------------------------------------------------

    def requeue(self, doc_id: int, *, force: bool = False) -> DocumentRow:
        """Make a finished document run again.

        A failed (or unrouted) document keeps its successful steps and delivered results
        (nothing is paid for twice) — its identification too: it is routed again, not identified
        again; only failed or errored steps run again. `force` also re-runs a successfully
        archived document from scratch (identification included).
        """
        with self._write() as conn:
            doc = self._document_row(conn, doc_id)
            if doc.state == _D.ARCHIVED and not force:
                raise InvalidTransition(f"document {doc_id} succeeded; use --force to run it again")
            if doc.state not in (_D.ARCHIVED, _D.FAILED, _D.REJECTED, _D.UNROUTED):
                raise InvalidTransition(f"document {doc_id} is still in progress ({doc.state})")
            if doc.state in (_D.REJECTED, _D.ARCHIVED) or doc.sha256 is None:
                conn.execute("DELETE FROM steps WHERE document_id = ?", (doc_id,))
                conn.execute(
                    "UPDATE documents SET identified_type = NULL, identification = NULL"
                    " WHERE id = ?",
                    (doc_id,),
                )
            else:
                conn.execute(
                    "DELETE FROM steps WHERE document_id = ? AND state IN ('error', 'failed')",
                    (doc_id,),
                )
                conn.execute(
                    "UPDATE deliveries SET error = NULL WHERE document_id = ? AND state = 'failed'",
                    (doc_id,),
                )
                self._move_deliveries(conn, doc_id, (DeliveryState.FAILED,), DeliveryState.PENDING)
            new_state = _D.QUEUED
            if doc.state == _D.REJECTED or (doc.sha256 is None and doc.state != _D.ARCHIVED):
                new_state = _D.DISCOVERED
            # In the same transaction: a daemon that sees the new count also sees the document.
            conn.execute(
                "INSERT INTO meta (key, value, updated_at) VALUES (?, 1, ?) ON CONFLICT (key)"
                " DO UPDATE SET value = value + 1, updated_at = excluded.updated_at",
                (REQUEUED_KEY, self._clock()),
            )
            return self._set_state(
                conn,
                doc_id,
                new_state,
                outcome=None,
                error=None,
                error_stage=None,
                error_detail=None,
                finished_at=None,
                archive_to=None,
                archived_to=None,
                attempts=doc.attempts + 1,
                flags="",
                duplicate_of=None,
            )

    # -- retention and learned latencies -----------------------------------------------------

    def forget_documents(self, ids: Sequence[int], finished_before: float) -> int:
        """Delete these documents with their steps and deliveries; returns how many went.

        Only documents still finished before `finished_before` go: one requeued meanwhile (by
        `retry`) is unfinished again and stays.
        """
        if not ids:
            return 0
        marks = ",".join("?" for _ in ids)
        with self._write() as conn:
            cursor = conn.execute(
                f"DELETE FROM documents WHERE id IN ({marks})"  # noqa: S608 - placeholders only
                " AND finished_at IS NOT NULL AND finished_at < ?",
                (*ids, finished_before),
            )
            return cursor.rowcount

    def save_latencies(self, rows: Iterable[LatencyRow]) -> None:
        """Persist learned processing times so a restart polls well from the first document."""
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO step_latency (step_id, size_class, count, mean, variance)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (step_id, size_class) DO UPDATE SET"
                " count = excluded.count, mean = excluded.mean, variance = excluded.variance",
                list(rows),
            )

    # -- facts about the running daemon, for `status` (the `meta` table) ----------------------

    def set_meta(self, key: str, value: str) -> None:
        """Store `value` under `key` (e.g. the current request rate)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key)"
                " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, self._clock()),
            )

    def record_api_pause(self, reasons: str | None) -> None:
        """Why the daemon's API work is paused now (None: it is not); the time it began is kept
        while the reasons stay the same."""
        with self._write() as conn:
            if reasons is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (API_PAUSE_KEY,))
                return
            conn.execute(
                "INSERT INTO meta (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key)"
                " DO UPDATE SET updated_at = CASE WHEN value = excluded.value THEN updated_at"
                " ELSE excluded.updated_at END, value = excluded.value",
                (API_PAUSE_KEY, reasons, self._clock()),
            )
