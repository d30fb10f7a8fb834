"""The built-in `s3` source: a bucket prefix as a pipeline's inbox (see `source.py`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from docutray_watch.hookspecs import hookimpl
from docutray_watch.sources.base import Source
from docutray_watch.sources.s3.client import redact_url
from docutray_watch.sources.s3.config import S3EventsConfig, S3SourceConfig, parse_s3_uri
from docutray_watch.sources.s3.source import S3Source

__all__ = ["S3EventsConfig", "S3Source", "S3SourceConfig", "parse_s3_uri", "redact_url"]


@hookimpl
def register_source_types(register: Callable[[type[Source[Any]]], None]) -> None:
    """Register the s3 source."""
    register(S3Source)
