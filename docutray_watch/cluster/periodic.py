"""The cluster's periodic tasks (procrastinate lets one node through per period): the scan of
shared folders, stalled-job recovery, raising the shared request rate."""

from __future__ import annotations

import structlog
from procrastinate import exceptions as procrastinate_errors

from docutray_watch.cluster import readiness
from docutray_watch.cluster.services import OLD_JOBS_HOURS, Jobs

__all__ = ["raise_rate", "recover_stalled", "scan_shared"]

log = structlog.get_logger("docutray_watch.cluster")

RATE_QUIET_S = 5.0  # a period without a 429 after which the rate is raised


async def scan_shared(jobs: Jobs) -> None:
    """List the shared folders; journal each new complete file's source identity and defer
    its intake, in one transaction (readiness from what every scan saw: `readiness.py`)."""
    svc = jobs.svc
    for name, runtime in svc.ctx.pipelines.items():
        config = runtime.config
        if runtime.retired or config.folder_watch is None or not config.folder_watch.shared:
            continue  # only shared folders (a bucket source is not listed by cluster mode yet)
        await readiness.scan_folder(jobs, name, runtime)


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
        except procrastinate_errors.ConnectorException:
            continue  # another node retried it first (it is no longer `doing`)
        log.warning("job_stalled_retried", job_id=job.id, task=job.task_name, node=svc.node)
    await svc.slots.tidy()
    await manager.delete_old_jobs(nb_hours=OLD_JOBS_HOURS, include_failed=True)


async def raise_rate(jobs: Jobs) -> None:
    """A little faster when no 429 came for a while (see `ClusterRate.raise_rate`)."""
    await jobs.svc.rate.raise_rate(quiet_seconds=RATE_QUIET_S)
