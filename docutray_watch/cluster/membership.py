"""A node joining its cluster when the daemon starts, and leaving it when it stops.

`join_cluster(config)` runs the start-up checks in their order — the schema (`check_schema`),
the shared configuration (`check_config`), the node's name (`register_node`) — and starts the
heartbeat. A configuration problem raises at once (a `ClusterConfigError`: exit 78); an
unreachable database is waited out with capped, jittered backoff (`on_waiting` is told why, for
/readyz and the log), since PostgreSQL coming back later must not need an operator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_exponential_jitter,
)

from docutray_watch.cluster.errors import ClusterUnreachableError
from docutray_watch.cluster.fingerprint import ConfigCheck, check_config
from docutray_watch.cluster.nodes import Heartbeat, Registration, deregister_node, register_node
from docutray_watch.cluster.outages import Outages
from docutray_watch.cluster.schema import check_schema
from docutray_watch.config import ClusterConfig, Config

__all__ = ["ClusterMembership", "join_cluster"]

log = structlog.get_logger(__name__)

_MAX_BACKOFF_S = 30.0


@dataclass
class ClusterMembership:
    """This process's place in the cluster, from `join_cluster` until `leave()`."""

    cluster: ClusterConfig
    registration: Registration
    heartbeat: Heartbeat
    config_check: ConfigCheck
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def node(self) -> str:
        """This node's name."""
        return self.registration.name

    def healthy(self) -> bool:
        """Whether this node may start a POST, a move or a delete (see `Heartbeat.healthy`)."""
        return self.heartbeat.healthy()

    async def leave(self) -> None:
        """Stop the heartbeat and mark the node stopped (a clean stop frees its name at once)."""
        self.heartbeat.stop()
        if self._task is not None:
            await self._task
        if self.heartbeat.lost.is_set():
            return  # the name belongs to another instance now: not ours to mark stopped
        try:
            await asyncio.to_thread(deregister_node, self.registration)
        except ClusterUnreachableError as exc:
            # Not fatal: the name frees itself once the stalled timeout has passed.
            log.warning("cluster_deregister_failed", node=self.node, error=str(exc))


async def join_cluster(
    config: Config,
    *,
    on_waiting: Callable[[str], None] | None = None,
    max_wait: float | None = None,
    outages: Outages | None = None,
) -> ClusterMembership:
    """Check the schema and the configuration, take the node's name, start the heartbeat.

    Raises a `ClusterConfigError` (exit 78) for an uninitialised or newer database, a config
    that differs from the cluster's, or a live node of the same name. Waits while the database
    is unreachable (forever, or `max_wait` seconds before `ClusterUnreachableError`).
    `outages` is told by the heartbeat when the database goes away and comes back.
    """
    cluster = config.cluster
    if cluster is None:
        raise ValueError("join_cluster needs a config with a cluster block")
    url = cluster.database.get_secret_value()

    def waiting(state: RetryCallState) -> None:
        reason = str(state.outcome.exception()) if state.outcome else "unreachable"
        log.warning("cluster_database_unreachable", node=cluster.node, error=reason)
        if on_waiting is not None:
            on_waiting(reason)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(ClusterUnreachableError),
        wait=wait_exponential_jitter(initial=1.0, max=_MAX_BACKOFF_S),
        stop=stop_never if max_wait is None else stop_after_delay(max_wait),
        before_sleep=waiting,
        reraise=True,
    ):
        with attempt:
            await asyncio.to_thread(check_schema, url)
            checked = await asyncio.to_thread(check_config, url, config, node=cluster.node_name)
            registration = await asyncio.to_thread(
                register_node, url, cluster.node_name, stalled_timeout=cluster.stalled_timeout
            )
    heartbeat = Heartbeat(
        registration,
        interval=cluster.heartbeat_interval,
        stalled_timeout=cluster.stalled_timeout,
        outages=outages,
    )
    membership = ClusterMembership(cluster, registration, heartbeat, checked)
    membership._task = asyncio.create_task(heartbeat.run(), name="cluster-heartbeat")
    log.info(
        "cluster_joined",
        node=registration.name,
        config=checked.outcome,
        fingerprint=checked.fingerprint[:12],
        took_over=registration.took_over.state if registration.took_over else None,
    )
    return membership
