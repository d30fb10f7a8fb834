"""The pipelines' runtimes: each pipeline's config with its open sinks, built at start, changed
in place by a reload (a sink whose settings did not change keeps its open instance), closed at
stop. A pipeline a reload removes is retired: it takes no new file and finishes what it has."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from docutray_watch.config import Config, PipelineConfig, same_settings
from docutray_watch.delivery import SinkRunner, describe
from docutray_watch.engine.context import Context, PipelineRuntime
from docutray_watch.engine.kept import KeptStamps, read_kept
from docutray_watch.engine.reading import absolute
from docutray_watch.plugins import SinkType
from docutray_watch.sinks.base import Sink, SinkConfig

__all__ = ["PipelineSet"]

log = structlog.get_logger("docutray_watch.engine")

Replacement = tuple[SinkRunner, Sink[SinkConfig], SinkConfig, str]


class PipelineSet:
    """Builds, reloads and closes `ctx.pipelines` (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sink_types: dict[str, SinkType] = {}
        self._retired_runners: list[SinkRunner] = []

    async def open(self, sink_types: dict[str, SinkType]) -> None:
        """Build every pipeline of the config and open its sinks."""
        self.sink_types = sink_types
        for pipeline in self.ctx.config.pipelines:
            self.ctx.pipelines[pipeline.name] = self._build(pipeline)
            await self._load_paths(pipeline.name)
        for runtime in self.ctx.pipelines.values():
            for runner in runtime.sinks.values():
                await self._open_sink(runner)

    async def apply(self, config: Config) -> list[str]:
        """Bring the pipelines in line with a new config; what changed."""
        ctx = self.ctx
        changes: list[str] = []
        for pipeline in config.pipelines:
            current = ctx.pipelines.get(pipeline.name)
            if (
                current is not None
                and not current.retired
                and same_settings(current.config, pipeline)
            ):
                continue
            replacements: list[Replacement] = []
            runtime = self._build(pipeline, reuse=current, replacements=replacements)
            await asyncio.gather(
                *(
                    runner.replace(sink, cfg, plugin=plugin)
                    for runner, sink, cfg, plugin in replacements
                )
            )
            for runner in runtime.sinks.values():
                if not runner.opened:
                    await self._open_sink(runner)
            if current is not None:
                self._retired_runners.extend(
                    r for r in current.sinks.values() if r not in runtime.sinks.values()
                )
            ctx.pipelines[pipeline.name] = runtime
            if pipeline.name not in ctx.documents.known:
                await self._load_paths(pipeline.name)
            verb = "changed" if current and not current.retired else "added"
            changes.append(f"{verb} pipeline {pipeline.name}")
        names = {p.name for p in config.pipelines}
        for name, runtime in ctx.pipelines.items():
            if name not in names and not runtime.retired:
                runtime.retired = True
                changes.append(f"removed pipeline {name}")
        return changes

    async def close(self) -> None:
        """Close every sink, retired ones too; one sink's failure does not stop the others."""
        runners = [r for runtime in self.ctx.pipelines.values() for r in runtime.sinks.values()]
        for runner in [*runners, *self._retired_runners]:
            try:
                await runner.close()
            except Exception as exc:  # noqa: BLE001 - one sink's close must not stop the others
                log.warning("sink_close_failed", sink=runner.sink_id, error=describe(exc))

    async def _load_paths(self, pipeline: str) -> None:
        """Which paths of a pipeline are in progress; which files were kept in place is read
        meanwhile (the start does not wait for it, see `engine/kept.py`)."""
        documents, store = self.ctx.documents, self.ctx.store
        documents.known[pipeline] = await store.unfinished_by_path(pipeline)
        kept = documents.kept[pipeline] = KeptStamps(filled=False)
        self.ctx.spawn(read_kept(store, pipeline, kept), f"kept-read:{pipeline}", None)

    def _build(
        self,
        pipeline: PipelineConfig,
        reuse: PipelineRuntime | None = None,
        replacements: list[Replacement] | None = None,
    ) -> PipelineRuntime:
        """The runtime of a pipeline. On reload (`reuse`), a sink whose settings did not change
        keeps its runner and instance; a changed one keeps its runner, and the new instance to
        hand it over to is added to `replacements` (so old and new never overlap)."""
        runners: dict[str, SinkRunner] = {}
        for sink_config in pipeline.sinks:
            assert sink_config.id is not None
            previous = reuse.sinks.get(sink_config.id) if reuse is not None else None
            if previous is None and reuse is not None:
                previous = self._unretire(pipeline.name, sink_config.id)
            if previous is not None and same_settings(previous.config, sink_config):
                runners[sink_config.id] = previous  # unchanged: keep it open
                continue
            sink_type = self.sink_types[sink_config.type]
            sink = sink_type.sink_class(sink_config, pipeline=pipeline.name, sink_id=sink_config.id)
            if previous is not None and replacements is not None:
                replacements.append((previous, sink, sink_config, sink_type.plugin))
                runners[sink_config.id] = previous
            else:
                runners[sink_config.id] = SinkRunner(
                    sink, sink_config, pipeline=pipeline.name, plugin=sink_type.plugin
                )
        watch = pipeline.folder_watch
        return PipelineRuntime(
            config=pipeline,
            sinks=runners,
            root=Path(absolute(watch.path)) if watch is not None else Path(),
            # A source in use stays until `SourceIntake.sync` replaces it (settings changed).
            source=reuse.source if reuse is not None else None,
        )

    def _unretire(self, pipeline: str, sink_id: str) -> SinkRunner | None:
        """A runner a reload removed may still deliver; a sink id coming back takes it over."""
        for runner in self._retired_runners:
            if runner.pipeline == pipeline and runner.sink_id == sink_id:
                self._retired_runners.remove(runner)
                return runner
        return None

    async def _open_sink(self, runner: SinkRunner) -> None:
        try:
            await runner.open()
        except Exception as exc:  # noqa: BLE001 - any plugin error; the sink retries later
            # A sink that cannot open now is retried at each delivery; the others go on.
            log.error(
                "sink_open_failed",
                pipeline=runner.pipeline,
                sink=runner.sink_id,
                plugin=runner.plugin,
                error=runner.explain(exc),
            )
