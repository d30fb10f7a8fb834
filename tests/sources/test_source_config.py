"""`source:` beside `watch:` in a pipeline: one of the two, each source type validating its own
block and its own form of move destination, errors naming the YAML path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from docutray_watch.config import ConfigError, parse_config
from docutray_watch.sources.folder import FolderSourceConfig
from docutray_watch.sources.s3 import S3SourceConfig


def _config(tmp_path: Path, **pipeline: Any) -> dict[str, Any]:
    block = {
        "name": "p",
        "steps": ["s"],
        "sinks": [{"type": "filesystem", "path": str(tmp_path / "out")}],
        **pipeline,
    }
    return {"state_dir": str(tmp_path / "state"), "pipelines": [block]}


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, need_secrets=False)
    return caught.value.lines()


S3 = {"type": "s3", "bucket": "scanner-drop", "prefix": "in/"}


def test_an_s3_source_with_an_s3_destination(tmp_path: Path) -> None:
    """The s3 block is validated by the s3 model; `to:` stays an s3:// URI, not a path."""
    config = parse_config(
        _config(
            tmp_path,
            source=S3,
            on_success={"action": "move", "to": "s3://archive-bucket/done"},
        ),
        need_secrets=False,
    )
    pipeline = config.pipelines[0]
    assert isinstance(pipeline.source, S3SourceConfig)
    assert pipeline.folder_watch is None
    assert pipeline.on_success.to is None
    assert pipeline.on_success.target == "s3://archive-bucket/done/"
    assert pipeline.source_config() is pipeline.source


def test_a_folder_source_is_the_same_as_watch(tmp_path: Path) -> None:
    """`source: {type: folder}` fills `watch` too (what the engine reads today)."""
    inbox = tmp_path / "inbox"
    config = parse_config(
        _config(tmp_path, source={"type": "folder", "path": str(inbox), "settle": 2}),
        need_secrets=False,
    )
    pipeline = config.pipelines[0]
    assert isinstance(pipeline.source, FolderSourceConfig)
    assert (pipeline.watch.path, pipeline.watch.settle) == (inbox, 2)


def test_a_watch_pipeline_has_a_folder_source_config(tmp_path: Path) -> None:
    """`source_config()` of a `watch:` pipeline is the folder source's options."""
    config = parse_config(
        _config(tmp_path, watch={"path": str(tmp_path / "in")}), need_secrets=False
    )
    source = config.pipelines[0].source_config()
    assert isinstance(source, FolderSourceConfig)
    assert source.type == "folder"
    assert source.path == tmp_path / "in"


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        (
            {"source": S3, "watch": {"path": "/x"}},
            "pipelines[0].source: set source or watch, not both",
        ),
        (
            {"source": {**S3, "bucket": "Bad_Bucket"}},
            "pipelines[0].source.bucket: String should match pattern",
        ),
        (
            {"source": {**S3, "colour": "red"}},
            "pipelines[0].source.colour: unknown key",
        ),
        (
            {"source": S3, "on_success": {"action": "move", "to": "/srv/done"}},
            "pipelines[0].on_success.to: a s3 source cannot move documents to a local folder",
        ),
        (
            {"source": S3, "on_failure": {"action": "move", "to": "s3://scanner-drop/in/failed/"}},
            "pipelines[0].on_failure.to: s3://scanner-drop/in/failed/ is inside the watched prefix",
        ),
        (
            {"source": S3, "on_failure": {"action": "move", "to": "s3://X/failed/"}},
            "pipelines[0].on_failure.to: expected s3://bucket/prefix/",
        ),
        (
            {"watch": {"path": "/x"}, "on_success": {"action": "move", "to": "s3://b-1/done/"}},
            "pipelines[0].on_success.to: a folder source moves files to a folder",
        ),
        (
            {"source": {**S3, "events": {"sqs_queue_url": "not a url"}}},
            "pipelines[0].source.events.sqs_queue_url: must be the queue's https:// URL",
        ),
        (
            {"source": {"type": "ftp"}},
            "pipelines[0].source.type: unknown source type 'ftp' (known: 'folder', 's3')",
        ),
        ({"source": {"bucket": "b-1"}}, "pipelines[0].source.type: Field required"),
        (
            {
                "source": {"type": "folder", "path": "/srv/in"},
                "on_success": {"action": "move", "to": "/srv/in"},
            },
            "pipelines[0].on_success.to: on_success.to (/srv/in) must be outside the watched",
        ),
    ],
    ids=[
        "both",
        "bad-bucket",
        "unknown-key",
        "local-to",
        "inside-prefix",
        "bad-uri",
        "folder-uri",
        "bad-queue",
        "unknown-type",
        "no-type",
        "folder-source-to-inside",
    ],
)
def test_errors_name_the_yaml_path(tmp_path: Path, pipeline: dict[str, Any], expected: str) -> None:
    """Each mistake is one line naming the key at fault."""
    lines = _problems(_config(tmp_path, **pipeline))
    assert any(line.startswith(f"<config>: {expected}") for line in lines), lines
