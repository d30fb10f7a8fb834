"""A child process for the power-loss test: drives the journal as the engine does, acknowledging.

`python -m tests.reliability.journal_writer JOURNAL ACKS` runs concurrent document lifecycles
through `AsyncJournal` (one writer thread, group commit) until it is killed. After every call
returns — that is, once its transaction is committed — it appends `<document id> <stage>` to ACKS.
A commit acknowledged there must be found in the journal whenever the process dies.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from docutray_watch.journal import AsyncJournal, Journal

STAGES = ("discovered", "queued", "submitting", "polling", "completed", "delivered", "archived")
WORKERS = 16


async def _lifecycles(journal: AsyncJournal, worker: int, acks: TextIO) -> None:
    number = 0
    while True:
        number += 1
        name = f"w{worker}-{number}.pdf"

        def ack(doc_id: int, stage: str) -> None:
            acks.write(f"{doc_id} {STAGES.index(stage)}\n")

        doc = await journal.add_document("power", f"/in/{name}", name, 1000, number)
        ack(doc.id, "discovered")
        await journal.mark_queued(
            doc.id,
            sha256=f"{worker:04d}{number:060d}",
            content_type="application/pdf",
            size=1000,
            mtime_ns=number,
            steps=["stp_power"],
        )
        ack(doc.id, "queued")
        (step,) = await journal.steps_of(doc.id)
        await journal.step_submitting(step.id)
        ack(doc.id, "submitting")
        await journal.step_accepted(step.id, f"exec_{doc.id}", "ENQUEUED")
        ack(doc.id, "polling")
        await journal.finish_step(
            step.id,
            state="success",
            status="SUCCESS",
            result={"status": "SUCCESS", "data": {"text": "x" * 500}},
            sinks=["files"],
        )
        ack(doc.id, "completed")
        for delivery in await journal.deliveries_of(doc.id):
            await journal.delivery_done(delivery.id, f"/out/{name}.json")
        await journal.mark_delivered(doc.id)
        ack(doc.id, "delivered")
        await journal.finish(doc.id, f"/done/{name}")
        ack(doc.id, "archived")


async def _main(journal_path: str, acks_path: str) -> None:
    journal = AsyncJournal(Journal(journal_path))
    await journal.open()
    with open(acks_path, "a", buffering=1, encoding="utf-8") as acks:  # one write() per line
        await asyncio.gather(*(_lifecycles(journal, w, acks) for w in range(WORKERS)))


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
