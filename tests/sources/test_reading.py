"""`inspect_document`: a source's document hashed, sized and sniffed in one streamed pass, the
facts the journal and the intake checks take."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.intake import rejection_for
from docutray_watch.sources.base import VersionChangedError
from docutray_watch.sources.folder import FolderSource, FolderSourceConfig
from docutray_watch.sources.reading import inspect_document
from tests.sources.conftest import MakeSource, Nominations, pdf


async def test_an_object_is_hashed_and_sniffed(
    s3: Any, bucket: str, make_source: MakeSource
) -> None:
    """The SHA-256 and size of the object's bytes; a PDF passes the intake checks."""
    body = pdf("facts") * 30_000  # 3.4 MB: several chunks
    s3.put_object(Bucket=bucket, Key="a.pdf", Body=body)
    source, nominated = await make_source()
    await source.discover()
    facts = await inspect_document(source, nominated.docs[0])
    assert (facts.sha256, facts.size) == (hashlib.sha256(body).hexdigest(), len(body))
    assert facts.content_type == "application/pdf"
    assert rejection_for(facts) is None


async def test_an_object_that_is_not_a_document_is_rejected(
    s3: Any, bucket: str, make_source: MakeSource
) -> None:
    """No supported type: the intake check says so, as for a file."""
    s3.put_object(Bucket=bucket, Key="a.pdf", Body=b"just some text")
    source, nominated = await make_source()
    await source.discover()
    facts = await inspect_document(source, nominated.docs[0])
    reason = rejection_for(facts)
    assert reason is not None
    assert reason.startswith("unsupported file type")


async def test_an_overwritten_object_is_not_inspected(
    s3: Any, bucket: str, make_source: MakeSource
) -> None:
    """Another version since it was listed: VersionChangedError, nothing hashed."""
    s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf("1"))
    source, nominated = await make_source()
    await source.discover()
    s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf("2"))
    with pytest.raises(VersionChangedError):
        await inspect_document(source, nominated.docs[0])


async def test_a_document_over_the_limit_is_too_large_without_reading_it_all(
    tmp_path: Path,
) -> None:
    """Reading stops past the service's limit; the facts carry the listed size."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    big = inbox / "big.pdf"
    with big.open("wb") as handle:
        handle.write(b"%PDF-1.7\n")
        handle.truncate(101 * 1024 * 1024)  # sparse
    source = FolderSource(
        FolderSourceConfig.model_validate({"type": "folder", "path": inbox}), pipeline="p"
    )
    nominated = Nominations()
    source._nominate = nominated
    await source.discover()
    facts = await inspect_document(source, nominated.docs[0])
    assert facts.size == 101 * 1024 * 1024
    reason = rejection_for(facts)
    assert reason is not None
    assert reason.startswith("too large")
