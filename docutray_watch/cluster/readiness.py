"""When a file of a shared folder is complete: decided from what every scan saw, kept in
PostgreSQL, since the next scan (`periodic.scan_shared`, one node per period) may run on another
node.

`scan_folder(jobs, pipeline, runtime)`:

1. **Listing** (in a worker thread): every regular file below the folder that the name rules
   take (`intake.rule_for_name`, `rule_for_kind`; links are never followed), with its lstat,
   and whether its `watch.ready_marker` is there.
2. **One transaction** that first takes `pg_try_advisory_xact_lock` on the pipeline: a scan of
   the same folder still under way elsewhere makes this one skip the period. Times are
   PostgreSQL's clock (`clock_timestamp()`), not the nodes': their clocks, and the file server's
   (an mtime), need not agree.

   - A file whose source identity is recorded already (taken: being processed, or kept in place
     afterwards) is left out: one lookup, no row.
   - Each other file is compared with its row in `docutray_cluster.shared_readiness` (per
     pipeline and relative path: size, mtime_ns, inode). New or different: the row is written,
     `unchanged_since` = now (`first_seen` stays from the first scan that saw the path).
   - A file is **taken** when it has been seen unchanged for `watch.settle` seconds (so by at
     least two scans, unless `settle` is 0), its ready marker is there (when one is
     configured) and no plugin's `ignore_document` leaves it alone (asked again at each
     scan). A file that has kept changing for `watch.max_open_wait` seconds since it was
     first seen (not 0: the wait is off) is taken as it is, with the warning single-node mode
     gives (`document_open_too_long`). Taking it records its source identity and defers its
     `intake` job, in this transaction.
   - When a file waiting to settle would be complete before the next period's scan, one more
     scan job is deferred for that moment (at most one waits: its `queueing_lock`).
   - Rows of files taken, recorded already, or no longer listed (vanished, renamed) are removed,
     and so are the rows of pipelines no longer configured. A folder that is not there (an
     unmounted share) is not scanned: its rows stay until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from procrastinate import exceptions as procrastinate_errors

from docutray_watch import intake
from docutray_watch.cluster.services import PRIORITY_DRAIN, SHARED_QUEUE, Jobs
from docutray_watch.engine.scanning import walk_new_first
from docutray_watch.journal.postgres import claims
from docutray_watch.plugins import call_first

__all__ = ["READINESS_LOCK_NAMESPACE", "Listed", "list_folder", "scan_folder"]

log = structlog.get_logger("docutray_watch.cluster")

READINESS_LOCK_NAMESPACE = 0x44545752  # "DTWR": pg_try_advisory_xact_lock(this, hashtext(pipeline))
SCAN_TASK = "dtw.scan_shared"
_SCAN_AGAIN_MARGIN_S = 0.1  # a look again comes this long after the file has settled
_missing: set[str] = set()  # shared folders this process found missing (said once)


@dataclass(frozen=True)
class Listed:
    """A file of a shared folder as one listing saw it."""

    path: str
    relative: str
    size: int
    mtime_ns: int
    inode: int
    marked: bool
    """Its ready marker is there (always True when no marker is configured)."""


@dataclass(frozen=True)
class _Row:
    size: int
    mtime_ns: int
    inode: int
    first_seen: datetime
    unchanged_since: datetime


def list_folder(root: Path, config: Any) -> list[Listed] | None:
    """The files of a shared folder the pipeline takes, None when the folder is not there (an
    unmounted share). Blocking: run it in a thread."""
    if not root.is_dir():
        return None
    watch = config.folder_watch
    entries: list[tuple[str, str, os.stat_result]] = []
    names: set[str] = set()
    first, _ = walk_new_first(root, recursive=watch.recursive, kept={}, new_first=False)
    for candidate, st in first:
        names.add(candidate.relative_path)
        if intake.rule_for_kind(st.st_mode) is not None:
            continue
        if intake.rule_for_name(config, candidate.relative_path) is not None:
            continue  # (a ready marker, too)
        entries.append((str(candidate.path), candidate.relative_path, st))
    marker = watch.ready_marker
    return [
        Listed(
            path=path,
            relative=relative,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            inode=st.st_ino,
            marked=not marker or f"{relative}{marker}" in names,
        )
        for path, relative, st in entries
    ]


async def scan_folder(jobs: Jobs, pipeline: str, runtime: Any) -> int:
    """List one shared folder, update its readiness rows and take the complete files (see the
    module docstring); how many files were taken (-1: another node's scan of it is under way,
    or the folder is missing: its rows stay as they are)."""
    svc = jobs.svc
    config = runtime.config
    listed = await asyncio.to_thread(list_folder, runtime.root, config)
    if listed is None:
        if pipeline not in _missing:
            _missing.add(pipeline)
            log.warning(
                "watch_folder_missing",
                pipeline=pipeline,
                path=str(runtime.root),
                note="shared folder: documents wait until it is back; looked for at every scan",
            )
        return -1
    if pipeline in _missing:
        _missing.discard(pipeline)
        log.info("watch_folder_back", pipeline=pipeline, path=str(runtime.root))
    async with svc.store.transaction() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        locked = await _fetch_one(
            raw,
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
            (READINESS_LOCK_NAMESPACE, pipeline),
        )
        if not locked[0]:
            return -1
        now = (await _fetch_one(raw, "SELECT clock_timestamp()", ()))[0]
        recorded = await _recorded(raw, listed)
        rows = await _rows(raw, pipeline)
        ready, changed, soonest = _decide(
            pipeline,
            [item for item in listed if item.path not in recorded],
            rows,
            now,
            settle=config.folder_watch.settle,
            max_open_wait=config.folder_watch.max_open_wait,
        )
        ready = _not_ignored(svc.ctx, pipeline, ready)
        taken = 0
        for item in ready:
            fresh = await claims.record_source(
                conn,
                node=None,
                path=item.path,
                size=item.size,
                mtime_ns=item.mtime_ns,
                inode=item.inode,
                pipeline=pipeline,
                document_id=None,
                now=time.time(),
            )
            if fresh:
                taken += 1
                await _defer(
                    jobs.intake,
                    raw,
                    key=f"intake:{pipeline}:{item.path}",
                    pipeline=pipeline,
                    path=item.path,
                    relative_path=item.relative,
                )
        await _write(raw, pipeline, changed, now)
        if soonest is not None and soonest < svc.scan_period:
            # A file settles before the next period's scan: a scan then (one waits at most).
            await _defer(
                jobs.app.tasks[SCAN_TASK], raw, key=f"{SCAN_TASK}:again", after=soonest, timestamp=0
            )
        waiting = [item.relative for item in listed if item.path not in recorded]
        ready_paths = {item.relative for item in ready}
        await _forget(
            raw,
            pipeline,
            keep=[relative for relative in waiting if relative not in ready_paths],
            pipelines=list(svc.ctx.pipelines),
        )
    return taken


def _not_ignored(ctx: Any, pipeline: str, ready: list[Listed]) -> list[Listed]:
    """The complete files no plugin's `ignore_document` leaves alone. One it ignores is not
    taken and keeps its row: the next scan asks again (single-node mode asks at each rescan);
    it is said once per version of the file on each node, as single-node mode says it."""
    kept: list[Listed] = []
    for item in ready:
        reason = call_first(ctx.pm, "ignore_document", pipeline=pipeline, path=Path(item.path))
        if not reason:
            kept.append(item)
            continue
        if ctx.documents.note_ignored((pipeline, item.path), (item.mtime_ns, item.inode)):
            rule = f"plugin: {reason}"
            ctx.summary.ignored.append((pipeline, item.path, rule))
            name = Path(item.path).name
            log.info("file_ignored", pipeline=pipeline, doc=name, path=item.path, rule=rule)
    return kept


async def _defer(task: Any, raw: Any, *, key: str, after: float = 0.0, **kwargs: Any) -> None:
    """Defer a job on the shared queue in the scan's transaction, unless one with its
    `queueing_lock` waits already. In a savepoint: that refusal is an error in PostgreSQL, which
    must not abort the scan's transaction."""
    options: dict[str, Any] = {
        "queue": SHARED_QUEUE,
        "priority": PRIORITY_DRAIN,
        "queueing_lock": key,
        "connection": raw,
    }
    if after > 0:
        options["schedule_in"] = {"seconds": after}
    with contextlib.suppress(procrastinate_errors.AlreadyEnqueued):
        async with raw.transaction():
            await task.configure(**options).defer_async(**kwargs)


