"""What a sink is: the class every built-in and third-party sink derives from.

A sink plugin registers its class through the `register_sink_types` hook::

    class WebhookConfig(SinkConfig):
        url: str = Field(description="Where to POST each result record.")

    class WebhookSink(Sink[WebhookConfig]):
        type = "webhook"
        description = "POST each result record as JSON to a URL."
        config_model = WebhookConfig

        async def deliver(self, record: ResultRecord) -> Receipt:
            ...
            return {"status": 200}

    @hookimpl
    def register_sink_types(register):
        register(WebhookSink)

The engine owns the lifecycle: `open()` once before the first delivery, `check()` for `validate`,
`deliver(record)` for every result (sync methods run in the sink's own worker threads, so a slow
sink never blocks the daemon or another sink), `close()` at shutdown or reload. Every method may be
either a plain function or a coroutine function.

`deliver` must be **idempotent** for the same `record.key` = `(pipeline, sha256, step_id)`: after a
crash the engine delivers again whatever it had not journaled as delivered. Raise `SinkError` for a
failure worth retrying (the engine retries with backoff), `PermanentSinkError` for one that will
never succeed (the document then ends in the failed folder with the reason). Any other exception
is retried like a `SinkError` (I/O and network errors are usually outages), except those in
`Sink.bug_exceptions` (`BUG_EXCEPTIONS` unless the sink says otherwise): they mean a bug in the
sink, so the delivery fails after `BUG_ATTEMPTS` attempts and the log gets the traceback. What
`deliver` returns (the receipt) must be a string, None or JSON-serialisable.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from docutray_watch.records import ResultRecord

__all__ = [
    "BUG_ATTEMPTS",
    "BUG_EXCEPTIONS",
    "ConfigPath",
    "PermanentSinkError",
    "Receipt",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SinkRetry",
    "resolve_config_path",
]

Receipt = str | Mapping[str, Any] | None
"""What `deliver` returns: where the record went (a path, a URL, an object key…), journaled."""


class SinkError(Exception):
    """A delivery failed in a way that may succeed later (network, outage, full disk…)."""


class PermanentSinkError(SinkError):
    """A delivery failed in a way that retrying cannot fix (rejected by the target, bad data)."""


BUG_EXCEPTIONS: tuple[type[BaseException], ...] = (
    AssertionError,
    AttributeError,
    ImportError,
    LookupError,  # KeyError, IndexError
    NameError,  # and UnboundLocalError
    NotImplementedError,
    TypeError,
)
"""Exceptions that mean a bug in a sink's code, not an outage: retrying for an hour cannot fix
them. A `SinkError` is never taken for a bug, whatever else it derives from."""

BUG_ATTEMPTS = 3
"""Attempts after which a delivery that keeps failing with a bug exception fails (a few, not one:
a bug may depend on a race or on state that a new attempt resets)."""


class SinkRetry(BaseModel):
    """How the engine retries a failing delivery to one sink."""

    model_config = ConfigDict(extra="forbid")

    initial: float = Field(1.0, gt=0, description="First wait after a failure, in seconds.")
    max: float = Field(60.0, gt=0, description="Longest wait between two attempts, in seconds.")
    timeout: float = Field(
        3600.0,
        gt=0,
        description="Give up (document to the failed folder) after this many seconds of failures.",
    )


class SinkConfig(BaseModel):
    """Options every sink has; a sink type subclasses it with its own fields."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="The sink type, as registered by a plugin.")
    id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description=(
            "Stable name of this sink within its pipeline; delivery rows in the journal are keyed "
            "by it. Defaults to the type (type-2, type-3… for repeats)."
        ),
    )
    concurrency: int = Field(4, ge=1, le=256, description="Deliveries in progress at once.")
    retry: SinkRetry = Field(default_factory=SinkRetry, description="Retry policy.")


def resolve_config_path(value: Path, info: ValidationInfo) -> Path:
    """Make a relative path relative to the folder of the config file being loaded."""
    base = (info.context or {}).get("config_dir")
    value = value.expanduser()
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(resolve_config_path)]
"""A path option; relative values are taken relative to the config file's folder."""

ConfigT = TypeVar("ConfigT", bound=SinkConfig)


class Sink(Generic[ConfigT]):
    """Base class of every sink. Subclasses set `type`, `description`, `config_model`."""

    type: ClassVar[str]
    description: ClassVar[str] = ""
    config_model: ClassVar[builtins.type[SinkConfig]] = SinkConfig
    bug_exceptions: ClassVar[tuple[builtins.type[BaseException], ...]] = BUG_EXCEPTIONS
    """Exceptions from this sink's methods that mean a bug (see `BUG_EXCEPTIONS`). Override it
    when one of them means something else for this sink, e.g. `bug_exceptions = ()` when a
    client library raises `KeyError` for a record the target does not show yet."""

    def __init__(self, config: ConfigT, *, pipeline: str, sink_id: str) -> None:
        self.config = config
        self.pipeline = pipeline
        self.sink_id = sink_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.pipeline}/{self.sink_id}>"

    def open(self) -> Awaitable[None] | None:
        """Acquire connections or clients; called once before the first delivery."""
        return None

    def check(self) -> Awaitable[str | None] | str | None:
        """Health check for `docutray-watch validate`: raise `SinkError` when unusable.

        Must not change anything. May return a short note that `validate` shows after "ok"
        (e.g. what the first delivery will create).
        """
        return None

    def deliver(self, record: ResultRecord) -> Receipt | Awaitable[Receipt]:
        """Store one result record; idempotent per `record.key`."""
        raise NotImplementedError

    def close(self) -> Awaitable[None] | None:
        """Release what `open()` acquired."""
        return None
