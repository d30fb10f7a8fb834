"""`submit_as: url`: the emulator fetches the source's presigned URL from moto, so the bytes it
processes are the object's, and the daemon never uploads them."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from docutray_watch.emulator import EmulatorServer
from tests.sources.conftest import MakeSource, pdf


async def test_the_emulator_fetches_a_presigned_url_from_moto(
    s3: Any, bucket: str, make_source: MakeSource, emulator: EmulatorServer
) -> None:
    """The execution's document is the object (same sha256), fetched through the URL."""
    s3.put_object(Bucket=bucket, Key="in/scan.pdf", Body=pdf("by url"))
    source, nominated = await make_source(prefix="in/", submit_as="url", url_expiry=300)
    await source.discover()
    url = await source.presigned_url(nominated.docs[0])
    async with httpx.AsyncClient(base_url=emulator.base_url) as client:
        accepted = await client.post(
            "/api/steps-async/step_url",
            json={"image_url": url},
            headers={"Authorization": f"Bearer {emulator.api_key}"},
        )
    assert accepted.status_code == 200, accepted.text
    expected = hashlib.sha256(pdf("by url")).hexdigest()
    assert emulator.stats().submissions["step_url"] == {expected: 1}
