"""The YAML configuration: typed models, `${ENV}` expansion, and errors that name the YAML path.

`load_config(path)` reads the file, expands `${VAR}` / `${VAR:-default}` in string values,
validates it against models that reject unknown keys, resolves relative paths against the config
file's folder and reads `api.api_key_file`. Any problem raises `ConfigError`, whose lines look like
`config.yaml:12:7: pipelines[0].sinks[1].bucket: Field required` — the CLI prints them and exits 78
(EX_CONFIG). Sink blocks are validated by the model of the sink type that a plugin registered:
the caller passes those models as `SinkTypes` (the CLI builds them once per command from the
plugin manager, see `docutray_watch.plugins.Plugins.config_sink_types`); without them only the
built-in sinks are known. This module never imports the plugin machinery.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar, Union, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from docutray_watch.journal.states import IDENTIFY_STEP
from docutray_watch.sinks import BUILTIN_SINK_MODULES
from docutray_watch.sinks.base import ConfigPath, Sink, SinkConfig
from docutray_watch.sources import BUILTIN_SOURCE_MODULES
from docutray_watch.sources.base import Source, SourceConfig
from docutray_watch.templates import METADATA_FIELDS, TemplateError, check_template

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_BASE_URL",
    "EX_CONFIG",
    "IDENTIFY_STEP",
    "OTHERWISE",
    "ActionConfig",
    "ApiConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "FolderSourceConfig",
    "IdentifyConfig",
    "JournalConfig",
    "PipelineConfig",
    "PollConfig",
    "SinkTypes",
    "WatchConfig",
    "build_config_model",
    "builtin_sink_types",
    "config_json_schema",
    "load_config",
    "parse_config",
    "same_settings",
]

EX_CONFIG = 78
DEFAULT_BASE_URL = "https://app.docutray.com"
DEFAULT_INCLUDE = ["*.pdf", "*.png", "*.jpg", "*.jpeg", "*.gif", "*.bmp", "*.webp"]
DEFAULT_IGNORE = [".*", "*.part", "*.tmp", "*.crdownload", "~*"]
# The shipped units' TimeoutStopSec=40 minus the 10 s the daemon keeps to persist the rest (they
# also set DOCUTRAY_WATCH_SHUTDOWN_GRACE=30); `validate` warns when a grace does not fit.
DEFAULT_SHUTDOWN_GRACE = 30.0
SHUTDOWN_GRACE_ENV = "DOCUTRAY_WATCH_SHUTDOWN_GRACE"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class _FieldError(ValueError):
    """A check of a whole model that blames one of its fields: the error names that field's path.

    pydantic reports a model validator's error at the model itself (`pipelines[0]`); the loader
    appends `loc` (e.g. `("sinks", 1, "id")`) so the message points at the offending key.
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


# --- the models ---------------------------------------------------------------------------------


class TimeoutConfig(_Model):
    """HTTP timeouts towards the DocuTray API, in seconds."""

    connect: float = Field(5.0, gt=0, description="Establishing a connection.")
    read: float = Field(60.0, gt=0, description="Waiting for each part of an answer.")
    write: float = Field(60.0, gt=0, description="Sending each part of an upload.")
    pool: float = Field(10.0, gt=0, description="Waiting for a free connection from the pool.")

    def as_httpx(self) -> httpx.Timeout:
        """The same four timeouts as an `httpx.Timeout`."""
        import httpx  # here, not at the top: `status` loads the config without the HTTP stack

        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


