"""The cluster's procrastinate jobs: each calls ONE phase of the engine, then defers the next.

    scan (periodic) ─► intake ─► submit ─► poll (defers itself) ─► deliver ─► finalize

- Each document job takes the document's lease first and runs its phase on a `fenced` store: a
  node that lost the document (declared dead, then woke) writes nothing (`LeaseLost`) and stops.
- Where a job runs: a job that touches the file (intake, submit, deliver, finalize) goes to the
  queue of the node holding it (`node.<name>`), or to the shared queue when its folder is
  `shared: true`; polling runs anywhere (shared queue).
- No job waits inside the job: a submit that finds the cap full, no rate token, the API paused or
  its node's heartbeat unhealthy defers itself again (`schedule_in`) and returns. Poll, deliver
  and finalize jobs have a higher priority than submit, so a full cap can always drain.
- A file's source identity is journaled in the same transaction that defers its first job
  (procrastinate's `configure(connection=...)`): the same file found again does nothing.
- Periodic tasks (one node per period, bodies in `periodic.py`): the scan of shared folders and
  the listing of sources such as S3 buckets (intake in `intake_jobs.py`),
  stalled-job recovery (only by a node connected for at least the stalled timeout, only for jobs
  whose worker has been silent for the stalled timeout plus the API write timeout), raising the
  shared request rate, and the clean-up of old finished jobs. Discovery's handoff, deferring a
  document's first job, is in `handoff.py`; the queue names, priorities and `NodeServices` in
  `services.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import structlog
from procrastinate import RetryStrategy
from procrastinate import exceptions as procrastinate_errors

from docutray_watch.cluster import intake_jobs, periodic
from docutray_watch.cluster import latency as shared_latency
from docutray_watch.cluster.app import node_queue
from docutray_watch.cluster.handoff import ClusterHandoff
from docutray_watch.cluster.services import (
    PRIORITY_DRAIN,
    PRIORITY_SUBMIT,
    RETRY_S,
    SHARED_QUEUE,
    NodeServices,
)
from docutray_watch.engine.context import Context
from docutray_watch.engine.deliver import deliver_all
from docutray_watch.engine.finalize import changed_during_processing, finalize, version_check
from docutray_watch.engine.poll import PollState, poll_once
from docutray_watch.engine.steps import HeldSlot, step_failed
from docutray_watch.engine.submit import interrupted, submit_once
from docutray_watch.journal import DocumentRow, DocumentState, StepRow, StepState
from docutray_watch.journal.postgres import LeaseLost
from docutray_watch.polling import PollSchedule

if TYPE_CHECKING:
    import procrastinate


__all__ = [
    "PRIORITY_DRAIN",
    "PRIORITY_SUBMIT",
    "SHARED_QUEUE",
    "ClusterHandoff",
    "ClusterJobs",
    "NodeServices",
]

log = structlog.get_logger("docutray_watch.cluster")

_FINAL_ACTION = (
    DocumentState.DELIVERED,
    DocumentState.FAILED,
    DocumentState.REJECTED,
    DocumentState.DUPLICATE,
)


class ClusterJobs:
    """The tasks of a cluster node, registered on its procrastinate App."""

    def __init__(self, app: procrastinate.App, services: NodeServices) -> None:
        self.app = app
        self.svc = services
        shared_latency.adopt(services.ctx)  # estimates read from and merged into the journal
        self._register()

    # -- where a job goes ------------------------------------------------------------------------

    def holder_of(self, pipeline: str) -> str | None:
        """The node that holds the files of a pipeline this node found: None when its folder
        is shared (any node reaches them), else this node."""
        runtime = self.svc.ctx.pipelines.get(pipeline)
        return None if runtime is not None and runtime.config.shared else self.svc.node

    @staticmethod
    def file_queue(holder: str | None) -> str:
        """The queue of a job that touches a file `holder` holds (None: a shared folder)."""
        return SHARED_QUEUE if holder is None else node_queue(holder)

    async def defer_job(
        self,
        task: Any,
        *,
        queue: str,
        priority: int,
        key: str,
        schedule_in: float = 0.0,
        connection: Any = None,
        **kwargs: Any,
    ) -> None:
        """Defer `task(**kwargs)`: at most one waiting per `key` (a second is not added); in the
        transaction of `connection` (a raw psycopg connection) when given."""
        options: dict[str, Any] = {"queue": queue, "priority": priority, "queueing_lock": key}
        doc_id = kwargs.get("doc_id")
        if doc_id is not None:
            # One job of a document runs at a time (procrastinate's `lock`): the steps of one
            # document, polled by two nodes at once, would otherwise take its lease from each
            # other. Only a node declared dead loses a lease it still uses.
            options["lock"] = f"doc:{doc_id}"
        if schedule_in > 0:
            options["schedule_in"] = {"seconds": schedule_in}
        deferred = task.configure(**options, **({"connection": connection} if connection else {}))
        with contextlib.suppress(procrastinate_errors.AlreadyEnqueued):
            # The same job waits already: one is enough.
            if connection is None:
                await deferred.defer_async(**kwargs)
                return
            # In the caller's transaction that refusal is an error of PostgreSQL's, which would
            # abort the whole transaction: a savepoint keeps it to this one job.
            async with connection.transaction():
                await deferred.defer_async(**kwargs)

    async def defer_submit(
        self, doc: DocumentRow, step: StepRow, holder: str | None, **kwargs: Any
    ) -> None:
        await self.defer_job(
            self.submit,
            queue=self.file_queue(holder),
            priority=PRIORITY_SUBMIT,
            key=f"submit:{step.id}",
            doc_id=doc.id,
            step_row=step.id,
            holder=holder,
            **kwargs,
        )

    async def defer_poll(
        self,
        doc: DocumentRow,
        step: StepRow,
        holder: str | None,
        wait: float,
        *,
        interval: float | None = None,
    ) -> None:
        await self.defer_job(
            self.poll,
            queue=SHARED_QUEUE,
            priority=PRIORITY_DRAIN,
            key=f"poll:{step.id}",
            schedule_in=wait,
            doc_id=doc.id,
            step_row=step.id,
            holder=holder,
            interval=interval,
        )

    async def defer_after_steps(self, doc_id: int, holder: str | None) -> None:
        """Once every step ended: deliver (completed) or go to the final action (failed)."""
        doc = await self.svc.store.document(doc_id)
        if doc.state == DocumentState.COMPLETED:
            await self.defer_job(
                self.deliver,
                queue=self.file_queue(holder),
                priority=PRIORITY_DRAIN,
                key=f"deliver:{doc.id}",
                doc_id=doc.id,
                holder=holder,
            )
        elif doc.state in _FINAL_ACTION:
            await self.defer_finalize(doc, holder)

    async def defer_finalize(
        self,
        doc: DocumentRow,
        holder: str | None,
        *,
        connection: Any = None,
        schedule_in: float = 0.0,
    ) -> None:
        await self.defer_job(
            self.finalize,
            queue=self.file_queue(holder),
            priority=PRIORITY_DRAIN,
            key=f"finalize:{doc.id}",
            connection=connection,
            schedule_in=schedule_in,
            doc_id=doc.id,
            holder=holder,
        )

    # -- the tasks ---------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        task = app.task
        # A document job that fails (the database away mid-job, a bug) is run again with
        # growing waits: 2, 4, 8 … 4096 s, over two hours in all, before it is left `failed`.
        retry = RetryStrategy(max_attempts=12, exponential_wait=2)
        self.intake = task(name="dtw.intake", retry=retry)(self._intake)
        self.submit = task(name="dtw.submit", retry=retry)(self._submit)
        self.poll = task(name="dtw.poll", retry=retry)(self._poll)
        self.deliver = task(name="dtw.deliver", retry=retry)(self._deliver)
        self.finalize = task(name="dtw.finalize", retry=retry)(self._finalize)
        period = max(1, self.svc.scan_period)
        every = f"*/{period} * * * * *"
        self.scan = app.periodic(cron=every, periodic_id="scan")(
            task(name="dtw.scan_shared", queue=SHARED_QUEUE, priority=PRIORITY_DRAIN)(
                self._scan_shared
            )
        )
        self.recover = app.periodic(cron=every, periodic_id="recover")(
            task(name="dtw.recover_stalled", queue=SHARED_QUEUE, priority=PRIORITY_DRAIN)(
                self._recover_stalled
            )
        )
        self.raise_rate = app.periodic(cron="*/5 * * * * *", periodic_id="rate")(
            task(name="dtw.raise_rate", queue=SHARED_QUEUE, priority=PRIORITY_DRAIN)(
                self._raise_rate
            )
        )

    async def _leased(self, doc_id: int) -> tuple[Context, DocumentRow]:
        """Take the document (its lease) and the context whose store writes under it."""
        store = self.svc.store
        lease = await store.take_lease(doc_id)
        # cast: PostgresStore lacks the routing calls of StateStore until they land on main.
        ctx = dataclasses.replace(self.svc.ctx, store=store.fenced(lease))
        return ctx, await store.document(doc_id)

    async def _intake(
        self,
        pipeline: str,
        path: str,
        relative_path: str,
        version: str | None = None,
        size: int | None = None,
    ) -> None:
        """Hash a file found in a shared folder, or a source's document (`version`: streamed
        from its source), and journal it; the handoff defers what comes next."""
        await intake_jobs.take(self, pipeline, path, relative_path, version=version, size=size)

    async def hand_on(self, doc: DocumentRow) -> None:
        """Defer a journaled document's next job, as the handoff did when it was journaled."""
        handoff = self._handoff()
        if doc.state == DocumentState.QUEUED:
            handoff.queued(doc, await self.svc.store.steps_of(doc.id))
        elif doc.state in (DocumentState.DUPLICATE, DocumentState.REJECTED) and not doc.finished:
            handoff.to_the_end(doc)
        await handoff.flush()
        handoff.raise_if_failed(doc.id)

    def _handoff(self) -> ClusterHandoff:
        handoff = self.svc.discovery.handoff
        assert isinstance(handoff, ClusterHandoff)
        return handoff

    async def _submit(
        self,
        doc_id: int,
        step_row: int,
        holder: str | None,
        attempts_seen: int | None = None,
        backoff: float = 1.0,
    ) -> None:
        """One submission attempt of one step, when a slot, a token and the API allow it."""
        svc = self.svc
        doc = await svc.store.document(doc_id)
        step = await svc.store.step(step_row)
        if step.state == StepState.POLLING:
            await self.defer_poll(doc, step, holder, 0.0)
            return
        if step.finished:
            await svc.slots.give_back(step_row)
            await self.defer_after_steps(doc_id, holder)
            return
        wait = await self._submit_wait(doc, step_row)
        if wait > 0:
            await self.defer_submit(
                doc, step, holder, schedule_in=wait, attempts_seen=attempts_seen, backoff=backoff
            )
            return
        try:
            ctx, doc = await self._leased(doc_id)
            logger = log.bind(pipeline=doc.pipeline, doc=doc.name, node=svc.node)
            if step.state == StepState.SUBMITTING and step.attempts != attempts_seen:
                step = await interrupted(ctx, step)  # a run of this job stopped mid-submission
            attempt = await submit_once(ctx, doc, step, log=logger, backoff=backoff)
        except LeaseLost:
            log.warning("lease_lost", doc_id=doc_id, job="submit", node=svc.node)
            return
        finally:
            await self._note_throttle()
        step = attempt.step
        if attempt.retry_in is None:
            if step.state == StepState.POLLING:
                wait = await shared_latency.first_wait(svc.store, ctx, doc, step)
                await self.defer_poll(doc, step, holder, wait)
                return
            await svc.slots.give_back(step_row)
            await self.defer_after_steps(doc_id, holder)
            return
        if step.state != StepState.SUBMITTING:
            await svc.slots.give_back(step_row)  # never reached the service: no slot meanwhile
        config = ctx.pipelines[doc.pipeline].config
        first_try = step.first_try_at or time.time()
        if attempt.retry_in > 0 and time.time() + attempt.retry_in > self._deadline(
            first_try, config.poll.timeout, doc.pipeline
        ):
            reason = f"could not submit within {config.poll.timeout:g} s (last error: {step.error})"
            await step_failed(ctx, step, reason, logger, stage="submit")
            await svc.slots.give_back(step_row)
            await self.defer_after_steps(doc_id, holder)
            return
        await self.defer_submit(
            doc,
            step,
            holder,
            schedule_in=attempt.retry_in,
            attempts_seen=step.attempts,
            backoff=min(60.0, backoff * 2) if attempt.retry_in > 0 else backoff,
        )

    async def _submit_wait(self, doc: DocumentRow, step_row: int) -> float:
        """0.0 when this step may submit now (holding a slot and a token), else how long to
        wait before asking again."""
        svc = self.svc
        if not svc.healthy():
            return RETRY_S  # no POST from a node that may have been declared dead
        if svc.ctx.limits.pauses.blocked(doc.pipeline) is not None:
            return RETRY_S
        paused = await svc.rate.paused_for()
        if paused > 0:
            return paused
        if not await svc.slots.try_take(step_row):
            return RETRY_S
        wait = await svc.rate.try_acquire()
        if wait > 0:
            await svc.slots.give_back(step_row)
            return wait
        return 0.0

    async def _poll(
        self, doc_id: int, step_row: int, holder: str | None, interval: float | None = None
    ) -> None:
        """One status read; defers itself for the next one, or what follows the step."""
        svc = self.svc
        doc = await svc.store.document(doc_id)
        step = await svc.store.step(step_row)
        if step.finished:
            await svc.slots.give_back(step_row)
            await self.defer_after_steps(doc_id, holder)
            return
        if svc.ctx.limits.pauses.blocked(doc.pipeline) is not None:
            await self.defer_poll(doc, step, holder, RETRY_S)
            return
        wait = await svc.rate.try_acquire()
        if wait > 0:
            await self.defer_poll(doc, step, holder, wait)
            return
        config = svc.ctx.pipelines[doc.pipeline].config.poll
        submitted = step.submitted_at or time.time()
        state = PollState(
            schedule=PollSchedule(interval or config.initial, config.max),
            submitted_wall=submitted,
            last_pending_at=submitted,
        )
        slot = HeldSlot(svc.slots.for_step(step_row), held=True)
        try:
            ctx, doc = await self._leased(doc_id)
            logger = log.bind(pipeline=doc.pipeline, doc=doc.name, node=svc.node)
            polled = await poll_once(ctx, doc, step, state, slot=slot, log=logger)
        except LeaseLost:
            log.warning("lease_lost", doc_id=doc_id, job="poll", node=svc.node)
            return
        finally:
            await self._note_throttle()
            await shared_latency.share(svc.store, svc.ctx.latency)
        if polled.next_in is not None:
            first_try = polled.step.first_try_at or submitted
            if time.time() > self._deadline(first_try, config.timeout, doc.pipeline):
                await step_failed(
                    ctx,
                    polled.step,
                    f"timed out after {config.timeout:g} s waiting for the result "
                    f"(last status {polled.step.status or 'unknown'})",
                    logger,
                    stage="poll",
                )
            else:
                # The schedule goes on growing in the next job (it keeps nothing in memory).
                grown = min(config.max, polled.next_in * state.schedule.growth)
                await self.defer_poll(doc, polled.step, holder, polled.next_in, interval=grown)
                return
        await svc.slots.give_back(step_row)
        await self.defer_after_steps(doc_id, holder)

    def _deadline(self, first_try: float, timeout: float, pipeline: str) -> float:
        """When a step gives up: `poll.timeout` after its first try, plus the time since then
        that this node could not reach the cluster database (no job of it could run) or found
        the API paused (a refused key, an outage, a 429: not the document's fault)."""
        paused = self.svc.outages.paused_between(first_try)
        paused += self.svc.ctx.limits.pauses.paused_between(pipeline, first_try)
        return first_try + timeout + paused

    async def _deliver(self, doc_id: int, holder: str | None) -> None:
        """Deliver a completed document's results to every sink, then its final action."""
        try:
            ctx, doc = await self._leased(doc_id)
            if doc.state != DocumentState.COMPLETED:
                if doc.state in _FINAL_ACTION:
                    await self.defer_finalize(doc, holder)
                return
            logger = log.bind(pipeline=doc.pipeline, doc=doc.name, node=self.svc.node)
            view = await ctx.store.completion(doc.id)
            doc, changed = await version_check(ctx, doc)
            if changed is not None:
                await changed_during_processing(ctx, doc, changed, logger, when="before delivery")
                return
            doc = await deliver_all(ctx, doc, view, logger)
        except LeaseLost:
            log.warning("lease_lost", doc_id=doc_id, job="deliver", node=self.svc.node)
            return
        await self.defer_finalize(doc, holder)

    async def _finalize(self, doc_id: int, holder: str | None) -> None:
        """Move, delete or keep the file, and journal the document's end."""
        svc = self.svc
        if not svc.healthy():
            doc = await svc.store.document(doc_id)
            await self.defer_finalize(doc, holder, schedule_in=RETRY_S)
            return
        try:
            ctx, doc = await self._leased(doc_id)
            if doc.finished:
                return
            logger = log.bind(pipeline=doc.pipeline, doc=doc.name, node=svc.node)
            await finalize(ctx, doc, logger)
        except LeaseLost:
            log.warning("lease_lost", doc_id=doc_id, job="finalize", node=svc.node)
            return
        doc = await svc.store.document(doc_id)
        if doc.state in _FINAL_ACTION and not doc.finished:
            # The file action failed (logged): nothing else would take it up (single-node mode
            # does at the next start). procrastinate runs the job again, with growing waits.
            raise FinalActionPending(f"the final action of {doc.name} did not complete")

    async def _note_throttle(self) -> None:
        """A 429 this node's client saw pauses and slows every node."""
        paused = self.svc.local_rate.paused_until - time.monotonic()
        if paused > 0:
            await self.svc.rate.lower(paused)

    # -- periodic --------------------------------------------------------------------------------

    async def _scan_shared(self, timestamp: int) -> None:
        await periodic.scan_shared(self, timestamp)

    async def _recover_stalled(self, timestamp: int) -> None:
        await periodic.recover_stalled(self)

    async def _raise_rate(self, timestamp: int) -> None:
        await periodic.raise_rate(self)


class FinalActionPending(RuntimeError):
    """A finalize job whose file action failed: raised so that the job is retried."""