def _decide(
    pipeline: str,
    listed: list[Listed],
    rows: dict[str, _Row],
    now: datetime,
    *,
    settle: float,
    max_open_wait: float,
) -> tuple[list[Listed], list[tuple[Listed, datetime]], float | None]:
    """(the files to take, the files whose row is new or changed with their `first_seen`, in
    how many seconds the first file waiting to settle will have; None: none waits)."""
    ready: list[Listed] = []
    changed: list[tuple[Listed, datetime]] = []
    soonest: float | None = None
    for item in listed:
        row = rows.get(item.relative)
        if row is not None and (row.size, row.mtime_ns, row.inode) == (
            item.size,
            item.mtime_ns,
            item.inode,
        ):
            first_seen, unchanged_since = row.first_seen, row.unchanged_since
        else:
            first_seen = row.first_seen if row is not None else now
            unchanged_since = now
            changed.append((item, first_seen))
        if not item.marked:
            continue  # its marker's arrival makes it ready (settled meanwhile, as a rule)
        unchanged = (now - unchanged_since).total_seconds()
        if unchanged >= settle:
            ready.append(item)
            continue
        due = settle - unchanged + _SCAN_AGAIN_MARGIN_S
        soonest = due if soonest is None else min(soonest, due)
        changing = (now - first_seen).total_seconds()
        if max_open_wait > 0 and changing >= max_open_wait:
            log.warning(
                "document_open_too_long",
                pipeline=pipeline,
                doc=Path(item.path).name,
                path=item.path,
                open_s=round(changing, 1),
                note="changed at every scan for watch.max_open_wait; taken as it is",
            )
            ready.append(item)
    return ready, changed, soonest


