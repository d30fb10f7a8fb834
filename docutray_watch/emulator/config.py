"""Settings of the DocuTray API emulator: latency, fault injection and limits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from docutray_watch.emulator._limits import MAX_FILE_SIZE

DEFAULT_API_KEY = "docutray-emulator-key"
"""API key the emulator accepts unless told otherwise."""


class DocumentTypeSpec(BaseModel):
    """One document type of the emulated account."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="The type's code.")
    name: str = Field(min_length=1, description="The type's name.")
    description: str | None = Field(default=None, description="What the type is for.")


DEFAULT_DOCUMENT_TYPES = (
    DocumentTypeSpec(code="invoice", name="Invoice", description="Supplier invoices"),
    DocumentTypeSpec(code="receipt", name="Receipt", description="Till and card receipts"),
    DocumentTypeSpec(code="bank_statement", name="Bank statement"),
    DocumentTypeSpec(code="purchase_order", name="Purchase order"),
    DocumentTypeSpec(code="id_card", name="Identity card"),
    DocumentTypeSpec(code="contract", name="Contract"),
)
"""The account's document types unless configured otherwise."""

DEFAULT_TYPES_BY_CONTENT_TYPE = {
    "application/pdf": "invoice",
    "image/jpeg": "receipt",
    "image/png": "receipt",
    "image/gif": "receipt",
    "image/bmp": "receipt",
    "image/webp": "id_card",
}
"""Which type identification answers for a content type, when no TYPE marker says."""


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
    document_types: tuple[DocumentTypeSpec, ...] = Field(
        default=DEFAULT_DOCUMENT_TYPES,
        min_length=1,
        description="The account's document types (GET /api/document-types, identification).",
    )
    identify_by_content_type: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_TYPES_BY_CONTENT_TYPE),
        description="Type code identification answers per content type, without a TYPE marker "
        "(a content type not listed gets the first document type).",
    )
    identify_confidence: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description="Confidence of the identified type, without a CONFIDENCE marker.",
    )
    identify_id_field: Literal["identification_id", "id"] = Field(
        default="identification_id",
        description="Name of the id in identification answers (the API uses both).",
    )

    @field_validator("server_error_statuses")
    @classmethod
    def _server_errors_only(cls, statuses: tuple[int, ...]) -> tuple[int, ...]:
        if not all(500 <= status <= 599 for status in statuses):
            raise ValueError("server_error_statuses must be 5xx statuses")
        return statuses

    @model_validator(mode="after")
    def _unique_type_codes(self) -> EmulatorConfig:
        codes = [spec.code for spec in self.document_types]
        if len(set(codes)) != len(codes):
            raise ValueError("document_types codes must be unique")
        return self

    def document_type(self, code: str) -> DocumentTypeSpec | None:
        """The configured type with ``code``, if any."""
        return next((spec for spec in self.document_types if spec.code == code), None)

    def with_changes(self, **changes: Any) -> EmulatorConfig:
        """Return a validated copy with `changes` applied (unknown names raise ValidationError)."""
        return type(self).model_validate({**self.model_dump(), **changes})
