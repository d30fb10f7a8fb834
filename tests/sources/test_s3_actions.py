"""The s3 source reads and acts only on the version it nominated: streamed conditional reads,
move (copy, verify, delete), delete, keep, the failed sidecar, and presigned URLs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from docutray_watch.sources.base import DocumentGoneError, SourceDocument, VersionChangedError
from docutray_watch.sources.s3 import S3Source, redact_url
from docutray_watch.sources.s3.source import SOURCE_ETAG_KEY
from tests.sources.conftest import MakeSource, Nominations, pdf


async def _read(source: S3Source, doc: SourceDocument) -> bytes:
    return b"".join([chunk async for chunk in source.open(doc)])


async def _one(
    s3: Any, bucket: str, make_source: MakeSource, key: str = "in/a.pdf", **options: Any
) -> tuple[S3Source, Nominations, SourceDocument]:
    s3.put_object(Bucket=bucket, Key=key, Body=pdf(key), Metadata={"scanner": "s1"})
    source, nominated = await make_source(prefix="in/", **options)
    await source.discover()
    return source, nominated, nominated.docs[-1]


def _keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


class TestReading:
    async def test_open_streams_the_object(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """The chunks are the object's bytes, 1 MiB at most each."""
        body = b"%PDF-1.7\n" + bytes(range(256)) * 10_000  # 2.5 MB: three chunks
        s3.put_object(Bucket=bucket, Key="big.pdf", Body=body)
        source, nominated = await make_source()
        await source.discover()
        chunks = [chunk async for chunk in source.open(nominated.docs[0])]
        assert b"".join(chunks) == body
        assert len(chunks) >= 3
        assert max(map(len, chunks)) <= 1024 * 1024

    async def test_an_object_overwritten_after_listing_is_not_read_and_is_renominated(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """GetObject with IfMatch fails cleanly; the new version is nominated as a new one."""
        source, nominated, old = await _one(s3, bucket, make_source)
        s3.put_object(Bucket=bucket, Key="in/a.pdf", Body=pdf("new"))
        with pytest.raises(VersionChangedError):
            await _read(source, old)
        new = nominated.docs[-1]
        assert (new.identity, new.hint) == (old.identity, "changed")
        assert new.version == s3.head_object(Bucket=bucket, Key="in/a.pdf")["ETag"] != old.version
        assert await _read(source, new) == pdf("new")

    async def test_a_deleted_object_is_gone(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """Reading an object deleted since it was listed raises DocumentGoneError."""
        source, _, doc = await _one(s3, bucket, make_source)
        s3.delete_object(Bucket=bucket, Key="in/a.pdf")
        with pytest.raises(DocumentGoneError):
            await _read(source, doc)


class TestFinalActions:
    async def test_move_copies_verifies_and_deletes(
        self, s3: Any, bucket: str, archive_bucket: str, make_source: MakeSource
    ) -> None:
        """The object lands under `to` with its metadata and content type; the source is gone."""
        source, _, doc = await _one(s3, bucket, make_source, key="in/2026/a.pdf")
        destination = await source.plan_move(doc, f"s3://{archive_bucket}/done/")
        assert destination == f"s3://{archive_bucket}/done/2026/a.pdf"
        assert await source.move(doc, destination) == destination
        assert _keys(s3, bucket) == []
        moved = s3.get_object(Bucket=archive_bucket, Key="done/2026/a.pdf")
        assert moved["Body"].read() == pdf("in/2026/a.pdf")
        assert moved["Metadata"] == {"scanner": "s1", SOURCE_ETAG_KEY: doc.version}

    async def test_move_never_overwrites_another_object(
        self, s3: Any, bucket: str, archive_bucket: str, make_source: MakeSource
    ) -> None:
        """A different object at the destination makes `plan_move` pick `a.1.pdf`."""
        s3.put_object(Bucket=archive_bucket, Key="done/a.pdf", Body=b"someone else's")
        source, _, doc = await _one(s3, bucket, make_source)
        destination = await source.plan_move(doc, f"s3://{archive_bucket}/done/")
        assert destination == f"s3://{archive_bucket}/done/a.1.pdf"
        await source.move(doc, destination)
        assert s3.get_object(Bucket=archive_bucket, Key="done/a.pdf")["Body"].read() == (
            b"someone else's"
        )

    async def test_move_of_an_overwritten_object_does_nothing(
        self, s3: Any, bucket: str, archive_bucket: str, make_source: MakeSource
    ) -> None:
        """The new version is neither copied nor deleted; it is nominated instead."""
        source, nominated, doc = await _one(s3, bucket, make_source)
        destination = await source.plan_move(doc, f"s3://{archive_bucket}/done/")
        s3.put_object(Bucket=bucket, Key="in/a.pdf", Body=pdf("new"))
        with pytest.raises(VersionChangedError):
            await source.move(doc, destination)
        assert _keys(s3, archive_bucket) == []
        assert s3.get_object(Bucket=bucket, Key="in/a.pdf")["Body"].read() == pdf("new")
        assert nominated.docs[-1].version != doc.version

    async def test_move_again_after_it_completed_is_a_no_op(
        self, s3: Any, bucket: str, archive_bucket: str, make_source: MakeSource
    ) -> None:
        """A journaled move run twice (crash after the delete) finds the copy and succeeds."""
        source, _, doc = await _one(s3, bucket, make_source)
        destination = await source.plan_move(doc, f"s3://{archive_bucket}/done/")
        await source.move(doc, destination)
        assert await source.move(doc, destination) == destination
        assert _keys(s3, archive_bucket) == ["done/a.pdf"]

    async def test_delete_removes_the_object_and_its_marker(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """Delete takes the ready marker with the document."""
        s3.put_object(Bucket=bucket, Key="in/a.pdf.done", Body=b"")
        source, _, doc = await _one(s3, bucket, make_source, ready_marker=".done")
        await source.delete(doc)
        assert _keys(s3, bucket) == []

    async def test_delete_of_an_overwritten_object_keeps_it(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """An object overwritten since intake is never deleted unprocessed."""
        source, _, doc = await _one(s3, bucket, make_source)
        s3.put_object(Bucket=bucket, Key="in/a.pdf", Body=pdf("new"))
        with pytest.raises(VersionChangedError):
            await source.delete(doc)
        assert _keys(s3, bucket) == ["in/a.pdf"]

    async def test_keep_remembers_key_and_etag(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """A kept object is not nominated again, even after the source forgets its listing;
        a new version under the same key is."""
        source, _nominated, doc = await _one(s3, bucket, make_source)
        await source.keep(doc)
        source.forget(doc.identity)
        assert await source.discover() == 0
        s3.put_object(Bucket=bucket, Key="in/a.pdf", Body=pdf("v2"))
        assert await source.discover() == 1

    async def test_failed_sidecar_is_an_object_beside_it(
        self, s3: Any, bucket: str, archive_bucket: str, make_source: MakeSource
    ) -> None:
        """`<key>.error.json` beside the object, or beside where a move puts it."""
        source, _, doc = await _one(s3, bucket, make_source)
        where = await source.write_sidecar(doc, {"reason": "rejected"})
        assert where == f"s3://{bucket}/in/a.pdf.error.json"
        body = s3.get_object(Bucket=bucket, Key="in/a.pdf.error.json")["Body"].read()
        assert json.loads(body) == {"reason": "rejected"}
        destination = await source.plan_move(doc, f"s3://{archive_bucket}/failed/")
        await source.write_sidecar(doc, {"reason": "rejected"}, at=destination)
        await source.move(doc, destination)
        assert _keys(s3, archive_bucket) == ["failed/a.pdf", "failed/a.pdf.error.json"]
        assert await source.discover() == 0  # its own sidecar is never a document


class TestSidecarKey:
    def test_a_key_too_long_for_the_suffix_gets_a_tagged_sidecar(self) -> None:
        """Within S3's 1,024 bytes, unique per key, still ending in .error.json."""
        from docutray_watch.sources.s3.source import sidecar_key

        assert sidecar_key("in/a.pdf") == "in/a.pdf.error.json"
        long_a, long_b = "é" * 510 + "a.pdf", "é" * 510 + "b.pdf"
        sidecars = {sidecar_key(long_a), sidecar_key(long_b)}
        assert len(sidecars) == 2
        for sidecar in sidecars:
            assert len(sidecar.encode()) <= 1024
            assert sidecar.endswith(".error.json")


class TestPresignedUrl:
    async def test_presigned_url_reads_the_object(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """The URL fetches the object without credentials; its redacted form hides the query."""
        import httpx

        source, _, doc = await _one(s3, bucket, make_source, url_expiry=120)
        url = await source.presigned_url(doc)
        assert httpx.get(url).content == pdf("in/a.pdf")
        shown = redact_url(url)
        assert shown.endswith("/in/a.pdf?…")
        assert "Signature" not in shown
        assert "AKIA" not in shown
