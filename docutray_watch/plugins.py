"""The plugin manager: built-in plugins, entry-point plugins, and the sink types they register.

Nothing happens at import time; `load_plugins()` builds a fresh manager each call (tests get one
without entry points), and each command builds it once and hands it to the config loader and the
engine (a SIGHUP reload reuses it). Built-in sinks are listed in `DEFAULT_PLUGINS` and register
through the same `register_sink_types` hook as third-party plugins from the `docutray_watch`
entry-point group.

A plugin that cannot be used — it does not import, implements a hook that does not exist or
with an argument the hook lacks, has an `async def` hook, registers something that is not a
Sink class or a sink type name another plugin already has — is left out (unregistered) and
reported as a `BrokenPlugin` naming its distribution and version; the others load as usual.

Operators can switch plugins off with `DOCUTRAY_WATCH_DISABLE_PLUGINS=name,name` (entry-point or
module names) and watch every hook call with `DOCUTRAY_WATCH_TRACE_PLUGINS=1`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

import pluggy
import structlog

from docutray_watch import hookspecs
from docutray_watch.config import SinkTypes
from docutray_watch.hookspecs import PROJECT_NAME
from docutray_watch.sinks import BUILTIN_SINK_MODULES
from docutray_watch.sinks.base import Sink, SinkConfig
from docutray_watch.sources import BUILTIN_SOURCE_MODULES
from docutray_watch.sources.registry import SourceType, collect_source_types

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "BrokenPlugin",
    "DuplicateSinkTypeError",
    "Plugins",
    "SinkType",
    "collect_sink_types",
    "config_sink_types",
    "get_plugin_manager",
    "has_observers",
    "load_plugins",
]

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME

DEFAULT_PLUGINS: tuple[str, ...] = BUILTIN_SINK_MODULES + BUILTIN_SOURCE_MODULES

DISABLE_ENV = "DOCUTRAY_WATCH_DISABLE_PLUGINS"
TRACE_ENV = "DOCUTRAY_WATCH_TRACE_PLUGINS"


class DuplicateSinkTypeError(Exception):
    """Two plugins registered a sink type under the same name."""


class InvalidSinkTypeError(Exception):
    """A plugin registered something that is not a usable Sink class."""


@dataclass(frozen=True)
class SinkType:
    """A registered sink class and the plugin that registered it."""

    name: str
    sink_class: type[Sink[Any]]
    plugin: str

    @property
    def description(self) -> str:
        """One line saying what the sink does."""
        return self.sink_class.description

    @property
    def config_model(self) -> type[SinkConfig]:
        """The pydantic model that validates this sink's block of the config."""
        return self.sink_class.config_model


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that failed to load and was left out."""

    name: str  # the entry-point (or module) name
    error: str  # one line: what is wrong
    distribution: str | None = None
    version: str | None = None
    sink_types: tuple[str, ...] = ()  # the types it tried to register, when known

    @property
    def label(self) -> str:
        """`docutray-watch-foo 1.2 (entry point foo)`, or the module name of a built-in."""
        if self.distribution is None:
            return self.name
        version = f" {self.version}" if self.version else ""
        return f"{self.distribution}{version} (entry point {self.name!r})"

    def line(self) -> str:
        """The one line that reports it."""
        return f"plugin {self.label} failed to load and is left out: {self.error}"


@dataclass
class Plugins:
    """The plugin manager of one command, its sink types, and the plugins left out."""

    pm: pluggy.PluginManager
    sink_types: dict[str, SinkType]
    broken: list[BrokenPlugin] = field(default_factory=list)
    distributions: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (dist, ver)
    source_types: dict[str, SourceType] = field(default_factory=dict)

    @cached_property
    def config_sink_types(self) -> SinkTypes:
        """What `load_config(sink_types=…)` needs: the models, and which types are missing why."""
        unavailable: dict[str, str] = {}
        load_failures: list[str] = []
        for plugin in self.broken:
            if not plugin.sink_types:
                load_failures.append(plugin.line())
            for name in plugin.sink_types:
                if name not in self.sink_types:
                    unavailable[name] = (
                        f"sink type {name!r} is provided by plugin {plugin.label}, which failed "
                        f"to load: {plugin.error}"
                    )
        return SinkTypes(
            {name: st.config_model for name, st in self.sink_types.items()},
            unavailable=unavailable,
            load_failures=load_failures,
            sources={name: st.config_model for name, st in self.source_types.items()},
        )


def _disabled_names(extra: Iterable[str] = ()) -> set[str]:
    names = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    return names | set(extra)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _validation_problem(exc: pluggy.PluginValidationError) -> str:
    """pluggy's several-line message as one line: the hook and what is wrong with it."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    hook = re.search(r"for hook '([^']+)'", lines[0]) if lines else None
    reason = lines[-1].strip() if lines else "invalid hook implementation"
    return f"hook {hook.group(1)}: {reason}" if hook else reason


def _hookimpl_problem(pm: pluggy.PluginManager, plugin: object) -> str | None:
    """What pluggy lets through at registration: unknown hook names and `async def` hooks."""
    known = [
        name
        for name, caller in vars(pm.hook).items()
        if not name.startswith("_") and caller.has_spec()
    ]
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            if not caller.has_spec() and not impl.optionalhook:
                close = difflib.get_close_matches(caller.name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return f"implements {caller.name!r}, which is not a docutray-watch hook{hint}"
            function = impl.function
            if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
                return (
                    f"hook {caller.name} is `async def`; hook implementations must be plain "
                    "functions (they run on the event loop and must not block it)"
                )
    return None


def _register(
    pm: pluggy.PluginManager,
    name: str,
    load: Callable[[], object],
    dist: tuple[str, str] | None,
    broken: list[BrokenPlugin],
) -> None:
    """Import and register one plugin; a plugin that cannot be used is recorded as broken."""
    distribution, version = dist if dist is not None else (None, None)

    def fail(error: str) -> None:
        broken.append(BrokenPlugin(name, error, distribution, version))

    try:
        plugin = load()
    except Exception as exc:  # noqa: BLE001 - any failure of third-party code leaves it out
        fail(f"cannot import it: {_one_line(exc)}")
        return
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        fail(_validation_problem(exc))
        return
    except ValueError as exc:  # the same plugin object under two names
        fail(_one_line(exc))
        return
    problem = _hookimpl_problem(pm, plugin)
    if problem is not None:
        pm.unregister(plugin)
        fail(problem)


def _identity(plugin: object) -> object:
    return plugin


def _entry_point_dist(ep: importlib.metadata.EntryPoint) -> tuple[str, str] | None:
    dist = ep.dist
    if dist is None:
        return None
    return dist.metadata["Name"] or dist.name, dist.version


def load_plugins(
    *,
    load_entrypoints: bool = True,
    disable: Iterable[str] = (),
    extra: Iterable[tuple[str, object]] = (),
) -> Plugins:
    """Build the plugin manager: built-in plugins, `extra` (name, plugin) pairs, then installed
    ones; every plugin that cannot be used is left out and listed in `Plugins.broken`."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    disabled = _disabled_names(disable)
    for name in disabled:
        pm.set_blocked(name)
    broken: list[BrokenPlugin] = []
    distributions: dict[str, tuple[str, str]] = {}
    for module_name in DEFAULT_PLUGINS:
        if module_name not in disabled:
            _register(pm, module_name, partial(importlib.import_module, module_name), None, broken)
    for name, plugin in extra:
        if name not in disabled:
            _register(pm, name, partial(_identity, plugin), None, broken)
    if load_entrypoints:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            # Like pluggy: a blocked (disabled) name, or one already loaded, is skipped.
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            dist = _entry_point_dist(ep)
            _register(pm, ep.name, ep.load, dist, broken)
            if dist is not None and pm.has_plugin(ep.name):
                distributions[ep.name] = dist
    sink_types = _collect_isolating(pm, broken, distributions)
    source_types, rejected = collect_source_types(pm)
    for plugin in rejected:
        pm.unregister(plugin.plugin)
        distribution, version = distributions.pop(plugin.name, (None, None))
        broken.append(BrokenPlugin(plugin.name, plugin.error, distribution, version))
        for name in [n for n, st in sink_types.items() if st.plugin == plugin.name]:
            del sink_types[name]  # a plugin is left out whole
    if os.environ.get(TRACE_ENV, "").lower() not in ("", "0", "false", "no"):
        pm.trace.root.setwriter(lambda message: sys.stderr.write(message))
        pm.enable_tracing()
    return Plugins(pm, sink_types, broken, distributions, source_types)


def get_plugin_manager(
    *, load_entrypoints: bool = True, disable: Iterable[str] = ()
) -> pluggy.PluginManager:
    """Just the plugin manager of `load_plugins()` (broken plugins already left out)."""
    return load_plugins(load_entrypoints=load_entrypoints, disable=disable).pm


def config_sink_types(pm: pluggy.PluginManager) -> SinkTypes:
    """The sink types of a plugin manager in the form `load_config(sink_types=…)` takes."""
    source_types, _rejected = collect_source_types(pm)
    return SinkTypes(
        {name: st.config_model for name, st in collect_sink_types(pm).items()},
        sources={name: st.config_model for name, st in source_types.items()},
    )


def _collect_isolating(
    pm: pluggy.PluginManager,
    broken: list[BrokenPlugin],
    distributions: dict[str, tuple[str, str]],
) -> dict[str, SinkType]:
    """Collect sink types plugin by plugin; a plugin whose registration fails is left out whole.

    Plugins registered earlier win a name: the built-in sinks keep theirs.
    """
    found: dict[str, SinkType] = {}
    for impl in pm.hook.register_sink_types.get_hookimpls():
        plugin_name = impl.plugin_name
        classes: list[Any] = []
        error: str | None = None
        pm.trace.root.get("hook")(f"register_sink_types [{plugin_name}]")
        try:
            impl.function(register=classes.append)
            mine: dict[str, SinkType] = {}
            for sink_class in classes:
                _check_sink_class(sink_class, plugin_name)
                name = sink_class.type
                other = found.get(name) or mine.get(name)
                if other is not None:
                    raise DuplicateSinkTypeError(
                        f"it registers sink type {name!r}, which plugin {other.plugin!r} "
                        f"already registers; disable one with {DISABLE_ENV}"
                    )
                mine[name] = SinkType(name=name, sink_class=sink_class, plugin=plugin_name)
        except (DuplicateSinkTypeError, InvalidSinkTypeError) as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a failing hook leaves its plugin out
            error = f"register_sink_types failed: {_one_line(exc)}"
        if error is None:
            found.update(mine)
            continue
        pm.unregister(impl.plugin)
        dist, version = distributions.pop(plugin_name, (None, None))
        names = tuple(
            dict.fromkeys(
                c.type for c in classes if isinstance(getattr(c, "type", None), str) and c.type
            )
        )
        broken.append(BrokenPlugin(plugin_name, error, dist, version, names))
    return found


def collect_sink_types(pm: pluggy.PluginManager) -> dict[str, SinkType]:
    """Ask every plugin for its sink classes; a name registered twice is an error naming both."""
    found: dict[str, SinkType] = {}
    # Call each implementation on its own so every registration is attributed to its plugin.
    for impl in pm.hook.register_sink_types.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(sink_class: type[Sink[Any]], _plugin: str = plugin_name) -> None:
            _check_sink_class(sink_class, _plugin)
            name = sink_class.type
            if name in found:
                raise DuplicateSinkTypeError(
                    f"sink type {name!r} is registered by both plugin {found[name].plugin!r} "
                    f"and plugin {_plugin!r}; disable one with {DISABLE_ENV}"
                )
            found[name] = SinkType(name=name, sink_class=sink_class, plugin=_plugin)

        pm.trace.root.get("hook")(f"register_sink_types [{plugin_name}]")
        impl.function(register=register)
    return found


def _check_sink_class(sink_class: Any, plugin: str) -> None:
    if not (isinstance(sink_class, type) and issubclass(sink_class, Sink)):
        raise InvalidSinkTypeError(f"plugin {plugin!r} registered {sink_class!r}, not a Sink class")
    name = getattr(sink_class, "type", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidSinkTypeError(
            f"plugin {plugin!r}: {sink_class.__name__}.type must be a name like 'webhook'"
        )
    if not (
        isinstance(sink_class.config_model, type)
        and issubclass(sink_class.config_model, SinkConfig)
    ):
        raise InvalidSinkTypeError(
            f"plugin {plugin!r}: {sink_class.__name__}.config_model must subclass SinkConfig"
        )


_FAILED = object()


def _call_impl(pm: pluggy.PluginManager, hook_name: str, impl: Any, kwargs: dict[str, Any]) -> Any:
    """Call one implementation; log and return `_FAILED` if it raises.

    Hooks are called implementation by implementation (not through `pm.hook`), so pluggy's own
    tracing never sees them: write the same trace lines here for DOCUTRAY_WATCH_TRACE_PLUGINS.
    """
    trace = pm.trace.root.get("hook")
    arguments = {name: kwargs[name] for name in impl.argnames if name in kwargs}
    trace(f"{hook_name} [{impl.plugin_name}]", arguments)
    try:
        result = impl.function(**{name: kwargs[name] for name in impl.argnames})
    except Exception as exc:
        trace("failed", hook_name, f"[{impl.plugin_name}]", "-->", f"{type(exc).__name__}: {exc}")
        log.error(
            "plugin_hook_failed",
            hook=hook_name,
            plugin=impl.plugin_name,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=True,
        )
        return _FAILED
    if inspect.iscoroutine(result):
        # Observer hooks are plain functions; a coroutine would never run. Say so loudly.
        result.close()
        log.error(
            "plugin_hook_failed",
            hook=hook_name,
            plugin=impl.plugin_name,
            error="hook implementations must be plain functions, not `async def`",
        )
        return _FAILED
    trace("finish", hook_name, f"[{impl.plugin_name}]", "-->", result)
    return result


def has_observers(pm: pluggy.PluginManager, hook_name: str) -> bool:
    """Whether any plugin implements the hook now: callers skip building its arguments (records
    and documents are pydantic models) when nobody would read them."""
    return bool(getattr(pm.hook, hook_name).get_hookimpls())


def call_observers(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> list[Any]:
    """Call every implementation of an observer hook; one that raises is logged and skipped.

    pluggy stops a hook call at the first exception, which would let one broken plugin silence
    the others; so each implementation is called on its own, in pluggy's order.
    """
    hook = getattr(pm.hook, hook_name)
    results: list[Any] = []
    for impl in reversed(hook.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue  # wrappers need pluggy's call protocol; observers don't use them
        result = _call_impl(pm, hook_name, impl, kwargs)
        if result is not None and result is not _FAILED:
            results.append(result)
    return results


def call_first(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> Any:
    """The first non-None answer of a `firstresult` hook, isolating failing plugins."""
    hook = getattr(pm.hook, hook_name)
    for impl in reversed(hook.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        result = _call_impl(pm, hook_name, impl, kwargs)
        if result is not None and result is not _FAILED:
            return result
    return None


def describe_plugins(
    *,
    include_builtin: bool = False,
    plugins: Plugins | None = None,
    pm: pluggy.PluginManager | None = None,
) -> list[dict[str, Any]]:
    """Each plugin: name, version, hooks it implements, sink types it registers; and each
    plugin left out (`broken: true`, with its `error`). Give `plugins`, or a bare `pm`."""
    if plugins is None:
        plugins = load_plugins() if pm is None else Plugins(pm, collect_sink_types(pm))
    pm = plugins.pm
    entries = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        if name is None:
            continue
        builtin = name in DEFAULT_PLUGINS
        if builtin and not include_builtin:
            continue
        hooks = sorted(caller.name for caller in (pm.get_hookcallers(plugin) or []))
        dist = plugins.distributions.get(name)
        entries.append(
            {
                "name": name,
                "distribution": dist[0] if dist else None,
                "version": dist[1] if dist else None,
                "builtin": builtin,
                "broken": False,
                "hooks": hooks,
                "sink_types": [
                    {"type": st.name, "description": st.description}
                    for st in plugins.sink_types.values()
                    if st.plugin == name
                ],
                "source_types": [
                    {"type": st.name, "description": st.description}
                    for st in plugins.source_types.values()
                    if st.plugin == name
                ],
            }
        )
    for broken in plugins.broken:
        entries.append(
            {
                "name": broken.name,
                "distribution": broken.distribution,
                "version": broken.version,
                "builtin": broken.name in DEFAULT_PLUGINS,
                "broken": True,
                "error": broken.error,
                "hooks": [],
                "sink_types": [],
                "source_types": [],
            }
        )
    return sorted(entries, key=lambda e: (not e["builtin"], e["broken"], e["name"]))
