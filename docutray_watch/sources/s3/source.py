"""The `s3` source: objects under a prefix of a bucket are a pipeline's inbox.

Discovery lists the prefix (ListObjectsV2, every page) and nominates each object whose
(ETag, size) it has not offered before; SQS event notifications, when configured, only make it
look at one key sooner (`events.py`). An object's version is its ETag: every read (`IfMatch`),
copy (`CopySourceIfMatch`) and delete (`IfMatch`, after a HEAD with `IfMatch`) is conditional on
the ETag seen at nomination, so an object overwritten meanwhile is never deleted unprocessed: the
operation raises `VersionChangedError` and the new version is nominated as a new document.

A move is a copy then a delete. The copy carries the source's ETag in its metadata
(`x-amz-meta-docutray-source-etag`), so a move cut short by a crash is recognised and finished:
`move(doc, destination)` with the destination the engine journaled from `plan_move` copies again
if the source is still there, and only deletes once the copy is verified by a HEAD.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import structlog

from docutray_watch.sources.base import (
    DocumentGoneError,
    DryRunEntry,
    NameRule,
    Nominate,
    Source,
    SourceDocument,
    SourceError,
    VersionChangedError,
)
from docutray_watch.sources.s3.client import (
    Calls,
    boto_errors,
    error_code,
    is_changed,
    is_missing,
    redact_url,
    translate,
)
from docutray_watch.sources.s3.config import S3SourceConfig, parse_s3_uri
from docutray_watch.sources.s3.events import SqsEvents

__all__ = ["CHUNK_SIZE", "SOURCE_ETAG_KEY", "S3Source", "sidecar_key"]

log = structlog.get_logger(__name__)

CHUNK_SIZE = 1024 * 1024
SIDECAR_SUFFIX = ".error.json"
MAX_KEY_BYTES = 1024
SOURCE_ETAG_KEY = "docutray-source-etag"
"""Metadata of a moved copy: the ETag of the object it was copied from."""


def _ns(when: Any) -> int:
    """A LastModified datetime in ns since the epoch (0 when the store gave none)."""
    return int(when.timestamp() * 1_000_000) * 1000 if when is not None else 0


def sidecar_key(key: str) -> str:
    """`<key>.error.json`; a key too long for S3's 1,024 bytes with the suffix is cut and
    tagged with a hash of the whole key, so every document keeps a sidecar of its own."""
    if len((key + SIDECAR_SUFFIX).encode()) <= MAX_KEY_BYTES:
        return key + SIDECAR_SUFFIX
    tag = "~" + hashlib.sha256(key.encode()).hexdigest()[:8]
    head = key.encode()[: MAX_KEY_BYTES - len(tag) - len(SIDECAR_SUFFIX)]
    return head.decode("utf-8", errors="ignore") + tag + SIDECAR_SUFFIX


class S3Source(Source[S3SourceConfig]):
    """Documents are the objects under `prefix` in `bucket`."""

    type: ClassVar[str] = "s3"
    description: ClassVar[str] = "Objects under a prefix of an S3 (or S3-compatible) bucket."
    config_model = S3SourceConfig

    def __init__(self, config: S3SourceConfig, *, pipeline: str) -> None:
        super().__init__(config, pipeline=pipeline)
        self.calls = Calls(config, pipeline)
        # key -> (ETag, size) last offered and taken up: not offered again while unchanged.
        self._offered: dict[str, tuple[str, int]] = {}
        self._kept: set[tuple[str, str]] = set()
        self._modified: dict[str, int] = {}  # key -> LastModified (ns) at the last listing
        self.events: SqsEvents | None = None
        if config.events is not None:
            self.events = SqsEvents(self, config.events)

    # -- identity ---------------------------------------------------------------------------

    def identity_of(self, key: str) -> str:
        """`s3://bucket/key`."""
        return f"s3://{self.config.bucket}/{key}"

    def key_of(self, identity: str) -> str:
        """The key of one of this source's identities."""
        bucket, _, key = identity.removeprefix("s3://").partition("/")
        if bucket != self.config.bucket:
            raise ValueError(f"{identity} is not in bucket {self.config.bucket}")
        return key

    def document(
        self, key: str, etag: str, size: int, hint: str = "listed", modified_ns: int | None = None
    ) -> SourceDocument:
        """The nominated document for one object version."""
        return SourceDocument(
            identity=self.identity_of(key),
            name=posixpath.basename(key),
            relative_path=key[len(self.config.prefix) :].lstrip("/"),
            size=size,
            version=etag,
            hint=hint,
            ack=self._ack_for(key, etag),
            modified_ns=modified_ns if modified_ns is not None else self._modified.get(key),
        )

    def _ack_for(self, key: str, etag: str) -> Any:
        async def ack() -> None:
            if self.events is not None:
                await self.events.journaled(key, etag)

        return ack

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, nominate: Nominate) -> None:
        """Remember the engine's callback and start reading events, if configured."""
        await super().start(nominate)
        if self.events is not None:
            self.events.start()

    async def stop(self) -> None:
        """Stop reading events and close the clients."""
        if self.events is not None:
            await self.events.stop()
        self.calls.close()

    # -- discovery ----------------------------------------------------------------------------

    def _list_all(self) -> dict[str, tuple[str, int]]:
        """key -> (ETag, size) of every object under the prefix (all pages; in a thread)."""
        found: dict[str, tuple[str, int]] = {}
        modified: dict[str, int] = {}
        paginator = self.calls.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.config.bucket, Prefix=self.config.prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = (item["ETag"], item["Size"])
                modified[item["Key"]] = _ns(item.get("LastModified"))
        self._modified = modified
        return found

    async def listing(self) -> dict[str, tuple[str, int]]:
        """The current listing; `SourceError` when the bucket cannot be listed."""
        try:
            return await self.calls.run(self._list_all)
        except boto_errors() as exc:
            raise translate(exc, f"cannot list {self.config.root}") from exc

    def why_not(self, key: str, listed: dict[str, tuple[str, int]] | set[str]) -> str | None:
        """Why an object is not a document to take (sidecar, marker, not ready), or None."""
        marker = self.config.ready_marker
        if key.endswith("/"):
            return "a folder placeholder"
        if key.endswith(SIDECAR_SUFFIX):
            return "error sidecar written by docutray-watch"
        if marker and key.endswith(marker):
            return f"ready marker ({marker})"
        if marker and key + marker not in listed:
            return f"waiting for its ready marker {posixpath.basename(key)}{marker}"
        return None

    async def discover(self) -> int:
        """List the prefix and offer every object version not offered before."""
        listed = await self.listing()
        for key in [k for k in self._offered if k not in listed]:
            del self._offered[key]  # gone: a new object under that key is new
        self._kept = {(key, etag) for key, etag in self._kept if key in listed}
        if self.events is not None:
            self.events.prune(listed)
        count = 0
        for key, (etag, size) in listed.items():
            if self._offered.get(key) == (etag, size) or self.why_not(key, listed):
                continue
            if self.offer(key, etag, size):
                count += 1
        return count

    def offer(self, key: str, etag: str, size: int, hint: str = "listed") -> bool:
        """Nominate one object version unless kept; remember it when the engine took it up."""
        if (key, etag) in self._kept:
            self._offered[key] = (etag, size)
            return False
        taken = self._nominate(self.document(key, etag, size, hint))
        if taken:
            self._offered[key] = (etag, size)
        return taken

    def offered(self, key: str, etag: str) -> bool:
        """True when this version was offered and taken up (or kept) already."""
        seen = self._offered.get(key)
        return (seen is not None and seen[0] == etag) or (key, etag) in self._kept

    async def head(self, key: str) -> dict[str, Any] | None:
        """HEAD one object; None when it does not exist."""
        try:
            answer: Any = await self.calls.run(
                self.calls.s3.head_object, Bucket=self.config.bucket, Key=key
            )
        except boto_errors() as exc:
            if is_missing(exc):
                return None
            raise translate(exc, f"cannot look at {self.identity_of(key)}") from exc
        return dict(answer)

    async def look_at(self, key: str, hint: str = "event") -> SourceDocument | None:
        """Offer one key now (an event, a changed version); the document when offered."""
        answer = await self.head(key)
        if answer is None:
            self._offered.pop(key, None)
            return None
        marker = self.config.ready_marker
        if marker and await self.head(key + marker) is None:
            return None
        etag, size = answer["ETag"], answer["ContentLength"]
        if self.offered(key, etag):
            return None
        doc = self.document(key, etag, size, hint, _ns(answer.get("LastModified")))
        if self._nominate(doc):
            self._offered[key] = (etag, size)
            return doc
        return None

    def forget(self, identity: str) -> None:
        """Offer it again at the next listing."""
        self._offered.pop(self.key_of(identity), None)

    def remember_kept(self, identity: str, version: str) -> None:
        """The journal says this version was kept: never offer it again."""
        self._kept.add((self.key_of(identity), version))

    async def _changed(self, doc: SourceDocument) -> VersionChangedError:
        """`doc` is not the current version: offer the new one, and say so."""
        key = self.key_of(doc.identity)
        self._offered.pop(key, None)
        await self.look_at(key, hint="changed")
        return VersionChangedError(f"{doc.identity} changed since it was taken ({doc.version})")

    # -- reading ------------------------------------------------------------------------------

    async def open(self, doc: SourceDocument) -> AsyncIterator[bytes]:
        """Stream the object version `doc.version` in 1 MiB chunks (GetObject with IfMatch)."""
        key = self.key_of(doc.identity)
        try:
            answer = await self.calls.run(
                self.calls.s3.get_object, Bucket=self.config.bucket, Key=key, IfMatch=doc.version
            )
        except boto_errors() as exc:
            if is_changed(exc):
                raise await self._changed(doc) from exc
            if is_missing(exc):
                raise DocumentGoneError(f"{doc.identity} is gone") from exc
            raise translate(exc, f"cannot read {doc.identity}") from exc
        body = answer["Body"]
        chunks = body.iter_chunks(CHUNK_SIZE)
        try:
            while chunk := await self.calls.run(next, chunks, b""):
                yield chunk
        except boto_errors() as exc:
            raise translate(exc, f"reading {doc.identity} failed") from exc
        finally:
            await self.calls.run(body.close)

    async def presigned_url(self, doc: SourceDocument) -> str:
        """A GET URL for `submit_as: url`, valid `url_expiry` seconds. Never log it whole: use
        `redact_url`."""
        url: str = await self.calls.run(
            self.calls.s3.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.config.bucket, "Key": self.key_of(doc.identity)},
            ExpiresIn=self.config.url_expiry,
        )
        log.debug("presigned_url", pipeline=self.pipeline, url=redact_url(url))
        return url

    # -- final actions ------------------------------------------------------------------------

    async def _require_version(self, doc: SourceDocument) -> dict[str, Any]:
        """HEAD with IfMatch: the object's headers if it is still `doc.version`."""
        key = self.key_of(doc.identity)
        try:
            answer: Any = await self.calls.run(
                self.calls.s3.head_object, Bucket=self.config.bucket, Key=key, IfMatch=doc.version
            )
        except boto_errors() as exc:
            if is_changed(exc):
                raise await self._changed(doc) from exc
            if is_missing(exc):
                raise DocumentGoneError(f"{doc.identity} is gone") from exc
            raise translate(exc, f"cannot look at {doc.identity}") from exc
        return dict(answer)

    async def _delete_object(self, bucket: str, key: str, etag: str) -> None:
        """DeleteObject, conditional on the ETag where the store supports it."""
        try:
            await self.calls.run(self.calls.s3.delete_object, Bucket=bucket, Key=key, IfMatch=etag)
        except boto_errors() as exc:
            if error_code(exc) not in ("NotImplemented", "501"):
                raise
            # A store without conditional deletes: the HEAD with IfMatch just before is the check.
            await self.calls.run(self.calls.s3.delete_object, Bucket=bucket, Key=key)

    async def _delete_version(self, doc: SourceDocument) -> None:
        """Delete the object if it is still `doc.version` (a HEAD just before, then IfMatch)."""
        await self._require_version(doc)
        try:
            await self._delete_object(self.config.bucket, self.key_of(doc.identity), doc.version)
        except boto_errors() as exc:
            if is_changed(exc):
                raise await self._changed(doc) from exc
            if not is_missing(exc):
                raise translate(exc, f"cannot delete {doc.identity}") from exc
        await self._delete_marker(doc)

    async def _delete_marker(self, doc: SourceDocument) -> None:
        if self.config.ready_marker:
            key = self.key_of(doc.identity) + self.config.ready_marker
            try:
                await self.calls.run(
                    self.calls.s3.delete_object, Bucket=self.config.bucket, Key=key
                )
            except boto_errors() as exc:
                raise translate(exc, f"cannot delete the ready marker of {doc.identity}") from exc

    async def delete(self, doc: SourceDocument) -> None:
        """Delete it, unless it changed (`VersionChangedError`) or is gone already."""
        try:
            await self._delete_version(doc)
        except DocumentGoneError:
            await self._delete_marker(doc)
        self._offered.pop(self.key_of(doc.identity), None)

    async def keep(self, doc: SourceDocument) -> None:
        """Leave it; this key + ETag is never offered again by this source."""
        key = self.key_of(doc.identity)
        self._kept.add((key, doc.version))
        self._offered[key] = (doc.version, doc.size)

    async def write_sidecar(
        self, doc: SourceDocument, details: dict[str, Any], at: str | None = None
    ) -> str:
        """Put `<key>.error.json` beside the object (or beside `at`, where it was moved)."""
        bucket, key = self._split(at) if at else (self.config.bucket, self.key_of(doc.identity))
        sidecar = sidecar_key(key)
        payload = json.dumps(details, indent=2, ensure_ascii=False, default=str) + "\n"
        try:
            await self.calls.run(
                self.calls.s3.put_object,
                Bucket=bucket,
                Key=sidecar,
                Body=payload.encode("utf-8"),
                ContentType="application/json",
            )
        except boto_errors() as exc:
            raise translate(exc, f"cannot write the sidecar of {doc.identity}") from exc
        return f"s3://{bucket}/{sidecar}"

    async def remove_sidecar(self, doc: SourceDocument) -> None:
        """Delete `<key>.error.json` if a previous attempt wrote one."""
        key = sidecar_key(self.key_of(doc.identity))
        try:
            await self.calls.run(self.calls.s3.delete_object, Bucket=self.config.bucket, Key=key)
        except boto_errors() as exc:
            raise translate(exc, f"cannot delete the sidecar of {doc.identity}") from exc

    async def current_version(self, doc: SourceDocument) -> str | None:
        """The object's ETag now (a HEAD), or None when it is gone."""
        answer = await self.head(self.key_of(doc.identity))
        return None if answer is None else str(answer["ETag"])

    @staticmethod
    def _split(identity: str) -> tuple[str, str]:
        bucket, _, key = identity.removeprefix("s3://").partition("/")
        return bucket, key

    async def _head_at(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            answer: Any = await self.calls.run(self.calls.s3.head_object, Bucket=bucket, Key=key)
        except boto_errors() as exc:
            if is_missing(exc):
                return None
            raise translate(exc, f"cannot look at s3://{bucket}/{key}") from exc
        return dict(answer)

    @staticmethod
    def _copy_of(answer: dict[str, Any] | None, doc: SourceDocument) -> bool:
        return answer is not None and answer.get("Metadata", {}).get(SOURCE_ETAG_KEY) == doc.version

    async def plan_move(self, doc: SourceDocument, to: str) -> str:
        """`to` + the object's path below the prefix; `name.1.pdf`… when another object is
        there. Journal the answer before calling `move`."""
        bucket, prefix = parse_s3_uri(to)
        relative = doc.relative_path
        stem, dot, ext = relative.rpartition(".")
        if not dot or "/" in ext:
            stem, ext = relative, ""
        counter = 0
        while True:
            tail = (f".{counter}" if counter else "") + (f".{ext}" if ext else "")
            key = prefix + stem + tail
            answer = await self._head_at(bucket, key)
            if answer is None or self._copy_of(answer, doc):
                return f"s3://{bucket}/{key}"
            counter += 1

    async def _copy(self, doc: SourceDocument, bucket: str, key: str, head: dict[str, Any]) -> None:
        """CopyObject conditional on the ETag; the copy records that ETag in its metadata."""
        try:
            await self.calls.run(
                self.calls.s3.copy_object,
                CopySource={"Bucket": self.config.bucket, "Key": self.key_of(doc.identity)},
                CopySourceIfMatch=doc.version,
                Bucket=bucket,
                Key=key,
                MetadataDirective="REPLACE",
                Metadata={**head.get("Metadata", {}), SOURCE_ETAG_KEY: doc.version},
                ContentType=head.get("ContentType") or "application/octet-stream",
            )
        except boto_errors() as exc:
            if is_changed(exc):
                raise await self._changed(doc) from exc
            raise translate(exc, f"cannot copy {doc.identity} to s3://{bucket}/{key}") from exc

    async def move(self, doc: SourceDocument, destination: str) -> str:
        """Copy to `destination`, verify the copy, delete the source; finishes a move a crash
        cut short (the copy is there, or the source is gone and the copy is ours)."""
        bucket, key = self._split(destination)
        try:
            head = await self._require_version(doc)
        except DocumentGoneError:
            if self._copy_of(await self._head_at(bucket, key), doc):
                await self._delete_marker(doc)
                return destination  # a previous run copied and deleted
            raise
        if not self._copy_of(await self._head_at(bucket, key), doc):
            await self._copy(doc, bucket, key, head)
            if not self._copy_of(await self._head_at(bucket, key), doc):
                raise SourceError(f"the copy of {doc.identity} at {destination} is not there")
        await self._delete_version(doc)
        self._offered.pop(self.key_of(doc.identity), None)
        return destination

    # -- validate and dry run -----------------------------------------------------------------

    async def check(self) -> list[str]:
        """The bucket answers and the prefix can be listed; the queue (if any) can be read."""
        cfg = self.config
        try:
            await self.calls.run(self.calls.s3.head_bucket, Bucket=cfg.bucket)
        except boto_errors() as exc:
            if is_missing(exc):
                raise SourceError(f"bucket {cfg.bucket}: does not exist") from exc
            raise translate(exc, f"bucket {cfg.bucket}") from exc
        lines = [f"bucket {cfg.bucket}: reachable"]
        try:
            await self.calls.run(
                self.calls.s3.list_objects_v2, Bucket=cfg.bucket, Prefix=cfg.prefix, MaxKeys=1
            )
        except boto_errors() as exc:
            raise translate(exc, f"cannot list {cfg.root}") from exc
        lines.append(f"{cfg.root}: objects can be listed")
        if self.events is not None:
            lines.append(await self.events.check())
        return lines

    async def dry_run_listing(self, rule: NameRule | None = None) -> list[DryRunEntry]:
        """Each object under the prefix: taken, or ignored and why."""
        listed = await self.listing()
        entries: list[DryRunEntry] = []
        for key, (etag, _size) in sorted(listed.items()):
            identity = self.identity_of(key)
            why = self.why_not(key, listed)
            if why is None and (key, etag) in self._kept:
                why = "kept in place earlier (this version)"
            relative = key[len(self.config.prefix) :].lstrip("/")
            if why is None and rule is not None:
                why = rule(relative)
            if why is None:
                entries.append(DryRunEntry(identity, "taken", "new object"))
            else:
                entries.append(DryRunEntry(identity, "ignored", why))
        return entries
