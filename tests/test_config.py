"""Tests of `docutray_watch.config`: loading, defaults, errors with YAML paths, the JSON Schema."""

from __future__ import annotations

import copy
import json
import logging
import random
import re
import subprocess
import sys
import textwrap
import typing
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pluggy
import pytest
import structlog
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from docutray_watch.cli import cli
from docutray_watch.config import (
    EX_CONFIG,
    Config,
    ConfigError,
    build_config_model,
    builtin_source_models,
    config_json_schema,
    load_config,
    parse_config,
)
from docutray_watch.plugins import (
    collect_sink_types,
    config_sink_types,
    get_plugin_manager,
    load_plugins,
)
from docutray_watch.sinks.base import SinkConfig, SinkRetry

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config.example.yaml"
# The installed console script (tests the entry point), next to the interpreter running pytest.
CLI = Path(sys.executable).parent / "docutray-watch"
CANARY_KEY = "dtk_CANARY_5f1b9c0e7d2a4e8b"

WriteConfig = Callable[..., Path]


@pytest.fixture(name="pm")
def pm_fixture() -> pluggy.PluginManager:
    """Built-in plugins only: installed third-party plugins must not change the results."""
    return get_plugin_manager(load_entrypoints=False)


@pytest.fixture(name="write")
def write_fixture(tmp_path: Path) -> WriteConfig:
    """Write YAML text (dedented) to a config file and return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


def minimal(**pipeline: Any) -> dict[str, Any]:
    """A valid config as data: one pipeline with one filesystem sink (absolute paths)."""
    block: dict[str, Any] = {
        "name": "invoices",
        "watch": {"path": "/srv/inbox/invoices"},
        "steps": ["stp_a"],
        "sinks": [{"type": "filesystem", "path": "/srv/out"}],
    }
    block.update(pipeline)
    return {"state_dir": "/var/lib/docutray-watch", "pipelines": [block]}


def problems(
    data: Any,
    pm: pluggy.PluginManager,
    *,
    environ: dict[str, str] | None = None,
    need_secrets: bool = True,
) -> list[str]:
    """The lines of the ConfigError that parsing `data` raises."""
    with pytest.raises(ConfigError) as info:
        parse_config(
            data,
            sink_types=config_sink_types(pm),
            environ=environ or {},
            config_dir=Path("/etc/docutray-watch"),
            need_secrets=need_secrets,
        )
    return info.value.lines()


def load_problems(path: Path, pm: pluggy.PluginManager, **kwargs: Any) -> list[str]:
    """The lines of the ConfigError that loading `path` raises."""
    with pytest.raises(ConfigError) as info:
        load_config(path, sink_types=config_sink_types(pm), **kwargs)
    return info.value.lines()


def line_of(path: Path, needle: str) -> int:
    """1-based number of the first line of `path` containing `needle`."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


# --- a valid configuration ----------------------------------------------------------------------


