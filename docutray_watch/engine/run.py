"""A document's life after discovery, top to bottom: `DocumentRun`, and the queue before it.

A queued document waits in the `Dispatcher` as a row, in order (20,000 waiting documents cost
20,000 rows, not 20,000 coroutines), until an execution slot is free. Then one `DocumentRun`
takes it to its end, entering at its stored state (which is also how a restart resumes it)::

    queued / submitting / polling   each unfinished step: submit → poll (steps run side by side)
    completed                       version check → deliver to every sink
    delivered, failed, rejected,    finalize: move, delete or keep the file; journal the end
    duplicate, archived

Each phase (`submit`, `poll_once`, `deliver`, `finalize`) is a function of the stored rows
that returns the next stored state; the run only chains them and logs with the document bound.
"""

from __future__ import annotations

import asyncio
import os

import structlog
from structlog.typing import FilteringBoundLogger

from docutray_watch.delivery import describe
from docutray_watch.engine.context import Context, document_of
from docutray_watch.engine.deliver import deliver_all
from docutray_watch.engine.discovery import Discovery
from docutray_watch.engine.finalize import changed_during_processing, finalize, version_check
from docutray_watch.engine.poll import poll
from docutray_watch.engine.steps import Deadline, HeldSlot, step_failed
from docutray_watch.engine.submit import source_changed, submit
from docutray_watch.journal import Completion, DocumentRow, DocumentState, StepRow, StepState
from docutray_watch.plugins import call_observers
from docutray_watch.routing import routed_steps_pending
from docutray_watch.routing_phase import Routed, route_identified

__all__ = ["Dispatcher", "DocumentRun"]

log = structlog.get_logger("docutray_watch.engine")

_STEPPING = (DocumentState.QUEUED, DocumentState.SUBMITTING, DocumentState.POLLING)


