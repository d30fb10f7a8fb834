"""docutray-watch: watch folders, run documents through DocuTray steps, deliver the results.

The public API for plugin authors lives here::

    from docutray_watch import hookimpl, Sink, SinkConfig, SinkError, ResultRecord

- `hookimpl` marks hook implementations (the hooks are listed in `docutray_watch.hookspecs`);
- `Sink`, `SinkConfig`, `SinkError`, `PermanentSinkError`, `Receipt`, `ConfigPath` to write sinks,
  and `BUG_EXCEPTIONS`, `BUG_ATTEMPTS` (what a sink's bug is, see `Sink.bug_exceptions`);
- `Document` and `ResultRecord`, the values sinks and hooks receive.

The DocuTray API client is `docutray_watch.client`; test helpers are in `docutray_watch.testing`.
"""

from docutray_watch import _lean  # noqa: F401  (first: see its docstring)
from docutray_watch._version import __version__
from docutray_watch.hookspecs import hookimpl
from docutray_watch.records import Document, ResultRecord
from docutray_watch.sinks.base import (
    BUG_ATTEMPTS,
    BUG_EXCEPTIONS,
    ConfigPath,
    PermanentSinkError,
    Receipt,
    Sink,
    SinkConfig,
    SinkError,
    SinkRetry,
)

__all__ = [
    "BUG_ATTEMPTS",
    "BUG_EXCEPTIONS",
    "ConfigPath",
    "Document",
    "PermanentSinkError",
    "Receipt",
    "ResultRecord",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SinkRetry",
    "__version__",
    "hookimpl",
]