class TestValidConfig:
    def test_full_config_loads_with_defaults_filled(
        self, write: WriteConfig, pm: pluggy.PluginManager
    ) -> None:
        """A valid file loads, and every option left out takes its documented default."""
        path = write(
            """\
            api:
              api_key: ${KEY}
            state_dir: /var/lib/dw
            pipelines:
              - name: invoices
                watch: {path: /srv/inbox}
                steps: [stp_a, stp_b]
                sinks:
                  - {type: filesystem, path: /srv/out}
            """
        )
        config = load_config(path, sink_types=config_sink_types(pm), environ={"KEY": "secret-key"})
        assert config.api.api_key is not None
        assert config.api.api_key.get_secret_value() == "secret-key"
        assert (config.api.max_retries, config.api.max_in_flight) == (4, 32)
        assert config.api.requests_per_second == "auto"
        assert (config.api.timeout.connect, config.api.timeout.read) == (5.0, 60.0)
        assert config.metrics is None
        assert (config.log.level, config.log.format) == ("info", "auto")
        pipeline = config.pipelines[0]
        assert pipeline.steps == ["stp_a", "stp_b"]
        assert (pipeline.watch.recursive, pipeline.watch.polling) == (False, None)
        assert (pipeline.watch.settle, pipeline.watch.rescan_interval) == (1.0, 60.0)
        assert "*.pdf" in pipeline.include
        assert ".*" in pipeline.ignore
        assert pipeline.duplicates == "skip"
        assert (pipeline.poll.initial, pipeline.poll.max, pipeline.poll.timeout) == (1.0, 5.0, 900)
        assert pipeline.on_success.action == pipeline.on_failure.action == "keep"
        sink = pipeline.sinks[0]
        assert (sink.type, sink.id, sink.concurrency) == ("filesystem", "filesystem", 4)
        assert sink.retry == SinkRetry()
        assert config.journal_path == Path("/var/lib/dw/journal.sqlite3")

    def test_relative_paths_resolve_against_the_config_folder(
        self,
        write: WriteConfig,
        pm: pluggy.PluginManager,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """watch.path, state_dir, on_success.to and sink paths are relative to the config folder."""
        path = write(
            """\
            state_dir: state
            pipelines:
              - name: p
                watch: {path: inbox}
                steps: [s]
                on_success: {action: move, to: ../done}
                sinks: [{type: filesystem, path: out/results}]
            """,
            name="conf/config.yaml",
        )
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        config = load_config(path, sink_types=config_sink_types(pm), environ={})
        base = path.resolve().parent
        pipeline = config.pipelines[0]
        assert Path(config.state_dir) == base / "state"
        assert Path(pipeline.watch.path) == base / "inbox"
        assert Path(pipeline.on_success.to or "") == base / ".." / "done"
        assert Path(pipeline.sinks[0].path) == base / "out" / "results"  # type: ignore[attr-defined]

    def test_pipeline_lookup_by_name(self, pm: pluggy.PluginManager) -> None:
        """Config.pipeline(name) finds a pipeline and raises KeyError for an unknown name."""
        config = parse_config(minimal(), sink_types=config_sink_types(pm), environ={})
        assert config.pipeline("invoices").name == "invoices"
        with pytest.raises(KeyError):
            config.pipeline("nope")

    def test_base_url_falls_back_to_the_environment(self, pm: pluggy.PluginManager) -> None:
        """Without api.base_url, $DOCUTRAY_BASE_URL is used, then the public service."""
        config = parse_config(minimal(), sink_types=config_sink_types(pm), environ={})
        assert config.api.resolved_base_url({"DOCUTRAY_BASE_URL": "http://127.0.0.1:8/"}) == (
            "http://127.0.0.1:8"
        )
        assert config.api.resolved_base_url({}) == "https://app.docutray.com"


# --- unknown keys, types, required fields -------------------------------------------------------


class TestUnknownKeys:
    def test_unknown_key_names_its_path_line_and_column(
        self, write: WriteConfig, pm: pluggy.PluginManager
    ) -> None:
        """A misspelled key is an error naming `pipelines[0].watch.pathh` with line:column."""
        path = write(
            """\
            pipelines:
              - name: p
                watch:
                  path: /srv/in
                  pathh: /srv/x
                steps: [s]
                sinks: [{type: filesystem, path: /srv/out}]
            """
        )
        (line,) = load_problems(path, pm, environ={})
        expected_line = line_of(path, "pathh")
        assert re.fullmatch(
            rf"{re.escape(str(path))}:{expected_line}:\d+: pipelines\[0\]\.watch\.pathh: "
            r"unknown key",
            line,
        )

    @pytest.mark.parametrize(
        ("where", "expected"),
        [
            (("api",), "api.bogus"),
            (("log",), "log.bogus"),
            (("pipelines", 0, "poll"), "pipelines[0].poll.bogus"),
            (("pipelines", 0, "sinks", 0), "pipelines[0].sinks[0].bogus"),
            (("pipelines", 0, "sinks", 0, "retry"), "pipelines[0].sinks[0].retry.bogus"),
        ],
    )
    def test_unknown_keys_are_rejected_everywhere(
        self, pm: pluggy.PluginManager, where: tuple[str | int, ...], expected: str
    ) -> None:
        """Every model, including a sink's block, rejects keys it does not know."""
        data: Any = minimal(poll={}, sinks=[{"type": "filesystem", "path": "/o", "retry": {}}])
        data.setdefault("api", {})
        data.setdefault("log", {})
        node = data
        for part in where:
            node = node[part]
        node["bogus"] = 1
        assert problems(data, pm) == [f"<config>: {expected}: unknown key"]


class TestTypesAndRequiredFields:
    @pytest.mark.parametrize(
        ("change", "path", "message"),
        [
            (
                {"watch": {"path": "/i", "recursive": [1]}},
                "pipelines[0].watch.recursive",
                "boolean",
            ),
            ({"steps": "stp_a"}, "pipelines[0].steps", "valid list"),
            ({"name": 5}, "pipelines[0].name", "valid string"),
            ({"duplicates": "maybe"}, "pipelines[0].duplicates", "'skip' or 'reprocess'"),
            ({"poll": {"initial": -1}}, "pipelines[0].poll.initial", "greater than 0"),
            ({"name": "bad name"}, "pipelines[0].name", "pattern"),
        ],
    )
    def test_wrong_types_name_the_path(
        self, pm: pluggy.PluginManager, change: dict[str, Any], path: str, message: str
    ) -> None:
        """A value of the wrong type or shape is an error naming its path and the problem."""
        (line,) = problems(minimal(**change), pm)
        assert line.startswith(f"<config>: {path}: ")
        assert message in line

    def test_wrong_type_at_the_top(self, pm: pluggy.PluginManager) -> None:
        """A string where a number is expected under api is named `api.max_in_flight`."""
        data = minimal()
        data["api"] = {"max_in_flight": "many"}
        (line,) = problems(data, pm)
        assert line.startswith("<config>: api.max_in_flight: ")
        assert "'many'" in line

    @pytest.mark.parametrize(
        ("remove", "path"),
        [
            (("steps",), "pipelines[0].steps"),
            (("watch",), "pipelines[0].watch"),
            (("sinks",), "pipelines[0].sinks"),
            (("name",), "pipelines[0].name"),
        ],
    )
    def test_missing_required_fields(
        self, pm: pluggy.PluginManager, remove: tuple[str], path: str
    ) -> None:
        """A required key that is absent is `Field required` at its path."""
        data = minimal()
        del data["pipelines"][0][remove[0]]
        (line,) = problems(data, pm)
        assert line.startswith(f"<config>: {path}: Field required")

    def test_missing_pipelines(self, pm: pluggy.PluginManager) -> None:
        """A config without pipelines says so at `pipelines`."""
        assert problems({"state_dir": "/x"}, pm) == ["<config>: pipelines: Field required"]

    def test_every_problem_is_reported_at_once(self, pm: pluggy.PluginManager) -> None:
        """Several mistakes give one line each, not only the first."""
        data = minimal(steps=[], include=[])
        data["api"] = {"max_retries": -1}
        paths = {line.split(": ")[1] for line in problems(data, pm)}
        assert paths == {"api.max_retries", "pipelines[0].steps", "pipelines[0].include"}


# --- YAML itself --------------------------------------------------------------------------------


class TestYamlSyntax:
    def test_bad_yaml_gives_the_line_number(
        self, write: WriteConfig, pm: pluggy.PluginManager
    ) -> None:
        """A syntax error is one line with the file, line and column of the problem."""
        path = write("pipelines:\n  - name: a\n   watch: x\n")
        (line,) = load_problems(path, pm)
        assert line.startswith(f"{path}:3:")
        assert "invalid YAML" in line

    def test_unclosed_bracket(self, write: WriteConfig, pm: pluggy.PluginManager) -> None:
        """An unclosed flow sequence is reported with a line number, not a traceback."""
        path = write("pipelines: [1, 2\n")
        (line,) = load_problems(path, pm)
        assert re.match(rf"{re.escape(str(path))}:\d+:\d+: <root>: invalid YAML: ", line)

    def test_duplicate_keys_are_errors(self, write: WriteConfig, pm: pluggy.PluginManager) -> None:
        """A key given twice in one mapping is an error at the second one (not silently lost)."""
        path = write(
            """\
            state_dir: /a
            pipelines: []
            state_dir: /b
            """
        )
        assert load_problems(path, pm) == [
            f"{path}:3:1: state_dir: duplicate key (each key may appear once)"
        ]

    @pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "", "42\n"])
    def test_root_must_be_a_mapping(
        self, write: WriteConfig, pm: pluggy.PluginManager, text: str
    ) -> None:
        """A list, a scalar or an empty file at the top is a single clear error."""
        path = write(text)
        (line,) = load_problems(path, pm)
        assert (
            line == f"{path}: <root>: the configuration must be a mapping (key: value) at the top"
        )

    def test_unreadable_config_file(self, tmp_path: Path, pm: pluggy.PluginManager) -> None:
        """A config path that cannot be read (missing) is a ConfigError, not an OSError."""
        (line,) = load_problems(tmp_path / "missing.yaml", pm)
        assert "cannot read the config file" in line

    def test_non_string_key(self, write: WriteConfig, pm: pluggy.PluginManager) -> None:
        """A numeric key inside a mapping is named as a key (`document_metadata.1`)."""
        path = write(
            """\
            pipelines:
              - name: p
                watch: {path: /i}
                steps: [s]
                document_metadata: {1: x}
                sinks: [{type: filesystem, path: /o}]
            """
        )
        (line,) = load_problems(path, pm)
        assert ": pipelines[0].document_metadata.1: " in line


