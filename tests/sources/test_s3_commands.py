"""`validate` and `process --dry-run` for a pipeline whose source is an s3 bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docutray_watch.config import parse_config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.runner import dry_run_report, validate_online
from tests.s3kit import MotoServer
from tests.sources.conftest import pdf, s3_source


def _config(tmp_path: Path, moto: MotoServer, bucket: str, **source: Any) -> Any:
    data = {
        "state_dir": str(tmp_path / "state"),
        "api": {"api_key": "k", "base_url": "http://127.0.0.1:9"},
        "pipelines": [
            {
                "name": "scans",
                "source": s3_source(moto, bucket, **{"prefix": "in/", **source}),
                "steps": ["s"],
                "sinks": [{"type": "filesystem", "path": str(tmp_path / "out")}],
            }
        ],
    }
    return parse_config(data, need_secrets=False)


def _use(config: Any, emulator: EmulatorServer) -> Any:
    from pydantic import SecretStr

    config.api.base_url = emulator.base_url
    config.api.api_key = SecretStr(emulator.api_key)
    return config


def test_dry_run_lists_what_the_bucket_holds(
    tmp_path: Path, s3: Any, bucket: str, moto: MotoServer
) -> None:
    """Each object: take, or ignore with the reason (the pipeline's name rules included)."""
    s3.put_object(Bucket=bucket, Key="in/a.pdf", Body=pdf())
    s3.put_object(Bucket=bucket, Key="in/notes.txt", Body=b"x")
    lines: list[str] = []
    assert dry_run_report(_config(tmp_path, moto, bucket), echo=lines.append) == 0
    assert lines == [
        f"pipeline scans (s3://{bucket}/in/):",
        f"  take    s3://{bucket}/in/a.pdf",
        f"  ignore  s3://{bucket}/in/notes.txt: matches no include pattern",
        "  → would take 1, ignore 1",
    ]


async def test_validate_checks_the_bucket(
    tmp_path: Path, bucket: str, moto: MotoServer, emulator: EmulatorServer
) -> None:
    """One line each for the bucket and the listing; a missing bucket fails validate."""
    config = _use(_config(tmp_path, moto, bucket), emulator)
    lines: list[str] = []
    assert await validate_online(config, echo=lines.append) == 0
    assert lines[:2] == [
        f"[scans] source: bucket {bucket}: reachable",
        f"[scans] source: s3://{bucket}/in/: objects can be listed",
    ]
    lines.clear()
    broken = _use(_config(tmp_path, moto, "no-such-bucket-x"), emulator)
    assert await validate_online(broken, echo=lines.append) == 78
    assert lines[0] == "[scans] source: FAILED: bucket no-such-bucket-x: does not exist"
