"""`join_cluster` / `leave`: the start-up checks in order, the heartbeat, a clean stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from docutray_watch.cluster.errors import (
    ClusterSchemaError,
    ClusterUnreachableError,
    ConfigMismatchError,
    NodeNameInUseError,
)
from docutray_watch.cluster.membership import join_cluster
from docutray_watch.cluster.nodes import list_nodes
from docutray_watch.config import Config, parse_config
from tests.cluster.conftest import config_data

pytestmark = pytest.mark.postgres


def _config(tmp_path: Path, url: str, **cluster: object) -> Config:
    return parse_config(config_data(tmp_path, url, **cluster), environ={})


async def test_join_then_leave(initialised_url: str, tmp_path: Path) -> None:
    """Joining stores the config, registers the node alive and healthy; leaving marks it
    stopped."""
    membership = await join_cluster(_config(tmp_path, initialised_url))
    try:
        assert membership.node == "node-a"
        assert membership.config_check.outcome == "stored"
        assert membership.healthy()
        (node,) = list_nodes(initialised_url, stalled_timeout=30)
        assert node.state == "alive"
    finally:
        await membership.leave()
    (node,) = list_nodes(initialised_url, stalled_timeout=30)
    assert node.state == "stopped"


async def test_uninitialised_database_is_refused(cluster_url: str, tmp_path: Path) -> None:
    """A database `cluster init` never prepared stops the start (no waiting)."""
    with pytest.raises(ClusterSchemaError):
        await join_cluster(_config(tmp_path, cluster_url))


async def test_second_node_with_the_same_name_is_refused(
    initialised_url: str, tmp_path: Path
) -> None:
    """While one node holds the name, a second join with it fails and leaves no trace."""
    first = await join_cluster(_config(tmp_path, initialised_url))
    try:
        with pytest.raises(NodeNameInUseError):
            await join_cluster(_config(tmp_path, initialised_url))
    finally:
        await first.leave()


async def test_differing_config_is_refused_before_the_name_is_taken(
    initialised_url: str, tmp_path: Path
) -> None:
    """A node whose config differs is refused without registering."""
    first = await join_cluster(_config(tmp_path, initialised_url))
    await first.leave()
    other = config_data(tmp_path, initialised_url, node="node-b")
    other["api"]["max_in_flight"] = 2
    with pytest.raises(ConfigMismatchError):
        await join_cluster(parse_config(other, environ={}))
    assert [node.name for node in list_nodes(initialised_url, stalled_timeout=30)] == ["node-a"]


async def test_unreachable_database_is_waited_for(tmp_path: Path) -> None:
    """An unreachable database is retried (each wait reported) until `max_wait` runs out."""
    reasons: list[str] = []
    config = _config(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:9/none")
    with pytest.raises(ClusterUnreachableError):
        await join_cluster(config, on_waiting=reasons.append, max_wait=1.5)
    assert reasons
    assert all("cannot reach the cluster database" in reason for reason in reasons)
