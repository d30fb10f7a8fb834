"""Broken plugins are left out, reported by distribution and version, and break nothing else.

Each test installs fake distributions on the fly: a folder on `sys.path` holding a module and a
`*.dist-info` with `entry_points.txt`, which `importlib.metadata` finds like a pip-installed one.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from docutray_watch.cli import cli
from docutray_watch.config import ConfigError, load_config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.plugins import load_plugins
from docutray_watch.samples import make_pdf

_serial = itertools.count()

# Module bodies of fake plugins; `{sink}` is a healthy Sink class definition to reuse.
SINK = """
from docutray_watch import Sink, SinkConfig, hookimpl

class {cls}(Sink[SinkConfig]):
    type = {type!r}
    description = "a test sink"
    config_model = SinkConfig

    def deliver(self, record):
        return None
"""

BROKEN: dict[str, tuple[str, str]] = {
    # kind: (module body, what the report must say)
    "duplicate_type": (
        SINK.format(cls="MyFilesystem", type="filesystem")
        + "\n@hookimpl\ndef register_sink_types(register):\n    register(MyFilesystem)\n",
        "registers sink type 'filesystem', which plugin 'docutray_watch.sinks.filesystem' "
        "already registers",
    ),
    "misspelled_hook": (
        "from docutray_watch import hookimpl\n\n"
        "@hookimpl\ndef after_document_delivred(pipeline):\n    pass\n",
        "implements 'after_document_delivred', which is not a docutray-watch hook "
        "(did you mean 'after_document_delivered'?)",
    ),
    "unknown_argument": (
        "from docutray_watch import hookimpl\n\n"
        "@hookimpl\ndef after_document_result(pipeline, documnet):\n    pass\n",
        "hook after_document_result: Argument(s) {'documnet'} are declared in the hookimpl but "
        "can not be found in the hookspec",
    ),
    "not_a_sink": (
        "from docutray_watch import hookimpl\n\n"
        "class Fancy:\n    type = 'fancy'\n\n"
        "@hookimpl\ndef register_sink_types(register):\n    register(Fancy)\n",
        "not a Sink class",
    ),
    "async_hook": (
        "from docutray_watch import hookimpl\n\n@hookimpl\nasync def startup(config):\n    pass\n",
        "hook startup is `async def`; hook implementations must be plain functions",
    ),
    "import_error": (
        "import docutray_watch_no_such_dependency\n",
        "cannot import it: ModuleNotFoundError: No module named "
        "'docutray_watch_no_such_dependency'",
    ),
}

InstallPlugin = Callable[..., str]


@pytest.fixture(name="install_plugin")
def install_plugin_fixture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InstallPlugin]:
    """Install a fake distribution `docutray-watch-<name>` 1.2.<n> with one entry point."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("DOCUTRAY_WATCH_DISABLE_PLUGINS", raising=False)
    created: list[str] = []

    def install(name: str, body: str) -> str:
        serial = next(_serial)
        module = f"fake_plugin_{name}_{serial}"  # a fresh module name: no sys.modules reuse
        dist = f"docutray-watch-{name.replace('_', '-')}"
        (site / f"{module}.py").write_text(textwrap.dedent(body))
        info = site / f"{dist.replace('-', '_')}-1.2.{serial}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.{serial}\n"
        )
        (info / "entry_points.txt").write_text(f"[docutray_watch]\n{name} = {module}\n")
        created.append(module)
        return f"{dist} 1.2.{serial}"

    yield install
    for module in created:
        sys.modules.pop(module, None)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"DOCUTRAY_API_KEY": ""})