class DocumentRun:
    """One document from its stored state to its end (see the module docstring).

    `steps`: its unfinished steps when the caller has them; `slots`: the slots already held for
    the first of them (the dispatcher hands over one, a resumed execution holds its own).
    """

    def __init__(
        self,
        ctx: Context,
        doc: DocumentRow,
        *,
        steps: list[StepRow] | None = None,
        slots: list[HeldSlot] | None = None,
    ) -> None:
        self.ctx = ctx
        self.doc = doc
        self.steps = steps
        self.slots = slots or []
        # The rows read once the steps ended: what delivery needs, so it is not read twice.
        self._ended: Completion | None = None
        self.log: FilteringBoundLogger = log.bind(pipeline=doc.pipeline, doc=doc.name)

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            for slot in self.slots:
                slot.release()  # a run that never reached its steps (crashed, cancelled)
            self.ctx.documents.forget(self.doc)

    async def _run(self) -> None:
        ctx = self.ctx
        if self.doc.state in _STEPPING and not await self._run_steps():
            return  # a step could not be journaled as ended: resumed at the next start
        doc = self.doc
        if doc.state in _STEPPING or doc.state == DocumentState.COMPLETED:
            view = self._ended or await ctx.store.completion(doc.id)
            self._ended = None
            doc = self._now(view.document)
            # The results describe the bytes that were hashed: is that still what the file holds?
            doc, changed = await version_check(ctx, doc)
            if changed is not None:
                await changed_during_processing(ctx, doc, changed, self.log, when="before delivery")
                return
            doc = self._now(await deliver_all(ctx, doc, view, self.log))
        # Delivered: still `completed` here; finalize journals `delivered` (with `archived` in the
        # same commit when the file is kept).
        await finalize(ctx, doc, self.log)

    def _now(self, doc: DocumentRow) -> DocumentRow:
        self.doc = doc
        self.ctx.documents.update(doc)
        return doc

    async def _run_steps(self) -> bool:
        """Every unfinished step, side by side; True once all of them ended (or, for a pipeline
        that identifies first, once the route after `@identify` ended the document)."""
        ctx, doc = self.ctx, self.doc
        steps = self.steps
        if steps is None:
            steps = [s for s in await ctx.store.steps_of(doc.id) if not s.finished]
        slots, self.slots = self.slots, []
        pool = ctx.limits.slots
        while True:
            held = slots + [HeldSlot(pool, held=False) for _ in steps[len(slots) :]]
            if len(steps) == 1:
                await self._step(steps[0], held[0])  # the usual case: no task to wrap it in
            else:
                steps_and_slots = zip(steps, held, strict=True)
                await asyncio.gather(*(self._step(step, slot) for step, slot in steps_and_slots))
            # One read for both questions: did every step end, and what does delivery need. The
            # last step's end read it back already, unless a step ended some other way.
            view = ctx.documents.take_view(doc.id)
            if view is None or not all(s.finished for s in view.steps):
                view = await ctx.store.completion(doc.id)
            self._ended = view
            rows = self._ended.steps
            identified = _identified_awaiting_route(rows)
            if identified is None:
                return all(s.finished for s in rows)
            self._ended = None  # routing changes the rows
            routed = await self._route(identified)
            if routed.route.action != "run":
                return True  # failed or unrouted: straight to its end
            steps, slots = [s for s in routed.steps if not s.finished], []

    async def _route(self, identified: StepRow) -> Routed:
        """The document was identified: journal it, announce it, and journal its route."""
        ctx = self.ctx
        config = ctx.pipelines[self.doc.pipeline].config
        routed = await route_identified(ctx.store, config, self.doc, identified)
        self._now(routed.document)
        found = routed.identification
        if routed.newly_identified:
            ctx.metrics.identified.labels(self.doc.pipeline, found.code).inc()
            call_observers(
                ctx.pm,
                "after_document_identified",
                pipeline=self.doc.pipeline,
                document=document_of(self.doc),
                identification=found,
            )
        self.log.info(
            "document_identified",
            document_type=found.code,
            confidence=found.confidence,
            route=routed.route.route,
            then=routed.route.action,
        )
        return routed

    async def _step(self, step: StepRow, slot: HeldSlot) -> None:
        """One step: its slot, its submission, its polling, until its execution ended."""
        ctx, doc = self.ctx, self.doc
        deadline = Deadline(ctx, doc.pipeline)
        try:
            await slot.acquire()
            step = await submit(ctx, doc, step, slot=slot, deadline=deadline, log=self.log)
            if step.state == StepState.POLLING:
                await poll(ctx, doc, step, slot=slot, deadline=deadline, log=self.log)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.exception("step_crashed", step_id=step.step_id)
            reason = f"internal error: {describe(exc)}"
            await step_failed(ctx, step, reason, self.log, stage="submit")
        finally:
            slot.release()
            ctx.documents.progress()


def _identified_awaiting_route(rows: list[StepRow]) -> StepRow | None:
    """The successful `@identify` row of a document whose routed steps are not added yet."""
    if not routed_steps_pending([s.step_id for s in rows]):
        return None
    (identify,) = rows
    return identify if identify.state == StepState.SUCCESS else None


