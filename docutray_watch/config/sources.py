"""Where a pipeline's documents come from: the `watch:` folder block and the `folder` source."""

from __future__ import annotations

from pydantic import Field

from docutray_watch.config._base import _Model
from docutray_watch.sinks.base import ConfigPath
from docutray_watch.sources.base import SourceConfig


class WatchConfig(_Model):
    """The folder a pipeline takes documents from, and when a file counts as complete."""

    path: ConfigPath = Field(description="The inbox folder.")
    recursive: bool = Field(False, description="Also take files from sub-folders.")
    polling: bool | None = Field(
        None,
        description=(
            "Poll the folder instead of using inotify (for NFS/SMB). Default: automatic — "
            "polling on network file systems, inotify elsewhere."
        ),
    )
    settle: float = Field(
        1.0,
        ge=0,
        description="A file is complete once its size and mtime stay the same this many seconds.",
    )
    rescan_interval: float = Field(
        60.0, gt=0, description="Full rescan period in seconds (inotify can drop events)."
    )
    max_open_wait: float = Field(
        900.0,
        ge=0,
        description=(
            "inotify only: a file written to and not closed yet is not complete, whatever its "
            "age, for up to this many seconds; then it is taken with a warning."
        ),
    )
    ready_marker: str | None = Field(
        None,
        pattern=r"^\.[A-Za-z0-9_.-]+$",
        description=(
            "Take x.pdf only once x.pdf<marker> exists (e.g. '.done'); the marker is removed "
            "with the document."
        ),
    )
    shared: bool = Field(
        False,
        description="Cluster mode: the folder is one share mounted at the same path on every "
        "node, so any node may scan it and take its files; false: it is this node's own.",
    )


class FolderSourceConfig(WatchConfig, SourceConfig):
    """Options of the `folder` source (`source: {type: folder, …}`): exactly those of `watch`.

    Defined here, not with `docutray_watch.sources.folder.FolderSource`, so the config never
    imports the source classes (the plugins register those)."""

    @property
    def moves_to_folders(self) -> bool:
        """`to:` is a local folder."""
        return True

    def as_watch(self) -> WatchConfig:
        """The same options as a `watch:` block (what the engine reads)."""
        return WatchConfig.model_construct(**self.model_dump(exclude={"type"}))

    @classmethod
    def from_watch(cls, watch: WatchConfig) -> FolderSourceConfig:
        """A `watch:` block as a folder source's options (paths already resolved)."""
        return cls.model_construct(type="folder", **watch.model_dump())
