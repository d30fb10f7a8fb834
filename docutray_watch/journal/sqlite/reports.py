"""Read-only reports on the journal: `status`, `show`, metrics, and what `prune` may forget."""

from __future__ import annotations

import os
import sqlite3

from docutray_watch.journal.rows import DocumentRow, LatencyRow, PruneCandidate
from docutray_watch.journal.sqlite import rows
from docutray_watch.journal.sqlite.connection import Connection
from docutray_watch.journal.sqlite.counts import type_counts, type_outcome_counts

__all__ = ["API_PAUSE_KEY", "REQUEUED_KEY", "Reports"]

REQUEUED_KEY = "requeued"  # meta: documents `retry` requeued, for the daemon to notice
API_PAUSE_KEY = "api_pause"  # meta: why the daemon's API work is paused, since when


class Reports(Connection):
    """Queries that change nothing."""

    def counts(self) -> dict[str, dict[str, int]]:
        """Number of documents per pipeline and state."""
        result: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT pipeline, state, COUNT(*) AS n FROM documents GROUP BY pipeline, state"
        ):
            result.setdefault(row["pipeline"], {})[row["state"]] = row["n"]
        return result

    def outcome_counts(self) -> dict[str, dict[str, int]]:
        """Documents per pipeline: finished ones by outcome (`success`, `duplicate`, `failed`,
        `rejected`: the words `process` prints), unfinished ones by state."""
        result: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT pipeline, COUNT(*) AS n,"
            " CASE WHEN state = 'archived' THEN COALESCE(outcome, 'success') ELSE state END AS word"
            " FROM documents GROUP BY pipeline, word"
        ):
            result.setdefault(row["pipeline"], {})[row["word"]] = row["n"]
        return result

    def counts_by_type(self) -> dict[str, dict[str, int]]:
        """Documents per pipeline and identified type code (pipelines that identify; a
        document counts once its identification succeeded, whatever happened next). Read from
        the counts the triggers keep (`type_counts`), not from the documents."""
        return type_counts(self.conn)

    def outcomes_by_type(self) -> dict[str, dict[str, dict[str, int]]]:
        """Identified documents per pipeline, type code and word (finished ones by outcome,
        `unrouted` included; unfinished ones by state): the status page's table per type. Read
        from `type_counts`, not from the documents."""
        return type_outcome_counts(self.conn)

    def superseded_results(self) -> dict[str, int]:
        """Delivered results later found to describe an older version of their file, per
        pipeline (see `supersede`)."""
        return {
            row["pipeline"]: row["n"]
            for row in self.conn.execute(
                "SELECT d.pipeline, COUNT(*) AS n FROM deliveries r"
                " JOIN documents d ON d.id = r.document_id"
                " WHERE r.state = 'superseded' GROUP BY d.pipeline"
            )
        }

    def recent_failures(self, limit: int = 10, pipeline: str | None = None) -> list[DocumentRow]:
        """The last failed or rejected documents, newest first."""
        query = "SELECT * FROM documents WHERE state IN ('failed', 'rejected')"
        args: tuple[str | int, ...] = ()
        if pipeline is not None:
            query += " AND pipeline = ?"
            args = (pipeline,)
        found = self.conn.execute(
            query + " ORDER BY updated_at DESC, id DESC LIMIT ?", (*args, limit)
        )
        return [rows.document(r) for r in found]

    def document(self, doc_id: int) -> DocumentRow:
        """One document by id."""
        row = self.conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            raise KeyError(doc_id)
        return rows.document(row)

    def documents_in(self, *states: str, pipeline: str | None = None) -> list[DocumentRow]:
        """Documents in any of the given states."""
        marks = ",".join("?" for _ in states)
        query = f"SELECT * FROM documents WHERE state IN ({marks})"  # noqa: S608
        args: tuple[str, ...] = tuple(states)
        if pipeline is not None:
            query += " AND pipeline = ?"
            args = (*args, pipeline)
        return [rows.document(r) for r in self.conn.execute(query + " ORDER BY id", args)]

    def unfinished_documents(self) -> list[DocumentRow]:
        """Every document whose final file action is not done yet, oldest first."""
        found = self.conn.execute(
            "SELECT * FROM documents WHERE finished_at IS NULL ORDER BY id"
        ).fetchall()
        return [rows.document(r) for r in found]

    def latest_by_path(self, pipeline: str) -> dict[str, DocumentRow]:
        """The most recent document for each path a folder scan must know about.

        That is unfinished documents, and finished ones whose file was kept where it was found
        (`archived_to` is its own path): a moved or deleted file left its path free, so months of
        history do not have to sit in memory.
        """
        found = self.conn.execute(
            "SELECT * FROM documents WHERE id IN"
            " (SELECT MAX(id) FROM documents WHERE pipeline = ?"
            "  AND (finished_at IS NULL OR archived_to = path) GROUP BY path)",
            (pipeline,),
        ).fetchall()
        return {r["path"]: rows.document(r) for r in found}

    def find_done_by_sha(self, pipeline: str, sha256: str, *, exclude: int) -> DocumentRow | None:
        """A document of this pipeline with the same content whose results were delivered."""
        row = self.conn.execute(
            "SELECT * FROM documents WHERE pipeline = ? AND sha256 = ? AND id != ?"
            " AND state IN ('delivered', 'archived') AND outcome IS NOT 'duplicate'"
            " ORDER BY id LIMIT 1",
            (pipeline, sha256, exclude),
        ).fetchone()
        return rows.document(row) if row else None

    def find_documents(self, ref: str) -> list[DocumentRow]:
        """Documents whose path (where found or where archived) is `ref`, or whose sha256 is or
        starts with `ref` (6 hex digits at least), oldest first."""
        wanted = os.path.abspath(ref)
        query = "SELECT * FROM documents WHERE path = ? OR archived_to = ?"
        args: tuple[str | int, ...] = (wanted, wanted)
        if len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref.lower()):
            query += " OR substr(sha256, 1, ?) = ?"
            args = (*args, len(ref), ref.lower())
        return [rows.document(r) for r in self.conn.execute(query + " ORDER BY id", args)]

    def oldest_pending(self) -> dict[str, float]:
        """Creation time of the oldest unfinished document, per pipeline."""
        return {
            row["pipeline"]: row["t"]
            for row in self.conn.execute(
                "SELECT pipeline, MIN(created_at) AS t FROM documents"
                " WHERE finished_at IS NULL GROUP BY pipeline"
            )
        }

    def requeue_count(self) -> int:
        """How many documents `requeue` has requeued in this journal's life (the daemon polls it
        to pick up what `docutray-watch retry` requeued from another process)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (REQUEUED_KEY,)).fetchone()
        return int(row[0]) if row is not None else 0

    def unfinished_by_path(self, pipeline: str) -> dict[str, DocumentRow]:
        """The newest unfinished document for each path of a pipeline (few: work in hand)."""
        found = self.conn.execute(
            "SELECT * FROM documents WHERE finished_at IS NULL AND pipeline = ? ORDER BY id",
            (pipeline,),
        )
        return {r["path"]: rows.document(r) for r in found}

    def kept_stamps(self, pipeline: str) -> dict[str, int]:
        """Each path whose file was kept where it was found, with `kept_stamp(size, mtime_ns)`
        of its newest kept document: all a folder scan needs to leave the file alone."""
        return _kept_stamps(self.conn, pipeline)

    def kept_stamps_apart(self, pipeline: str) -> dict[str, int]:
        """`kept_stamps` on a read-only connection of its own (WAL: it neither waits for the
        writer nor holds it up), so the start's other journal calls do not queue behind
        100,000 rows. Any thread; the journal must be open (its schema is up to date)."""
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return _kept_stamps(conn, pipeline)
        finally:
            conn.close()

    def get_meta(self, key: str) -> tuple[str, float] | None:
        """The value stored under `key` and when it was stored (epoch seconds), or None."""
        row = self.conn.execute(
            "SELECT value, updated_at FROM meta WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (str(row["value"]), float(row["updated_at"]))

    def api_pause(self) -> tuple[str, float] | None:
        """Why the daemon's API work is paused (its reasons, one a line) and since when; None
        when it is not (as the daemon last recorded it)."""
        return self.get_meta(API_PAUSE_KEY)

    def load_latencies(self) -> list[LatencyRow]:
        """Saved (step_id, size_class, count, mean, variance) rows."""
        return [
            (r["step_id"], r["size_class"], r["count"], r["mean"], r["variance"])
            for r in self.conn.execute("SELECT * FROM step_latency")
        ]

    def prune_candidates(
        self, finished_before: float, *, after_id: int = 0, limit: int = 500
    ) -> list[PruneCandidate]:
        """Documents that finished before `finished_before`, in id order from `after_id` on."""
        found = self.conn.execute(
            "SELECT d.id, d.pipeline, d.path, d.archived_to = d.path AS kept,"
            " d.id = (SELECT MAX(x.id) FROM documents x"
            "         WHERE x.pipeline = d.pipeline AND x.path = d.path) AS latest"
            " FROM documents d WHERE d.finished_at IS NOT NULL AND d.finished_at < ?"
            " AND d.id > ? ORDER BY d.id LIMIT ?",
            (finished_before, after_id, limit),
        ).fetchall()
        return [
            PruneCandidate(
                id=r["id"],
                pipeline=r["pipeline"],
                path=r["path"],
                kept_latest=bool(r["kept"]) and bool(r["latest"]),
            )
            for r in found
        ]


def _kept_stamps(conn: sqlite3.Connection, pipeline: str) -> dict[str, int]:
    # Plain tuples (no `sqlite3.Row`) and the stamp inline: 100,000 kept files are read at
    # every start. In the index's order (path, then id): a path's newest row comes last and
    # stays. The same int as `kept_stamp(size, mtime_ns)` (NULL counts as 0 there too).
    cursor = conn.cursor()
    cursor.row_factory = None
    found = cursor.execute(
        "SELECT path, IFNULL(size, 0), IFNULL(mtime_ns, 0) FROM documents"
        " WHERE pipeline = ? AND archived_to = path ORDER BY path, id",
        (pipeline,),
    )
    return {path: (mtime_ns << 64) | size for path, size, mtime_ns in found}
