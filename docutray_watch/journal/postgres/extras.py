"""The PostgreSQL store's calls outside the protocol: what several nodes need (leases, source
identities, content generations) and what the operator's commands need (`status`, `retry`,
`prune`), each one transaction like the protocol's calls."""

from __future__ import annotations

from collections.abc import Sequence

from docutray_watch.journal.postgres import claims, maintenance, reports
from docutray_watch.journal.postgres.base import StoreBase
from docutray_watch.journal.postgres.tx import Tx
from docutray_watch.journal.rows import DocumentRow, PruneCandidate

__all__ = ["ExtraCalls"]


class ExtraCalls(StoreBase):
    """Calls a cluster node and the operator's commands make besides the protocol's."""

    # -- claims (multi-node) -------------------------------------------------------------------

    async def take_lease(self, doc_id: int) -> int:
        """Take a document: its lease, incremented (see `claims.take_lease`)."""
        return await self._call(lambda tx: claims.take_lease(tx.conn, doc_id))

    async def add_document_once(
        self,
        pipeline: str,
        path: str,
        relative_path: str,
        size: int,
        mtime_ns: int,
        *,
        ctime_ns: int | None = None,
        inode: int | None = None,
    ) -> DocumentRow:
        """`add_document`, or the path's unfinished document (see `claims.add_document_once`)."""
        return await self._call(
            lambda tx: claims.add_document_once(
                tx, pipeline, path, relative_path, size, mtime_ns, ctime_ns=ctime_ns, inode=inode
            )
        )

    async def unfinished_of_node(self, node: str) -> list[DocumentRow]:
        """The unfinished documents node `node` journaled, in id order."""
        return await self._call(lambda tx: reports.unfinished_of_node(tx, node), write=False)

    async def record_source(
        self,
        *,
        pipeline: str,
        path: str,
        size: int,
        mtime_ns: int,
        inode: int | None,
        document_id: int | None = None,
    ) -> bool:
        """Record a file's source identity on this store's node; False when known already."""
        return await self._call(
            lambda tx: claims.record_source(
                tx.conn,
                node=self.node,
                path=path,
                size=size,
                mtime_ns=mtime_ns,
                inode=inode,
                pipeline=pipeline,
                document_id=document_id,
                now=tx.now,
            )
        )

    async def next_generation(self, pipeline: str, sha256: str) -> int:
        """One more than the highest generation of this content (0: never seen)."""
        return await self._call(
            lambda tx: claims.next_generation(tx.conn, pipeline, sha256), write=False
        )

    async def content_holder(self, pipeline: str, sha256: str) -> DocumentRow | None:
        """The document claiming this content in its newest generation (after a
        `ContentClaimed`: a duplicate of it, or a new generation?), or None."""

        async def holder(tx: Tx) -> DocumentRow | None:
            doc_id = await claims.content_holder(tx.conn, pipeline, sha256)
            return None if doc_id is None else await tx.document(doc_id)

        return await self._call(holder, write=False)

    async def set_generation(self, doc_id: int, generation: int) -> None:
        """Put a document in a generation of its content (before it is queued again)."""
        await self._call(lambda tx: claims.set_generation(tx.conn, doc_id, generation))

    # -- the operator's commands ---------------------------------------------------------------

    async def requeue(self, doc_id: int, *, force: bool = False) -> DocumentRow:
        """`retry`: make a finished document run again (`force`: an archived one, from scratch,
        in the next generation of its content)."""
        return await self._call(lambda tx: maintenance.requeue(tx, doc_id, force=force))

    async def prune_candidates(
        self, finished_before: float, *, after_id: int = 0, limit: int = 500
    ) -> list[PruneCandidate]:
        """`prune`: documents finished before `finished_before`, in id order from `after_id`."""
        return await self._call(
            lambda tx: maintenance.prune_candidates(
                tx, finished_before, after_id=after_id, limit=limit
            ),
            write=False,
        )

    async def forget_documents(self, ids: Sequence[int], finished_before: float) -> int:
        """`prune`: delete these documents if still finished before `finished_before`."""
        wanted = list(ids)
        return await self._call(
            lambda tx: maintenance.forget_documents(tx, wanted, finished_before)
        )

    async def outcome_counts(self) -> dict[str, dict[str, int]]:
        """Documents per pipeline: finished ones by outcome, unfinished ones by state."""
        return await self._call(reports.outcome_counts, write=False)

    async def today_counts(self, day: str) -> dict[str, dict[str, int]]:
        """Documents per pipeline and outcome whose final action was done on `day` (UTC date,
        as `docutray_watch.journal.sqlite.counts.utc_day` writes it)."""
        return await self._call(lambda tx: maintenance.today_counts(tx, day), write=False)

    async def recent_failures(
        self, limit: int = 10, pipeline: str | None = None
    ) -> list[DocumentRow]:
        """The last failed or rejected documents, newest first."""
        return await self._call(
            lambda tx: maintenance.recent_failures(tx, limit, pipeline), write=False
        )

    async def superseded_results(self) -> dict[str, int]:
        """Delivered results later superseded by a change of their file, per pipeline."""
        return await self._call(maintenance.superseded_results, write=False)

    async def api_pause(self) -> tuple[str, float] | None:
        """Why API work is paused (the reasons) and since when; None when it is not."""
        return await self._call(maintenance.api_pause, write=False)

    async def get_meta(self, key: str) -> tuple[str, float] | None:
        """The value stored under `key` and when, or None."""
        return await self._call(lambda tx: reports.get_meta(tx, key), write=False)
