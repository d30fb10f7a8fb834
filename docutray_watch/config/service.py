"""How the daemon runs as a service: the metrics and web listeners, logging, the journal's
retention, and the defaults of `state_dir` and `shutdown_grace`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from docutray_watch.config._base import _FieldError, _Model
from docutray_watch.sinks.base import ConfigPath

# The shipped units' TimeoutStopSec=40 minus the 10 s the daemon keeps to persist the rest (they
# also set DOCUTRAY_WATCH_SHUTDOWN_GRACE=30); `validate` warns when a grace does not fit.
DEFAULT_SHUTDOWN_GRACE = 30.0
SHUTDOWN_GRACE_ENV = "DOCUTRAY_WATCH_SHUTDOWN_GRACE"


class MetricsConfig(_Model):
    """The optional local HTTP listener for Prometheus metrics and health checks."""

    listen: str = Field(
        "127.0.0.1:9464", description="host:port for /metrics, /healthz and /readyz."
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port, e.g. 127.0.0.1:9464")
        return value

    @property
    def host(self) -> str:
        """The listening address (brackets of an IPv6 literal removed)."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The listening port."""
        return int(self.listen.rpartition(":")[2])


class WebConfig(MetricsConfig):
    """The optional status page: its own listener, as it shows file names and failure reasons."""

    listen: str = Field(
        "127.0.0.1:9465",
        description="host:port of the status page (GET /, /api/status, /api/live).",
    )
    actions: bool = Field(
        False,
        description="Let the page retry failed documents (needs token_file; every action sends "
        "the token as a Bearer header, from the page's own origin).",
    )
    token_file: ConfigPath | None = Field(
        None,
        description="File holding the token that actions need, e.g. "
        "${CREDENTIALS_DIRECTORY}/web-token under systemd. Never logged or shown.",
    )
    refresh_seconds: float = Field(
        5.0, ge=1, le=300, description="How often the page polls the daemon."
    )
    _token: SecretStr | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _token_for_actions(self) -> WebConfig:
        if self.actions and self.token_file is None:
            raise _FieldError(("token_file",), "actions: true needs a token_file")
        return self

    @property
    def token(self) -> str | None:
        """The actions' token, read from `token_file` when the config was loaded."""
        return self._token.get_secret_value() if self._token is not None else None


class LogConfig(_Model):
    """Log output."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Minimum level."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="auto: JSON lines when stderr is not a terminal (journald), else console.",
    )


class JournalConfig(_Model):
    """How long the journal remembers finished documents."""

    retention_days: float | None = Field(
        None,
        gt=0,
        description="Forget documents that finished more than this many days ago (their steps, "
        "stored results and deliveries; the duplicate check forgets their content too), at "
        "start and then daily. Files kept where they were found are remembered while they are "
        "there. null: remember everything.",
    )


def _default_state_dir() -> Path:
    # Our units set $DOCUTRAY_WATCH_STATE_DIR; systemd sets $STATE_DIRECTORY for
    # StateDirectory=; otherwise follow the XDG convention.
    state_directory = os.environ.get("DOCUTRAY_WATCH_STATE_DIR") or os.environ.get(
        "STATE_DIRECTORY"
    )
    if state_directory:
        return Path(state_directory.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "docutray-watch"


def _default_grace() -> float:
    raw = os.environ.get(SHUTDOWN_GRACE_ENV)
    try:
        return float(raw) if raw else DEFAULT_SHUTDOWN_GRACE
    except ValueError:
        return DEFAULT_SHUTDOWN_GRACE
