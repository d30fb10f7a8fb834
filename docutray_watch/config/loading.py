"""Reading a config file: YAML with the position of every key, `${ENV}` expansion, validation
with errors translated to YAML paths (secret values never echoed), the secret files
(`api.api_key_file`, `web.token_file`), and the API key."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from docutray_watch.config._base import _FieldError
from docutray_watch.config.assembly import SinkTypes, UnavailableSinkConfig, builtin_sink_types
from docutray_watch.config.errors import ConfigError, ConfigIssue, format_path
from docutray_watch.config.pipeline import PipelineConfig
from docutray_watch.config.root import Config, HeldBackPipeline

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