# --- ${ENV} -------------------------------------------------------------------------------------


class TestEnvironmentExpansion:
    def test_variables_defaults_and_escapes(self, pm: pluggy.PluginManager) -> None:
        """${VAR} is replaced, ${VAR:-d} falls back when unset or empty, $$ is a literal $."""
        data = minimal(
            document_metadata={
                "plain": "${SOURCE}",
                "unset_default": "${NOPE:-fallback}",
                "empty_default": "${EMPTY:-fallback}",
                "empty_plain": "${EMPTY}",
                "escaped": "cost: $$5",
                "mixed": "a-${SOURCE}-b",
                "lone_dollar": "a$b",
            }
        )
        config = parse_config(
            data, sink_types=config_sink_types(pm), environ={"SOURCE": "scanner", "EMPTY": ""}
        )
        assert config.pipelines[0].document_metadata == {
            "plain": "scanner",
            "unset_default": "fallback",
            "empty_default": "fallback",
            "empty_plain": "",
            "escaped": "cost: $5",
            "mixed": "a-scanner-b",
            "lone_dollar": "a$b",
        }

    def test_escaped_variable_is_not_expanded(self, pm: pluggy.PluginManager) -> None:
        """`$${VAR}` stays a literal `${VAR}` even when VAR is set."""
        data = minimal()
        data["api"] = {"base_url": "http://127.0.0.1:1/$${HOST}"}
        config = parse_config(data, sink_types=config_sink_types(pm), environ={"HOST": "evil"})
        assert config.api.base_url == "http://127.0.0.1:1/${HOST}"

    def test_variables_in_numbers_and_booleans(self, pm: pluggy.PluginManager) -> None:
        """A variable may fill a numeric or boolean option; the value is then validated."""
        data = minimal(watch={"path": "/i", "recursive": "${REC}"})
        data["api"] = {"max_in_flight": "${N}"}
        config = parse_config(
            data, sink_types=config_sink_types(pm), environ={"N": "7", "REC": "true"}
        )
        assert config.api.max_in_flight == 7
        assert config.pipelines[0].watch.recursive is True

    def test_unset_variable_names_path_and_line(
        self, write: WriteConfig, pm: pluggy.PluginManager
    ) -> None:
        """An unset ${VAR} without default is an error naming the variable, path and line."""
        path = write(
            """\
            pipelines:
              - name: p
                watch: {path: /i}
                steps: [s, "${STEP_TWO}"]
                sinks: [{type: filesystem, path: /o}]
            """
        )
        (line,) = load_problems(path, pm, environ={})
        assert line.startswith(f"{path}:4:")
        assert line.endswith("pipelines[0].steps[1]: environment variable STEP_TWO is not set")

    def test_need_secrets_false_tolerates_unset_api_variables(
        self, pm: pluggy.PluginManager
    ) -> None:
        """With need_secrets=False an unset variable under `api` is not an error."""
        data = minimal()
        data["api"] = {"api_key": "${DOCUTRAY_API_KEY}"}
        assert problems(data, pm) == [
            "<config>: api.api_key: environment variable DOCUTRAY_API_KEY is not set"
        ]
        parse_config(data, sink_types=config_sink_types(pm), environ={}, need_secrets=False)

    def test_need_secrets_false_still_requires_other_variables(
        self, pm: pluggy.PluginManager
    ) -> None:
        """need_secrets=False only relaxes `api`: an unset variable elsewhere is still an error."""
        data = minimal(watch={"path": "${INBOX}"})
        (line,) = problems(data, pm, need_secrets=False)
        assert "pipelines[0].watch.path: environment variable INBOX is not set" in line


# --- api_key_file -------------------------------------------------------------------------------


