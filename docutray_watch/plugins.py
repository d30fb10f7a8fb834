"""The plugin manager: built-in plugins, entry-point plugins, and the sink types they register.

Nothing happens at import time; `get_plugin_manager()` builds a fresh manager each call (tests get
one without entry points). Built-in sinks are listed in `DEFAULT_PLUGINS` and register through the
same `register_sink_types` hook as third-party plugins from the `docutray_watch` entry-point group.

Operators can switch plugins off with `DOCUTRAY_WATCH_DISABLE_PLUGINS=name,name` (entry-point or
module names) and watch every hook call with `DOCUTRAY_WATCH_TRACE_PLUGINS=1`.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pluggy
import structlog

from docutray_watch import hookspecs
from docutray_watch.hookspecs import PROJECT_NAME
from docutray_watch.sinks.base import Sink, SinkConfig

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "DuplicateSinkTypeError",
    "SinkType",
    "collect_sink_types",
    "get_plugin_manager",
]

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME

DEFAULT_PLUGINS: tuple[str, ...] = (
    "docutray_watch.sinks.filesystem",
    "docutray_watch.sinks.s3",
    "docutray_watch.sinks.database",
)

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


def _disabled_names(extra: Iterable[str] = ()) -> set[str]:
    names = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    return names | set(extra)


def get_plugin_manager(
    *, load_entrypoints: bool = True, disable: Iterable[str] = ()
) -> pluggy.PluginManager:
    """Build a plugin manager with the built-in plugins and (by default) installed ones."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    disabled = _disabled_names(disable)
    for name in disabled:
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        if module_name in disabled:
            continue
        pm.register(importlib.import_module(module_name), name=module_name)
    if load_entrypoints:
        # pluggy skips blocked names, so DOCUTRAY_WATCH_DISABLE_PLUGINS applies here too.
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    if os.environ.get(TRACE_ENV, "").lower() not in ("", "0", "false", "no"):
        pm.trace.root.setwriter(lambda message: sys.stderr.write(message))
        pm.enable_tracing()
    return pm


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
    *, include_builtin: bool = False, pm: pluggy.PluginManager | None = None
) -> list[dict[str, Any]]:
    """Each registered plugin: name, version, hooks it implements, sink types it registers."""
    pm = pm if pm is not None else get_plugin_manager()
    versions = {pm.get_name(plugin): dist.version for plugin, dist in pm.list_plugin_distinfo()}
    sink_types = collect_sink_types(pm)
    entries = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        if name is None:
            continue
        builtin = name in DEFAULT_PLUGINS
        if builtin and not include_builtin:
            continue
        hooks = sorted(caller.name for caller in (pm.get_hookcallers(plugin) or []))
        entries.append(
            {
                "name": name,
                "version": versions.get(name),
                "builtin": builtin,
                "hooks": hooks,
                "sink_types": [
                    {"type": st.name, "description": st.description}
                    for st in sink_types.values()
                    if st.plugin == name
                ],
            }
        )
    return sorted(entries, key=lambda e: (not e["builtin"], e["name"]))
