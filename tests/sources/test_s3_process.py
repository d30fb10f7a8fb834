"""The s3 source across processes: a kill -9 between copy and delete, and the memory a 95 MB
object costs when it is hashed and uploaded from the bucket."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from docutray_watch.emulator import EmulatorServer
from docutray_watch.sources.s3 import S3Source
from tests.s3kit import MotoServer
from tests.sources.conftest import MakeSource, pdf, s3_source

CHILD = Path(__file__).with_name("s3_child.py")
GOAL_MB = 16.0


def _child(
    mode: str, args: dict[str, Any], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), mode, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )


def _config(moto: MotoServer, bucket: str) -> dict[str, Any]:
    return s3_source(moto, bucket, prefix="in/")


def _keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


async def test_a_kill_between_copy_and_delete_is_completed_by_the_next_run(
    s3: Any,
    bucket: str,
    archive_bucket: str,
    moto: MotoServer,
    aws_env: dict[str, str],
    make_source: MakeSource,
) -> None:
    """The killed move leaves the object and its copy; a new source instance, given the
    journaled destination, deletes the source once: one object, no loss, no double."""
    s3.put_object(Bucket=bucket, Key="in/a.pdf", Body=pdf("crash"))
    source, nominated = await make_source(prefix="in/")
    await source.discover()
    (doc,) = nominated.docs
    destination = await source.plan_move(doc, f"s3://{archive_bucket}/done/")  # journaled
    fields = {f.name: getattr(doc, f.name) for f in dataclasses.fields(doc) if f.name != "ack"}
    args = {"config": _config(moto, bucket), "doc": fields, "destination": destination}

    killed = _child("crash-move", args, aws_env)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _keys(s3, bucket) == ["in/a.pdf"]
    assert _keys(s3, archive_bucket) == ["done/a.pdf"]
    restarted, _ = await make_source(prefix="in/")
    assert isinstance(restarted, S3Source)
    assert await restarted.move(doc, destination) == destination
    assert _keys(s3, bucket) == []
    assert _keys(s3, archive_bucket) == ["done/a.pdf"]
    assert s3.get_object(Bucket=archive_bucket, Key="done/a.pdf")["Body"].read() == pdf("crash")


def test_a_95_mb_object_is_hashed_and_uploaded_in_bounded_memory(
    s3: Any, bucket: str, moto: MotoServer, aws_env: dict[str, str], emulator: EmulatorServer
) -> None:
    """Streamed from the bucket for the hash and again for the upload to the emulator: the
    child's peak RSS grows by at most 16 MB."""
    import hashlib

    size = 95 * 1024 * 1024
    body = bytearray(size)
    body[:9] = b"%PDF-1.7\n"
    body[-7:] = b"\n%%EOF\n"
    s3.put_object(Bucket=bucket, Key="in/big.pdf", Body=bytes(body))
    expected = hashlib.sha256(body).hexdigest()
    del body
    s3.put_object(Bucket=bucket, Key="in/warm.pdf", Body=pdf("warm"))
    args = {
        "config": _config(moto, bucket),
        "key": "in/big.pdf",
        "warmup_key": "in/warm.pdf",
        "base_url": emulator.base_url,
        "api_key": emulator.api_key,
        "step_id": "step_memory",
    }

    done = _child("memory", args, aws_env)

    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sha256"] == expected
    assert result["status"] == "ENQUEUED"
    assert result["added_mb"] <= GOAL_MB, result
