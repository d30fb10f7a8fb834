"""Logging for the command line and the daemon: structlog, JSON lines or a console, redacted.

`configure_logging()` is called once by the CLI; library modules only do
`structlog.get_logger(__name__)`. When stderr is not a terminal (journald, files, pipes) every line
is one JSON object; on a terminal a readable console format. Standard-library logging (httpx,
watchdog, botocore…) goes through the same processors and comes out the same way. Our own events
skip the standard library's `LogRecord`s and handlers (a third of the CPU of a line): structlog
renders them and writes each line to the same stream, under the same lock.

Secrets never reach the output: `register_secret()` adds a value (the API key) that is replaced by
`***` wherever it appears — in messages, in any field, in rendered tracebacks — and fields named
like secrets (`api_key`, `authorization`, `password`…) are masked whatever they hold. Tracebacks
are rendered without local variables.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["REDACTED", "configure_logging", "mask_secrets", "redact", "register_secret"]

REDACTED = "***"
_SECRET_FIELDS = frozenset(
    {
        "api_key",
        "apikey",
        "authorization",
        "password",
        "secret",
        "token",
        "aws_secret_access_key",
        "secret_access_key",
        "x-api-key",
        "cookie",
    }
)
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask `value` in every log line from now on (ignored when empty or very short)."""
    if value and len(value) >= 4:
        _secrets.add(value)


def mask_secrets(text: str) -> str:
    """`text` with every registered secret replaced by `***` (for journals, sidecars, messages)."""
    return str(_scrub(text))


# A URL whose query carries a signature or a token (a presigned S3/GCS/Azure URL, say).
_SIGNED_URL = re.compile(
    r"(?P<base>https?://[^\s\"'<>?#]+)\?[^\s\"'<>#]*"
    r"(?:signature|sig=|token|credential|x-amz-|x-goog-)[^\s\"'<>#]*",
    re.IGNORECASE,
)


def hide_signed_urls(text: str) -> str:
    """`text` with the query of every signed URL cut off (it grants access to whoever has it)."""
    return _SIGNED_URL.sub(r"\g<base>?[signed query removed]", text)


# The registered secrets, longest first (a secret containing another must not be left
# half-masked), sorted again only when the set changed: two lines a document were sorting it
# for every string of every line.
_ordered: tuple[frozenset[str], tuple[str, ...]] = (frozenset(), ())


def _longest_first() -> tuple[str, ...]:
    global _ordered
    known, ordered = _ordered
    if known != _secrets:
        known = frozenset(_secrets)
        ordered = tuple(sorted(known, key=len, reverse=True))
        _ordered = (known, ordered)
    return ordered


def _scrub(value: Any, secrets: tuple[str, ...] | None = None) -> Any:
    if secrets is None:
        secrets = _longest_first()
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if str(k).lower() in _SECRET_FIELDS else _scrub(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, secrets) for v in value)
    return value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret-named fields and every registered secret value."""
    secrets = _longest_first()
    for key, value in event_dict.items():  # values replaced in place: the keys do not change
        if key.lower() in _SECRET_FIELDS:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            for secret in secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
                    event_dict[key] = value
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _scrub(value, secrets)
    return event_dict


_SHORT_HASH = 12


def _short_hashes(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Console processor: a sha256 field shows its first 12 hex digits, enough to tell documents
    apart by eye (JSON lines keep all 64, for tools)."""
    for key, value in event_dict.items():
        if key.endswith("sha256") and isinstance(value, str) and len(value) == 64:
            event_dict[key] = value[:_SHORT_HASH]
    return event_dict


def _scrub_line(_logger: WrappedLogger, _method: str, line: Any) -> Any:
    """Last structlog processor: scrub the rendered line (as `_RedactingFormatter` does)."""
    return _scrub(line)


class _LineLogger:
    """Where structlog's rendered lines go: the stream of the stdlib handler, under its lock, so
    a line from structlog and one from a library never interleave. A failed write is dropped
    (as `logging` does): logging must never stop the daemon."""

    def __init__(self, handler: logging.StreamHandler[TextIO], name: str) -> None:
        self._handler = handler
        self.name = name  # for structlog.stdlib.add_logger_name

    def msg(self, message: str) -> None:
        """Write one line."""
        handler = self._handler
        with handler.lock or contextlib.nullcontext():
            try:
                handler.stream.write(message + handler.terminator)
                handler.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream (stderr of a dead pipe)
                pass

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class _LineLoggerFactory:
    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        self._handler = handler
        # Only for `structlog.get_logger()` without a name: finds the calling module, as the
        # standard library's factory does.
        self._names = structlog.stdlib.LoggerFactory(ignore_frame_names=[__name__])

    def __call__(self, *args: Any) -> _LineLogger:
        name = str(args[0]) if args else self._names().name
        return _LineLogger(self._handler, name)


class _RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """Also scrubs the final line, in case a renderer stringified something we did not see."""

    def format(self, record: logging.LogRecord) -> str:
        return str(_scrub(super().format(record)))


def _level_number(level: str) -> int:
    return int(getattr(logging, level.upper(), logging.INFO))


def configure_logging(
    level: str = "info", fmt: str = "auto", *, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to `stream` (stderr) as JSON lines or console text."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Processor
    if use_json:
        final: list[Processor] = [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact,
            structlog.processors.JSONRenderer(),
        ]
    else:
        # Plain tracebacks, not rich's: rich wraps long lines at the console width, which can
        # split a secret in an exception message so that the final scrub no longer finds it.
        # Plain tracebacks show no local variables either.
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        final = [redact, _short_hashes, renderer]

    formatter = _RedactingFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            *final,
            _scrub_line,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=_LineLoggerFactory(handler),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_level_number(level))
    # Request lines from httpx and per-call chatter from botocore are noise at info level.
    for noisy in (
        "httpx",
        "httpcore",
        "botocore",
        "boto3",
        "urllib3",
        "watchdog",
        "aiohttp.access",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, _level_number(level)))
