"""The YAML configuration: typed models, `${ENV}` expansion, and errors that name the YAML path.

`load_config(path)` reads the file, expands `${VAR}` / `${VAR:-default}` in string values,
validates it against models that reject unknown keys, resolves relative paths against the config
file's folder and reads `api.api_key_file`. Any problem raises `ConfigError`, whose lines look like
`config.yaml:12:7: pipelines[0].sinks[1].bucket: Field required` — the CLI prints them and exits 78
(EX_CONFIG). Sink blocks are validated by the model of the sink type that a plugin registered:
the caller passes those models as `SinkTypes` (the CLI builds them once per command from the
plugin manager, see `docutray_watch.plugins.Plugins.config_sink_types`); without them only the
built-in sinks are known. This package never imports the plugin machinery.

One concern per module, each importing only those above it: `_base` (the strict `_Model`, the
error that blames one field), `errors` (`ConfigError`, `EX_CONFIG`), `api`, `sources` (`watch:`,
the folder source), `routing` (`identify:`, `routes:`), `pipeline`, `service` (metrics, web,
log, journal, `state_dir` and `shutdown_grace` defaults), `cluster`, `root` (`Config`),
`assembly` (the model for the installed sink/source types, the JSON Schema), `loading` (YAML,
`${ENV}`, validation errors as YAML paths, secret files, `api_key_of`). Import from here: the
names below are the package's interface (private ones kept for the tests that use them).
"""

from __future__ import annotations

from docutray_watch.config._base import _NAME_PATTERN as _NAME_PATTERN
from docutray_watch.config._base import _absolute as _absolute
from docutray_watch.config._base import _FieldError as _FieldError
from docutray_watch.config._base import _Model as _Model
from docutray_watch.config.api import DEFAULT_BASE_URL, ApiConfig
from docutray_watch.config.api import TimeoutConfig as TimeoutConfig
from docutray_watch.config.assembly import SinkTypes as SinkTypes
from docutray_watch.config.assembly import UnavailableSinkConfig as UnavailableSinkConfig
from docutray_watch.config.assembly import (
    build_config_model,
    builtin_sink_types,
    config_json_schema,
    same_settings,
)
from docutray_watch.config.assembly import builtin_source_models as builtin_source_models
from docutray_watch.config.cluster import ClusterConfig
from docutray_watch.config.cluster import _host_node_name as _host_node_name
from docutray_watch.config.errors import EX_CONFIG, ConfigError, ConfigIssue
from docutray_watch.config.errors import format_path as format_path
from docutray_watch.config.loading import _SECRET_KEYS as _SECRET_KEYS
from docutray_watch.config.loading import _parse_yaml as _parse_yaml
from docutray_watch.config.loading import api_key_of as api_key_of
from docutray_watch.config.loading import expand_env as expand_env
from docutray_watch.config.loading import load_config, parse_config
from docutray_watch.config.pipeline import DEFAULT_IGNORE as DEFAULT_IGNORE
from docutray_watch.config.pipeline import DEFAULT_INCLUDE as DEFAULT_INCLUDE
from docutray_watch.config.pipeline import ActionConfig, PipelineConfig, PollConfig
from docutray_watch.config.root import Config
from docutray_watch.config.root import HeldBackPipeline as HeldBackPipeline
from docutray_watch.config.routing import OTHERWISE, IdentifyConfig
from docutray_watch.config.routing import RouteTarget as RouteTarget
from docutray_watch.config.routing import StepId as StepId
from docutray_watch.config.service import DEFAULT_SHUTDOWN_GRACE as DEFAULT_SHUTDOWN_GRACE
from docutray_watch.config.service import SHUTDOWN_GRACE_ENV as SHUTDOWN_GRACE_ENV
from docutray_watch.config.service import JournalConfig
from docutray_watch.config.service import LogConfig as LogConfig
from docutray_watch.config.service import MetricsConfig as MetricsConfig
from docutray_watch.config.service import WebConfig as WebConfig
from docutray_watch.config.sources import FolderSourceConfig, WatchConfig
from docutray_watch.journal.states import IDENTIFY_STEP

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
