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
    "ConfigPath",
    "PermanentSinkError",
    "Receipt",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SinkRetry",
]
