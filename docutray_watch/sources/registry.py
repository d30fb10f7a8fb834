"""Collecting the source types plugins register through `register_source_types`.

Like sink types: each plugin's registration is collected on its own, so a plugin whose hook
raises, registers something that is not a `Source` class or a type name another plugin has
already is left out whole (the caller unregisters it and reports it); built-in sources come
first and keep their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pluggy

from docutray_watch.sources.base import Source, SourceConfig

__all__ = ["RejectedSourcePlugin", "SourceType", "build_source", "collect_source_types"]


@dataclass(frozen=True)
class SourceType:
    """A registered source class and the plugin that registered it."""

    name: str
    source_class: type[Source[Any]]
    plugin: str

    @property
    def description(self) -> str:
        """One line saying where the source takes documents from."""
        return self.source_class.description

    @property
    def config_model(self) -> type[SourceConfig]:
        """The pydantic model that validates this source's block of the config."""
        return self.source_class.config_model


@dataclass(frozen=True)
class RejectedSourcePlugin:
    """A plugin whose source registration failed: why, and the names it tried."""

    plugin: object
    name: str
    error: str
    source_types: tuple[str, ...]


def _problem(source_class: Any) -> str | None:
    if not (isinstance(source_class, type) and issubclass(source_class, Source)):
        return f"registered {source_class!r}, not a Source class"
    name = getattr(source_class, "type", None)
    if not isinstance(name, str) or not name.isidentifier():
        return f"{source_class.__name__}.type must be a name like 's3'"
    model: Any = getattr(source_class, "config_model", None)
    if not (isinstance(model, type) and issubclass(model, SourceConfig)):
        return f"{source_class.__name__}.config_model must subclass SourceConfig"
    return None


def collect_source_types(
    pm: pluggy.PluginManager,
) -> tuple[dict[str, SourceType], list[RejectedSourcePlugin]]:
    """Every plugin's source classes; and the plugins to leave out, with the reason."""
    found: dict[str, SourceType] = {}
    rejected: list[RejectedSourcePlugin] = []
    for impl in pm.hook.register_source_types.get_hookimpls():
        classes: list[Any] = []
        mine: dict[str, SourceType] = {}
        error: str | None = None
        try:
            impl.function(register=classes.append)
        except Exception as exc:  # noqa: BLE001 - a failing hook leaves its plugin out
            error = f"register_source_types failed: {type(exc).__name__}: {exc}"
        for source_class in classes if error is None else []:
            error = _problem(source_class)
            if error is not None:
                break
            name = source_class.type
            other = found.get(name) or mine.get(name)
            if other is not None:
                error = (
                    f"it registers source type {name!r}, which plugin {other.plugin!r} "
                    "already registers"
                )
                break
            mine[name] = SourceType(name, source_class, impl.plugin_name)
        if error is None:
            found.update(mine)
            continue
        names = tuple(
            dict.fromkeys(
                c.type for c in classes if isinstance(getattr(c, "type", None), str) and c.type
            )
        )
        rejected.append(RejectedSourcePlugin(impl.plugin, impl.plugin_name, error, names))
    return found, rejected


def build_source(
    pipeline: str, config: SourceConfig, source_types: dict[str, SourceType]
) -> Source[Any]:
    """The source object of one pipeline's `source` block (not started)."""
    return source_types[config.type].source_class(config, pipeline=pipeline)
