"""The cluster's periodic tasks (procrastinate lets one node through per period): the scan of
shared folders and the listing of sources (S3 buckets…), stalled-job recovery, raising the
shared request rate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import structlog
from procrastinate import exceptions as procrastinate_errors
from procrastinate import jobs as procrastinate_jobs

from docutray_watch.cluster import readiness
from docutray_watch.cluster.intake_jobs import defer_source_intakes
from docutray_watch.cluster.services import OLD_JOBS_HOURS, Jobs

__all__ = ["listing_due", "raise_rate", "recover_stalled", "scan_shared", "scan_sources"]

log = structlog.get_logger("docutray_watch.cluster")

RATE_QUIET_S = 5.0  # a period without a 429 after which the rate is raised


async def scan_shared(jobs: Jobs, timestamp: int = 0) -> None:
    """List the shared folders; journal each new complete file's source identity and defer
    its intake, in one transaction (readiness from what every scan saw: `readiness.py`).
    Then list the sources that are due (`scan_sources`)."""
    svc = jobs.svc
    for name, runtime in svc.ctx.pipelines.items():
        config = runtime.config
        if runtime.retired or config.folder_watch is None or not config.folder_watch.shared:
            continue  # only shared folders here (sources: `scan_sources`)
        await readiness.scan_folder(jobs, name, runtime)
    await scan_sources(jobs, timestamp)


def listing_due(timestamp: float, period: float, interval: float) -> bool:
    """True for the one period of each `rescan_interval` in which a source is listed: the
    period whose tick crosses a multiple of the interval (every period when it is shorter)."""
    return math.floor(timestamp / interval) != math.floor((timestamp - period) / interval)


async def scan_sources(jobs: Jobs, timestamp: int) -> None:
    """List each source that is due in this period (one node per period: this one), record
    the identities of the new documents and defer their intake, in one transaction."""
    svc = jobs.svc
    if svc.sources is None:
        return
    for name, runtime in list(svc.ctx.pipelines.items()):
        source = runtime.source
        if runtime.retired or source is None:
            continue
        interval = source.config.rescan_interval
        if not listing_due(timestamp, max(1, svc.scan_period), interval):
            continue
        found = await svc.sources.listing(name)
        try:
            fresh = await defer_source_intakes(jobs, name, found) if found else 0
        except BaseException:
            for doc in found:
                source.forget(doc.identity)  # not recorded: offered again at the next listing
            raise
        log.info("source_listed", pipeline=name, node=svc.node, period=timestamp, new=fresh)


async def recover_stalled(jobs: Jobs) -> None:
    """Retry the jobs of workers silent for longer than the stalled timeout plus the API
    write timeout (a POST may still be on its way), and tidy finished jobs and slots."""
    svc = jobs.svc
    if svc.connected_for() < svc.stalled_timeout:
        return  # after an outage every node looks stale at once: wait to know better
    manager = jobs.app.job_manager
    stalled = await manager.get_stalled_jobs(
        seconds_since_heartbeat=svc.stalled_timeout + svc.write_timeout
    )
    for job in stalled:
        try:
            await manager.retry_job(job)
        except procrastinate_errors.UniqueViolation:
            await _end_handed_on(manager, job, svc.node)
            continue
        except procrastinate_errors.ConnectorException:
            continue  # another node retried it first (it is no longer `doing`)
        log.warning("job_stalled_retried", job_id=job.id, task=job.task_name, node=svc.node)
    # A job whose worker lives on but lost it: its status write failed (its connection cut as it
    # finished), so it stays `doing`, holding its document's lock, while its successor waits.
    late = svc.stalled_timeout + svc.write_timeout
    for row in await manager.connector.execute_query_all_async(_HANDED_ON, seconds=late):
        await _end_handed_on(manager, _JobRef(int(row["id"]), str(row["task_name"])), svc.node)
    await svc.slots.tidy()
    await manager.delete_old_jobs(nb_hours=OLD_JOBS_HOURS, include_failed=True)


_HANDED_ON = """
SELECT j.id, j.task_name FROM procrastinate_jobs j
 WHERE j.status = 'doing' AND j.queueing_lock IS NOT NULL
   AND EXISTS (SELECT 1 FROM procrastinate_jobs t
                WHERE t.queueing_lock = j.queueing_lock AND t.status = 'todo' AND t.id > j.id)
   AND (SELECT max(e.at) FROM procrastinate_events e
         WHERE e.job_id = j.id AND e.type = 'started')
       < now() - make_interval(secs => %(seconds)s)
"""


@dataclass(frozen=True)
class _JobRef:
    id: int
    task_name: str


async def _end_handed_on(manager: Any, job: Any, node: str) -> None:
    """A stalled job whose successor (the same queueing lock) already waits: deferring it was
    the job's last act, its worker died before the job was marked finished. Back in `todo` it
    would break the queueing lock's uniqueness, and left `doing` it holds its document's lock
    (`doc:<id>`) for ever, so no job of that document would run again: it is ended instead (its
    successor re-reads the journal, as every job does)."""
    try:
        await manager.finish_job_by_id_async(
            job.id, status=procrastinate_jobs.Status.SUCCEEDED, delete_job=True
        )
    except procrastinate_errors.ConnectorException:
        return  # another node ended it first
    log.warning("job_stalled_handed_on", job_id=job.id, task=job.task_name, node=node)


async def raise_rate(jobs: Jobs) -> None:
    """A little faster when no 429 came for a while (see `ClusterRate.raise_rate`)."""
    await jobs.svc.rate.raise_rate(quiet_seconds=RATE_QUIET_S)
