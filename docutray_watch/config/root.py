"""The whole file: `Config`, whose checks span blocks (unique pipeline names, `state_dir` outside
the inboxes, the cluster against the pipelines), and the pipelines held back by a broken plugin."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, PrivateAttr, model_validator

from docutray_watch.config._base import _absolute, _FieldError, _Model
from docutray_watch.config.api import ApiConfig
from docutray_watch.config.cluster import ClusterConfig, _host_node_name
from docutray_watch.config.pipeline import PipelineConfig
from docutray_watch.config.service import (
    DEFAULT_SHUTDOWN_GRACE,
    SHUTDOWN_GRACE_ENV,
    JournalConfig,
    LogConfig,
    MetricsConfig,
    WebConfig,
    _default_grace,
    _default_state_dir,
)
from docutray_watch.sinks.base import ConfigPath


class Config(_Model):
    """The whole configuration file."""

    api: ApiConfig = Field(default_factory=ApiConfig, description="The DocuTray API.")
    state_dir: ConfigPath = Field(
        default_factory=_default_state_dir,
        description="Where the journal lives ($STATE_DIRECTORY under systemd); never inside an "
        "inbox.",
    )
    journal: JournalConfig = Field(
        default_factory=JournalConfig, description="The journal's retention."
    )
    metrics: MetricsConfig | None = Field(None, description="Optional metrics/health listener.")
    web: WebConfig | None = Field(None, description="Optional status page (its own listener).")
    cluster: ClusterConfig | None = Field(
        None, description="Optional multi-node mode (docs/cluster-setup.md); absent: one node."
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")
    shutdown_grace: float = Field(
        default_factory=_default_grace,
        ge=0,
        description="On SIGTERM, let in-flight work finish this long before persisting the rest "
        f"(default ${SHUTDOWN_GRACE_ENV} or {DEFAULT_SHUTDOWN_GRACE:g} s).",
    )
    pipelines: list[PipelineConfig] = Field(min_length=1, description="The pipelines.")
    # Pipelines left out because a sink type they use comes from a plugin that failed to load
    # (set by `parse_config`; not a key of the file).
    _held_back: list[HeldBackPipeline] = PrivateAttr(default_factory=list)

    @property
    def held_back(self) -> list[HeldBackPipeline]:
        """Pipelines left out of `pipelines`: each needs a sink type whose plugin is broken."""
        return self._held_back

    @model_validator(mode="after")
    def _unique_names_and_state_outside(self) -> Config:
        first: dict[str, int] = {}
        for index, pipeline in enumerate(self.pipelines):
            if pipeline.name in first:
                raise _FieldError(
                    ("pipelines", index, "name"),
                    f"pipeline names must be unique: {pipeline.name!r} is also the name of "
                    f"pipelines[{first[pipeline.name]}]",
                )
            first[pipeline.name] = index
        state = _absolute(self.state_dir)
        for pipeline in self.pipelines:
            watch = pipeline.folder_watch
            if watch is None:
                continue
            inbox = _absolute(watch.path)
            if state == inbox or inbox in state.parents:
                raise _FieldError(
                    ("state_dir",),
                    f"state_dir ({state}) must not be inside the watched folder of pipeline "
                    f"{pipeline.name!r}",
                )
        return self

    @model_validator(mode="after")
    def _cluster_fits(self) -> Config:
        cluster = self.cluster
        if cluster is None:
            return self
        if cluster.node_max_in_flight is not None and (
            cluster.node_max_in_flight > self.api.max_in_flight
        ):
            raise _FieldError(
                ("cluster", "node_max_in_flight"),
                f"must not exceed api.max_in_flight ({self.api.max_in_flight}), the cluster's cap",
            )
        for index, pipeline in enumerate(self.pipelines):
            if pipeline.source is not None and getattr(pipeline.source, "events", None):
                # Events are per-node hints; a cluster lists in its periodic job instead.
                raise _FieldError(
                    ("pipelines", index, "source", "events"),
                    "not supported in multi-node mode (cluster:): the periodic listing (one node "
                    "per rescan_interval) finds new objects; remove events or lower "
                    "rescan_interval",
                )
        if cluster.node is None:
            # A source that is not a folder (a bucket) is shared by nature.
            local = [p.name for p in self.pipelines if p.watch is not None and not p.watch.shared]
            if local:
                raise _FieldError(
                    ("cluster", "node"),
                    f"required: pipeline {local[0]!r} watches a local folder (not shared: true), "
                    "whose files belong to a named node",
                )
            cluster.node = _host_node_name()
        return self

    def pipeline(self, name: str) -> PipelineConfig:
        """The pipeline called `name`."""
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        raise KeyError(name)

    @property
    def journal_path(self) -> Path:
        """The SQLite journal inside `state_dir`."""
        return Path(self.state_dir) / "journal.sqlite3"


@dataclass(frozen=True)
class HeldBackPipeline:
    """A pipeline that cannot run: `path` (e.g. `pipelines[1].sinks[0].type`) names a sink type
    whose plugin failed to load, and `reason` says which plugin and why."""

    name: str
    path: str
    reason: str

    def line(self) -> str:
        """One line for an operator."""
        return f"pipeline {self.name!r} is left out: {self.path}: {self.reason}"
