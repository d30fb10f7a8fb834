"""Tests of `docutray_watch.plugins`, plus meta-tests that keep hooks documented and tested."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
import structlog

from docutray_watch import hookspecs
from docutray_watch.hookspecs import PROJECT_NAME, hookimpl
from docutray_watch.plugins import (
    DEFAULT_PLUGINS,
    DuplicateSinkTypeError,
    InvalidSinkTypeError,
    call_first,
    call_observers,
    collect_sink_types,
    describe_plugins,
    get_plugin_manager,
)
from docutray_watch.records import ResultRecord
from docutray_watch.sinks.base import Receipt, Sink, SinkConfig
from docutray_watch.sinks.filesystem import FilesystemSink

REPO = Path(__file__).resolve().parents[1]
HOOKS_DOC = REPO / "docs" / "hooks.md"

Register = Callable[[type[Sink[Any]]], None]


class EchoSink(Sink[SinkConfig]):
    """A minimal sink type for registration tests."""

    type = "echo"
    description = "Echo records (tests)."
    config_model = SinkConfig

    def deliver(self, record: ResultRecord) -> Receipt:
        return None


class OtherEchoSink(EchoSink):
    """A second class claiming the same type name."""


class EchoPlugin:
    """Registers EchoSink."""

    @hookimpl
    def register_sink_types(self, register: Register) -> None:
        register(EchoSink)


class ClashingPlugin:
    """Registers another class under the name `echo`."""

    @hookimpl
    def register_sink_types(self, register: Register) -> None:
        register(OtherEchoSink)


@pytest.fixture(name="pm")
def pm_fixture(monkeypatch: pytest.MonkeyPatch) -> pluggy.PluginManager:
    """A manager with the built-in plugins only, without operator switches set."""
    monkeypatch.delenv("DOCUTRAY_WATCH_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("DOCUTRAY_WATCH_TRACE_PLUGINS", raising=False)
    return get_plugin_manager(load_entrypoints=False)


def hookspec_names() -> list[str]:
    """Every function of `docutray_watch.hookspecs` marked as a hookspec."""
    return sorted(
        name
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, f"{PROJECT_NAME}_spec")
    )


class TestGetPluginManager:
    def test_registers_the_default_plugins(self, pm: pluggy.PluginManager) -> None:
        """Every module of DEFAULT_PLUGINS is registered under its module name."""
        names = {pm.get_name(plugin) for plugin in pm.get_plugins()}
        assert names == set(DEFAULT_PLUGINS)
        assert set(collect_sink_types(pm)) == {"filesystem", "s3", "database"}

    def test_each_call_builds_a_fresh_manager(self, pm: pluggy.PluginManager) -> None:
        """Registering into one manager does not affect the next one (no global state)."""
        pm.register(EchoPlugin(), name="echo")
        assert "echo" not in collect_sink_types(get_plugin_manager(load_entrypoints=False))

    def test_disable_through_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """DOCUTRAY_WATCH_DISABLE_PLUGINS switches a plugin off by name (and blocks the name)."""
        monkeypatch.setenv("DOCUTRAY_WATCH_DISABLE_PLUGINS", " docutray_watch.sinks.s3 , other")
        pm = get_plugin_manager(load_entrypoints=False)
        assert set(collect_sink_types(pm)) == {"filesystem", "database"}
        assert pm.is_blocked("docutray_watch.sinks.s3")
        assert pm.is_blocked("other")

    def test_disable_argument(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The `disable` argument does the same as the environment variable."""
        monkeypatch.delenv("DOCUTRAY_WATCH_DISABLE_PLUGINS", raising=False)
        pm = get_plugin_manager(load_entrypoints=False, disable=["docutray_watch.sinks.database"])
        assert set(collect_sink_types(pm)) == {"filesystem", "s3"}

    def test_trace_switch_writes_hook_calls(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """DOCUTRAY_WATCH_TRACE_PLUGINS=1 writes each hook call and its result to stderr."""
        monkeypatch.setenv("DOCUTRAY_WATCH_TRACE_PLUGINS", "1")
        pm = get_plugin_manager(load_entrypoints=False)

        class Greeter:
            @hookimpl
            def ignore_document(self, pipeline: str, path: Path) -> str:
                return "not today"

        pm.register(Greeter(), name="greeter")
        collect_sink_types(pm)
        call_first(pm, "ignore_document", pipeline="invoices", path=Path("/in/a.pdf"))
        err = capsys.readouterr().err
        assert "register_sink_types [docutray_watch.sinks.filesystem]" in err
        assert "ignore_document [greeter]" in err
        assert "pipeline: invoices" in err
        assert "--> not today" in err

    @pytest.mark.parametrize("value", ["", "0", "false", "no"])
    def test_trace_is_off_by_default(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        value: str,
    ) -> None:
        """Without the switch (or with 0/false/no) nothing is traced."""
        monkeypatch.setenv("DOCUTRAY_WATCH_TRACE_PLUGINS", value)
        pm = get_plugin_manager(load_entrypoints=False)
        collect_sink_types(pm)
        assert capsys.readouterr().err == ""


class TestCollectSinkTypes:
    def test_built_ins_are_attributed_to_their_module(self, pm: pluggy.PluginManager) -> None:
        """Each sink type knows the plugin that registered it and its config model."""
        types = collect_sink_types(pm)
        assert types["filesystem"].plugin == "docutray_watch.sinks.filesystem"
        assert types["filesystem"].sink_class is FilesystemSink
        assert types["filesystem"].config_model is FilesystemSink.config_model
        assert types["filesystem"].description == FilesystemSink.description

    def test_plugin_sink_type(self, pm: pluggy.PluginManager) -> None:
        """A plugin's register_sink_types adds its type next to the built-ins."""
        pm.register(EchoPlugin(), name="echo-plugin")
        types = collect_sink_types(pm)
        assert types["echo"].sink_class is EchoSink
        assert types["echo"].plugin == "echo-plugin"

    def test_duplicate_type_names_both_plugins(self, pm: pluggy.PluginManager) -> None:
        """Two plugins registering one type name is an error naming both (no silent winner)."""
        pm.register(EchoPlugin(), name="first-plugin")
        pm.register(ClashingPlugin(), name="second-plugin")
        with pytest.raises(DuplicateSinkTypeError) as info:
            collect_sink_types(pm)
        message = str(info.value)
        assert "'echo'" in message
        assert "first-plugin" in message
        assert "second-plugin" in message
        assert "DOCUTRAY_WATCH_DISABLE_PLUGINS" in message

    def test_clash_with_a_built_in(self, pm: pluggy.PluginManager) -> None:
        """A plugin re-registering `filesystem` clashes with the built-in module."""

        class Impostor(FilesystemSink):
            pass

        class ImpostorPlugin:
            @hookimpl
            def register_sink_types(self, register: Register) -> None:
                register(Impostor)

        pm.register(ImpostorPlugin(), name="impostor")
        with pytest.raises(DuplicateSinkTypeError, match=r"docutray_watch\.sinks\.filesystem"):
            collect_sink_types(pm)

    @pytest.mark.parametrize(
        ("thing", "message"),
        [
            (object, "not a Sink class"),
            (EchoSink(SinkConfig(type="echo"), pipeline="p", sink_id="e"), "not a Sink class"),
            (type("BadName", (EchoSink,), {"type": "not a name"}), "must be a name"),
            (type("NoType", (Sink,), {}), "must be a name"),
            (type("BadModel", (EchoSink,), {"config_model": dict}), "must subclass SinkConfig"),
        ],
    )
    def test_invalid_registrations(
        self, pm: pluggy.PluginManager, thing: Any, message: str
    ) -> None:
        """Anything but a Sink subclass with a name and a SinkConfig model is refused."""

        class Broken:
            @hookimpl
            def register_sink_types(self, register: Register) -> None:
                register(thing)

        pm.register(Broken(), name="broken-plugin")
        with pytest.raises(InvalidSinkTypeError, match=message) as info:
            collect_sink_types(pm)
        assert "broken-plugin" in str(info.value)


class Recorder:
    """A plugin that records its calls to the observer hooks used below."""

    def __init__(self, name: str, calls: list[str], *, fail: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.fail = fail

    @hookimpl
    def document_discovered(self, pipeline: str) -> str:
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} broke")
        return f"{self.name}:{pipeline}"


class TestCallObservers:
    def test_a_failing_plugin_does_not_stop_the_others(self, pm: pluggy.PluginManager) -> None:
        """Every implementation runs even when one raises; the error is logged with the plugin."""
        calls: list[str] = []
        for name, fail in (("a", False), ("b", True), ("c", False)):
            pm.register(Recorder(name, calls, fail=fail), name=name)
        with structlog.testing.capture_logs() as logs:
            results = call_observers(pm, "document_discovered", pipeline="p", document=None)
        assert sorted(calls) == ["a", "b", "c"]
        assert sorted(results) == ["a:p", "c:p"]
        (failure,) = [entry for entry in logs if entry["event"] == "plugin_hook_failed"]
        assert (failure["plugin"], failure["hook"], failure["log_level"]) == (
            "b",
            "document_discovered",
            "error",
        )
        assert failure["error"] == "RuntimeError: b broke"

    def test_pluggy_order_and_argument_subsets(self, pm: pluggy.PluginManager) -> None:
        """Implementations run in pluggy's order (last registered first) with the args they ask."""
        calls: list[str] = []
        pm.register(Recorder("first", calls), name="first")
        pm.register(Recorder("second", calls), name="second")
        call_observers(pm, "document_discovered", pipeline="p", document=object())
        assert calls == ["second", "first"]

    def test_wrappers_are_skipped(self, pm: pluggy.PluginManager) -> None:
        """Hook wrappers are not called directly (they need pluggy's protocol)."""

        class Wrapper:
            @hookimpl(wrapper=True)
            def document_discovered(self, pipeline: str) -> Iterator[None]:
                # Called directly it would return this generator, a non-None "result".
                return (yield)

        pm.register(Wrapper(), name="wrapper")
        assert call_observers(pm, "document_discovered", pipeline="p", document=None) == []


class TestCallFirst:
    def test_first_non_none_answer_wins(self, pm: pluggy.PluginManager) -> None:
        """call_first skips None answers and failing plugins and returns the first answer."""

        class Silent:
            @hookimpl
            def ignore_document(self, pipeline: str, path: Path) -> None:
                return None

        class Refuser:
            @hookimpl
            def ignore_document(self, path: Path) -> str:
                return f"refused {path.name}"

        class Broken:
            @hookimpl
            def ignore_document(self, pipeline: str) -> str:
                raise RuntimeError("broken")

        pm.register(Refuser(), name="refuser")
        pm.register(Silent(), name="silent")
        pm.register(Broken(), name="broken")
        with structlog.testing.capture_logs() as logs:
            answer = call_first(pm, "ignore_document", pipeline="p", path=Path("/in/a.pdf"))
        assert answer == "refused a.pdf"
        assert [e["plugin"] for e in logs if e["event"] == "plugin_hook_failed"] == ["broken"]

    def test_no_answer(self, pm: pluggy.PluginManager) -> None:
        """Without implementations (or only None answers) the result is None."""
        assert call_first(pm, "ignore_document", pipeline="p", path=Path("/x")) is None


class TestDescribePlugins:
    def test_built_ins_only_with_all(self, pm: pluggy.PluginManager) -> None:
        """Without include_builtin the built-ins are hidden; with it they are listed."""
        assert describe_plugins(pm=pm) == []
        entries = describe_plugins(include_builtin=True, pm=pm)
        assert [e["name"] for e in entries] == sorted(DEFAULT_PLUGINS)
        filesystem = next(e for e in entries if e["name"] == "docutray_watch.sinks.filesystem")
        assert filesystem["builtin"] is True
        assert filesystem["hooks"] == ["register_sink_types"]
        assert filesystem["sink_types"] == [
            {"type": "filesystem", "description": FilesystemSink.description}
        ]

    def test_third_party_plugin_is_described(self, pm: pluggy.PluginManager) -> None:
        """A registered plugin shows its hooks and sink types, after the built-ins."""

        class Full(EchoPlugin):
            @hookimpl
            def startup(self, config: Any) -> None:
                return None

        pm.register(Full(), name="full-plugin")
        (entry,) = describe_plugins(pm=pm)
        assert entry == {
            "name": "full-plugin",
            "distribution": None,
            "version": None,
            "builtin": False,
            "broken": False,
            "hooks": ["register_sink_types", "startup"],
            "sink_types": [{"type": "echo", "description": "Echo records (tests)."}],
            "source_types": [],
        }
        assert describe_plugins(include_builtin=True, pm=pm)[-1]["name"] == "full-plugin"


# --- meta-tests ---------------------------------------------------------------------------------


class TestHookMetadata:
    def test_hookspecs_are_found(self) -> None:
        """The hookspec module declares hooks (the meta-tests below would pass vacuously)."""
        names = hookspec_names()
        assert "register_sink_types" in names
        assert len(names) >= 5

    def test_every_hookspec_has_a_docstring(self) -> None:
        """Each hook is explained where it is declared."""
        for name in hookspec_names():
            assert (getattr(hookspecs, name).__doc__ or "").strip(), name

    def test_every_hookspec_is_documented(self) -> None:
        """Each hookspec has its own `## name` section in docs/hooks.md."""
        if not HOOKS_DOC.exists():
            pytest.fail(
                "docs/hooks.md does not exist yet: it must document every hook under its own "
                f"'## <hook name>' heading ({', '.join(hookspec_names())})"
            )
        text = HOOKS_DOC.read_text(encoding="utf-8")
        missing = [
            name
            for name in hookspec_names()
            if not re.search(rf"^##\s+`?{re.escape(name)}`?\s*(\(.*)?$", text, re.MULTILINE)
        ]
        assert not missing, f"hooks without a '## name' section in docs/hooks.md: {missing}"

    def test_every_hookspec_has_a_test(self) -> None:
        """Each hook is implemented or called in some test module other than this one."""
        this_module = Path(__file__).resolve()
        texts = [
            path.read_text(encoding="utf-8")
            for path in sorted((REPO / "tests").rglob("*.py"))
            if path.resolve() != this_module
        ]
        untested = []
        for name in hookspec_names():
            # An implementation (`def name(`), a direct call (`hook.name(`) or the name passed
            # to call_observers/call_first (`"name"`).
            usage = re.compile(rf"def {name}\(|hook\.{name}\(|[\"']{name}[\"']")
            if not any(usage.search(text) for text in texts):
                untested.append(name)
        assert not untested, (
            f"hooks that no test implements or calls: {untested} — add a test that uses each "
            "(a plugin implementing it in an engine test, say)"
        )


class TestAsyncHookImplementations:
    def test_an_async_observer_is_reported_not_silently_dropped(self) -> None:
        """An `async def` hook implementation is logged as failed and never left un-awaited."""
        import warnings

        from structlog.testing import capture_logs

        from docutray_watch.hookspecs import hookimpl
        from docutray_watch.plugins import call_observers, get_plugin_manager

        class AsyncObserver:
            @hookimpl
            async def document_discovered(self, pipeline: str) -> None:
                raise AssertionError("never awaited")

        pm = get_plugin_manager(load_entrypoints=False)
        pm.register(AsyncObserver(), name="async-observer")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "coroutine was never awaited" would fail the test
            with capture_logs() as logs:
                assert call_observers(pm, "document_discovered", pipeline="p", document=None) == []
        (failure,) = [e for e in logs if e["event"] == "plugin_hook_failed"]
        assert failure["plugin"] == "async-observer"
        assert "async def" in failure["error"]
