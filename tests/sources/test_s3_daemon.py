"""`docutray-watch run` with an S3 pipeline beside a folder one: objects announced by S3 event
notifications (SQS, moto) while the daemon runs are processed once and moved; each message is
deleted once its document is journaled; the folder pipeline keeps working."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docutray_watch.emulator import EmulatorServer
from docutray_watch.samples import make_pdf
from tests.daemon.conftest import DaemonProcess, daemon_config, pipeline, wait_for
from tests.s3kit import MotoServer
from tests.sources.conftest import s3_source


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"].removeprefix(prefix) for o in found)


def _waiting(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def test_the_daemon_takes_objects_announced_by_events_and_files_beside_them(
    tmp_path: Path,
    s3: Any,
    sqs: Any,
    bucket: str,
    queue_url: str,
    moto: MotoServer,
    emulator: EmulatorServer,
) -> None:
    """Objects put while the daemon runs (the listing runs at start, then only hourly: the
    events bring them in) are each processed once and moved to done/, and the queue ends empty;
    a file dropped in the folder pipeline's inbox is processed too."""
    s3_pipeline = {
        "name": "scans",
        "source": s3_source(
            moto,
            bucket,
            prefix="in/",
            rescan_interval=3600,
            events={"sqs_queue_url": queue_url, "wait_seconds": 1},
        ),
        "steps": ["stp_one"],
        "poll": {"initial": 0.1, "max": 0.5, "timeout": 60},
        "on_success": {"action": "move", "to": f"s3://{bucket}/done/"},
        "on_failure": {"action": "move", "to": f"s3://{bucket}/failed/"},
        "sinks": [{"type": "filesystem", "path": str(tmp_path / "scans-out")}],
    }
    config = daemon_config(tmp_path, emulator, s3_pipeline, pipeline(tmp_path))
    daemon = DaemonProcess(tmp_path, config)
    try:
        daemon.start()
        objects = {f"e{i}.pdf": make_pdf([f"event {i}"]) for i in range(4)}
        for name, data in objects.items():
            s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=data)
        (tmp_path / "inbox" / "in" / "f.pdf").write_bytes(make_pdf(["file"]))
        wait_for(lambda: _keys(s3, bucket, "done/") == sorted(objects), timeout=60)
        wait_for(lambda: (tmp_path / "inbox" / "done" / "f.pdf").exists(), timeout=30)
        wait_for(lambda: _waiting(sqs, queue_url) == 0, timeout=30)
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert _keys(s3, bucket, "in/") == []
    records = [json.loads(p.read_text()) for p in (tmp_path / "scans-out").rglob("*.json")]
    assert sorted(r["document"]["name"] for r in records) == sorted(objects)
    assert emulator.stats().executions_created == len(objects) + 1
