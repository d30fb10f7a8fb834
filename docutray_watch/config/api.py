"""The `api:` block: how to reach the DocuTray API, its timeouts and shared limits."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from docutray_watch.config._base import _FieldError, _Model
from docutray_watch.sinks.base import ConfigPath

if TYPE_CHECKING:
    import httpx


DEFAULT_BASE_URL = "https://app.docutray.com"


class TimeoutConfig(_Model):
    """HTTP timeouts towards the DocuTray API, in seconds."""

    connect: float = Field(5.0, gt=0, description="Establishing a connection.")
    read: float = Field(60.0, gt=0, description="Waiting for each part of an answer.")
    write: float = Field(60.0, gt=0, description="Sending each part of an upload.")
    pool: float = Field(10.0, gt=0, description="Waiting for a free connection from the pool.")

    def as_httpx(self) -> httpx.Timeout:
        """The same four timeouts as an `httpx.Timeout`."""
        import httpx  # here, not at the top: `status` loads the config without the HTTP stack

        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


class ApiConfig(_Model):
    """How to reach the DocuTray API, and the limits shared by all pipelines."""

    base_url: str | None = Field(
        None,
        description="API root. Defaults to $DOCUTRAY_BASE_URL, then https://app.docutray.com.",
    )
    api_key: SecretStr | None = Field(
        None, description="API key (prefer ${DOCUTRAY_API_KEY} or api_key_file). Never logged."
    )
    api_key_file: ConfigPath | None = Field(
        None,
        description=(
            "File holding the API key, e.g. ${CREDENTIALS_DIRECTORY}/api-key under systemd's "
            "LoadCredential=."
        ),
    )
    max_retries: int = Field(4, ge=0, le=20, description="Retries of a failed API request.")
    timeout: TimeoutConfig = Field(default_factory=TimeoutConfig, description="HTTP timeouts.")
    max_in_flight: int = Field(
        32, ge=1, le=10_000, description="Executions in flight at once, all pipelines together."
    )
    requests_per_second: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
        "auto",
        description="API requests per second, all pipelines together: a number, or auto — no "
        "fixed rate, learned from the service's 429 answers (slow start, then AIMD).",
    )
    max_requests_per_second: float | None = Field(
        None,
        gt=0,
        description="With requests_per_second: auto, never more than this (null: no cap).",
    )
    pause_probe_interval: float = Field(
        60.0,
        gt=0,
        description=(
            "While the API key is refused or the API unreachable, seconds between two probes "
            "(a free status read) that resume work once it answers; also how often a pipeline "
            "paused by a 403/404 tries one submission again."
        ),
    )

    @field_validator("requests_per_second", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("must be auto or a positive number")
        try:
            rate = float(value)
        except ValueError:
            raise ValueError("must be auto or a positive number") from None
        if not rate > 0 or rate == float("inf"):
            raise ValueError("must be auto or a positive number")
        return rate

    @model_validator(mode="after")
    def _cap_needs_auto(self) -> ApiConfig:
        if self.max_requests_per_second is not None and self.requests_per_second != "auto":
            raise _FieldError(
                ("max_requests_per_second",),
                "applies only with requests_per_second: auto (a number is already a fixed rate)",
            )
        return self

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _one_key_source(self) -> ApiConfig:
        if self.api_key is not None and self.api_key_file is not None:
            raise _FieldError(("api_key_file",), "set api_key or api_key_file, not both")
        return self

    def resolved_base_url(self, environ: Mapping[str, str] = os.environ) -> str:
        """The configured URL, else $DOCUTRAY_BASE_URL, else the public service."""
        return (self.base_url or environ.get("DOCUTRAY_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
