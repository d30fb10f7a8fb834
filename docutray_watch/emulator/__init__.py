"""A local emulator of the DocuTray steps API, for tests, demos and benchmarks.

It accepts submissions like the real service (multipart streaming, URL, base64), answers status
reads whose outcome follows from elapsed time, and can inject faults on demand. See
``docs/emulator.md``.
"""

from __future__ import annotations

from docutray_watch.emulator._limits import (
    MAX_FILE_SIZE,
    SUPPORTED_CONTENT_TYPES,
    sniff_content_type,
)
from docutray_watch.emulator._markers import ERROR_MARKER, LATENCY_MARKER
from docutray_watch.emulator.app import STATE_KEY, create_app
from docutray_watch.emulator.config import DEFAULT_API_KEY, EmulatorConfig
from docutray_watch.emulator.server import EmulatorServer
from docutray_watch.emulator.state import Clock, EmulatorState
from docutray_watch.emulator.stats import (
    EmulatorStats,
    ExecutionStats,
    FaultKind,
    RetryAfterViolation,
)

__all__ = [
    "DEFAULT_API_KEY",
    "ERROR_MARKER",
    "LATENCY_MARKER",
    "MAX_FILE_SIZE",
    "STATE_KEY",
    "SUPPORTED_CONTENT_TYPES",
    "Clock",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "EmulatorStats",
    "ExecutionStats",
    "FaultKind",
    "RetryAfterViolation",
    "create_app",
    "sniff_content_type",
]
