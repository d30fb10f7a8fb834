"""The `s3` sink: one JSON object per (document, step) in an S3 (or S3-compatible) bucket.

The object key is rendered from the `prefix` and `key` templates, so it is the same every time the
same record is delivered: redelivery overwrites the object instead of adding one. Every value is
sanitised by `templates.sanitize_component` (as `render_relative_path` does; nothing can add a `..`
or an empty part), then every part is reduced to the characters AWS lists as safe in object keys.
A key longer than S3's 1,024 bytes (or a part longer than 255) is cut and gets a hash of the full
key, so it stays unique — `render_relative_path` itself would cut the hash off a long name.

boto3 is an optional dependency (`pip install 'docutray-watch[s3]'`): it is imported only when a
config uses this sink, and its absence is reported when the config is validated.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import structlog
from pydantic import Field, SecretStr, field_validator, model_validator

from docutray_watch._version import __version__
from docutray_watch.hookspecs import hookimpl
from docutray_watch.records import ResultRecord
from docutray_watch.sinks.base import PermanentSinkError, Receipt, Sink, SinkConfig, SinkError
from docutray_watch.templates import (
    RECORD_FIELDS,
    TemplateError,
    check_template,
    record_context,
    sanitize_component,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["MAX_KEY_BYTES", "S3Config", "S3Sink", "object_key"]

log = structlog.get_logger(__name__)

DEFAULT_PREFIX = "{pipeline}/{yyyy}/{mm}/{dd}/"
DEFAULT_KEY = "{stem}.{short_sha}.{step_id}.json"
MAX_KEY_BYTES = 1024
# S3 has no limit per part, but keys are often mirrored to file systems (255 bytes a name).
MAX_PART_BYTES = 255
BOTO3_MISSING = "the s3 sink needs boto3: pip install 'docutray-watch[s3]'"

# AWS's "safe characters" for object keys; anything else may need special handling somewhere.
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9!_.*'()-]")
# Metadata travels in HTTP headers: printable ASCII only. `%` is escaped so decoding is lossless.
_METADATA_SAFE = "".join(c for c in string.printable if c.isprintable() and c not in "% ")
_MAX_METADATA_VALUE = 512
_KEPT_EXTENSION_CHARS = 16
# Error codes meaning "the credentials were not accepted" (fixable by the operator, so retried).
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
    }
)
# Errors that no retry of this very request can fix.
_PERMANENT_CODES = frozenset({"KeyTooLongError", "EntityTooLarge", "MetadataTooLarge"})


class S3Config(SinkConfig):
    """Options of the s3 sink."""

    bucket: str = Field(
        min_length=3,
        max_length=255,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Bucket that receives the result objects.",
    )
    prefix: str = Field(
        DEFAULT_PREFIX,
        description="Template put in front of `key` (end it with `/` for a folder); "
        "placeholders as in `key`. Use different prefixes for pipelines sharing a bucket.",
    )
    key: str = Field(
        DEFAULT_KEY,
        description="Template of the object name after `prefix`; placeholders: "
        + ", ".join(f"{{{f}}}" for f in sorted(RECORD_FIELDS))
        + ". `prefix` + `key` must contain {sha256} or {short_sha}, and {step_id}, so each result "
        "has its own object. Components are sanitised to S3's safe characters.",
    )
    region: str | None = Field(
        None, description="AWS region, e.g. eu-west-1 (default: the AWS configuration chain)."
    )
    endpoint_url: str | None = Field(
        None,
        description="Endpoint of an S3-compatible store (MinIO, Ceph, R2…); default: AWS.",
    )
    aws_access_key_id: str | None = Field(
        None, description="Access key ID (default: the AWS credential chain, e.g. an IAM role)."
    )
    aws_secret_access_key: SecretStr | None = Field(
        None, description="Secret access key; use ${ENV} in the YAML. Never logged."
    )
    aws_session_token: SecretStr | None = Field(
        None, description="Session token of temporary credentials. Never logged."
    )
    addressing_style: Literal["auto", "path", "virtual"] | None = Field(
        None,
        description="auto (botocore decides), path (bucket in the URL path; usual for MinIO) or "
        "virtual (bucket in the host name).",
    )
    checksums: Literal["when_supported", "when_required"] | None = Field(
        None,
        description="when_supported (boto3's default since 1.36: a CRC32 checksum with every "
        "upload) or when_required (only where S3 demands one) for S3-compatible stores that "
        "reject the newer checksum headers.",
    )
    server_side_encryption: Literal["AES256", "aws:kms"] | None = Field(
        None,
        description="Server-side encryption of each object: AES256 (S3-managed keys) or aws:kms "
        "(default: the bucket's setting).",
    )
    sse_kms_key_id: str | None = Field(
        None, description="KMS key for `server_side_encryption: aws:kms` (default: the AWS key)."
    )
    storage_class: str | None = Field(
        None,
        pattern=r"^[A-Z][A-Z_]*$",
        description="Storage class of each object, e.g. STANDARD_IA (default: the bucket's).",
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection.")
    read_timeout: float = Field(60.0, gt=0, description="Seconds to wait for an answer.")
    max_attempts: int = Field(
        3, ge=1, le=20, description="Attempts per request inside botocore, before the sink retries."
    )

    @field_validator("prefix", "key")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        try:
            check_template(value, RECORD_FIELDS)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> S3Config:
        fields = _template_fields(self.prefix + self.key)
        if not fields & {"sha256", "short_sha"} or "step_id" not in fields:
            raise ValueError(
                "prefix + key must contain {sha256} or {short_sha}, and {step_id}, "
                "or results of different documents or steps would overwrite each other"
            )
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError("set aws_access_key_id and aws_secret_access_key together")
        if self.aws_session_token is not None and self.aws_access_key_id is None:
            raise ValueError("aws_session_token needs aws_access_key_id and aws_secret_access_key")
        if self.sse_kms_key_id is not None and self.server_side_encryption != "aws:kms":
            raise ValueError("sse_kms_key_id needs server_side_encryption: aws:kms")
        return self

    @model_validator(mode="after")
    def _boto3_installed(self) -> S3Config:
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise ValueError(BOTO3_MISSING) from None
        return self


def _template_fields(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


# --- object keys --------------------------------------------------------------------------------


def object_key(prefix: str, key: str, record: ResultRecord) -> str:
    """The object key of `record`: rendered, reduced to safe characters, ≤ 1,024 bytes."""
    safe: dict[str, str] = {}
    for name, value in record_context(record).items():
        text = str(value)
        if name in ("relative_dir", "relative_path"):
            folders = [p for p in text.split("/") if p not in ("", ".")]
            safe[name] = "/".join(_safe_component(sanitize_component(p)) for p in folders)
        else:
            safe[name] = _safe_component(sanitize_component(text)) if text else ""
    rendered = (prefix + key).format_map(safe)
    parts = [_safe_component(part) for part in rendered.split("/") if part]
    if not parts:
        raise PermanentSinkError(f"the key template {prefix + key!r} rendered an empty key")
    return _fit(parts)


def _safe_component(part: str) -> str:
    # Compatibility decomposition turns "é" into "e" + accent (dropped) and "ﬁ" into "fi"; it can
    # also produce "/" or "." from look-alikes, so the result is checked again below.
    decomposed = unicodedata.normalize("NFKD", part)
    ascii_text = "".join(c for c in decomposed if not unicodedata.combining(c))
    safe = _UNSAFE_KEY_CHARS.sub("_", ascii_text)
    if safe in ("", ".", ".."):
        return "_"
    if safe[0] in "-.":
        safe = "_" + safe[1:]
    return safe


def _fit(parts: list[str]) -> str:
    """Join `parts`; if a part or the whole is too long, cut and add a hash of the full key.

    The hash keeps shortened keys unique (and the same on every redelivery); the last part keeps
    its extension. Only ASCII is left at this point, so characters are bytes.
    """
    full = "/".join(parts)
    if len(full) <= MAX_KEY_BYTES and all(len(p) <= MAX_PART_BYTES for p in parts):
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:16]
    stem, dot, ext = parts[-1].rpartition(".")
    if not (dot and stem and len(ext) <= _KEPT_EXTENSION_CHARS):
        stem, ext = parts[-1], ""
    tail = f".{digest}.{ext}" if ext else f".{digest}"
    limits = [MAX_PART_BYTES] * (len(parts) - 1) + [MAX_PART_BYTES - len(tail)]
    pieces = [p[:limit] for p, limit in zip([*parts[:-1], stem], limits, strict=True)]
    room = MAX_KEY_BYTES - len(tail) - (len(pieces) - 1)
    # The largest per-part length `cap` such that the capped parts fit in `room`.
    cap = max(len(p) for p in pieces)
    while cap > 0 and sum(min(len(p), cap) for p in pieces) > room:
        cap -= 1
    if cap == 0:
        raise PermanentSinkError(
            f"an object key of {len(parts)} parts cannot fit in {MAX_KEY_BYTES} bytes; "
            "use fewer placeholders in prefix and key"
        )
    cut = [p[:cap] for p in pieces]
    return "/".join([*cut[:-1], cut[-1] + tail])


def _metadata_value(value: str) -> str:
    """Percent-encoded UTF-8 (decode with `urllib.parse.unquote`), at most 512 characters."""
    encoded = quote(value, safe=_METADATA_SAFE)
    if len(encoded) > _MAX_METADATA_VALUE:
        encoded = encoded[:_MAX_METADATA_VALUE]
        # Never end in the middle of a %XX escape.
        tail = encoded.rfind("%", len(encoded) - 2)
        if tail != -1:
            encoded = encoded[:tail]
    return encoded


def object_metadata(record: ResultRecord) -> dict[str, str]:
    """User metadata stored with each object (`x-amz-meta-*`), ASCII-safe."""
    values = {
        "pipeline": record.pipeline,
        "step-id": record.step_id,
        "execution-id": record.execution_id,
        "sha256": record.document.sha256,
        "source-name": record.document.name,
        "status": record.status,
    }
    return {name: _metadata_value(value) for name, value in values.items()}


# --- the sink -----------------------------------------------------------------------------------


class S3Sink(Sink[S3Config]):
    """Puts each result record as a JSON object; the key is the same on every redelivery."""

    type = "s3"
    description = "Put one JSON object per document and step into an S3 bucket."
    config_model = S3Config

    def __init__(self, config: S3Config, *, pipeline: str, sink_id: str) -> None:
        super().__init__(config, pipeline=pipeline, sink_id=sink_id)
        self._client: S3Client | None = None

    @property
    def _where(self) -> str:
        endpoint = self.config.endpoint_url or "AWS S3"
        return f"bucket {self.config.bucket!r} at {endpoint}"

    def open(self) -> None:
        """Create the boto3 client (one per sink: boto3 clients are thread-safe)."""
        if self._client is not None:
            return
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise SinkError(BOTO3_MISSING) from None
        cfg = self.config
        checksums: dict[str, str] = {}
        if cfg.checksums is not None:
            # Only when set: botocore before 1.36 knows neither option, and unset leaves boto3's
            # default (and its AWS_REQUEST_CHECKSUM_CALCULATION variable) in charge.
            checksums = {
                "request_checksum_calculation": cfg.checksums,
                "response_checksum_validation": cfg.checksums,
            }
        botocore_config = BotoConfig(
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
            max_pool_connections=max(10, cfg.concurrency),
            s3={"addressing_style": cfg.addressing_style} if cfg.addressing_style else None,
            user_agent_extra=f"docutray-watch/{__version__}",
            **checksums,  # type: ignore[arg-type]
        )
        session = boto3.session.Session(
            aws_access_key_id=cfg.aws_access_key_id,
            aws_secret_access_key=_reveal(cfg.aws_secret_access_key),
            aws_session_token=_reveal(cfg.aws_session_token),
            region_name=cfg.region,
        )
        try:
            self._client = session.client(
                "s3", endpoint_url=cfg.endpoint_url, config=botocore_config
            )
        except Exception as exc:  # botocore raises many types for a bad region or profile
            raise SinkError(f"cannot create the S3 client for {self._where}: {exc}") from exc

    def _require_client(self) -> S3Client:
        if self._client is None:
            self.open()
        assert self._client is not None
        return self._client

    def check(self) -> None:
        """The bucket exists and the credentials may use it (a HeadBucket request)."""
        client = self._require_client()
        try:
            client.head_bucket(Bucket=self.config.bucket)
        except _boto_errors() as exc:
            raise self._translate(exc, "cannot use") from exc

    def key_for(self, record: ResultRecord) -> str:
        """The object key `record` is stored under."""
        return object_key(self.config.prefix, self.config.key, record)

    def deliver(self, record: ResultRecord) -> Receipt:
        """Put the record JSON under its deterministic key (redelivery overwrites it)."""
        client = self._require_client()
        cfg = self.config
        key = self.key_for(record)
        extra: dict[str, str] = {}
        if cfg.server_side_encryption is not None:
            extra["ServerSideEncryption"] = cfg.server_side_encryption
        if cfg.sse_kms_key_id is not None:
            extra["SSEKMSKeyId"] = cfg.sse_kms_key_id
        if cfg.storage_class is not None:
            extra["StorageClass"] = cfg.storage_class
        try:
            client.put_object(
                Bucket=cfg.bucket,
                Key=key,
                Body=record.to_json().encode("utf-8"),
                ContentType="application/json",
                Metadata=object_metadata(record),
                **extra,  # type: ignore[arg-type]
            )
        except _boto_errors() as exc:
            raise self._translate(exc, f"cannot put {key!r} into") from exc
        return f"s3://{cfg.bucket}/{key}"

    def close(self) -> None:
        """Close the client's connection pool."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _translate(self, exc: Exception, doing: str) -> SinkError:
        """A `SinkError` saying what went wrong in operator terms (never with secrets)."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            ConnectTimeoutError,
            HTTPClientError,
            NoCredentialsError,
            ParamValidationError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        where = f"{doing} {self._where}"
        if isinstance(exc, ClientError):
            return self._translate_client_error(exc, where)
        if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
            return SinkError(f"{where}: the endpoint did not answer in time ({type(exc).__name__})")
        if isinstance(exc, ConnectionError | HTTPClientError):
            return SinkError(f"{where}: endpoint unreachable ({type(exc).__name__})")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return SinkError(
                f"{where}: no usable AWS credentials; set aws_access_key_id and "
                "aws_secret_access_key or configure the AWS credential chain"
            )
        if isinstance(exc, ParamValidationError):
            return PermanentSinkError(f"{where}: request rejected by botocore: {exc}")
        assert isinstance(exc, BotoCoreError)
        return SinkError(f"{where}: {exc}")

    def _translate_client_error(self, exc: Any, where: str) -> SinkError:
        error: Mapping[str, Any] = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code") or status or "unknown")
        detail = str(error.get("Message") or "").strip()
        said = f" ({code}{': ' + detail if detail else ''})"
        if code in ("NoSuchBucket", "404"):
            return SinkError(f"{where}: the bucket does not exist{said}")
        if code in _CREDENTIAL_CODES:
            return SinkError(f"{where}: the credentials were rejected{said}")
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return SinkError(
                f"{where}: access denied; the credentials were rejected or lack permission "
                f"for this bucket{said}"
            )
        if code in ("PermanentRedirect", "301", "AuthorizationHeaderMalformed"):
            return SinkError(f"{where}: the bucket is in another region; set `region`{said}")
        if code in _PERMANENT_CODES:
            return PermanentSinkError(f"{where}: the object was refused{said}")
        return SinkError(f"{where}: S3 answered{said}")


def _boto_errors() -> tuple[type[Exception], ...]:
    """The exceptions botocore raises for a failed request (imported only when needed)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


@hookimpl
def register_sink_types(register: Callable[[type[Sink[Any]]], None]) -> None:
    """Register the s3 sink."""
    register(S3Sink)
