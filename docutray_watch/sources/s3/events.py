"""S3 event notifications from an SQS queue: a hint that makes the s3 source look at a key.

An event decides nothing: the source HEADs the key and offers what it finds, exactly as a
listing would. A message is deleted only when nothing is left to wait for: the object is gone,
not ready, or its version was journaled already — or, for a version the event brought, once the
engine acknowledges the document (`SourceDocument.ack`, after the journal holds it). A message
not deleted comes back after its visibility timeout, and the periodic listing finds everything
anyway: a lost or repeated event delays nothing by more than `rescan_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Protocol
from urllib.parse import unquote_plus

import structlog

from docutray_watch.sources.base import SourceDocument, SourceError
from docutray_watch.sources.s3.client import Calls, boto_errors, translate
from docutray_watch.sources.s3.config import S3EventsConfig, S3SourceConfig

__all__ = ["SqsEvents", "keys_of_message"]

log = structlog.get_logger(__name__)

_ERROR_BACKOFF = 5.0


def keys_of_message(body: str, bucket: str) -> list[str] | None:
    """The object keys an S3 notification announces for `bucket`; None when it is not one
    (a test event, another service's message): such a message is simply deleted."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if isinstance(payload, dict) and "Message" in payload and "TopicArn" in payload:
        try:  # delivered through SNS: the notification is the message inside
            payload = json.loads(payload["Message"])
        except (TypeError, ValueError):
            return None
    records = payload.get("Records") if isinstance(payload, dict) else None
    if not isinstance(records, list):
        return None
    keys: list[str] = []
    for record in records:
        s3 = record.get("s3") if isinstance(record, dict) else None
        if not isinstance(s3, dict) or not str(record.get("eventName", "")).startswith(
            "ObjectCreated"
        ):
            continue
        if (s3.get("bucket") or {}).get("name") != bucket:
            continue
        key = (s3.get("object") or {}).get("key")
        if isinstance(key, str):
            keys.append(unquote_plus(key))  # keys arrive URL-encoded, spaces as '+'
    return keys


class Looker(Protocol):
    """What the reader needs of the s3 source (`S3Source`)."""

    pipeline: str
    config: S3SourceConfig
    calls: Calls

    def why_not(self, key: str, listed: dict[str, tuple[str, int]] | set[str]) -> str | None:
        """Why an object is not a document to take."""

    async def head(self, key: str) -> dict[str, Any] | None:
        """HEAD one object."""

    def offered(self, key: str, etag: str) -> bool:
        """Whether this version was offered already."""

    async def look_at(self, key: str, hint: str = "event") -> SourceDocument | None:
        """Offer one key now."""


class SqsEvents:
    """Reads the queue while the source runs; deletes messages once they are dealt with."""

    def __init__(self, source: Looker, config: S3EventsConfig) -> None:
        self.source = source
        self.config = config
        # (key, ETag) offered and not journaled yet -> receipt handles waiting for it.
        self._waiting: dict[tuple[str, str], list[str]] = {}
        self._journaled: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None
        self.received = 0  # messages handled, for tests and metrics

    def start(self) -> None:
        """Start the reading task."""
        self._task = asyncio.create_task(self._run(), name=f"sqs:{self.source.pipeline}")

    async def stop(self) -> None:
        """Stop reading; messages not deleted come back after their visibility timeout."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except SourceError as exc:
                log.warning("s3_events_failed", pipeline=self.source.pipeline, error=str(exc))
                await asyncio.sleep(_ERROR_BACKOFF)  # an outage: the listing still runs

    async def poll_once(self) -> int:
        """One ReceiveMessage call and the messages it brought; returns how many."""
        calls = self.source.calls
        try:
            answer = await calls.run(
                calls.sqs.receive_message,
                QueueUrl=self.config.sqs_queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=self.config.wait_seconds,
                VisibilityTimeout=self.config.visibility_timeout,
            )
        except boto_errors() as exc:
            raise translate(exc, "cannot read the event queue") from exc
        messages = answer.get("Messages", [])
        for message in messages:
            await self.handle(message.get("Body", ""), message["ReceiptHandle"])
            self.received += 1
        return len(messages)

    async def handle(self, body: str, receipt: str) -> None:
        """Look at what a message announces; delete it unless a document waits for the
        journal."""
        keys = keys_of_message(body, self.source.config.bucket)
        waiting = False
        marker = self.source.config.ready_marker
        for key in keys or []:
            if marker and key.endswith(marker):
                key = key[: -len(marker)]  # the marker arrived: look at its document
            if not key.startswith(self.source.config.prefix):
                continue
            if self.source.why_not(key, {key + (marker or "")}) is not None:
                continue  # a sidecar or a folder placeholder
            head = await self.source.head(key)
            if head is None:
                continue
            version = (key, head["ETag"])
            if version in self._journaled:
                continue  # taken already: nothing to wait for
            if version not in self._waiting:
                if self.source.offered(*version):
                    # Offered by a listing earlier: wait for its journal entry all the same.
                    self._waiting[version] = []
                elif await self.source.look_at(key) is None:
                    continue  # not ready, kept, or the engine is busy with it
                self._waiting.setdefault(version, [])
            self._waiting[version].append(receipt)
            waiting = True
        if not waiting:
            await self._delete(receipt)

    async def journaled(self, key: str, etag: str) -> None:
        """The engine journaled this version: delete the messages that announced it."""
        self._journaled.add((key, etag))
        for receipt in self._waiting.pop((key, etag), []):
            await self._delete(receipt)

    def prune(self, listed: dict[str, tuple[str, int]]) -> None:
        """Forget journaled versions no longer in the bucket (a long run stays bounded)."""
        self._journaled = {
            (key, etag) for key, etag in self._journaled if listed.get(key, ("",))[0] == etag
        }

    async def _delete(self, receipt: str) -> None:
        calls = self.source.calls
        try:
            await calls.run(
                calls.sqs.delete_message, QueueUrl=self.config.sqs_queue_url, ReceiptHandle=receipt
            )
        except boto_errors() as exc:
            # An expired receipt handle: the message comes back and is deleted then.
            log.warning(
                "s3_event_not_deleted",
                pipeline=self.source.pipeline,
                error=str(translate(exc, "cannot delete an event message")),
            )

    async def check(self) -> str:
        """For `validate`: the queue answers and these credentials may read it."""
        calls = self.source.calls
        try:
            await calls.run(
                calls.sqs.get_queue_attributes,
                QueueUrl=self.config.sqs_queue_url,
                AttributeNames=["ApproximateNumberOfMessages"],
            )
        except boto_errors() as exc:
            raise translate(exc, f"queue {self.config.sqs_queue_url}") from exc
        return f"queue {self.config.sqs_queue_url}: readable"

    def describe(self) -> dict[str, Any]:
        """What the reader holds (for status and tests)."""
        return {"waiting": len(self._waiting), "journaled": len(self._journaled)}
