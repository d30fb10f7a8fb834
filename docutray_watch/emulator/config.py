"""Settings of the DocuTray API emulator: latency, fault injection and limits."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from docutray_watch.emulator._limits import MAX_FILE_SIZE

DEFAULT_API_KEY = "docutray-emulator-key"
"""API key the emulator accepts unless told otherwise."""


class EmulatorConfig(BaseModel):
    """How the emulator behaves; every field can be changed while it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str = Field(
        default=DEFAULT_API_KEY, min_length=1, repr=False, description="Bearer key to accept."
    )
    step_ids: frozenset[str] | None = Field(
        default=None, description="Known step ids (others get 404); None accepts any step."
    )
    latency: float = Field(default=0.2, ge=0.0, description="Seconds from submission to result.")
    latency_jitter: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Uniform jitter as a fraction of the latency."
    )
    latency_per_mb: float = Field(
        default=0.0, ge=0.0, description="Extra seconds of latency per MiB of document."
    )
    error_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of executions that end in ERROR."
    )
    server_error_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of API requests answered 500/502/503/504."
    )
    server_error_statuses: tuple[int, ...] = Field(
        default=(500, 502, 503, 504),
        min_length=1,
        description="Statuses the injected server errors are drawn from.",
    )
    rate_limit_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of API requests answered 429."
    )
    retry_after: float = Field(
        default=1.0, ge=0.0, description="Seconds announced by injected 429 answers."
    )
    hide_rate_limit: bool = Field(
        default=False,
        description="Leave `limit` out of 429 bodies, as an API that does not say its rate.",
    )
    fractional_retry_after: bool = Field(
        default=False,
        description="Send Retry-After in fractions of a second (rounded up to the millisecond) "
        "instead of whole seconds rounded up.",
    )
    drop_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of API requests dropped unanswered."
    )
    drop_after_accept_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of submissions that start an execution, then drop the connection.",
    )
    rate_limit_rps: float | None = Field(
        default=None, gt=0.0, description="Token-bucket limit on API requests per second."
    )
    max_file_size: int = Field(
        default=MAX_FILE_SIZE, gt=0, description="Largest accepted document, in bytes."
    )
    seed: int | None = Field(
        default=None, description="Seed of the fault dice, for repeatable runs."
    )

    @field_validator("server_error_statuses")
    @classmethod
    def _server_errors_only(cls, statuses: tuple[int, ...]) -> tuple[int, ...]:
        if not all(500 <= status <= 599 for status in statuses):
            raise ValueError("server_error_statuses must be 5xx statuses")
        return statuses

    def with_changes(self, **changes: Any) -> EmulatorConfig:
        """Return a validated copy with `changes` applied (unknown names raise ValidationError)."""
        return type(self).model_validate({**self.model_dump(), **changes})
