"""The s3 source finds documents by listing: every page, only what is new, ready markers, and
what `validate` and `process --dry-run` get from it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from docutray_watch.sources.base import SourceError
from tests.sources.conftest import MakeSource, pdf


class TestListing:
    async def test_every_page_of_a_large_prefix_is_listed(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """1,050 objects (two ListObjectsV2 pages) are all nominated, each once."""
        keys = [f"in/doc-{i:04d}.pdf" for i in range(1050)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=pdf(k)), keys))
        source, nominated = await make_source(prefix="in/")
        assert await source.discover() == 1050
        assert sorted(nominated.identities) == [f"s3://{bucket}/{k}" for k in keys]
        assert len(set(nominated.identities)) == 1050

    async def test_only_new_objects_are_nominated_again(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """A second listing nominates nothing; an overwritten object is a new version."""
        s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf("1"))
        s3.put_object(Bucket=bucket, Key="b.pdf", Body=pdf("b"))
        source, nominated = await make_source()
        assert await source.discover() == 2
        assert await source.discover() == 0
        s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf("2"))
        assert await source.discover() == 1
        first, second = (d for d in nominated.docs if d.name == "a.pdf")
        assert first.version != second.version
        assert second.version == s3.head_object(Bucket=bucket, Key="a.pdf")["ETag"]

    async def test_a_document_the_engine_did_not_take_is_offered_again(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """`nominate` returning False (the engine is busy with it) means: offer it next time."""
        s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf())
        source, nominated = await make_source()
        nominated.take = False
        assert await source.discover() == 0
        nominated.take = True
        assert await source.discover() == 1
        assert nominated.identities == [f"s3://{bucket}/a.pdf"] * 2

    async def test_document_fields(self, s3: Any, bucket: str, make_source: MakeSource) -> None:
        """Identity s3://bucket/key, the name and the path below the prefix, size and ETag."""
        body = pdf("fields")
        s3.put_object(Bucket=bucket, Key="in/2026/x y.pdf", Body=body)
        source, nominated = await make_source(prefix="in/")
        await source.discover()
        (doc,) = nominated.docs
        assert doc.identity == f"s3://{bucket}/in/2026/x y.pdf"
        assert (doc.name, doc.relative_path, doc.size) == ("x y.pdf", "2026/x y.pdf", len(body))
        assert doc.version.startswith('"')  # the ETag, as S3 spells it in conditions

    async def test_ready_marker(self, s3: Any, bucket: str, make_source: MakeSource) -> None:
        """With ready_marker, x.pdf waits for x.pdf.done; markers and sidecars are never
        documents."""
        s3.put_object(Bucket=bucket, Key="x.pdf", Body=pdf())
        s3.put_object(Bucket=bucket, Key="old.pdf.error.json", Body=b"{}")
        source, nominated = await make_source(ready_marker=".done")
        assert await source.discover() == 0
        s3.put_object(Bucket=bucket, Key="x.pdf.done", Body=b"")
        assert await source.discover() == 1
        assert nominated.identities == [f"s3://{bucket}/x.pdf"]

    async def test_a_kept_version_is_not_nominated_after_a_restart(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """`remember_kept` (from the journal at start) hides that key + ETag, not a new one."""
        s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf("1"))
        etag = s3.head_object(Bucket=bucket, Key="a.pdf")["ETag"]
        source, _nominated = await make_source()
        source.remember_kept(f"s3://{bucket}/a.pdf", etag)
        assert await source.discover() == 0
        s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf("2"))
        assert await source.discover() == 1


class TestValidateAndDryRun:
    async def test_check_says_what_it_checked(self, bucket: str, make_source: MakeSource) -> None:
        """`validate` gets one line for the bucket and one for the listing."""
        source, _ = await make_source(prefix="in/")
        assert await source.check() == [
            f"bucket {bucket}: reachable",
            f"s3://{bucket}/in/: objects can be listed",
        ]

    async def test_check_names_a_missing_bucket(self, make_source: MakeSource) -> None:
        """A bucket that does not exist is a SourceError naming it."""
        source, _ = await make_source(bucket="no-such-bucket-here")
        with pytest.raises(SourceError, match="bucket no-such-bucket-here: does not exist"):
            await source.check()

    async def test_dry_run_lists_taken_and_ignored_with_reasons(
        self, s3: Any, bucket: str, make_source: MakeSource
    ) -> None:
        """Each object: taken, or ignored with the rule (marker, sidecar, name rule)."""
        for key in ("a.pdf", "a.pdf.done", "b.pdf", "c.txt", "c.txt.done", "d.pdf.error.json"):
            s3.put_object(Bucket=bucket, Key=key, Body=pdf())
        source, nominated = await make_source(ready_marker=".done")

        def rule(relative: str) -> str | None:
            return None if relative.endswith(".pdf") else "matches no include pattern"

        listing = {
            e.identity.rsplit("/", 1)[1]: (e.decision, e.why)
            for e in await source.dry_run_listing(rule)
        }
        assert listing == {
            "a.pdf": ("taken", "new object"),
            "a.pdf.done": ("ignored", "ready marker (.done)"),
            "b.pdf": ("ignored", "waiting for its ready marker b.pdf.done"),
            "c.txt": ("ignored", "matches no include pattern"),
            "c.txt.done": ("ignored", "ready marker (.done)"),
            "d.pdf.error.json": ("ignored", "error sidecar written by docutray-watch"),
        }
        assert nominated.docs == []  # a dry run nominates nothing


class TestClientSettings:
    async def test_client_options_reach_botocore(
        self, bucket: str, make_source: MakeSource
    ) -> None:
        """checksums, addressing style, timeouts and the pool size configure the client."""
        source, _ = await make_source(
            checksums="when_required", addressing_style="path", read_timeout=7, max_threads=3
        )
        config = source.calls.s3.meta.config
        assert config.request_checksum_calculation == "when_required"
        assert config.response_checksum_validation == "when_required"
        assert config.s3 == {"addressing_style": "path"}
        assert (config.read_timeout, config.max_pool_connections) == (7, 3)
        assert source.calls._pool._max_workers == 3

    async def test_errors_never_show_credentials(
        self, make_source: MakeSource, aws_env: dict[str, str]
    ) -> None:
        """A failing request's message names the bucket, not the keys of the boto3 chain."""
        source, _ = await make_source(bucket="no-such-bucket-here")
        with pytest.raises(SourceError) as caught:
            await source.discover()
        assert "no-such-bucket-here" in str(caught.value)
        assert aws_env["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)
        assert aws_env["AWS_ACCESS_KEY_ID"] not in str(caught.value)
