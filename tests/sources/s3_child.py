"""Child processes of the s3 source tests (run with `python tests/sources/s3_child.py MODE JSON`).

`crash-move`: start a move and die by SIGKILL right after the copy, before the delete — what a
power cut at that moment leaves. `memory`: hash a large object through `Source.open`, then
upload it to the emulator through `SourceUpload`, and print how much that raised the peak RSS
over a warmed-up baseline (measured like benchmarks/upload_memory.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import signal
import sys
from typing import Any

from docutray_watch.sources.base import SourceDocument
from docutray_watch.sources.s3 import S3Source, S3SourceConfig


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def _die_before_delete(self: S3Source, bucket: str, key: str, etag: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def crash_move(args: dict[str, Any]) -> None:
    source = S3Source(S3SourceConfig.model_validate(args["config"]), pipeline="crash")
    S3Source._delete_object = _die_before_delete  # type: ignore[method-assign]
    await source.move(SourceDocument(**args["doc"]), args["destination"])
    print("not killed")


async def memory(args: dict[str, Any]) -> dict[str, Any]:
    from docutray_watch.client import AsyncClient
    from docutray_watch.sources.upload import SourceUpload

    source = S3Source(S3SourceConfig.model_validate(args["config"]), pipeline="memory")

    async def doc_of(key: str) -> SourceDocument:
        head = await source.head(key)
        assert head is not None
        return source.document(key, head["ETag"], head["ContentLength"])

    async def sha256_of(doc: SourceDocument) -> str:
        digest = hashlib.sha256()
        async for chunk in source.open(doc):
            digest.update(chunk)
        return digest.hexdigest()

    async with AsyncClient(api_key=args["api_key"], base_url=args["base_url"]) as client:
        warm = await doc_of(args["warmup_key"])
        await sha256_of(warm)
        upload = SourceUpload(source, warm, content_type="application/pdf")
        await client.steps.run_async(args["step_id"], file=upload)
        before = _peak_rss_mb()
        big = await doc_of(args["key"])
        sha256 = await sha256_of(big)
        upload = SourceUpload(source, big, content_type="application/pdf")
        status = await client.steps.run_async(args["step_id"], file=upload)
        after = _peak_rss_mb()
    await source.stop()
    return {"added_mb": after - before, "sha256": sha256, "status": status.status}


def main() -> None:
    mode, raw = sys.argv[1], sys.argv[2]
    args = json.loads(raw)
    if mode == "crash-move":
        asyncio.run(crash_move(args))
    else:
        print(json.dumps(asyncio.run(memory(args))))


if __name__ == "__main__":
    main()
