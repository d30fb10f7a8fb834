"""Why a node cannot join its cluster. Each is a configuration problem (exit 78) except
`ClusterUnreachableError` (exit 69: the database may come back)."""

from __future__ import annotations

__all__ = [
    "ClusterConfigError",
    "ClusterSchemaError",
    "ClusterUnreachableError",
    "ConfigMismatchError",
    "NodeNameInUseError",
]


class ClusterConfigError(Exception):
    """The node must not start with this configuration or database: exit 78 (EX_CONFIG).

    `key` is the YAML key path the problem is about (e.g. `cluster.node`), for the message; None
    when it is about the whole file.
    """

    key: str | None = "cluster.database"


class ClusterSchemaError(ClusterConfigError):
    """The cluster database is not initialised, or was initialised by a newer docutray-watch."""


class NodeNameInUseError(ClusterConfigError):
    """Another live node already has this node's name."""

    key: str | None = "cluster.node"


class ConfigMismatchError(ClusterConfigError):
    """This node's configuration differs from the one the cluster stored."""

    key: str | None = None

    def __init__(self, message: str, differing: list[str]) -> None:
        super().__init__(message)
        self.differing = differing


class ClusterUnreachableError(Exception):
    """The cluster database cannot be reached (exit 69, EX_UNAVAILABLE)."""