def write_config(
    tmp_path: Path,
    emulator: EmulatorServer | None,
    sink: dict[str, Any],
    **more: dict[str, Any],
) -> Path:
    """A config with pipeline `invoices` (inbox/) delivering to `sink`, and one more pipeline
    per keyword (name: its sink, folder inbox-NAME/)."""
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "pipelines": [
            {
                "name": name,
                "watch": {"path": str(tmp_path / folder), "settle": 0},
                "steps": ["stp_one"],
                "poll": {"initial": 0.05, "max": 0.2},
                "sinks": [each],
            }
            for name, folder, each in [
                ("invoices", "inbox", sink),
                *((name, f"inbox-{name}", each) for name, each in more.items()),
            ]
        ],
    }
    if emulator is not None:
        data["api"] = {"base_url": emulator.base_url, "api_key": emulator.api_key}
    for pipeline in data["pipelines"]:
        Path(pipeline["watch"]["path"]).mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class TestLoadPlugins:
    @pytest.mark.parametrize("kind", sorted(BROKEN))
    def test_a_broken_plugin_is_left_out_and_reported_by_distribution(
        self, install_plugin: InstallPlugin, kind: str
    ) -> None:
        """Each kind of broken plugin is left out with one line naming its distribution and
        version; a healthy plugin installed alongside loads as usual."""
        body, reason = BROKEN[kind]
        label = install_plugin(kind, body)
        install_plugin("good", SINK.format(cls="Good", type="good") + _REGISTER.format("Good"))
        plugins = load_plugins()
        (broken,) = plugins.broken
        assert broken.name == kind
        line = broken.line()
        assert "\n" not in line
        assert line.startswith(f"plugin {label} (entry point {kind!r}) failed to load")
        assert reason in line
        assert not plugins.pm.has_plugin(kind)
        assert {"filesystem", "webhook", "good"} <= set(plugins.sink_types)
        assert plugins.sink_types["filesystem"].plugin == "docutray_watch.sinks.filesystem"

    def test_a_plugin_is_left_out_whole_when_one_of_its_classes_is_bad(
        self, install_plugin: InstallPlugin
    ) -> None:
        """A plugin registering one good and one bad class registers neither, and the config
        names the plugin for either type."""
        label = install_plugin(
            "half",
            SINK.format(cls="Half", type="half")
            + "\nclass Bad:\n    type = 'bad'\n"
            + "\n@hookimpl\ndef register_sink_types(register):\n"
            + "    register(Half)\n    register(Bad)\n",
        )
        plugins = load_plugins()
        assert "half" not in plugins.sink_types
        assert set(plugins.config_sink_types.unavailable) == {"half", "bad"}
        assert label in plugins.config_sink_types.unavailable["half"]

    def test_an_async_hook_is_refused_at_load_time(self, install_plugin: InstallPlugin) -> None:
        """An `async def` hookimpl is refused when the plugin loads, not when the hook fires."""
        install_plugin("async_hook", BROKEN["async_hook"][0])
        plugins = load_plugins()
        assert not plugins.pm.has_plugin("async_hook")
        assert plugins.pm.hook.startup.get_hookimpls() == []


_REGISTER = "\n@hookimpl\ndef register_sink_types(register):\n    register({})\n"


