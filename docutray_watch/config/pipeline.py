"""A pipeline (`pipelines[]`): its source, steps or routes, polling, the actions on the source
file, duplicates and its sinks."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from docutray_watch.config._base import _NAME_PATTERN, _absolute, _FieldError, _Model
from docutray_watch.config.routing import (
    _STEPS_EMPTY,
    _STEPS_MISSING,
    OTHERWISE,
    IdentifyConfig,
    RouteTarget,
    StepId,
    _check_route,
)
from docutray_watch.config.sources import FolderSourceConfig, WatchConfig
from docutray_watch.journal.states import IDENTIFY_STEP
from docutray_watch.sinks.base import ConfigPath, SinkConfig
from docutray_watch.sources.base import SourceConfig
from docutray_watch.templates import METADATA_FIELDS, TemplateError, check_template

DEFAULT_INCLUDE = ["*.pdf", "*.png", "*.jpg", "*.jpeg", "*.gif", "*.bmp", "*.webp"]
DEFAULT_IGNORE = [".*", "*.part", "*.tmp", "*.crdownload", "~*"]


_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")


class PollConfig(_Model):
    """How often to ask for a submitted document's status."""

    initial: float = Field(1.0, gt=0, description="First interval between status reads.")
    max: float = Field(5.0, gt=0, description="Longest interval between status reads.")
    timeout: float = Field(
        900.0, gt=0, description="Fail the document if a step has no result after this long."
    )

    @model_validator(mode="after")
    def _ordered(self) -> PollConfig:
        if self.max < self.initial:
            raise _FieldError(("max",), "max must be at least initial")
        return self


class ActionConfig(_Model):
    """What happens to the source file once the document is done."""

    action: Literal["move", "delete", "keep"] = Field(
        description="move it to `to`, delete it, or keep it where it is."
    )
    to: ConfigPath | None = Field(
        None,
        description="Destination folder (for move), or for a source that is not a folder its "
        "own form of destination, e.g. s3://bucket/prefix/.",
    )
    # A `to:` of the form scheme://… (validated by the pipeline's source type, not as a path).
    _target: str | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _destination(cls, data: Any, handler: Callable[[Any], ActionConfig]) -> ActionConfig:
        target = data.get("to") if isinstance(data, dict) else None
        if isinstance(target, str) and _URI.match(target):
            data = {**data, "to": None}
        else:
            target = None
        action = handler(data)
        action._target = target
        has_to = action.to is not None or target is not None
        if action.action == "move" and not has_to:
            raise _FieldError(("to",), "action 'move' needs a 'to' folder")
        if action.action != "move" and has_to:
            raise _FieldError(("to",), f"action {action.action!r} takes no 'to' folder")
        return action

    @property
    def target(self) -> str | None:
        """Where a move goes, as the source understands it: the folder as a string, or the
        URI (`s3://bucket/prefix/`) checked by the source type."""
        if self._target is not None:
            return self._target
        return str(self.to) if self.to is not None else None


