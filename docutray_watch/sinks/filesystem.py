"""The `filesystem` sink: one JSON file per (document, step) under a root folder."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from docutray_watch.fsutil import atomic_write_bytes, is_within
from docutray_watch.hookspecs import hookimpl
from docutray_watch.records import ResultRecord
from docutray_watch.sinks.base import (
    ConfigPath,
    PermanentSinkError,
    Receipt,
    Sink,
    SinkConfig,
    SinkError,
)
from docutray_watch.templates import RECORD_FIELDS, TemplateError, check_template, record_context
from docutray_watch.templates import render_relative_path as _render

__all__ = ["FilesystemConfig", "FilesystemSink"]

DEFAULT_NAME = "{relative_dir}/{stem}.{short_sha}.{step_id}.json"


class FilesystemConfig(SinkConfig):
    """Options of the filesystem sink."""

    path: ConfigPath = Field(description="Root folder of the result files (created if missing).")
    name: str = Field(
        DEFAULT_NAME,
        description="File name template under `path`; placeholders: "
        + ", ".join(f"{{{f}}}" for f in sorted(RECORD_FIELDS))
        + ". Every component is sanitised; nothing can escape `path`.",
    )
    indent: int | None = Field(2, ge=0, le=8, description="JSON indentation (null: one line).")
    fsync: bool = Field(True, description="fsync each file and its folder (durable on power loss).")

    @field_validator("name")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        try:
            check_template(value, RECORD_FIELDS)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return value


class FilesystemSink(Sink[FilesystemConfig]):
    """Writes each result record as a JSON file, atomically (temp file, fsync, rename)."""

    type = "filesystem"
    description = "Write one JSON file per document and step under a folder."
    config_model = FilesystemConfig

    @property
    def root(self) -> Path:
        """The configured root folder."""
        return Path(self.config.path)

    def open(self) -> None:
        """Create the root folder if needed."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create {self.root}: {exc.strerror}") from exc

    def check(self) -> None:
        """The root exists (or can be made) and a file can be written there."""
        self.open()
        probe = self.root / f".docutray-watch-check-{uuid.uuid4().hex}"
        try:
            atomic_write_bytes(probe, b"ok", fsync=False)
            probe.unlink()
        except OSError as exc:
            raise SinkError(f"cannot write to {self.root}: {exc.strerror}") from exc

    def target_for(self, record: ResultRecord) -> Path:
        """Where `record` is written (before clash handling)."""
        return self.root / _render(self.config.name, record_context(record))

    def deliver(self, record: ResultRecord) -> Receipt:
        """Write the record; the same record delivered twice lands in the same file."""
        target = self.target_for(record)
        target = self._avoid_foreign_file(target, record)
        if not is_within(target.parent, self.root):
            # Checked before mkdir too, which would otherwise create folders through the link.
            raise PermanentSinkError(f"{target} would be written outside {self.root}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create {target.parent}: {exc.strerror}") from exc
        if not is_within(target.parent, self.root):
            # A symlinked folder inside the root must not redirect results elsewhere.
            raise PermanentSinkError(f"{target} would be written outside {self.root}")
        payload = json.dumps(record.to_dict(), indent=self.config.indent, ensure_ascii=False)
        try:
            atomic_write_bytes(target, payload.encode("utf-8") + b"\n", fsync=self.config.fsync)
        except OSError as exc:
            raise SinkError(f"cannot write {target}: {exc.strerror or exc}") from exc
        return str(target)

    def _avoid_foreign_file(self, target: Path, record: ResultRecord) -> Path:
        """If `target` holds another document's result, use a name that includes the full hash."""
        if not _holds_other_record(target, record):
            return target
        stem, dot, ext = target.name.rpartition(".")
        base = stem if dot else target.name
        suffix = f".{ext}" if dot else ""
        return target.with_name(f"{base}.{record.document.sha256}{suffix}")


def _holds_other_record(path: Path, record: ResultRecord) -> bool:
    try:
        with open(path, "rb") as handle:
            existing = json.load(handle)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True  # something we did not write: never overwrite it
    if not isinstance(existing, dict):
        return True
    document = existing.get("document") or {}
    key = (existing.get("pipeline"), document.get("sha256"), existing.get("step_id"))
    return key != record.key


@hookimpl
def register_sink_types(register: Callable[[type[Sink[Any]]], None]) -> None:
    """Register the filesystem sink."""
    register(FilesystemSink)
