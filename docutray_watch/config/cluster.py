"""The `cluster:` block: multi-node mode on one PostgreSQL database."""

from __future__ import annotations

import re
import socket

from pydantic import Field, SecretStr, field_validator, model_validator

from docutray_watch.config._base import _NAME_PATTERN, _FieldError, _Model

MIN_NODE_CONNECTIONS = 5
"""The least `node_max_connections`: one connection for each of the journal's, the job queue's
and the shared limits' pools, the job queue's LISTEN and the heartbeat (`cluster.connections`)."""


class ClusterConfig(_Model):
    """Multi-node mode: several daemons share the work through one PostgreSQL database."""

    database: SecretStr = Field(
        description="The cluster's PostgreSQL, postgresql+psycopg://user:${PGPASSWORD}@host/db; "
        "every node uses the same database (`docutray-watch cluster init` prepares it). Never "
        "logged with its password.",
    )
    node: str | None = Field(
        None,
        pattern=_NAME_PATTERN,
        description="This node's name, unique among live nodes (its local queue is "
        "node.<name>). Default: the host name; required when a pipeline watches a folder that "
        "is not `shared: true`, as that folder's files are tied to this name.",
    )
    node_max_in_flight: int | None = Field(
        None,
        ge=1,
        description="Executions this node keeps in flight at most (default: api.max_in_flight, "
        "which caps the whole cluster).",
    )
    node_max_connections: int | None = Field(
        None,
        description="PostgreSQL connections this node opens at most, all together (default: "
        "sized from api.max_in_flight, 12 for its default 32; at least "
        f"{MIN_NODE_CONNECTIONS}). Read at start only.",
    )
    heartbeat_interval: float = Field(
        10.0, gt=0, le=3600, description="Seconds between two heartbeats of a node."
    )
    stalled_timeout: float = Field(
        30.0,
        gt=0,
        description="A node silent this long is dead: its name may be taken over and its "
        "running jobs retried. More than twice heartbeat_interval.",
    )

    @field_validator("database")
    @classmethod
    def _postgresql_url(cls, value: SecretStr) -> SecretStr:
        if not re.match(r"^postgresql(\+psycopg)?://", value.get_secret_value()):
            raise ValueError("must be a postgresql+psycopg://user@host/database URL")
        return value

    @field_validator("node_max_connections")
    @classmethod
    def _one_connection_per_pool(cls, value: int | None) -> int | None:
        if value is not None and value < MIN_NODE_CONNECTIONS:
            raise ValueError(
                f"must be at least {MIN_NODE_CONNECTIONS}: a node needs one connection for each "
                "of its journal, its job queue, the shared limits, the job queue's listener and "
                "its heartbeat"
            )
        return value

    @model_validator(mode="after")
    def _timeout_spans_heartbeats(self) -> ClusterConfig:
        if not self.stalled_timeout > 2 * self.heartbeat_interval:
            raise _FieldError(
                ("stalled_timeout",),
                f"must be more than twice heartbeat_interval ({self.heartbeat_interval:g} s), "
                "or one late heartbeat declares a live node dead",
            )
        return self

    @property
    def node_name(self) -> str:
        """The node's name (set once the whole config is validated)."""
        assert self.node is not None, "Config fills in the node name"
        return self.node


def _host_node_name() -> str:
    # Host names are letters, digits, dots and dashes; keep what a queue name allows.
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64].lstrip("-_.")
    return name or "node"
