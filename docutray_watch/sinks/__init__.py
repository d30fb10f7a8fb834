"""Built-in sinks and the base class every sink derives from."""

from docutray_watch.sinks.base import (
    ConfigPath,
    PermanentSinkError,
    Receipt,
    Sink,
    SinkConfig,
    SinkError,
    SinkRetry,
)

__all__ = [
    "BUILTIN_SINK_MODULES",
    "ConfigPath",
    "PermanentSinkError",
    "Receipt",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SinkRetry",
]

BUILTIN_SINK_MODULES: tuple[str, ...] = (
    "docutray_watch.sinks.filesystem",
    "docutray_watch.sinks.s3",
    "docutray_watch.sinks.database",
)
"""The modules of the built-in sinks; each is a plugin registering its sink class."""
