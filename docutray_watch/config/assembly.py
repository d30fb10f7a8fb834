"""The `Config` model for the installed sink and source types (a tagged union per list), the
built-in types, the JSON Schema, and comparing blocks across model classes. This module never
imports the plugin machinery: the caller passes the types as `SinkTypes`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, cast

from pydantic import BaseModel, ConfigDict, Field, create_model

from docutray_watch.config.pipeline import PipelineConfig
from docutray_watch.config.root import Config
from docutray_watch.sinks import BUILTIN_SINK_MODULES
from docutray_watch.sinks.base import Sink, SinkConfig
from docutray_watch.sources import BUILTIN_SOURCE_MODULES
from docutray_watch.sources.base import Source, SourceConfig


class UnavailableSinkConfig(SinkConfig):
    """Stands in for the config block of a sink type whose plugin failed to load: any keys are
    accepted, so the rest of the file still validates and only that pipeline is left out."""

    model_config = ConfigDict(extra="allow")
    unavailable_reason: ClassVar[str] = ""


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