class TestApiKeyFile:
    def test_key_file_is_read_and_stripped(self, tmp_path: Path, pm: pluggy.PluginManager) -> None:
        """api_key_file's content, without surrounding whitespace, becomes the API key."""
        key_file = tmp_path / "api-key"
        key_file.write_text(f"  {CANARY_KEY}\n\n")
        data = minimal()
        data["api"] = {"api_key_file": str(key_file)}
        config = parse_config(data, sink_types=config_sink_types(pm), environ={})
        assert config.api.api_key is not None
        assert config.api.api_key.get_secret_value() == CANARY_KEY
        assert CANARY_KEY not in repr(config)

    def test_relative_key_file_resolves_against_the_config_folder(
        self, write: WriteConfig, pm: pluggy.PluginManager
    ) -> None:
        """A relative api_key_file is found next to the config file."""
        path = write(
            """\
            api: {api_key_file: secrets/key}
            pipelines:
              - {name: p, watch: {path: /i}, steps: [s], sinks: [{type: filesystem, path: /o}]}
            """
        )
        (path.parent / "secrets").mkdir()
        (path.parent / "secrets" / "key").write_text(CANARY_KEY)
        config = load_config(path, sink_types=config_sink_types(pm), environ={})
        assert config.api.api_key is not None
        assert config.api.api_key.get_secret_value() == CANARY_KEY

    @pytest.mark.parametrize("problem", ["missing", "directory", "empty", "not_utf8"])
    def test_unusable_key_file_is_an_error_at_api_key_file(
        self, tmp_path: Path, pm: pluggy.PluginManager, problem: str
    ) -> None:
        """A missing, unreadable, empty or undecodable key file is an error at api.api_key_file."""
        key_file = tmp_path / "api-key"
        if problem == "directory":
            key_file.mkdir()
        elif problem == "empty":
            key_file.write_text("  \n")
        elif problem == "not_utf8":
            key_file.write_bytes(CANARY_KEY.encode() + b"\xff\xfe")
        data = minimal()
        data["api"] = {"api_key_file": str(key_file)}
        (line,) = problems(data, pm)
        assert line.startswith("<config>: api.api_key_file: ")
        assert str(key_file) in line
        assert CANARY_KEY not in line

    def test_key_and_key_file_together_are_rejected(
        self, tmp_path: Path, pm: pluggy.PluginManager
    ) -> None:
        """Setting api_key and api_key_file is an error that does not echo the key."""
        key_file = tmp_path / "api-key"
        key_file.write_text("other")
        data = minimal()
        data["api"] = {"api_key": CANARY_KEY, "api_key_file": str(key_file)}
        lines = problems(data, pm)
        assert lines == ["<config>: api.api_key_file: set api_key or api_key_file, not both"]
        # Commands that never call the API still reject the contradiction.
        assert problems(data, pm, need_secrets=False) == lines

    def test_need_secrets_false_does_not_read_the_key_file(
        self, tmp_path: Path, pm: pluggy.PluginManager
    ) -> None:
        """With need_secrets=False an unreadable key file is not an error (and is not read)."""
        data = minimal()
        data["api"] = {"api_key_file": str(tmp_path / "missing")}
        config = parse_config(
            data, sink_types=config_sink_types(pm), environ={}, need_secrets=False
        )
        assert config.api.api_key is None

    def test_key_never_appears_in_errors(self, pm: pluggy.PluginManager) -> None:
        """A wrong-typed API key and unrelated errors never echo the key's value."""
        data = minimal(steps=[])
        data["api"] = {"api_key": [CANARY_KEY], "max_retries": "x"}
        text = "\n".join(problems(data, pm))
        assert "api.api_key" in text
        assert CANARY_KEY not in text


# --- checks across fields -----------------------------------------------------------------------


class TestCrossFieldChecks:
    def test_duplicate_pipeline_names(self, pm: pluggy.PluginManager) -> None:
        """Two pipelines with one name: the second name is the error."""
        data = minimal()
        second = copy.deepcopy(data["pipelines"][0])
        second["watch"]["path"] = "/srv/inbox/other"
        data["pipelines"].append(second)
        (line,) = problems(data, pm)
        assert line.startswith("<config>: pipelines[1].name: pipeline names must be unique")

    def test_default_sink_ids_number_repeats(self, pm: pluggy.PluginManager) -> None:
        """Sinks without id get their type, then type-2, type-3…"""
        sinks = [{"type": "filesystem", "path": f"/o{i}"} for i in range(3)]
        config = parse_config(minimal(sinks=sinks), sink_types=config_sink_types(pm), environ={})
        assert [s.id for s in config.pipelines[0].sinks] == [
            "filesystem",
            "filesystem-2",
            "filesystem-3",
        ]

    def test_duplicate_explicit_sink_ids(self, pm: pluggy.PluginManager) -> None:
        """Two sinks with the same explicit id: the second one's id is the error."""
        sinks = [
            {"type": "filesystem", "path": "/a", "id": "out"},
            {"type": "filesystem", "path": "/b", "id": "out"},
        ]
        (line,) = problems(minimal(sinks=sinks), pm)
        assert line.startswith("<config>: pipelines[0].sinks[1].id: sink ids must be unique")

    def test_explicit_id_clashing_with_a_default_id(self, pm: pluggy.PluginManager) -> None:
        """An explicit id equal to another sink's default id is a duplicate too."""
        sinks = [
            {"type": "filesystem", "path": "/a"},
            {"type": "filesystem", "path": "/b", "id": "filesystem"},
        ]
        (line,) = problems(minimal(sinks=sinks), pm)
        assert "pipelines[0].sinks[1].id" in line
        assert "'filesystem'" in line

    @pytest.mark.parametrize("state_dir", ["/srv/inbox/invoices", "/srv/inbox/invoices/.state"])
    def test_state_dir_inside_a_watched_folder(
        self, pm: pluggy.PluginManager, state_dir: str
    ) -> None:
        """The journal may not live in (or be) an inbox."""
        data = minimal()
        data["state_dir"] = state_dir
        (line,) = problems(data, pm)
        assert line.startswith("<config>: state_dir: state_dir (")
        assert "'invoices'" in line

    def test_on_success_inside_a_recursive_inbox(self, pm: pluggy.PluginManager) -> None:
        """on_success.to below a recursively watched folder would be taken again: rejected."""
        data = minimal(
            watch={"path": "/srv/inbox", "recursive": True},
            on_success={"action": "move", "to": "/srv/inbox/done"},
        )
        (line,) = problems(data, pm)
        assert line.startswith("<config>: pipelines[0].on_success.to: on_success.to (")

    def test_on_success_below_a_flat_inbox_is_allowed(self, pm: pluggy.PluginManager) -> None:
        """A non-recursive inbox never looks into sub-folders, so `done/` may live there."""
        data = minimal(
            watch={"path": "/srv/inbox"}, on_success={"action": "move", "to": "/srv/inbox/done"}
        )
        parse_config(data, sink_types=config_sink_types(pm), environ={})

    def test_on_failure_equal_to_the_inbox(self, pm: pluggy.PluginManager) -> None:
        """Moving failed files into the inbox itself is rejected at on_failure.to."""
        data = minimal(
            watch={"path": "/srv/inbox"}, on_failure={"action": "move", "to": "/srv/inbox/"}
        )
        (line,) = problems(data, pm)
        assert line.startswith("<config>: pipelines[0].on_failure.to: ")

    def test_move_without_destination(self, pm: pluggy.PluginManager) -> None:
        """action: move needs a `to` folder."""
        (line,) = problems(minimal(on_success={"action": "move"}), pm)
        assert line == "<config>: pipelines[0].on_success.to: action 'move' needs a 'to' folder"

    def test_destination_without_move(self, pm: pluggy.PluginManager) -> None:
        """delete/keep take no `to` folder."""
        (line,) = problems(minimal(on_failure={"action": "delete", "to": "/x"}), pm)
        assert line == "<config>: pipelines[0].on_failure.to: action 'delete' takes no 'to' folder"

    def test_poll_max_below_initial(self, pm: pluggy.PluginManager) -> None:
        """poll.max smaller than poll.initial is an error at poll.max."""
        (line,) = problems(minimal(poll={"initial": 5, "max": 1}), pm)
        assert line == "<config>: pipelines[0].poll.max: max must be at least initial"

    def test_duplicate_step_ids(self, pm: pluggy.PluginManager) -> None:
        """The same step twice in one pipeline is rejected."""
        (line,) = problems(minimal(steps=["a", "a"]), pm)
        assert line.startswith("<config>: pipelines[0].steps: step IDs must be unique")

    @pytest.mark.parametrize(
        ("template", "reason"),
        [
            ("{bogus}", "unknown placeholder {bogus}"),
            ("{name!r}", "cannot have a format"),
            ("{size:>10}", "cannot have a format"),
            ("{name", "invalid template"),
            ("{0}", "invalid placeholder"),
            ("{name.upper}", "invalid placeholder"),
        ],
    )
    def test_bad_metadata_templates(
        self, pm: pluggy.PluginManager, template: str, reason: str
    ) -> None:
        """document_metadata values are checked templates; the key is named in the message."""
        (line,) = problems(minimal(document_metadata={"src": template}), pm)
        assert line.startswith("<config>: pipelines[0].document_metadata: src: ")
        assert reason in line

    def test_step_id_is_not_a_metadata_placeholder(self, pm: pluggy.PluginManager) -> None:
        """{step_id} is known to sink templates but not before submission."""
        (line,) = problems(minimal(document_metadata={"s": "{step_id}"}), pm)
        assert "unknown placeholder {step_id}" in line

    def test_bad_sink_name_template(self, pm: pluggy.PluginManager) -> None:
        """The filesystem sink checks its name template when the config is loaded."""
        sinks = [{"type": "filesystem", "path": "/o", "name": "{nope}.json"}]
        (line,) = problems(minimal(sinks=sinks), pm)
        assert line.startswith("<config>: pipelines[0].sinks[0].name: unknown placeholder {nope}")

    def test_unknown_sink_type_names_the_known_types(self, pm: pluggy.PluginManager) -> None:
        """An unknown sink type is reported at `.type` with the list of installed types."""
        (line,) = problems(minimal(sinks=[{"type": "ftp", "host": "x"}]), pm)
        assert line.startswith("<config>: pipelines[0].sinks[0].type: unknown sink type 'ftp'")
        for known in ("filesystem", "s3", "database"):
            assert f"'{known}'" in line

    def test_missing_sink_type(self, pm: pluggy.PluginManager) -> None:
        """A sink block without `type` is an error at `.type`."""
        (line,) = problems(minimal(sinks=[{"path": "/o"}]), pm)
        assert line.startswith("<config>: pipelines[0].sinks[0].type: Field required")

    def test_sink_type_of_a_plugin_validates_its_own_block(self) -> None:
        """A sink type's own model checks its options (here: the s3 bucket)."""
        pm = get_plugin_manager(load_entrypoints=False)
        (line,) = problems(minimal(sinks=[{"type": "s3", "bucket": "x"}]), pm)
        assert line.startswith("<config>: pipelines[0].sinks[0].bucket: ")


