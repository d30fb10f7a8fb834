"""The two values that travel through the daemon: a `Document` and its `ResultRecord`.

A `ResultRecord` is exactly what every sink receives (design §4): one per (document, step). Its
identity — the key sinks use to stay idempotent — is `(pipeline, document.sha256, step_id)`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_VERSION",
    "Document",
    "Identification",
    "RecordKey",
    "ResultRecord",
    "TypeMatch",
]

SCHEMA_VERSION: Literal[1] = 1

RecordKey = tuple[str, str, str]
"""`(pipeline, sha256, step_id)`: the idempotency key of a delivery."""


class Document(BaseModel):
    """A document taken from a watched folder, as sinks and hooks see it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="File name, e.g. `a.pdf`.")
    path: str = Field(description="Absolute path where the document was found.")
    relative_path: str = Field(description="Path relative to the watched folder, `/`-separated.")
    sha256: str = Field(description="Hex SHA-256 of the bytes that were submitted.")
    size: int = Field(description="Size in bytes.")
    content_type: str = Field(description="MIME type sniffed from the file's first bytes.")

    @property
    def stem(self) -> str:
        """The name without its last suffix (`a.pdf` → `a`)."""
        stem, dot, _ = self.name.rpartition(".")
        return stem if dot and stem else self.name

    @property
    def relative_dir(self) -> str:
        """The folder part of `relative_path` (`""` for a file at the top of the watched folder)."""
        head, _, _ = self.relative_path.rpartition("/")
        return head


class TypeMatch(BaseModel):
    """A document type the service considered, with how sure it is."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(description="The document type's code, e.g. `invoice`.")
    name: str = Field(description="The document type's name.")
    confidence: float = Field(description="How sure the service is, from 0 to 1.")


class Identification(TypeMatch):
    """What the service answered when asked which type a document is: the most likely type
    (`code`, `name`, `confidence`) and the other candidates by decreasing confidence."""

    alternatives: list[TypeMatch] = Field(
        default_factory=list, description="Other candidates, by decreasing confidence."
    )


class ResultRecord(BaseModel):
    """The outcome of one step on one document: what every sink receives."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    pipeline: str
    document: Document
    step_id: str
    execution_id: str
    status: Literal["SUCCESS", "ERROR"]
    data: Any = None
    error: Any = None
    original_filename: str | None = None
    request_timestamp: str | None = None
    response_timestamp: str | None = None
    submitted_at: datetime
    completed_at: datetime
    # The document's identified type (pipelines with `identify`); null for the others. An
    # optional addition: the record's schema_version stays 1.
    identification: Identification | None = None

    @property
    def key(self) -> RecordKey:
        """The idempotency key `(pipeline, sha256, step_id)`."""
        return (self.pipeline, self.document.sha256, self.step_id)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready builtins (timestamps as ISO-8601 strings)."""
        return self.model_dump(mode="json")

    def to_json(self, *, indent: int | None = None) -> str:
        """The record serialised as JSON text."""
        return self.model_dump_json(indent=indent)