async def _fetch_one(raw: Any, query: str, params: tuple[Any, ...]) -> tuple[Any, ...]:
    cursor = await raw.execute(query, params)
    row = await cursor.fetchone()
    assert row is not None
    return tuple(row)


async def _recorded(raw: Any, listed: list[Listed]) -> set[str]:
    """The paths of listed files whose very source identity was recorded (taken before)."""
    if not listed:
        return set()
    cursor = await raw.execute(
        "SELECT f.path FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[])"
        " AS f(path, size, mtime_ns, inode)"
        " WHERE EXISTS (SELECT 1 FROM source_identity s WHERE s.node = '' AND s.path = f.path"
        " AND s.size = f.size AND s.mtime_ns = f.mtime_ns AND s.inode = f.inode)",
        (
            [item.path for item in listed],
            [item.size for item in listed],
            [item.mtime_ns for item in listed],
            [item.inode for item in listed],
        ),
    )
    return {str(row[0]) for row in await cursor.fetchall()}


async def _rows(raw: Any, pipeline: str) -> dict[str, _Row]:
    cursor = await raw.execute(
        "SELECT relative_path, size, mtime_ns, inode, first_seen, unchanged_since"
        " FROM docutray_cluster.shared_readiness WHERE pipeline = %s",
        (pipeline,),
    )
    return {
        str(relative): _Row(int(size), int(mtime_ns), int(inode), first, unchanged)
        for relative, size, mtime_ns, inode, first, unchanged in await cursor.fetchall()
    }


async def _write(
    raw: Any, pipeline: str, changed: list[tuple[Listed, datetime]], now: datetime
) -> None:
    """Write the rows of files new or changed since the last scan (unchanged since `now`)."""
    if not changed:
        return
    await raw.execute(
        "INSERT INTO docutray_cluster.shared_readiness AS r (pipeline, relative_path, size,"
        " mtime_ns, inode, first_seen, unchanged_since)"
        " SELECT %s, f.* , %s FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[],"
        " %s::timestamptz[]) AS f"
        " ON CONFLICT (pipeline, relative_path) DO UPDATE SET size = EXCLUDED.size,"
        " mtime_ns = EXCLUDED.mtime_ns, inode = EXCLUDED.inode,"
        " unchanged_since = EXCLUDED.unchanged_since",
        (
            pipeline,
            now,
            [item.relative for item, _ in changed],
            [item.size for item, _ in changed],
            [item.mtime_ns for item, _ in changed],
            [item.inode for item, _ in changed],
            [first for _, first in changed],
        ),
    )


async def _forget(raw: Any, pipeline: str, *, keep: list[str], pipelines: list[str]) -> None:
    """Remove the rows of this pipeline's files not waiting any more (taken, recorded before,
    vanished) and of pipelines no longer configured."""
    await raw.execute(
        "DELETE FROM docutray_cluster.shared_readiness"
        " WHERE (pipeline = %s AND NOT relative_path = ANY(%s::text[]))"
        " OR NOT pipeline = ANY(%s::text[])",
        (pipeline, keep, pipelines),
    )
