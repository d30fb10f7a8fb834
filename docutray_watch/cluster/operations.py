"""`status`, `retry` and `prune` when the config has a `cluster:` block: they act on the cluster's
PostgreSQL journal (every node's documents), not on a local SQLite file.

- `cluster_status_report`: the single-node `status --json` document built from the cluster's
  journal, plus a `cluster` part: the nodes (state, heartbeat age, unfinished documents each
  holds) and the cluster's request rate row. `cluster_status` is the same in a running loop:
  a cluster node's status page serves it as `GET /api/status`.
- `retry_in_cluster`: requeues like the single-node `retry`; the requeue bumps the `requeued`
  counter in the cluster journal's `meta` in the same transaction, which is how nodes notice.
  A file on another node's own folder cannot be checked from here: it is requeued, and the
  node holding it finds out (the caller is told).
- `prune_cluster`: forgets old documents like the single-node `prune`; a file kept in place on
  another node's own folder cannot be checked from here, so its row is always kept.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from docutray_watch.cluster._db import connect, safe_url
from docutray_watch.cluster.errors import ClusterUnreachableError
from docutray_watch.cluster.nodes import NodeInfo, list_nodes, list_nodes_on
from docutray_watch.config import Config
from docutray_watch.journal import REQUEST_RATE_KEY, InvalidTransition
from docutray_watch.journal.postgres import PostgresStore
from docutray_watch.journal.postgres.maintenance import requeue
from docutray_watch.journal.postgres.tables import documents
from docutray_watch.journal.postgres.tx import Tx
from docutray_watch.journal.sqlite.counts import utc_day
from docutray_watch.retention import SECONDS_PER_DAY, PruneResult
from docutray_watch.routing import identification_of, release_problem
from docutray_watch.status import StatusFacts, iso_utc, status_document

# Short stat calls of a one-shot command (no event loop to keep responsive).
_exists = os.path.exists
_lexists = os.path.lexists

__all__ = [
    "ClusterRetry",
    "cluster_status",
    "cluster_status_report",
    "open_cluster_store",
    "prune_cluster",
    "retry_in_cluster",
]


def _cluster(config: Config) -> tuple[str, str]:
    assert config.cluster is not None, "the cluster's commands need a cluster block"
    return config.cluster.database.get_secret_value(), config.cluster.node_name


async def open_cluster_store(config: Config) -> PostgresStore:
    """The cluster's journal, open (never migrated here: `SchemaNotReady` until `cluster init`;
    `ClusterUnreachableError` when the database cannot be reached)."""
    url, node = _cluster(config)
    store = PostgresStore(url, node=node, migrate=False)
    try:
        await store.open()
    except (sa.exc.OperationalError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ClusterUnreachableError(
            f"cannot reach the cluster database {safe_url(url)}: {reason}"
        ) from None
    return store


# -- status ----------------------------------------------------------------------------------


def cluster_status_report(config: Config, *, failures: int = 10) -> dict[str, Any]:
    """The `status --json` document of the whole cluster (see the module's docstring)."""
    return asyncio.run(cluster_status(config, failures=failures))


async def cluster_status(
    config: Config, *, failures: int = 10, store: PostgresStore | None = None
) -> dict[str, Any]:
    """`cluster_status_report`, in a running loop: what a cluster node's status page serves as
    `GET /api/status` (one code path for both). `store`: an open cluster journal to read (a
    node's own, whose connections it then reads through: no other); else one is opened and
    closed."""
    assert config.cluster is not None
    url, node = _cluster(config)
    stalled = config.cluster.stalled_timeout
    if store is None:
        nodes = await asyncio.to_thread(list_nodes, url, stalled_timeout=stalled)
        rate = await asyncio.to_thread(_cluster_rate, url)
    else:
        # A node's own page: within its connection budget (`cluster.connections`).
        async with store.transaction() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            nodes = await list_nodes_on(raw, stalled_timeout=stalled)
            rate = _rate_json(await (await raw.execute(_RATE_ROW)).fetchone())
    facts, held = await _status_facts(config, failures, store)
    now = time.time()
    report = status_document(
        config, facts, journal=f"{safe_url(url)} (cluster journal, schema docutray)", now=now
    )
    report["cluster"] = {
        "database": safe_url(url),
        "this_node": node,
        "nodes": [_node_json(info, held.get(info.name, 0)) for info in nodes],
        # Unfinished documents of shared folders: any node may work on them.
        "shared_unfinished": held.get(None, 0),
        "rate": rate,
    }
    return report


async def _status_facts(
    config: Config, limit: int, given: PostgresStore | None
) -> tuple[StatusFacts, dict[str | None, int]]:
    store = given or await open_cluster_store(config)
    try:
        facts = StatusFacts(
            counts=await store.outcome_counts(),
            today=await store.today_counts(utc_day(time.time())),
            oldest=await store.oldest_pending(),
            recent=await store.recent_failures(limit) if limit > 0 else [],
            superseded=await store.superseded_results(),
            by_type=await store.counts_by_type(),
            type_outcomes=await store.outcomes_by_type(),
            latencies=await store.load_latencies(),
            rate=await store.get_meta(REQUEST_RATE_KEY),
            pause=await store.api_pause(),
        )
        async with store.transaction() as conn:
            found = await conn.execute(
                sa.select(documents.c.node, sa.func.count())
                .where(documents.c.finished_at.is_(None))
                .group_by(documents.c.node)
            )
            held: dict[str | None, int] = {node: int(n) for node, n in found}
    finally:
        if given is None:
            await store.close()
    return facts, held


_RATE_ROW = (
    "SELECT rate, pause_until, extract(epoch FROM pause_until)::float8,"
    " extract(epoch FROM clock_timestamp())::float8 FROM docutray_cluster.rate"
)


def _cluster_rate(url: str) -> dict[str, Any] | None:
    """The cluster's shared request rate row (`docutray_cluster.rate`), if the schema has it."""
    with connect(url) as conn:
        row = conn.execute(_RATE_ROW).fetchone()
    return _rate_json(row)


def _rate_json(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    rate, pause_until, pause_epoch, now = row
    paused = pause_epoch is not None and pause_epoch > now
    return {
        "requests_per_second": rate,
        "paused_until": iso_utc(pause_epoch) if paused and pause_until is not None else None,
    }


def _node_json(info: NodeInfo, unfinished: int) -> dict[str, Any]:
    return {
        "name": info.name,
        "state": info.state,
        "heartbeat_age_s": round(info.heartbeat_age, 1),
        "last_heartbeat": iso_utc(info.last_heartbeat.timestamp()),
        "host": info.host,
        "pid": info.pid,
        "version": info.version,
        "unfinished_documents": unfinished,
    }


# -- retry -----------------------------------------------------------------------------------


@dataclass
class ClusterRetry:
    """What `retry` did on the cluster."""

    requeued: int = 0
    problems: list[str] = field(default_factory=list)
    elsewhere: int = 0
    """Requeued documents whose file is on another node's own folder (not checked here)."""


@dataclass(frozen=True)
class _Candidate:
    id: int
    pipeline: str
    path: str
    archived_to: str | None
    state: str
    node: str | None
    identification: dict[str, Any] | None


_FINISHED_STATES = ("failed", "rejected", "archived", "unrouted")


def retry_in_cluster(
    config: Config, *, paths: Iterable[str], failed: bool, force: bool
) -> ClusterRetry:
    """`retry` on the cluster's journal: documents by path, and every failed one with `failed`."""
    wanted = [(raw, os.path.abspath(raw)) for raw in paths]
    return asyncio.run(_retry(config, wanted, failed=failed, force=force))


async def _retry(
    config: Config, paths: Sequence[tuple[str, str]], *, failed: bool, force: bool
) -> ClusterRetry:
    _url, this_node = _cluster(config)
    result = ClusterRetry()
    store = await open_cluster_store(config)
    try:
        chosen: dict[int, _Candidate] = {}
        if failed:
            for candidate in await _candidates(store, states=("failed", "rejected", "unrouted")):
                # An unrouted document still without a route stays (as in single-node mode).
                if _unrouted_problem(config, candidate) is None:
                    chosen[candidate.id] = candidate
        for raw, wanted in paths:
            matches = await _candidates(store, states=_FINISHED_STATES, path=wanted)
            if not matches:
                result.problems.append(f"{raw}: no finished document with this path in the cluster")
                continue
            latest = max(matches, key=lambda c: c.id)
            problem = _unrouted_problem(config, latest)
            if problem is not None:
                result.problems.append(f"{raw}: {problem}")
                continue
            chosen[latest.id] = latest
        for candidate in chosen.values():
            await _requeue_one(store, candidate, this_node, force=force, result=result)
    finally:
        await store.close()
    return result


async def _candidates(
    store: PostgresStore, *, states: Sequence[str], path: str | None = None
) -> list[_Candidate]:
    query = sa.select(
        documents.c.id,
        documents.c.pipeline,
        documents.c.path,
        documents.c.archived_to,
        documents.c.state,
        documents.c.node,
        documents.c.identification,
    ).where(documents.c.state.in_(list(states)))
    if path is not None:
        query = query.where(sa.or_(documents.c.path == path, documents.c.archived_to == path))
    async with store.transaction() as conn:
        found = await conn.execute(query.order_by(documents.c.id))
        return [
            _Candidate(r.id, r.pipeline, r.path, r.archived_to, r.state, r.node, r.identification)
            for r in found
        ]


def _unrouted_problem(config: Config, doc: _Candidate) -> str | None:
    """Why an `unrouted` document cannot be released yet (None: it can, or it is not one)."""
    if doc.state != "unrouted":
        return None
    try:
        pipeline = config.pipeline(doc.pipeline)
    except KeyError:
        return f"its pipeline {doc.pipeline!r} is not in the configuration"
    return release_problem(pipeline, identification_of(doc.identification))


async def _requeue_one(
    store: PostgresStore, doc: _Candidate, this_node: str, *, force: bool, result: ClusterRetry
) -> None:
    # A shared folder is mounted at the same path everywhere: checkable from here, like a file
    # of this node's own folder. Another node's own files are not.
    checkable = doc.node is None or doc.node == this_node
    if checkable:
        moved = doc.archived_to is not None and _exists(doc.archived_to)
        location = doc.archived_to if moved and doc.archived_to else doc.path
        if not _exists(location):
            result.problems.append(f"{doc.path}: the file is gone (was it deleted?)")
            return
    else:
        location = doc.archived_to or doc.path
    try:
        async with store.transaction() as conn:
            # The requeue (with its `requeued` counter in meta) and the new location commit
            # together: a node that sees the counter move sees the document where it is now.
            await requeue(Tx(conn, time.time(), None, store.node), doc.id, force=force)
            if location != doc.path:
                await conn.execute(
                    sa.update(documents).where(documents.c.id == doc.id).values(path=location)
                )
    except InvalidTransition as exc:
        result.problems.append(f"{doc.path}: {exc}")
        return
    result.requeued += 1
    result.elsewhere += not checkable


# -- prune -----------------------------------------------------------------------------------


def prune_cluster(
    config: Config, *, older_than_days: float, dry_run: bool = False, batch: int = 500
) -> PruneResult:
    """Forget the cluster's documents that finished more than `older_than_days` ago."""
    return asyncio.run(
        _prune(config, time.time() - older_than_days * SECONDS_PER_DAY, dry_run, batch)
    )


async def _prune(config: Config, finished_before: float, dry_run: bool, batch: int) -> PruneResult:
    _url, this_node = _cluster(config)
    result = PruneResult(finished_before=finished_before)
    store = await open_cluster_store(config)
    try:
        after = 0
        while True:
            candidates = await store.prune_candidates(finished_before, after_id=after, limit=batch)
            if not candidates:
                return result
            after = candidates[-1].id
            kept = [c.id for c in candidates if c.kept_latest]
            node_of = await _nodes_of(store, kept)
            ids: list[int] = []
            for candidate in candidates:
                if candidate.kept_latest:
                    node = node_of.get(candidate.id)
                    local = node is None or node == this_node
                    # Another node's kept file cannot be seen from here: keep its row, or that
                    # node's next scan would take the file again and pay for it twice.
                    if not local or _lexists(candidate.path):
                        result.kept_in_place += 1
                        continue
                    result.forgotten_kept.append((candidate.pipeline, candidate.path, candidate.id))
                ids.append(candidate.id)
            if dry_run:
                result.forgotten += len(ids)
            else:
                result.forgotten += await store.forget_documents(ids, finished_before)
    finally:
        await store.close()


async def _nodes_of(store: PostgresStore, ids: Sequence[int]) -> dict[int, str | None]:
    if not ids:
        return {}
    async with store.transaction() as conn:
        found = await conn.execute(
            sa.select(documents.c.id, documents.c.node).where(documents.c.id.in_(list(ids)))
        )
        return {int(r.id): r.node for r in found}
