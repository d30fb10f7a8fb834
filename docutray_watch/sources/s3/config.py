"""The options of the `s3` source, and parsing `s3://bucket/prefix/` destinations."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from docutray_watch.sources.base import SourceConfig

__all__ = ["BOTO3_MISSING", "S3EventsConfig", "S3SourceConfig", "parse_s3_uri"]

BOTO3_MISSING = "the s3 source needs boto3: pip install 'docutray-watch[s3]'"
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_S3_URI = re.compile(rf"^s3://(?P<bucket>{_BUCKET})(?:/(?P<prefix>.*))?$")


def parse_s3_uri(value: str) -> tuple[str, str]:
    """`s3://bucket/prefix/` → (`bucket`, `prefix/`); ValueError naming the expected form."""
    match = _S3_URI.match(value)
    if match is None:
        raise ValueError(f"expected s3://bucket/prefix/ (got {value[:80]!r})")
    prefix = match.group("prefix") or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # a destination is a folder-like prefix
    if "//" in prefix or prefix.startswith("/"):
        raise ValueError("the prefix of an s3:// destination must not contain empty parts")
    return match.group("bucket"), prefix


class S3EventsConfig(BaseModel):
    """S3 event notifications read from an SQS queue: a hint to look at once."""

    model_config = ConfigDict(extra="forbid")

    sqs_queue_url: str = Field(
        description="URL of the SQS queue the bucket sends ObjectCreated notifications to."
    )
    wait_seconds: int = Field(
        20, ge=0, le=20, description="Long-poll wait of each ReceiveMessage call."
    )
    visibility_timeout: int = Field(
        300,
        ge=1,
        le=43200,
        description="Seconds a received message stays hidden; one not deleted (its document "
        "not journaled yet) comes back after it.",
    )

    @field_validator("sqs_queue_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+/", value):
            raise ValueError("must be the queue's https:// URL")
        return value


class S3SourceConfig(SourceConfig):
    """Options of the s3 source: objects under a prefix of a bucket are the inbox."""

    bucket: str = Field(pattern=rf"^{_BUCKET}$", description="The bucket to take documents from.")
    prefix: str = Field(
        "",
        description="Only keys starting with this (end it with `/` for a folder); its sidecars "
        "and ready markers live beside the documents.",
    )
    region: str | None = Field(None, description="AWS region (default: the AWS configuration).")
    endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible store (MinIO, Ceph, Garage…)."
    )
    profile: str | None = Field(
        None,
        description="AWS profile of the shared config files; credentials always come from the "
        "boto3 chain (environment, profile, IAM role…) and are never logged.",
    )
    addressing_style: Literal["auto", "path", "virtual"] | None = Field(
        None, description="auto, path (usual for MinIO) or virtual (bucket in the host name)."
    )
    checksums: Literal["when_supported", "when_required"] | None = Field(
        None,
        description="when_required for S3-compatible stores that reject the newer checksum "
        "headers (boto3's default since 1.36 is when_supported).",
    )
    ready_marker: str | None = Field(
        None,
        pattern=r"^\.[A-Za-z0-9_.-]+$",
        description="Take x.pdf only once x.pdf<marker> exists (e.g. '.done'); the marker is "
        "deleted with the document.",
    )
    events: S3EventsConfig | None = Field(
        None, description="Also look when an SQS queue announces a new object."
    )
    submit_as: Literal["upload", "url"] = Field(
        "upload",
        description="upload: stream the object to the API; url: pass a presigned GET URL "
        "(the object is still read once for hashing).",
    )
    url_expiry: int = Field(
        3600, ge=60, le=604800, description="Seconds a presigned URL stays valid (submit_as: url)."
    )
    max_threads: int = Field(
        8, ge=1, le=64, description="S3 requests in flight at once (boto3 is synchronous)."
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection.")
    read_timeout: float = Field(60.0, gt=0, description="Seconds to wait for an answer.")
    max_attempts: int = Field(3, ge=1, le=20, description="Attempts per request inside botocore.")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError("S3 keys do not start with '/'; drop the leading slash")
        return value

    @model_validator(mode="after")
    def _boto3_installed(self) -> S3SourceConfig:
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise ValueError(BOTO3_MISSING) from None
        return self

    @property
    def root(self) -> str:
        """`s3://bucket/prefix`: where documents are found."""
        return f"s3://{self.bucket}/{self.prefix}"

    def check_destination(self, value: str) -> str:
        """`to:` must be `s3://bucket/prefix/` outside the watched prefix."""
        bucket, prefix = parse_s3_uri(value)
        if bucket == self.bucket and prefix.startswith(self.prefix):
            raise ValueError(
                f"{value} is inside the watched prefix {self.root}; moved objects would be "
                "taken again"
            )
        return f"s3://{bucket}/{prefix}"
