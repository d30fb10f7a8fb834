"""boto3 clients of the s3 source, run in a bounded pool of threads, and their errors in words.

boto3 is synchronous; every call goes through `Calls.run`, which runs it in the source's own
pool (`max_threads` workers) so a slow bucket never blocks the event loop or another pipeline.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from docutray_watch.sources.base import SourceError
from docutray_watch.sources.s3.config import S3SourceConfig

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient

__all__ = ["Calls", "error_code", "redact_url", "translate"]

T = TypeVar("T")


class Calls:
    """The source's clients and thread pool."""

    def __init__(self, config: S3SourceConfig, pipeline: str) -> None:
        self.config = config
        self._pool = ThreadPoolExecutor(config.max_threads, thread_name_prefix=f"s3src-{pipeline}")
        self._s3: S3Client | None = None
        self._sqs: SQSClient | None = None

    async def run(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)` in the pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(function, *args, **kwargs))

    def _session(self) -> Any:
        import boto3

        return boto3.session.Session(profile_name=self.config.profile)

    def _botocore_config(self) -> Any:
        from botocore.config import Config as BotoConfig

        cfg = self.config
        options: dict[str, Any] = {
            "connect_timeout": cfg.connect_timeout,
            "read_timeout": cfg.read_timeout,
            "retries": {"max_attempts": cfg.max_attempts, "mode": "standard"},
            "max_pool_connections": cfg.max_threads,
        }
        if cfg.addressing_style is not None:
            options["s3"] = {"addressing_style": cfg.addressing_style}
        if cfg.checksums is not None:
            options["request_checksum_calculation"] = cfg.checksums
            options["response_checksum_validation"] = cfg.checksums
        return BotoConfig(**options)

    @property
    def s3(self) -> S3Client:
        """The S3 client (created on first use)."""
        if self._s3 is None:
            self._s3 = self._session().client(
                "s3",
                endpoint_url=self.config.endpoint_url,
                region_name=self.config.region,
                config=self._botocore_config(),
            )
        return self._s3

    @property
    def sqs(self) -> SQSClient:
        """The SQS client of `events` (same region and credentials)."""
        if self._sqs is None:
            assert self.config.events is not None
            url = self.config.events.sqs_queue_url
            # A queue on the same emulator/compatible store as the bucket: reach it there.
            endpoint = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
            self._sqs = self._session().client(
                "sqs",
                endpoint_url=endpoint,
                region_name=self.config.region,
                config=self._botocore_config(),
            )
        return self._sqs

    def close(self) -> None:
        """Close the clients and let the pool's threads end."""
        for client in (self._s3, self._sqs):
            if client is not None:
                client.close()
        self._s3 = self._sqs = None
        self._pool.shutdown(wait=False, cancel_futures=True)


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a ClientError (`PreconditionFailed`, `NoSuchKey`, `404`…)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    code = error.get("Code") or status
    return str(code) if code is not None else None


_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_CHANGED = frozenset({"PreconditionFailed", "412"})


def is_missing(exc: BaseException) -> bool:
    """The object (or bucket) does not exist."""
    return error_code(exc) in _MISSING


def is_changed(exc: BaseException) -> bool:
    """A condition on the ETag failed: the object is another version now."""
    return error_code(exc) in _CHANGED


def translate(exc: BaseException, doing: str) -> SourceError:
    """A `SourceError` in operator terms; never carries credentials or presigned URLs."""
    code = error_code(exc)
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return SourceError(f"{doing}: access denied; check the credentials' permissions ({code})")
    if code in ("NoSuchBucket",):
        return SourceError(f"{doing}: the bucket does not exist ({code})")
    if code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
        return SourceError(f"{doing}: the queue does not exist ({code})")
    if code is not None:
        return SourceError(f"{doing}: S3 answered {code}")
    name = type(exc).__name__
    if "Credentials" in name:
        return SourceError(f"{doing}: no usable AWS credentials in the boto3 chain ({name})")
    return SourceError(f"{doing}: {name}")


def redact_url(url: str) -> str:
    """A presigned URL without its query (signature, credential, token): safe to log."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


def boto_errors() -> tuple[type[Exception], ...]:
    """What botocore raises for a failed request (imported only when needed)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)