class TestCommandsWithABrokenPlugin:
    @pytest.fixture(autouse=True)
    def _broken_and_good(self, install_plugin: InstallPlugin) -> None:
        self.not_a_sink = install_plugin("not_a_sink", BROKEN["not_a_sink"][0])
        self.import_error = install_plugin("import_error", BROKEN["import_error"][0])

    def test_plugins_lists_the_broken_one_and_the_rest_and_exits_1(self) -> None:
        """`plugins` lists each broken plugin with its reason, the others as usual; exit 1."""
        result = invoke("plugins")
        assert result.exit_code == 1, result.output
        assert "internal error" not in result.output
        assert "Traceback" not in result.output
        stdout = result.stdout
        assert f"not_a_sink ({self.not_a_sink}): BROKEN, left out: " in stdout
        assert f"import_error ({self.import_error}): BROKEN, left out: cannot import" in stdout
        assert "sink type webhook" in stdout
        assert "failed to load" not in result.stderr  # listed once, in the listing

    def test_plugins_json_marks_the_broken_one_and_exits_1(self) -> None:
        """`plugins --json` gives `broken: true` and the error; it exits 1 too."""
        result = invoke("plugins", "--json")
        assert result.exit_code == 1
        entries = {e["name"]: e for e in json.loads(result.stdout)}
        assert entries["not_a_sink"]["broken"] is True
        assert "not a Sink class" in entries["not_a_sink"]["error"]
        assert entries["webhook"]["broken"] is False

    def test_each_command_reports_a_broken_plugin_in_one_line_not_as_a_config_error(
        self, tmp_path: Path
    ) -> None:
        """Other commands say once per broken plugin that it was left out — not 'config error'."""
        config = write_config(tmp_path, None, {"type": "filesystem", "path": str(tmp_path / "o")})
        result = invoke("validate", "--offline", "-c", str(config))
        assert result.exit_code == 0, result.output
        lines = [line for line in result.stderr.splitlines() if "failed to load" in line]
        assert len(lines) == 2
        assert all("config error" not in line for line in lines)
        assert any(self.not_a_sink in line for line in lines)

    def test_schema_still_works(self) -> None:
        """`schema` prints the schema of the sink types that loaded and exits 0."""
        result = invoke("schema")
        assert result.exit_code == 0, result.output
        assert "webhook" in result.stdout

    def test_a_pipeline_not_using_the_broken_plugin_is_processed(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`process` of a pipeline using only working sink types runs and exits 0."""
        config = write_config(
            tmp_path, emulator, {"type": "filesystem", "path": str(tmp_path / "out")}
        )
        (tmp_path / "inbox" / "a.pdf").write_bytes(make_pdf(["a"]))
        result = invoke("process", "-c", str(config), "--no-progress")
        assert result.exit_code == 0, result.output
        assert "processed 1 document(s): success 1" in result.stdout

    def test_a_pipeline_using_a_type_of_the_broken_plugin_fails_naming_it(
        self, tmp_path: Path
    ) -> None:
        """A sink type only a broken plugin provides fails validation (78) naming the plugin."""
        config = write_config(tmp_path, None, {"type": "fancy"})
        result = invoke("validate", "--offline", "-c", str(config))
        assert result.exit_code == 78
        (line,) = [line for line in result.stderr.splitlines() if "is left out: pipelines" in line]
        assert "pipeline 'invoices' is left out: pipelines[0].sinks[0].type: " in line
        assert "sink type 'fancy' is provided by plugin " in line
        assert self.not_a_sink in line
        assert "config error" not in result.stderr

    def test_the_other_pipelines_of_the_same_config_run(
        self, tmp_path: Path, emulator: EmulatorServer
    ) -> None:
        """`process` leaves out only the pipeline that needs the broken plugin: the others are
        processed, its file stays in its folder, and the exit code (1) says not all ran."""
        config = write_config(
            tmp_path,
            emulator,
            {"type": "fancy"},
            receipts={"type": "filesystem", "path": str(tmp_path / "out")},
        )
        (tmp_path / "inbox" / "held.pdf").write_bytes(make_pdf(["held"]))
        (tmp_path / "inbox-receipts" / "r.pdf").write_bytes(make_pdf(["r"]))
        result = invoke("process", "-c", str(config), "--no-progress")
        assert result.exit_code == 1, result.output
        assert "processed 1 document(s): success 1" in result.stdout
        assert "not processed: pipeline 'invoices' is left out: pipelines[0].sinks[0]" in (
            result.stdout
        )
        assert (tmp_path / "inbox" / "held.pdf").exists()
        assert list((tmp_path / "out").rglob("*.json"))
        loaded = load_config(config, sink_types=load_plugins().config_sink_types)
        assert [p.name for p in loaded.pipelines] == ["receipts"]
        assert [held.name for held in loaded.held_back] == ["invoices"]

    def test_an_unknown_type_names_the_plugins_that_could_not_be_imported(
        self, tmp_path: Path
    ) -> None:
        """A type nobody provides names the plugins whose types are unknown (import failed)."""
        config = write_config(tmp_path, None, {"type": "mystery"})
        with pytest.raises(ConfigError) as info:
            load_config(config, sink_types=load_plugins().config_sink_types)
        (line,) = info.value.lines()
        assert "unknown sink type 'mystery'" in line
        assert self.import_error in line
        assert self.not_a_sink not in line  # its types are known, and 'mystery' is not one


class TestLoadedOncePerCommand:
    def test_config_does_not_import_the_plugin_machinery(self) -> None:
        """config.py does not import plugins.py (no config -> plugins -> hookspecs cycle)."""
        code = (
            "import sys, docutray_watch.config\n"
            "assert 'docutray_watch.plugins' not in sys.modules, 'plugins imported'\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

    def test_process_builds_the_plugin_manager_once(
        self, tmp_path: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`process` loads the plugins once and hands them to the config and the engine."""
        import docutray_watch.plugins as plugins_module

        calls: list[str] = []
        real = plugins_module.load_plugins

        def counting(**kwargs: Any) -> Any:
            calls.append("load")
            return real(**kwargs)

        monkeypatch.setattr(plugins_module, "load_plugins", counting)
        config = write_config(
            tmp_path, emulator, {"type": "filesystem", "path": str(tmp_path / "out")}
        )
        (tmp_path / "inbox" / "a.pdf").write_bytes(make_pdf(["a"]))
        result = invoke("process", "-c", str(config), "--no-progress")
        assert result.exit_code == 0, result.output
        assert calls == ["load"]