# --- the JSON Schema and the example file -------------------------------------------------------


def _config_models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    """Collect `model` and every model reachable through its fields' annotations."""
    if model in seen:
        return
    seen.add(model)
    for info in model.model_fields.values():
        stack: list[Any] = [info.annotation]
        while stack:
            item = stack.pop()
            if isinstance(item, type) and issubclass(item, BaseModel):
                _config_models(item, seen)
            stack.extend(typing.get_args(item))


def all_config_models(pm: pluggy.PluginManager) -> set[type[BaseModel]]:
    """Config, its nested models, and the models of the built-in sink types."""
    models: set[type[BaseModel]] = set()
    _config_models(Config, models)
    for sink_type in collect_sink_types(pm).values():
        _config_models(sink_type.config_model, models)
    for source_model in builtin_source_models().values():
        _config_models(source_model, models)
    models.discard(SinkConfig)  # its fields are checked through every sink type's model
    return models


class TestJsonSchema:
    def test_schema_is_valid_json_schema(self, pm: pluggy.PluginManager) -> None:
        """config_json_schema() is a valid draft 2020-12 schema with a title."""
        schema = config_json_schema(config_sink_types(pm))
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["title"] == "docutray-watch configuration"
        assert "pipelines" in schema["properties"]

    def test_schema_accepts_the_example(self, pm: pluggy.PluginManager) -> None:
        """The example config, read as plain data, validates against the schema."""
        schema = config_json_schema(config_sink_types(pm))
        data = yaml.safe_load(EXAMPLE.read_text())
        jsonschema.Draft202012Validator(schema).validate(data)

    def test_schema_rejects_unknown_keys(self, pm: pluggy.PluginManager) -> None:
        """The schema forbids unknown keys like the loader does (editors flag typos)."""
        schema = config_json_schema(config_sink_types(pm))
        data = yaml.safe_load(EXAMPLE.read_text())
        data["pipelines"][0]["watch"]["pathh"] = "/x"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(schema).validate(data)

    def test_schema_lists_each_sink_type(self, pm: pluggy.PluginManager) -> None:
        """Every registered sink type is a branch of the sinks' tagged union."""
        text = json.dumps(config_json_schema(config_sink_types(pm)))
        for name in collect_sink_types(pm):
            assert f'"const": "{name}"' in text

    def test_cli_schema_prints_the_schema(self) -> None:
        """`docutray-watch schema` prints the same JSON Schema as config_json_schema()."""
        result = subprocess.run(
            [str(CLI), "schema"], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == config_json_schema(load_plugins().config_sink_types)

    def test_build_config_model_needs_a_sink_type(self) -> None:
        """Without any sink type there is no usable config model."""
        with pytest.raises(ValueError, match="no sink types"):
            build_config_model({})


class TestExampleConfig:
    def test_example_loads(self, pm: pluggy.PluginManager) -> None:
        """config.example.yaml loads once DOCUTRAY_API_KEY is set."""
        config = load_config(
            EXAMPLE, sink_types=config_sink_types(pm), environ={"DOCUTRAY_API_KEY": "k"}
        )
        assert [p.name for p in config.pipelines] == ["invoices", "receipts", "mixed"]
        mixed = config.pipeline("mixed")
        assert mixed.identify is not None
        assert mixed.route_codes == ["invoice", "receipt"]

    def test_example_documents_every_option(self, pm: pluggy.PluginManager) -> None:
        """Every field of every config model (and each sink type) appears in the example."""
        text = EXAMPLE.read_text()
        missing = []
        for model in all_config_models(pm):
            for name, info in model.model_fields.items():
                key = info.alias or name
                if not re.search(rf"^[ \t#]*(- )?{re.escape(key)}:", text, re.MULTILINE) and not (
                    re.search(rf"[{{,] *{re.escape(key)}:", text)
                ):
                    missing.append(f"{model.__name__}.{key}")
        assert not missing, f"options missing from config.example.yaml: {sorted(missing)}"

    def test_example_has_a_block_per_sink_type(self, pm: pluggy.PluginManager) -> None:
        """Each built-in sink type has an example block."""
        text = EXAMPLE.read_text()
        for name in collect_sink_types(pm):
            assert re.search(rf"type: {name}\b", text), name

    def test_every_option_is_explained(self, pm: pluggy.PluginManager) -> None:
        """The first line of each option carries a comment, inline or on the line above."""
        lines = EXAMPLE.read_text().splitlines()
        unexplained = []
        for key in sorted(
            {
                info.alias or name
                for m in all_config_models(pm)
                for name, info in m.model_fields.items()
            }
        ):
            pattern = re.compile(rf"^[ \t#]*(- )?{re.escape(key)}:")
            index = next(i for i, line in enumerate(lines) if pattern.match(line))
            if "#" not in lines[index] and not lines[index - 1].lstrip().startswith("#"):
                unexplained.append(key)
        assert not unexplained, f"options without a comment in the example: {unexplained}"


# --- the fuzz test: broken configs through the real CLI -----------------------------------------

LINE_PATTERN = re.compile(
    r"^docutray-watch: config error: (?P<file>[^:]+)(?::\d+(?::\d+)?)?: (?P<path>\S+): \S.*$"
)


@dataclass
class FuzzCase:
    """One broken config, the path its error must name, and how to validate it."""

    label: str
    text: str
    expected_path: str
    offline: bool = True
    setup: Callable[[Path], None] | None = field(default=None, repr=False)


def _base(tmp: Path) -> dict[str, Any]:
    return {
        "api": {"base_url": "http://127.0.0.1:9", "api_key": "${DOCUTRAY_API_KEY}"},
        "state_dir": str(tmp / "state"),
        "pipelines": [
            {
                "name": "invoices",
                "watch": {"path": str(tmp / "in-a"), "settle": 0.5},
                "steps": ["stp_a"],
                "poll": {"initial": 1, "max": 2},
                "on_failure": {"action": "move", "to": str(tmp / "failed")},
                "sinks": [{"type": "filesystem", "path": str(tmp / "out")}],
            },
            {
                "name": "receipts",
                "watch": {"path": str(tmp / "in-b"), "recursive": True},
                "steps": ["stp_b", "stp_c"],
                "document_metadata": {"folder": "{relative_dir}"},
                "sinks": [
                    {"type": "database", "url": f"sqlite:///{tmp / 'r.db'}"},
                    {"type": "filesystem", "path": str(tmp / "out-b"), "name": "{stem}.json"},
                ],
            },
        ],
    }


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


# Each mutation takes (valid data, pipeline index, variant) and returns (data, expected path).
Mutation = Callable[[dict[str, Any], int, int], tuple[Any, str]]

_UNKNOWN_KEY_SPOTS: list[tuple[str, ...]] = [
    (),
    ("api",),
    ("P",),
    ("P", "watch"),
    ("P", "poll"),
    ("P", "sinks", "0"),
    ("api", "timeout"),
]
_WRONG_TYPES: list[tuple[tuple[str, ...], Any]] = [
    (("api", "max_retries"), "lots"),
    (("api", "base_url"), "ftp://example.com"),
    (("api", "timeout", "connect"), 0),
    (("api", "max_in_flight"), 0),
    (("shutdown_grace",), -1),
    (("metrics",), "yes"),
    (("log", "format"), "xml"),
    (("P", "on_success"), "move"),
    (("P", "poll", "timeout"), "never"),
    (("P", "sinks", "0", "retry"), [1]),
    (("P", "document_metadata"), ["a"]),
    (("P", "watch", "rescan_interval"), 0),
    (("P", "watch", "ready_marker"), "done"),
    (("P", "deliver_errors"), "perhaps"),
    (("api", "requests_per_second"), [1]),
    (("api", "timeout"), 5),
    (("P", "watch", "recursive"), {"a": 1}),
    (("P", "watch", "settle"), -1),
    (("P", "steps"), "stp_x"),
    (("P", "steps"), []),
    (("P", "include"), 7),
    (("P", "sinks", "0", "concurrency"), 0),
    (("P", "duplicates"), "sometimes"),
    (("P", "name"), "has space"),
    (("state_dir",), ["a"]),
    (("log", "level"), "loud"),
    (("metrics", "listen"), "nowhere"),
]
_REQUIRED: list[tuple[str, ...]] = [
    ("pipelines",),
    ("P", "name"),
    ("P", "watch"),
    ("P", "watch", "path"),
    ("P", "steps"),
    ("P", "sinks"),
    ("P", "sinks", "0", "type"),
]
_TEMPLATES: list[tuple[tuple[str, ...], str]] = [
    (("P", "document_metadata", "x"), "{nope}"),
    (("P", "document_metadata", "y"), "{name!s}"),
    (("P", "document_metadata", "z"), "{step_id}"),
    (("P", "document_metadata", "w"), "{"),
]


def _resolve(data: dict[str, Any], spot: tuple[str, ...], pipeline: int) -> tuple[Any, str]:
    """Walk to the container of `spot` ('P' = the chosen pipeline); return it and its path."""
    node: Any = data
    path = ""
    for part in spot:
        if part == "P":
            node = node["pipelines"][pipeline]
            path = f"pipelines[{pipeline}]"
        elif part.isdigit():
            node = node[int(part)]
            path += f"[{part}]"
        else:
            node = node.setdefault(part, {})
            path += f".{part}" if path else part
    return node, path


def _set(data: dict[str, Any], spot: tuple[str, ...], pipeline: int, value: Any) -> str:
    parent, path = _resolve(data, spot[:-1], pipeline)
    parent[spot[-1]] = value
    return f"{path}.{spot[-1]}" if path else spot[-1]


def _del(data: dict[str, Any], spot: tuple[str, ...], pipeline: int) -> str:
    parent, path = _resolve(data, spot[:-1], pipeline)
    parent.pop(spot[-1], None)
    return f"{path}.{spot[-1]}" if path else spot[-1]


def _fuzz_cases(tmp: Path) -> list[FuzzCase]:
    """100 broken configs built deterministically from a valid one."""
    rng = random.Random(20260115)
    cases: list[FuzzCase] = []

    def add(label: str, data: Any, path: str, **kwargs: Any) -> None:
        cases.append(
            FuzzCase(label, _dump(data) if not isinstance(data, str) else data, path, **kwargs)
        )

    for pipeline in (0, 1):
        # Spots outside the pipelines are the same for both: generate them once.
        def wanted(spot: tuple[str, ...], pipeline: int = pipeline) -> bool:
            return "P" in spot or pipeline == 0

        for spot in filter(wanted, _UNKNOWN_KEY_SPOTS):
            data = _base(tmp)
            key = rng.choice(["pathh", "stpes", "recursiv", "extra", "Name"])
            add(f"unknown key {spot}", data, _set(data, (*spot, key), pipeline, 1))
        for spot, value in _WRONG_TYPES:
            if wanted(spot):
                data = _base(tmp)
                add(f"wrong type {spot}", data, _set(data, spot, pipeline, value))
        for spot in filter(wanted, _REQUIRED):
            data = _base(tmp)
            add(f"missing {spot}", data, _del(data, spot, pipeline))
        for spot, template in _TEMPLATES:
            data = _base(tmp)
            path = _set(data, spot, pipeline, template)
            add(f"template {template}", data, path.rsplit(".", 1)[0])
        # an unset variable outside `api` (inside, --offline tolerates it)
        data = _base(tmp)
        variable = f"FUZZ_UNSET_{pipeline}"
        add(
            "unset variable", data, _set(data, ("P", "watch", "path"), pipeline, f"${{{variable}}}")
        )
        data = _base(tmp)
        data["pipelines"][pipeline]["steps"].append("${FUZZ_UNSET_STEP}")
        add(
            "unset variable in a list",
            data,
            f"pipelines[{pipeline}].steps[{len(data['pipelines'][pipeline]['steps']) - 1}]",
        )
        # checks across fields
        data = _base(tmp)
        add(
            "poll order",
            data,
            _set(data, ("P", "poll"), pipeline, {"initial": 9, "max": 1}) + ".max",
        )
        data = _base(tmp)
        add(
            "move without to",
            data,
            _set(data, ("P", "on_success"), pipeline, {"action": "move"}) + ".to",
        )
        data = _base(tmp)
        data["state_dir"] = data["pipelines"][pipeline]["watch"]["path"] + "/state"
        add("state inside inbox", data, "state_dir")
        data = _base(tmp)
        data["pipelines"][pipeline]["sinks"].append(
            dict(data["pipelines"][pipeline]["sinks"][0], id="dup")
        )
        data["pipelines"][pipeline]["sinks"][0]["id"] = "dup"
        add(
            "duplicate sink id",
            data,
            f"pipelines[{pipeline}].sinks[{len(data['pipelines'][pipeline]['sinks']) - 1}].id",
        )
        data = _base(tmp)
        data["pipelines"][pipeline]["sinks"][0]["type"] = "ftp"
        add("unknown sink type", data, f"pipelines[{pipeline}].sinks[0].type")
        data = _base(tmp)
        data["pipelines"][1 - pipeline]["name"] = data["pipelines"][pipeline]["name"]
        add("duplicate pipeline name", data, "pipelines[1].name")

    valid = _dump(_base(tmp))
    broken_yaml = [
        valid.replace("pipelines:\n", "pipelines:\n  bad: [\n", 1),
        valid.replace("  steps:", "   steps:", 1),
        valid.replace("state_dir:", "state_dir: @", 1),
        valid.replace("api:", "api: {", 1),
        valid + "\n---\nsecond: document\n",
        valid.replace("- name: invoices\n", "- name: invoices\n  name: again\n", 1),
        valid + "\tbad: tab\n",
        "- just\n- a list\n",
    ]
    for index, text in enumerate(broken_yaml):
        assert text != valid, f"broken YAML {index} is the valid text"
        path = "pipelines[0].name" if "again" in text else "<root>"
        add(f"bad yaml {index}", text, path)

    # API key files: only loading with secrets reads them (`validate` without --offline stops
    # with 78 before any network when the file is unusable).
    def key_file_case(label: str, make: Callable[[Path], object]) -> None:
        data = _base(tmp)
        key_file = tmp / f"key-{len(cases)}"
        data["api"] = {"base_url": "http://127.0.0.1:9", "api_key_file": str(key_file)}

        def setup(_tmp: Path, f: Path = key_file) -> None:
            make(f)

        cases.append(
            FuzzCase(
                label,
                _dump(data),
                "api.api_key_file",
                offline=False,
                setup=setup,
            )
        )

    key_file_case("key file missing", lambda f: None)
    key_file_case("key file is a folder", lambda f: f.mkdir())
    key_file_case("key file empty", lambda f: f.write_text("\n"))
    key_file_case("key file not text", lambda f: f.write_bytes(b"\xff\xfe\x00"))
    data = _base(tmp)
    data["api"]["api_key_file"] = str(tmp / "whatever")
    add("key and key file", data, "api.api_key_file")

    assert len(cases) >= 100, len(cases)
    rng.shuffle(cases)
    return cases[:100]


@pytest.fixture(name="restore_logging")
def restore_logging_fixture() -> Iterator[None]:
    """The CLI configures logging globally: put the root logger and structlog back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _check_output(case: FuzzCase, code: int, output: str) -> None:
    where = f"case {case.label!r}:\n{case.text}\n--- output ---\n{output}"
    assert code == EX_CONFIG, where
    assert "Traceback" not in output, where
    assert CANARY_KEY not in output, where
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, where
    paths = []
    for line in lines:
        match = LINE_PATTERN.match(line)
        assert match, f"not a one-line config error: {line!r}\n{where}"
        paths.append(match["path"])
    assert case.expected_path in paths, where
    if case.expected_path == "<root>":
        assert re.search(r"\.yaml:\d+", output) or "mapping" in output, where


class TestConfigFuzz:
    def test_broken_configs_exit_78_with_one_line_per_problem(
        self, tmp_path: Path, restore_logging: None
    ) -> None:
        """100 broken configs: exit 78, one `file:line: path: message` line each, no traceback."""
        cases = _fuzz_cases(tmp_path)
        assert len(cases) == 100
        files = []
        for index, case in enumerate(cases):
            path = tmp_path / f"fuzz-{index:03d}.yaml"
            path.write_text(case.text)
            if case.setup is not None:
                case.setup(tmp_path)
            files.append(path)
        env = {"DOCUTRAY_API_KEY": CANARY_KEY, "DOCUTRAY_WATCH_CONFIG": None}
        unset = {name: None for name in ("FUZZ_UNSET_0", "FUZZ_UNSET_1", "FUZZ_UNSET_STEP")}

        def argv(case: FuzzCase, path: Path) -> list[str]:
            return ["validate", *(["--offline"] if case.offline else []), "-c", str(path)]

        # Every tenth case runs as a real process, in parallel; the rest in-process.
        sampled = [i for i in range(len(cases)) if i % 10 == 0]

        def run_process(index: int) -> tuple[int, str]:
            process_env = {k: v for k, v in __import__("os").environ.items() if k not in unset}
            process_env.pop("DOCUTRAY_WATCH_CONFIG", None)
            process_env["DOCUTRAY_API_KEY"] = CANARY_KEY
            result = subprocess.run(
                [str(CLI), *argv(cases[index], files[index])],
                capture_output=True,
                text=True,
                timeout=60,
                env=process_env,
                check=False,
            )
            return result.returncode, result.stdout + result.stderr

        with ThreadPoolExecutor(max_workers=len(sampled)) as pool:
            futures = {i: pool.submit(run_process, i) for i in sampled}
            runner = CliRunner()
            for index, case in enumerate(cases):
                if index in futures:
                    continue
                result = runner.invoke(cli, argv(case, files[index]), env={**env, **unset})
                output = result.stdout + result.stderr
                if result.exception is not None and not isinstance(result.exception, SystemExit):
                    output += f"\nTraceback: {result.exception!r}"
                _check_output(case, result.exit_code, output)
            for index, future in futures.items():
                code, output = future.result()
                _check_output(cases[index], code, output)

    def test_generator_is_deterministic(self, tmp_path: Path) -> None:
        """The fuzz generator builds the same 100 cases every time (failures reproduce)."""
        first = [(c.label, c.text) for c in _fuzz_cases(tmp_path)]
        assert first == [(c.label, c.text) for c in _fuzz_cases(tmp_path)]
        assert len({text for _, text in first}) == 100


class TestRequestRate:
    """`api.requests_per_second: auto | number` and `api.max_requests_per_second`."""

    def parse(self, pm: pluggy.PluginManager, **api: Any) -> Config:
        data = {**minimal(), "api": api}
        return parse_config(
            data, sink_types=config_sink_types(pm), environ={"RPS": "12.5"}, need_secrets=False
        )

    def test_auto_is_the_default(self, pm: pluggy.PluginManager) -> None:
        """Without the key the rate is learned (auto), with no cap."""
        config = self.parse(pm)
        assert config.api.requests_per_second == "auto"
        assert config.api.max_requests_per_second is None

    def test_a_number_and_a_cap(self, pm: pluggy.PluginManager) -> None:
        """A number (also from ${ENV}) is a fixed rate; auto takes an optional cap."""
        assert self.parse(pm, requests_per_second="${RPS}").api.requests_per_second == 12.5
        assert self.parse(pm, requests_per_second=5).api.requests_per_second == 5.0
        capped = self.parse(pm, requests_per_second="auto", max_requests_per_second=40)
        assert capped.api.max_requests_per_second == 40.0

    @pytest.mark.parametrize("value", ["fast", 0, -3, True, [1], ".inf"])
    def test_anything_else_is_named(self, pm: pluggy.PluginManager, value: Any) -> None:
        """Neither auto nor a positive number: one error naming api.requests_per_second."""
        (line,) = problems({**minimal(), "api": {"requests_per_second": value}}, pm)
        assert line.startswith("<config>: api.requests_per_second: must be auto or a positive")

    def test_a_cap_on_a_fixed_rate_is_refused(self, pm: pluggy.PluginManager) -> None:
        """max_requests_per_second with a numeric rate is an error naming the cap."""
        data = {**minimal(), "api": {"requests_per_second": 5, "max_requests_per_second": 9}}
        (line,) = problems(data, pm)
        assert line.startswith("<config>: api.max_requests_per_second: applies only with")

    def test_cli_exits_78(self, tmp_path: Path, restore_logging: None) -> None:
        """`validate` of a bad rate exits 78 naming the path."""
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({**minimal(), "api": {"requests_per_second": "fast"}}))
        result = CliRunner().invoke(cli, ["validate", "--offline", "-c", str(path)])
        assert result.exit_code == EX_CONFIG
        assert "api.requests_per_second: must be auto or a positive number" in result.output


CONFIG_DIR = REPO / "docutray_watch" / "config"


@pytest.mark.parametrize("module", sorted(p.name for p in CONFIG_DIR.glob("*.py")))
def test_no_config_module_is_over_500_lines(module: str) -> None:
    """One concern per module: none of the config package's files is over 500 lines."""
    assert len((CONFIG_DIR / module).read_text(encoding="utf-8").splitlines()) <= 500
