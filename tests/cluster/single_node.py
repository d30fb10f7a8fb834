"""A single-node SQLite journal with a document in every state, built through the journal's own
calls (as the single-node daemon writes it), for the import and the cluster-mode commands."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from docutray_watch.journal import Journal

PIPELINE = "invoices"
OLD = 1_000_000.0  # 1970: every finished document is old enough to prune


class TickingClock:
    """One second per reading, from 1970 on: rows are ordered and long finished."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return OLD + next(self._ticks)


@dataclass(frozen=True)
class Built:
    """Ids of the documents `build_journal` wrote, by the state each ended in."""

    ids: dict[str, int]
    inbox: Path

    def sha(self, state: str) -> str:
        return _sha(state)


def _sha(name: str) -> str:
    return (name.encode().hex() * 64)[:64]


def build_journal(journal_path: Path, inbox: Path) -> Built:
    """Documents in every state; files exist for the failed and kept ones (retry and prune look)."""
    inbox.mkdir(parents=True, exist_ok=True)
    ids: dict[str, int] = {}
    with Journal(journal_path, clock=TickingClock()) as journal:

        def add(name: str) -> int:
            path = inbox / f"{name}.pdf"
            return journal.add_document(PIPELINE, str(path), path.name, 10, 123, inode=7).id

        def queue(name: str, sha: str | None = None) -> int:
            doc = add(name)
            journal.mark_queued(
                doc,
                sha256=sha or _sha(name),
                content_type="application/pdf",
                size=10,
                mtime_ns=123,
                steps=("stp_a",),
                inode=7,
            )
            return doc

        def submit(doc: int) -> int:
            step = journal.steps_of(doc)[0]
            journal.step_submitting(step.id)
            return step.id

        def accept(doc: int, name: str) -> int:
            step = submit(doc)
            journal.step_accepted(step, f"exec-{name}", "ENQUEUED")
            return step

        def complete(doc: int, name: str, *, ok: bool = True) -> None:
            step = accept(doc, name)
            journal.step_finished(
                step,
                state="success" if ok else "error",
                status="SUCCESS" if ok else "ERROR",
                result={"total": 1} if ok else None,
                error=None if ok else "bad scan",
                sinks=("files", "db") if ok else (),
            )

        ids["discovered"] = add("discovered")
        ids["queued"] = queue("queued")
        submitting = queue("submitting")
        submit(submitting)
        ids["submitting"] = submitting
        polling = queue("polling")
        accept(polling, "polling")
        ids["polling"] = polling
        completed = queue("completed")
        complete(completed, "completed")
        # One result delivered to one of its two sinks: its delivery states must survive.
        first = journal.deliveries_of(completed)[0]
        journal.delivery_done(first.id, "receipt-1")
        ids["completed"] = completed
        delivered = queue("delivered")
        complete(delivered, "delivered")
        for delivery in journal.deliveries_of(delivered):
            journal.delivery_done(delivery.id, f"receipt-{delivery.id}")
        journal.mark_delivered(delivered)
        ids["delivered"] = delivered
        archived = queue("archived")
        complete(archived, "archived")
        for delivery in journal.deliveries_of(archived):
            journal.delivery_done(delivery.id, None)
        journal.mark_delivered(archived)
        kept = inbox / "archived.pdf"
        kept.write_bytes(b"%PDF kept in place")
        journal.finish(archived, str(kept))  # `on_success: keep`: the file stays where it was
        ids["archived"] = archived
        # The same content again (`duplicates: reprocess`), still polling: a second claim.
        again = queue("reprocessed", sha=_sha("archived"))
        accept(again, "reprocessed")
        ids["reprocessed"] = again
        duplicate = add("duplicate")
        journal.mark_duplicate(
            duplicate, sha256=_sha("archived"), content_type="application/pdf", of=archived
        )
        ids["duplicate"] = duplicate
        failed = queue("failed")
        complete(failed, "failed", ok=False)
        journal.mark_failed(failed, "bad scan", stage="processing")
        (inbox / "failed.pdf").write_bytes(b"%PDF failed")
        journal.finish(failed, str(inbox / "failed.pdf"))
        ids["failed"] = failed
        rejected = add("rejected")
        journal.reject(rejected, "unsupported type", stage="intake")
        ids["rejected"] = rejected
        superseded = queue("superseded")
        complete(superseded, "superseded")
        journal.supersede(superseded, "the file changed")
        ids["superseded"] = superseded
        unrouted = queue("unrouted")
        identified = {"code": "receipt", "name": "Receipt", "confidence": 0.9, "alternatives": []}
        journal.set_identification(unrouted, json.dumps(identified), "receipt")
        journal.mark_unrouted(unrouted, "no route for type receipt")
        ids["unrouted"] = unrouted
    return Built(ids=ids, inbox=inbox)