class PipelineConfig(_Model):
    """One inbox folder, the steps each document goes through, and where results go."""

    name: str = Field(pattern=_NAME_PATTERN, description="Unique pipeline name.")
    # None for a pipeline whose `source` is not a folder (see `folder_watch`, `source_config`).
    watch: WatchConfig | None = Field(
        None, description="The inbox folder and readiness rules (or use `source`)."
    )
    source: SourceConfig | None = Field(
        None,
        description="Where documents come from, by type: {type: s3, bucket: …} or "
        "{type: folder, path: …} (the same as `watch`). Set `source` or `watch`.",
    )
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE),
        min_length=1,
        description="File name patterns to take (case-insensitive globs).",
    )
    ignore: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IGNORE),
        description="File name patterns to leave alone, e.g. temporary names of files in transfer.",
    )
    duplicates: Literal["skip", "reprocess"] = Field(
        "skip",
        description="A file whose content was already processed: skip it (archive as duplicate) "
        "or submit it again.",
    )
    identify: IdentifyConfig | None = Field(
        None,
        description="Identify each document's type first, then run its route's steps "
        "(`routes` replaces `steps`).",
    )
    steps: list[StepId] = Field(
        default_factory=list,
        description="DocuTray step IDs; each runs on every document (not with identify: "
        "routes replaces it).",
    )
    routes: dict[str, RouteTarget] | None = Field(
        None,
        description="With identify: document type code -> the step IDs to run; `otherwise` "
        "(fail, keep, or step IDs) for a type without a route or below min_confidence "
        "(default: fail).",
    )
    document_metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Metadata sent with each submission; string values may use {name}, "
        "{relative_dir}… placeholders.",
    )
    poll: PollConfig = Field(default_factory=PollConfig, description="Status polling.")
    on_success: ActionConfig = Field(
        default_factory=lambda: ActionConfig(action="keep"),
        description="Action once every result is delivered.",
    )
    on_failure: ActionConfig = Field(
        default_factory=lambda: ActionConfig(action="keep"),
        description="Action for a rejected or failed document; an <name>.error.json sidecar "
        "says why.",
    )
    deliver_errors: bool = Field(
        False, description="Also hand ERROR results to the sinks (they always get SUCCESS)."
    )
    on_change: Literal["retake", "fail"] = Field(
        "retake",
        description="A file that changes while it is processed (after its result arrived, "
        "before delivery or before the final action): take it again as a new version, or fail "
        "it (on_failure, with the reason in the sidecar). Results describing the old bytes are "
        "never delivered; ones delivered already are marked superseded.",
    )
    sinks: list[SinkConfig] = Field(min_length=1, description="Where results are delivered.")

    @model_validator(mode="before")
    @classmethod
    def _mark_missing_steps(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("identify") is None:
            if "steps" not in data:
                return {**data, "steps": _STEPS_MISSING}
            if data["steps"] == []:
                return {**data, "steps": _STEPS_EMPTY}
        return data

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_required(cls, steps: Any) -> Any:
        if steps is _STEPS_MISSING:
            raise PydanticCustomError("missing", "Field required")
        if steps is _STEPS_EMPTY:
            raise PydanticCustomError(
                "too_short", "List should have at least 1 item after validation, not 0"
            )
        return steps

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, steps: list[str]) -> list[str]:
        if len(set(steps)) != len(steps):
            raise ValueError("step IDs must be unique")
        if IDENTIFY_STEP in steps:
            raise ValueError(f"{IDENTIFY_STEP} is reserved for the identification")
        return steps

    @field_validator("routes", mode="before")
    @classmethod
    def _route_shapes(cls, routes: Any) -> Any:
        if isinstance(routes, dict):
            for key, target in routes.items():
                _check_route(str(key), target)
            if not [key for key in routes if key != OTHERWISE]:
                raise ValueError("routes needs at least one document type code besides otherwise")
        return routes

    @model_validator(mode="after")
    def _routing(self) -> PipelineConfig:
        if self.identify is None:
            if self.routes is not None:
                raise _FieldError(
                    ("routes",),
                    "routes need identify (e.g. identify: {min_confidence: 0.6}): without it "
                    "no document has a type to route on; or use steps",
                )
            return self
        if "steps" in self.model_fields_set:
            raise _FieldError(
                ("steps",),
                "routes replace steps when identify is set: put the step IDs under routes",
            )
        if self.routes is None:
            raise _FieldError(
                ("routes",),
                "Field required: identify needs routes (the steps to run for each document type)",
            )
        codes = self.route_codes
        if self.identify.options is None:
            self.identify.options = list(codes)
        else:
            for code in codes:
                if code not in self.identify.options:
                    raise _FieldError(
                        ("routes", code),
                        f"{code!r} is not in identify.options, so no document is ever "
                        "identified as it: add it there or remove this route",
                    )
        return self

    @property
    def route_codes(self) -> list[str]:
        """The document type codes that have a route (`otherwise` left out), in file order."""
        return [code for code in (self.routes or {}) if code != OTHERWISE]

    @property
    def initial_steps(self) -> list[str]:
        """The step rows a document gets when it is queued: only `@identify` for a pipeline
        that identifies (its route's steps are added once it is identified), else `steps`."""
        return [IDENTIFY_STEP] if self.identify is not None else list(self.steps)

    @field_validator("document_metadata")
    @classmethod
    def _metadata_templates(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        for key, value in metadata.items():
            if isinstance(value, str):
                try:
                    check_template(value, METADATA_FIELDS)
                except TemplateError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        return metadata

    @model_validator(mode="after")
    def _sink_ids(self) -> PipelineConfig:
        seen: dict[str, int] = {}
        for sink in self.sinks:
            if sink.id is None:
                count = seen.get(sink.type, 0) + 1
                seen[sink.type] = count
                sink.id = sink.type if count == 1 else f"{sink.type}-{count}"
        first: dict[str, int] = {}
        for index, sink in enumerate(self.sinks):
            assert sink.id is not None
            if sink.id in first:
                raise _FieldError(
                    ("sinks", index, "id"),
                    f"sink ids must be unique in a pipeline: {sink.id!r} is also the id of "
                    f"sinks[{first[sink.id]}]",
                )
            first[sink.id] = index
        return self

    @model_validator(mode="after")
    def _one_source(self) -> PipelineConfig:
        watch = self.folder_watch
        if watch is None and self.source is None:
            raise _FieldError(
                ("watch",), "Field required: a folder to watch, or a `source` (e.g. type: s3)"
            )
        if watch is not None and self.source is not None:
            raise _FieldError(("source",), "set source or watch, not both")
        if isinstance(self.source, FolderSourceConfig):
            self.watch = self.source.as_watch()
        return self

    @model_validator(mode="after")
    def _destinations(self) -> PipelineConfig:
        source = self.source
        for label, action in (("on_success", self.on_success), ("on_failure", self.on_failure)):
            uri = action._target
            if source is None or source.moves_to_folders:
                if uri is not None:
                    raise _FieldError((label, "to"), "a folder source moves files to a folder")
                continue
            if action.to is not None:
                raise _FieldError(
                    (label, "to"),
                    f"a {source.type} source cannot move documents to a local folder",
                )
            if uri is not None:
                try:
                    action._target = source.check_destination(uri)
                except ValueError as exc:
                    raise _FieldError((label, "to"), str(exc)) from None
        return self

    @property
    def folder_watch(self) -> WatchConfig | None:
        """The folder this pipeline watches; None when its source is not a folder."""
        return self.watch

    @property
    def shared(self) -> bool:
        """Cluster mode: any node may take this pipeline's documents (a folder declared
        `shared: true`, or a source that is not a local folder, such as a bucket)."""
        return self.watch is None or self.watch.shared

    @property
    def folder(self) -> WatchConfig:
        """The watched folder of a folder pipeline (what reads folders use; `folder_watch`
        says whether there is one)."""
        if self.watch is None:
            raise ValueError(f"pipeline {self.name!r} takes documents from a {self.source_type}")
        return self.watch

    @property
    def source_type(self) -> str:
        """`folder`, `s3`…: where this pipeline's documents come from."""
        return self.source.type if self.source is not None else "folder"

    def source_config(self) -> SourceConfig:
        """This pipeline's source options, whichever way they were spelt."""
        if self.source is not None:
            return self.source
        return FolderSourceConfig.from_watch(self.folder)

    @model_validator(mode="after")
    def _folders_apart(self) -> PipelineConfig:
        watch = self.folder_watch
        if watch is None:
            return self
        inbox = _absolute(watch.path)
        for label, action in (("on_success", self.on_success), ("on_failure", self.on_failure)):
            if action.to is None:
                continue
            target = _absolute(action.to)
            if target == inbox or (watch.recursive and inbox in target.parents):
                raise _FieldError(
                    (label, "to"),
                    f"{label}.to ({target}) must be outside the watched folder, "
                    "or processed files would be taken again",
                )
        return self
