"""`docutray_watch.testing.check_source` passes the built-in sources and catches a broken one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from docutray_watch.sources.base import SourceDocument
from docutray_watch.sources.folder import FolderSource, FolderSourceConfig
from docutray_watch.sources.s3 import S3Source, S3SourceConfig
from docutray_watch.testing import check_source
from tests.s3kit import REGION, MotoServer

ALL = ["nominate once", "open", "keep", "sidecar", "delete", "move", "version"]


def _folder(tmp_path: Path, source_class: type[FolderSource] = FolderSource) -> Any:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "done").mkdir()
    config = FolderSourceConfig.model_validate({"type": "folder", "path": inbox, "polling": True})

    def put(name: str, content: bytes) -> None:
        # A rewrite is a new file (new inode), as most writers (scanners, rsync) do it.
        (inbox / f".{name}.tmp").write_bytes(content)
        (inbox / f".{name}.tmp").rename(inbox / name)

    return source_class(config, pipeline="check"), put, str(tmp_path / "done")


async def test_the_folder_source_passes(tmp_path: Path) -> None:
    """Every round trip of the folder source holds."""
    source, put, move_to = _folder(tmp_path)
    assert await check_source(source, put=put, move_to=move_to) == ALL


async def test_the_s3_source_passes(
    s3: Any, bucket: str, archive_bucket: str, moto: MotoServer
) -> None:
    """Every round trip of the s3 source holds against moto."""
    config = S3SourceConfig.model_validate(
        {"type": "s3", "bucket": bucket, "endpoint_url": moto.endpoint_url, "region": REGION}
    )

    def put(name: str, content: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=name, Body=content)

    source = S3Source(config, pipeline="check")
    assert await check_source(source, put=put, move_to=f"s3://{archive_bucket}/done/") == ALL


class _DeleteDoesNothing(FolderSource):
    async def delete(self, doc: SourceDocument) -> None:
        return None


async def test_a_broken_source_fails_naming_the_promise(tmp_path: Path) -> None:
    """A delete that deletes nothing is caught: open() after delete() still reads."""
    source, put, move_to = _folder(tmp_path, _DeleteDoesNothing)
    with pytest.raises(AssertionError, match=r"open\(\) after delete\(\) did not raise"):
        await check_source(source, put=put, move_to=move_to)