class Dispatcher:
    """Queued documents, in order, each waiting for its first execution slot."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.discovery: Discovery | None = None  # set by the engine (a changed file is re-read)
        self._ready: asyncio.Queue[tuple[DocumentRow, list[StepRow] | None]] = asyncio.Queue()

    @property
    def depth(self) -> int:
        """Documents waiting for a slot."""
        return self._ready.qsize()

    def queued(self, doc: DocumentRow, steps: list[StepRow] | None) -> None:
        """Queue a document (its step rows when the caller just created them)."""
        ctx = self.ctx
        key = (doc.pipeline, doc.sha256 or "")
        twin = ctx.documents.in_progress.get(key)
        if ctx.pipelines[doc.pipeline].config.duplicates == "skip" and twin is not None:
            # Same content already in progress: wait for it, then decide (duplicate or retry).
            ctx.spawn(self._after_twin(doc, twin), f"twin:{doc.name}", doc)
            return
        ctx.documents.in_progress[key] = asyncio.Event()
        self._ready.put_nowait((doc, steps))
        ctx.metrics.queue_depth.labels(doc.pipeline).inc()

    def to_the_end(self, doc: DocumentRow, *, steps: list[StepRow] | None = None) -> None:
        """Run a document from its stored state (nothing to wait for first)."""
        self.ctx.spawn(DocumentRun(self.ctx, doc, steps=steps).run(), f"run:{doc.name}", doc)

    def resume_executions(self, doc: DocumentRow, steps: list[StepRow]) -> None:
        """A document whose executions were running when the engine stopped: each unfinished
        step takes its slot back at once (its execution runs at the service whatever the cap)."""
        ctx = self.ctx
        ctx.documents.in_progress[(doc.pipeline, doc.sha256 or "")] = asyncio.Event()
        unfinished = [s for s in steps if not s.finished]
        slots = []
        for _ in unfinished:
            ctx.limits.slots.take()
            slots.append(HeldSlot(ctx.limits.slots, held=True))
        run = DocumentRun(ctx, doc, steps=unfinished, slots=slots)
        ctx.spawn(run.run(), f"run:{doc.name}", doc)

    async def loop(self) -> None:
        """Hand each queued document its first slot, in order, until cancelled."""
        while True:
            doc, steps = await self._ready.get()
            try:
                await self._start(doc, steps)
            except Exception as exc:  # noqa: BLE001 - the dispatcher must outlive any failure
                # Typically the journal cannot be written (disk full). The document stays
                # unfinished in the journal; the daemon's periodic resume takes it up again.
                log.error(
                    "dispatch_failed", pipeline=doc.pipeline, doc=doc.name, error=describe(exc)
                )
                self.ctx.documents.forget(doc)

    async def _start(self, doc: DocumentRow, steps: list[StepRow] | None) -> None:
        ctx = self.ctx
        ctx.metrics.queue_depth.labels(doc.pipeline).dec()
        doc = ctx.documents.active.get(doc.id, doc)
        configured = ctx.pipelines[doc.pipeline].config.initial_steps
        if steps is None or [s.step_id for s in steps] != list(configured):
            # Resumed, requeued, or the pipeline's steps changed (a reload) since it was queued.
            steps = await ctx.store.ensure_steps(doc.id, configured)
        unfinished = [s for s in steps if not s.finished]
        if not unfinished:
            self.to_the_end(doc, steps=[])
            return
        slot = HeldSlot(ctx.limits.slots, held=False)
        await slot.acquire()
        if all(s.state == StepState.PENDING and s.attempts == 0 for s in steps):
            # Nothing submitted yet: a file replaced or deleted while queued (checked once a
            # slot is free, as the wait for one can be long) is simply taken again from
            # scratch (or dropped), never failed. One lstat, inline: cheaper than a thread trip.
            changed = source_changed(doc)
            if changed is not None:
                slot.release()
                await self._requeue_changed(doc, changed)
                return
        run = DocumentRun(ctx, doc, steps=unfinished, slots=[slot])
        ctx.spawn(run.run(), f"run:{doc.name}", doc)

    async def _after_twin(self, doc: DocumentRow, event: asyncio.Event) -> None:
        await event.wait()
        store = self.ctx.store
        original = await store.find_done_by_sha(doc.pipeline, doc.sha256 or "", exclude=doc.id)
        if original is None:
            self.queued(doc, None)
            return
        await store.mark_rediscovered(doc.id)
        doc = await store.mark_duplicate(
            doc.id, sha256=doc.sha256 or "", content_type=doc.content_type or "", of=original.id
        )
        self.ctx.documents.update(doc)
        self.to_the_end(doc)

    async def _requeue_changed(self, doc: DocumentRow, reason: str) -> None:
        ctx = self.ctx
        assert self.discovery is not None
        event = ctx.documents.in_progress.pop((doc.pipeline, doc.sha256 or ""), None)
        if event is not None:
            event.set()
        log.info(
            "document_changed_while_queued", pipeline=doc.pipeline, doc=doc.name, reason=reason
        )
        if not await asyncio.to_thread(os.path.lexists, doc.path):
            await self.discovery.reject(doc, reason, forget=True)
            return
        doc = await ctx.store.mark_rediscovered(doc.id)
        ctx.documents.remember(doc)
        ctx.spawn(self.discovery.inspect(doc), f"inspect:{doc.name}", doc)
