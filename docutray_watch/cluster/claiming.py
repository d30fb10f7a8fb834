"""A file whose content another document claims (the unique index on (pipeline, sha256,
generation), `ContentClaimed`), as the intake job of a shared folder meets it.

- `duplicates: skip`: the file is journaled a `duplicate` of the document claiming the content
  (being processed, maybe on another node), and goes to its final action, as in single-node mode.
- `duplicates: reprocess`: the document moves to the content's next generation (what `retry
  --force` does, `claims.next_generation`) and is queued there: processed again.

A node's own folders journal a batch at once; `journal.postgres.batch` decides the same there.
"""

from __future__ import annotations

import structlog

from docutray_watch import intake
from docutray_watch.cluster.services import NodeServices
from docutray_watch.engine.reading import Unreadable
from docutray_watch.journal import DocumentRow
from docutray_watch.journal.postgres import ContentClaimed

__all__ = ["classify"]

log = structlog.get_logger("docutray_watch.cluster")

_ATTEMPTS = 3  # the holder let go, or another generation taken, meanwhile: look again


async def classify(
    svc: NodeServices, doc: DocumentRow, facts: intake.FileFacts | Unreadable
) -> None:
    """Queue, reject or mark duplicate a journaled document (discovery's `classify`), its
    content claimed by another document handled as the pipeline's `duplicates` says."""
    store = svc.store
    for attempt in range(_ATTEMPTS):
        try:
            await svc.discovery.classify(doc, facts)
            return
        except ContentClaimed:
            if attempt == _ATTEMPTS - 1:
                raise  # the job's retry takes the file again
            assert isinstance(facts, intake.FileFacts)
            if svc.ctx.pipelines[doc.pipeline].config.duplicates == "reprocess":
                generation = await store.next_generation(doc.pipeline, facts.sha256)
                await store.set_generation(doc.id, generation)
                log.info(
                    "document_reprocessed",
                    pipeline=doc.pipeline,
                    doc=doc.name,
                    generation=generation,
                    note="duplicates: reprocess; its content is processed again",
                )
                continue
            holder = await store.content_holder(doc.pipeline, facts.sha256)
            if holder is None:
                continue  # let go meanwhile: this document may claim it now
            doc = await store.mark_duplicate(
                doc.id,
                sha256=facts.sha256,
                content_type=facts.content_type or "application/octet-stream",
                of=holder.id,
            )
            svc.ctx.documents.update(doc)
            svc.discovery.announce_duplicate(doc, holder.path)
            return
