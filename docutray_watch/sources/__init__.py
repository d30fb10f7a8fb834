"""Sources: where a pipeline's documents come from (a folder, a bucket…), as plugins."""

from docutray_watch.sources.base import (
    DocumentGoneError,
    DryRunEntry,
    Source,
    SourceConfig,
    SourceDocument,
    SourceError,
    VersionChangedError,
)

__all__ = [
    "BUILTIN_SOURCE_MODULES",
    "DocumentGoneError",
    "DryRunEntry",
    "Source",
    "SourceConfig",
    "SourceDocument",
    "SourceError",
    "VersionChangedError",
]

BUILTIN_SOURCE_MODULES: tuple[str, ...] = (
    "docutray_watch.sources.folder",
    "docutray_watch.sources.s3",
)
"""The modules of the built-in sources; each is a plugin registering its source class."""