class ApiConfig(_Model):
    """How to reach the DocuTray API, and the limits shared by all pipelines."""

    base_url: str | None = Field(
        None,
        description="API root. Defaults to $DOCUTRAY_BASE_URL, then https://app.docutray.com.",
    )
    api_key: SecretStr | None = Field(
        None, description="API key (prefer ${DOCUTRAY_API_KEY} or api_key_file). Never logged."
    )
    api_key_file: ConfigPath | None = Field(
        None,
        description=(
            "File holding the API key, e.g. ${CREDENTIALS_DIRECTORY}/api-key under systemd's "
            "LoadCredential=."
        ),
    )
    max_retries: int = Field(4, ge=0, le=20, description="Retries of a failed API request.")
    timeout: TimeoutConfig = Field(default_factory=TimeoutConfig, description="HTTP timeouts.")
    max_in_flight: int = Field(
        32, ge=1, le=10_000, description="Executions in flight at once, all pipelines together."
    )
    requests_per_second: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
        "auto",
        description="API requests per second, all pipelines together: a number, or auto — no "
        "fixed rate, learned from the service's 429 answers (slow start, then AIMD).",
    )
    max_requests_per_second: float | None = Field(
        None,
        gt=0,
        description="With requests_per_second: auto, never more than this (null: no cap).",
    )
    pause_probe_interval: float = Field(
        60.0,
        gt=0,
        description=(
            "While the API key is refused or the API unreachable, seconds between two probes "
            "(a free status read) that resume work once it answers; also how often a pipeline "
            "paused by a 403/404 tries one submission again."
        ),
    )

    @field_validator("requests_per_second", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("must be auto or a positive number")
        try:
            rate = float(value)
        except ValueError:
            raise ValueError("must be auto or a positive number") from None
        if not rate > 0 or rate == float("inf"):
            raise ValueError("must be auto or a positive number")
        return rate

    @model_validator(mode="after")
    def _cap_needs_auto(self) -> ApiConfig:
        if self.max_requests_per_second is not None and self.requests_per_second != "auto":
            raise _FieldError(
                ("max_requests_per_second",),
                "applies only with requests_per_second: auto (a number is already a fixed rate)",
            )
        return self

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _one_key_source(self) -> ApiConfig:
        if self.api_key is not None and self.api_key_file is not None:
            raise _FieldError(("api_key_file",), "set api_key or api_key_file, not both")
        return self

    def resolved_base_url(self, environ: Mapping[str, str] = os.environ) -> str:
        """The configured URL, else $DOCUTRAY_BASE_URL, else the public service."""
        return (self.base_url or environ.get("DOCUTRAY_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


class WatchConfig(_Model):
    """The folder a pipeline takes documents from, and when a file counts as complete."""

    path: ConfigPath = Field(description="The inbox folder.")
    recursive: bool = Field(False, description="Also take files from sub-folders.")
    polling: bool | None = Field(
        None,
        description=(
            "Poll the folder instead of using inotify (for NFS/SMB). Default: automatic — "
            "polling on network file systems, inotify elsewhere."
        ),
    )
    settle: float = Field(
        1.0,
        ge=0,
        description="A file is complete once its size and mtime stay the same this many seconds.",
    )
    rescan_interval: float = Field(
        60.0, gt=0, description="Full rescan period in seconds (inotify can drop events)."
    )
    max_open_wait: float = Field(
        900.0,
        ge=0,
        description=(
            "inotify only: a file written to and not closed yet is not complete, whatever its "
            "age, for up to this many seconds; then it is taken with a warning."
        ),
    )
    ready_marker: str | None = Field(
        None,
        pattern=r"^\.[A-Za-z0-9_.-]+$",
        description=(
            "Take x.pdf only once x.pdf<marker> exists (e.g. '.done'); the marker is removed "
            "with the document."
        ),
    )
    shared: bool = Field(
        False,
        description="Cluster mode: the folder is one share mounted at the same path on every "
        "node, so any node may scan it and take its files; false: it is this node's own.",
    )


class FolderSourceConfig(WatchConfig, SourceConfig):
    """Options of the `folder` source (`source: {type: folder, …}`): exactly those of `watch`.

    Defined here, not with `docutray_watch.sources.folder.FolderSource`, so the config never
    imports the source classes (the plugins register those)."""

    @property
    def moves_to_folders(self) -> bool:
        """`to:` is a local folder."""
        return True

    def as_watch(self) -> WatchConfig:
        """The same options as a `watch:` block (what the engine reads)."""
        return WatchConfig.model_construct(**self.model_dump(exclude={"type"}))

    @classmethod
    def from_watch(cls, watch: WatchConfig) -> FolderSourceConfig:
        """A `watch:` block as a folder source's options (paths already resolved)."""
        return cls.model_construct(type="folder", **watch.model_dump())


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


_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")

# --- routing by document type (issue 20) ---------------------------------------------------------

OTHERWISE = "otherwise"
"""The `routes` key for documents no other route takes."""

StepId = Annotated[str, Field(min_length=1, max_length=200)]
RouteTarget = list[StepId] | Literal["fail", "keep"]


# Mark `steps` absent or empty in a pipeline that does not identify (only then is it required),
# so the error is reported at `steps` itself, next to any other problem of the pipeline.
class _StepsMarker(list[str]):
    """An empty list recognised by identity (an error never echoes a list's value)."""


_STEPS_MISSING = _StepsMarker()
_STEPS_EMPTY = _StepsMarker()


class IdentifyConfig(_Model):
    """Identify each document's type first (one submission), then run the steps of its route."""

    options: list[StepId] | None = Field(
        None,
        min_length=1,
        description="Document type codes the service may answer (default: the route keys).",
    )
    min_confidence: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Below this confidence (0-1) a document counts as unidentified: "
        "`routes.otherwise` applies.",
    )

    @field_validator("options")
    @classmethod
    def _unique_options(cls, options: list[str] | None) -> list[str] | None:
        if options is not None and len(set(options)) != len(options):
            raise ValueError("document type codes must be unique")
        return options


def _check_route(key: str, target: Any) -> None:
    """Raise `_FieldError` at `key` unless `target` is a valid route for it."""
    if key == OTHERWISE:
        if target in ("fail", "keep"):
            return
        if not isinstance(target, list) or not target:
            raise _FieldError(
                (key,), "otherwise must be fail, keep or a non-empty list of step IDs"
            )
    elif not isinstance(target, list):
        raise _FieldError(
            (key,),
            "a route is a list of step IDs (fail and keep are for `otherwise` only)",
        )
    elif not target:
        raise _FieldError((key,), "a route needs at least one step ID")
    if not all(isinstance(step, str) and step for step in target):
        raise _FieldError((key,), "step IDs must be non-empty strings")
    if len(set(target)) != len(target):
        raise _FieldError((key,), "step IDs must be unique in a route")
    if IDENTIFY_STEP in target:
        raise _FieldError((key,), f"{IDENTIFY_STEP} is reserved for the identification")


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


class MetricsConfig(_Model):
    """The optional local HTTP listener for Prometheus metrics and health checks."""

    listen: str = Field(
        "127.0.0.1:9464", description="host:port for /metrics, /healthz and /readyz."
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port, e.g. 127.0.0.1:9464")
        return value

    @property
    def host(self) -> str:
        """The listening address (brackets of an IPv6 literal removed)."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The listening port."""
        return int(self.listen.rpartition(":")[2])


class WebConfig(MetricsConfig):
    """The optional status page: its own listener, as it shows file names and failure reasons."""

    listen: str = Field(
        "127.0.0.1:9465",
        description="host:port of the status page (GET /, /api/status, /api/live).",
    )
    actions: bool = Field(
        False,
        description="Let the page retry failed documents (needs token_file; every action sends "
        "the token as a Bearer header, from the page's own origin).",
    )
    token_file: ConfigPath | None = Field(
        None,
        description="File holding the token that actions need, e.g. "
        "${CREDENTIALS_DIRECTORY}/web-token under systemd. Never logged or shown.",
    )
    refresh_seconds: float = Field(
        5.0, ge=1, le=300, description="How often the page polls the daemon."
    )
    _token: SecretStr | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _token_for_actions(self) -> WebConfig:
        if self.actions and self.token_file is None:
            raise _FieldError(("token_file",), "actions: true needs a token_file")
        return self

    @property
    def token(self) -> str | None:
        """The actions' token, read from `token_file` when the config was loaded."""
        return self._token.get_secret_value() if self._token is not None else None


class LogConfig(_Model):
    """Log output."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Minimum level."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="auto: JSON lines when stderr is not a terminal (journald), else console.",
    )


class JournalConfig(_Model):
    """How long the journal remembers finished documents."""

    retention_days: float | None = Field(
        None,
        gt=0,
        description="Forget documents that finished more than this many days ago (their steps, "
        "stored results and deliveries; the duplicate check forgets their content too), at "
        "start and then daily. Files kept where they were found are remembered while they are "
        "there. null: remember everything.",
    )


class ClusterConfig(_Model):
    """Multi-node mode: several daemons share the work through one PostgreSQL database."""

    database: SecretStr = Field(
        description="The cluster's PostgreSQL, postgresql+psycopg://user:${PGPASSWORD}@host/db; "
        "every node uses the same database (`docutray-watch cluster init` prepares it). Never "
        "logged with its password.",
    )
    node: str | None = Field(
        None,
        pattern=_NAME_PATTERN,
        description="This node's name, unique among live nodes (its local queue is "
        "node.<name>). Default: the host name; required when a pipeline watches a folder that "
        "is not `shared: true`, as that folder's files are tied to this name.",
    )
    node_max_in_flight: int | None = Field(
        None,
        ge=1,
        description="Executions this node keeps in flight at most (default: api.max_in_flight, "
        "which caps the whole cluster).",
    )
    heartbeat_interval: float = Field(
        10.0, gt=0, le=3600, description="Seconds between two heartbeats of a node."
    )
    stalled_timeout: float = Field(
        30.0,
        gt=0,
        description="A node silent this long is dead: its name may be taken over and its "
        "running jobs retried. More than twice heartbeat_interval.",
    )

    @field_validator("database")
    @classmethod
    def _postgresql_url(cls, value: SecretStr) -> SecretStr:
        if not re.match(r"^postgresql(\+psycopg)?://", value.get_secret_value()):
            raise ValueError("must be a postgresql+psycopg://user@host/database URL")
        return value

    @model_validator(mode="after")
    def _timeout_spans_heartbeats(self) -> ClusterConfig:
        if not self.stalled_timeout > 2 * self.heartbeat_interval:
            raise _FieldError(
                ("stalled_timeout",),
                f"must be more than twice heartbeat_interval ({self.heartbeat_interval:g} s), "
                "or one late heartbeat declares a live node dead",
            )
        return self

    @property
    def node_name(self) -> str:
        """The node's name (set once the whole config is validated)."""
        assert self.node is not None, "Config fills in the node name"
        return self.node


def _default_state_dir() -> Path:
    # Our units set $DOCUTRAY_WATCH_STATE_DIR; systemd sets $STATE_DIRECTORY for
    # StateDirectory=; otherwise follow the XDG convention.
    state_directory = os.environ.get("DOCUTRAY_WATCH_STATE_DIR") or os.environ.get(
        "STATE_DIRECTORY"
    )
    if state_directory:
        return Path(state_directory.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "docutray-watch"


def _default_grace() -> float:
    raw = os.environ.get(SHUTDOWN_GRACE_ENV)
    try:
        return float(raw) if raw else DEFAULT_SHUTDOWN_GRACE
    except ValueError:
        return DEFAULT_SHUTDOWN_GRACE


class Config(_Model):
    """The whole configuration file."""

    api: ApiConfig = Field(default_factory=ApiConfig, description="The DocuTray API.")
    state_dir: ConfigPath = Field(
        default_factory=_default_state_dir,
        description="Where the journal lives ($STATE_DIRECTORY under systemd); never inside an "
        "inbox.",
    )
    journal: JournalConfig = Field(
        default_factory=JournalConfig, description="The journal's retention."
    )
    metrics: MetricsConfig | None = Field(None, description="Optional metrics/health listener.")
    web: WebConfig | None = Field(None, description="Optional status page (its own listener).")
    cluster: ClusterConfig | None = Field(
        None, description="Optional multi-node mode (docs/cluster-setup.md); absent: one node."
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")
    shutdown_grace: float = Field(
        default_factory=_default_grace,
        ge=0,
        description="On SIGTERM, let in-flight work finish this long before persisting the rest "
        f"(default ${SHUTDOWN_GRACE_ENV} or {DEFAULT_SHUTDOWN_GRACE:g} s).",
    )
    pipelines: list[PipelineConfig] = Field(min_length=1, description="The pipelines.")
    # Pipelines left out because a sink type they use comes from a plugin that failed to load
    # (set by `parse_config`; not a key of the file).
    _held_back: list[HeldBackPipeline] = PrivateAttr(default_factory=list)

    @property
    def held_back(self) -> list[HeldBackPipeline]:
        """Pipelines left out of `pipelines`: each needs a sink type whose plugin is broken."""
        return self._held_back

    @model_validator(mode="after")
    def _unique_names_and_state_outside(self) -> Config:
        first: dict[str, int] = {}
        for index, pipeline in enumerate(self.pipelines):
            if pipeline.name in first:
                raise _FieldError(
                    ("pipelines", index, "name"),
                    f"pipeline names must be unique: {pipeline.name!r} is also the name of "
                    f"pipelines[{first[pipeline.name]}]",
                )
            first[pipeline.name] = index
        state = _absolute(self.state_dir)
        for pipeline in self.pipelines:
            watch = pipeline.folder_watch
            if watch is None:
                continue
            inbox = _absolute(watch.path)
            if state == inbox or inbox in state.parents:
                raise _FieldError(
                    ("state_dir",),
                    f"state_dir ({state}) must not be inside the watched folder of pipeline "
                    f"{pipeline.name!r}",
                )
        return self

    @model_validator(mode="after")
    def _cluster_fits(self) -> Config:
        cluster = self.cluster
        if cluster is None:
            return self
        if cluster.node_max_in_flight is not None and (
            cluster.node_max_in_flight > self.api.max_in_flight
        ):
            raise _FieldError(
                ("cluster", "node_max_in_flight"),
                f"must not exceed api.max_in_flight ({self.api.max_in_flight}), the cluster's cap",
            )
        for index, pipeline in enumerate(self.pipelines):
            if pipeline.source is not None and getattr(pipeline.source, "events", None):
                # Events are per-node hints; a cluster lists in its periodic job instead.
                raise _FieldError(
                    ("pipelines", index, "source", "events"),
                    "not supported in multi-node mode (cluster:): the periodic listing (one node "
                    "per rescan_interval) finds new objects; remove events or lower "
                    "rescan_interval",
                )
        if cluster.node is None:
            # A source that is not a folder (a bucket) is shared by nature.
            local = [p.name for p in self.pipelines if p.watch is not None and not p.watch.shared]
            if local:
                raise _FieldError(
                    ("cluster", "node"),
                    f"required: pipeline {local[0]!r} watches a local folder (not shared: true), "
                    "whose files belong to a named node",
                )
            cluster.node = _host_node_name()
        return self

    def pipeline(self, name: str) -> PipelineConfig:
        """The pipeline called `name`."""
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        raise KeyError(name)

    @property
    def journal_path(self) -> Path:
        """The SQLite journal inside `state_dir`."""
        return Path(self.state_dir) / "journal.sqlite3"


def _host_node_name() -> str:
    # Host names are letters, digits, dots and dashes; keep what a queue name allows.
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64].lstrip("-_.")
    return name or "node"


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


@dataclass(frozen=True)
class HeldBackPipeline:
    """A pipeline that cannot run: `path` (e.g. `pipelines[1].sinks[0].type`) names a sink type
    whose plugin failed to load, and `reason` says which plugin and why."""

    name: str
    path: str
    reason: str

    def line(self) -> str:
        """One line for an operator."""
        return f"pipeline {self.name!r} is left out: {self.path}: {self.reason}"


class UnavailableSinkConfig(SinkConfig):
    """Stands in for the config block of a sink type whose plugin failed to load: any keys are
    accepted, so the rest of the file still validates and only that pipeline is left out."""

    model_config = ConfigDict(extra="allow")
    unavailable_reason: ClassVar[str] = ""


# --- assembling the model from the installed sink types -----------------------------------------

_TypedModel = TypeVar("_TypedModel", bound=BaseModel)


def _sink_type_models(
    sink_models: Mapping[str, type[_TypedModel]], what: str = "sink"
) -> list[type[_TypedModel]]:
    models: list[type[_TypedModel]] = []
    for name, model in sorted(sink_models.items()):
        # Each model gets `type: Literal[name]` so the sinks list (or source) is a tagged union.
        tag: Any = Literal[name]
        tagged = create_model(
            f"{model.__name__}_{name}",
            __base__=model,
            __doc__=model.__doc__,
            type=(tag, Field(description=f"The {what} type.")),
        )
        models.append(cast("type[_TypedModel]", tagged))
    return models


def _tagged_union(tagged: Sequence[type[BaseModel]]) -> Any:
    if len(tagged) == 1:
        return tagged[0]
    return Annotated[Union[tuple(tagged)], Field(discriminator="type")]  # noqa: UP007


def build_config_model(
    sink_models: Mapping[str, type[SinkConfig]],
    source_models: Mapping[str, type[SourceConfig]] | None = None,
) -> type[Config]:
    """The `Config` model whose `pipelines[].sinks[]` accept exactly the given sink types, and
    `pipelines[].source` the given source types (default: the built-in ones)."""
    tagged = _sink_type_models(sink_models)
    if not tagged:
        raise ValueError("no sink types are registered")
    sources = _sink_type_models(
        builtin_source_models() if source_models is None else source_models, "source"
    )
    sink_item: Any = _tagged_union(tagged)
    source_item: Any = _tagged_union(sources)
    pipeline_model = create_model(
        "PipelineConfig",
        __base__=PipelineConfig,
        __doc__=PipelineConfig.__doc__,
        sinks=(list[sink_item], Field(min_length=1, description="Where results are delivered.")),
        source=(
            source_item | None,
            Field(None, description=PipelineConfig.model_fields["source"].description),
        ),
    )
    return create_model(
        "Config",
        __base__=Config,
        __doc__=Config.__doc__,
        pipelines=(
            list[pipeline_model],
            Field(min_length=1, description="The pipelines."),
        ),
    )


@dataclass(frozen=True, eq=False)
class SinkTypes:
    """The sink types a configuration may use, and why some that a plugin offers are missing.

    `models`: each type name's config model. `unavailable`: type name -> why it cannot be used
    (a plugin providing it failed to load; the text names that plugin). `load_failures`: one
    line per plugin left out whose sink types are not known (it could not even be imported);
    shown with an unknown sink type, as it may be the missing provider.
    """

    models: Mapping[str, type[SinkConfig]]
    unavailable: Mapping[str, str] = field(default_factory=dict)
    load_failures: Sequence[str] = ()
    sources: Mapping[str, type[SourceConfig]] | None = None
    """Each source type's config model (None: the built-in sources only)."""

    @cached_property
    def config_model(self) -> type[Config]:
        """The `Config` model for these types, built once: configs loaded with the same
        `SinkTypes` share their model classes."""
        return build_config_model(self.models, self.sources)

    @cached_property
    def lenient_model(self) -> type[Config]:
        """`config_model`, but a sink of an unavailable type validates (as an
        `UnavailableSinkConfig`), so its pipeline can be held back instead of failing the file."""
        if not self.unavailable:
            return self.config_model
        stand_ins: dict[str, type[SinkConfig]] = {}
        for name, reason in self.unavailable.items():
            stand_in = create_model(
                f"Unavailable_{name}", __base__=UnavailableSinkConfig, __doc__=reason
            )
            stand_in.unavailable_reason = reason
            stand_ins[name] = stand_in
        return build_config_model({**self.models, **stand_ins}, self.sources)


@cache
def builtin_sink_types() -> SinkTypes:
    """The built-in sinks only (what a config may use when no plugins are passed)."""
    models: dict[str, type[SinkConfig]] = {}

    def register(sink_class: type[Sink[Any]]) -> None:
        models[sink_class.type] = sink_class.config_model

    for module_name in BUILTIN_SINK_MODULES:
        hook = cast(
            "Callable[..., None]",
            importlib.import_module(module_name).register_sink_types,
        )
        hook(register=register)
    return SinkTypes(models)


@cache
def builtin_source_models() -> dict[str, type[SourceConfig]]:
    """The config models of the built-in sources (folder, s3)."""
    models: dict[str, type[SourceConfig]] = {}

    def register(source_class: type[Source[Any]]) -> None:
        models[source_class.type] = source_class.config_model

    for module_name in BUILTIN_SOURCE_MODULES:
        hook = cast(
            "Callable[..., None]",
            importlib.import_module(module_name).register_source_types,
        )
        hook(register=register)
    return models


def config_json_schema(sink_types: SinkTypes | None = None) -> dict[str, Any]:
    """The JSON Schema of the configuration, for editors (yaml-language-server) and docs."""
    model = (sink_types or builtin_sink_types()).config_model
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "docutray-watch configuration"
    return schema


def same_settings(a: BaseModel, b: BaseModel) -> bool:
    """Whether two config blocks hold the same values, whatever model classes they came from.

    Each `SinkTypes` builds its own sink and pipeline classes, and pydantic's `==` also
    compares classes; a reload must not see an unchanged block as changed.
    """
    return a.model_dump(round_trip=True) == b.model_dump(round_trip=True)


# --- errors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: where (YAML path and, when known, line/column) and what."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def format(self, source: str | None) -> str:
        """One line: `file:line:col: path: message`."""
        where = source or "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path or '<root>'}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; `str()` gives one line per problem."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """The problems, one line each."""
        return [issue.format(self.source) for issue in self.issues]


def format_path(parts: Sequence[str | int]) -> str:
    """`('pipelines', 0, 'sinks', 1, 'bucket')` → `pipelines[0].sinks[1].bucket`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --- YAML with positions, and ${ENV} expansion ---------------------------------------------------


_Positions = dict[tuple[str | int, ...], tuple[int, int]]


def _parse_yaml(text: str, source: str) -> tuple[Any, _Positions]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            [
                ConfigIssue(
                    path="",
                    message=f"invalid YAML: {problem}",
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                )
            ],
            source,
        ) from None
    positions: _Positions = {}
    duplicates: list[ConfigIssue] = []
    if node is not None:
        _collect_positions(node, (), positions, duplicates)
    if duplicates:
        # PyYAML silently keeps the last of two equal keys, which would drop half a pipeline.
        raise ConfigError(duplicates, source)
    return data, positions


def _collect_positions(
    node: yaml.Node,
    path: tuple[str | int, ...],
    out: _Positions,
    duplicates: list[ConfigIssue],
) -> None:
    out[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    duplicates.append(
                        ConfigIssue(
                            format_path((*path, key_node.value)),
                            "duplicate key (each key may appear once)",
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                        )
                    )
                seen.add(key_node.value)
                _collect_positions(value_node, (*path, key_node.value), out, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_positions(item, (*path, index), out, duplicates)


_ENV_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(
    data: Any, environ: Mapping[str, str], path: tuple[str | int, ...] = ()
) -> tuple[Any, list[tuple[tuple[str | int, ...], str]]]:
    """Replace `${VAR}` / `${VAR:-default}` in every string value (`$$` is a literal `$`)."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(data, str):

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            value = environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    problems.append((path, f"environment variable {name} is not set"))
                    return ""
                return default
            return value

        return _ENV_PATTERN.sub(substitute, data), problems
    if isinstance(data, dict):
        result: dict[Any, Any] = {}
        for key, value in data.items():
            result[key], sub = expand_env(value, environ, (*path, str(key)))
            problems.extend(sub)
        return result, problems
    if isinstance(data, list):
        items = []
        for index, value in enumerate(data):
            item, sub = expand_env(value, environ, (*path, index))
            items.append(item)
            problems.extend(sub)
        return items, problems
    return data, problems


# --- loading ------------------------------------------------------------------------------------

# Values under these keys are never echoed in error messages (URLs may carry credentials).
_SECRET_KEYS = {
    "api_key",
    "database",
    "password",
    "secret_access_key",
    "aws_secret_access_key",
    "aws_session_token",
    "secret",
    "url",
    "endpoint_url",
    "headers",
    "token",
}


def _issue_from_pydantic(
    error: Mapping[str, Any], data: Any, positions: _Positions, sink_types: SinkTypes
) -> ConfigIssue:
    loc = _real_location(error.get("loc", ()), data)
    message = str(error.get("msg", "invalid value"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    located = (error.get("ctx") or {}).get("error")
    if isinstance(located, _FieldError):
        loc = (*loc, *located.loc)
    what = "source" if loc[-1:] == ("source",) else "sink"
    if error.get("type") == "union_tag_not_found":
        message = f"Field required: every {what} needs a type"
        loc = (*loc, "type")
    elif error.get("type") == "union_tag_invalid":
        ctx = error.get("ctx") or {}
        tag = ctx.get("tag")
        if what == "source":
            message = (
                f"unknown source type {tag!r} (known: {ctx.get('expected_tags')}); "
                "is its plugin installed?"
            )
        elif isinstance(tag, str) and tag in sink_types.unavailable:
            message = sink_types.unavailable[tag]
        else:
            message = (
                f"unknown sink type {tag!r} (known: {ctx.get('expected_tags')}); "
                "is its plugin installed?"
            )
            for line in sink_types.load_failures:
                message += f" ({line})"
        loc = (*loc, "type")
    elif error.get("type") == "extra_forbidden":
        message = "unknown key"
    elif error.get("type") not in ("missing",) and "input" in error:
        value = error["input"]
        if not any(str(part) in _SECRET_KEYS for part in loc) and not isinstance(
            value, dict | list
        ):
            shown = repr(value)
            message += f" (got {shown[:60]}{'…' if len(shown) > 60 else ''})"
    line_col = _position_of(loc, positions)
    return ConfigIssue(
        path=format_path(loc),
        message=message,
        line=line_col[0] if line_col else None,
        column=line_col[1] if line_col else None,
    )


def _real_location(loc: Sequence[str | int], data: Any) -> tuple[str | int, ...]:
    """Drop the union-tag parts pydantic adds to locations (`sinks.1.s3.bucket`)."""
    real: list[str | int] = []
    node = data
    for part in loc:
        if part == "[key]":
            continue  # pydantic's marker for "the key itself" of a mapping entry
        if isinstance(node, dict) and isinstance(part, str) and part not in node:
            if part == node.get("type") or part.endswith(f"_{node.get('type')}"):
                continue  # the discriminator tag, not a key of the input
            real.append(part)
            node = None
            continue
        # A YAML key that is a number is a key, not a list index: `1`, not `[1]`.
        real.append(str(part) if isinstance(node, dict) else part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(real)


def _position_of(loc: tuple[str | int, ...], positions: _Positions) -> tuple[int, int] | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in positions:
            return positions[loc[:end]]
    return None


def parse_config(
    data: Any,
    *,
    source: str | None = None,
    config_dir: Path | None = None,
    sink_types: SinkTypes | None = None,
    environ: Mapping[str, str] = os.environ,
    positions: _Positions | None = None,
    need_secrets: bool = True,
) -> Config:
    """Validate already-parsed YAML data (see `load_config`)."""
    sink_types = sink_types or builtin_sink_types()
    positions = positions or {}
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigIssue("", "the configuration must be a mapping (key: value) at the top")],
            source,
        )
    data, env_problems = expand_env(data, environ)
    if not need_secrets:
        # `status`, `retry`, `validate --offline` never talk to the API: an API key variable
        # that only exists inside the service (${CREDENTIALS_DIRECTORY}) must not stop them.
        # The key file is still validated as an option (type, api_key exclusivity), not read.
        env_problems = [(p, m) for p, m in env_problems if p[:1] != ("api",)]
    if env_problems:
        raise ConfigError(
            [
                ConfigIssue(format_path(p), m, *(_position_of(p, positions) or (None, None)))
                for p, m in env_problems
            ],
            source,
        )
    try:
        config = sink_types.lenient_model.model_validate(
            data, context={"config_dir": config_dir if config_dir is not None else Path.cwd()}
        )
    except ValidationError as exc:
        issues = [_issue_from_pydantic(e, data, positions, sink_types) for e in exc.errors()]
        raise ConfigError(issues, source) from None
    if need_secrets:
        _read_api_key_file(config, source, positions)
        _read_web_token(config, source, positions)
    return _hold_back_unavailable(config)


def _hold_back_unavailable(config: Config) -> Config:
    """Leave out the pipelines that use a sink type of a broken plugin; the others run."""
    held: list[HeldBackPipeline] = []
    kept: list[PipelineConfig] = []
    for index, pipeline in enumerate(config.pipelines):
        unavailable = [
            (position, sink)
            for position, sink in enumerate(pipeline.sinks)
            if isinstance(sink, UnavailableSinkConfig)
        ]
        if not unavailable:
            kept.append(pipeline)
            continue
        position, sink = unavailable[0]
        held.append(
            HeldBackPipeline(
                name=pipeline.name,
                path=format_path(("pipelines", index, "sinks", position, "type")),
                reason=sink.unavailable_reason,
            )
        )
    if not held:
        return config
    config = config.model_copy(update={"pipelines": kept})
    config._held_back = held
    return config


def _read_web_token(config: Config, source: str | None, positions: _Positions) -> None:
    token_file = config.web.token_file if config.web is not None else None
    if config.web is None or token_file is None:
        return
    where = ("web", "token_file")
    problem = None
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        problem = f"cannot read {token_file}: {reason}"
    else:
        if len(token) < 16:
            problem = f"{token_file} must hold a token of 16 characters at least"
    if problem is not None:
        raise ConfigError(
            [
                ConfigIssue(
                    format_path(where), problem, *(_position_of(where, positions) or (None, None))
                )
            ],
            source,
        )
    config.web._token = SecretStr(token)


def _read_api_key_file(config: Config, source: str | None, positions: _Positions) -> None:
    key_file = config.api.api_key_file
    if key_file is None:
        return
    where = ("api", "api_key_file")
    try:
        secret = Path(key_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            [
                ConfigIssue(
                    format_path(where),
                    f"cannot read {key_file}: {reason}",
                    *(_position_of(where, positions) or (None, None)),
                )
            ],
            source,
        ) from None
    if not secret:
        raise ConfigError(
            [
                ConfigIssue(
                    format_path(where),
                    f"{key_file} is empty",
                    *(_position_of(where, positions) or (None, None)),
                )
            ],
            source,
        )
    config.api.api_key = SecretStr(secret)


def load_config(
    path: str | os.PathLike[str],
    *,
    sink_types: SinkTypes | None = None,
    environ: Mapping[str, str] = os.environ,
    need_secrets: bool = True,
) -> Config:
    """Read, expand and validate a YAML config file; raise `ConfigError` on any problem.

    `sink_types`: the sink types the plugins registered (default: the built-in sinks only).

    With `need_secrets=False` (commands that never call the API) unset variables under `api`
    and an unreadable `api.api_key_file` are not errors.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [ConfigIssue("", f"cannot read the config file: {reason}")], source
        ) from None
    data, positions = _parse_yaml(text, source)
    config = parse_config(
        data,
        source=source,
        config_dir=path.resolve().parent,
        sink_types=sink_types,
        environ=environ,
        positions=positions,
        need_secrets=need_secrets,
    )
    return config


def api_key_of(config: Config, environ: Mapping[str, str] = os.environ) -> str | None:
    """The API key from the config, else $DOCUTRAY_API_KEY (None when neither is set)."""
    if config.api.api_key is not None:
        return config.api.api_key.get_secret_value()
    return environ.get("DOCUTRAY_API_KEY") or None
