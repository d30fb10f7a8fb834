"""A writer that pauses longer than `settle` with the file still open (issue 15, item 1): what is
delivered and archived is the whole file, through inotify and through polling."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pluggy
from structlog.testing import capture_logs

from docutray_watch import Document, hookimpl
from docutray_watch._testkit import MemorySink
from docutray_watch.config import Config
from docutray_watch.engine import Engine
from docutray_watch.samples import make_pdf
from docutray_watch.watcher import FolderWatcher
from tests.engine.conftest import ConfigFactory, pipeline_data

SETTLE = 0.3
WHOLE = make_pdf(["a document written in two halves"], padding=2000)
HALF = len(WHOLE) // 2


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Watch:
    """Records submissions and tells when a.pdf was archived with success."""

    def __init__(self) -> None:
        self.submitted_sizes: list[int] = []
        self.archived: asyncio.Event | None = None
        self.on_submit: Any = None

    @hookimpl
    def before_document_submit(self, document: Document) -> None:
        self.submitted_sizes.append(document.size)
        if self.on_submit is not None:
            self.on_submit(document)

    @hookimpl
    def after_document_archived(self, document: Document | None, outcome: str) -> None:
        if outcome == "success" and document is not None and self.archived is not None:
            self.archived.set()


async def watched_run(config: Config, pm: pluggy.PluginManager, watch: Watch, writer: Any) -> None:
    """Run the engine with a real watcher (as the daemon wires it) while `writer` writes."""
    pipeline = config.pipelines[0]
    engine = Engine(config, plugin_manager=pm)
    await engine.start()
    loop = asyncio.get_running_loop()
    watch.archived = asyncio.Event()

    def nominate(path: Path, signal: str) -> None:
        loop.call_soon_threadsafe(
            lambda: engine.nominate(
                pipeline.name, path, closed=signal == "closed", writing=signal == "writing"
            )
        )

    watcher = FolderWatcher(
        pipeline.name,
        Path(pipeline.watch.path),
        False,
        pipeline.watch.polling,
        nominate,
        poll_interval=0.1,
    )
    watcher.start()
    try:
        await asyncio.to_thread(writer)
        await asyncio.wait_for(watch.archived.wait(), 30)
        await asyncio.wait_for(engine.wait_idle(), 30)
    finally:
        watcher.stop()
        await engine.stop(grace=0)


def documents(config: Config) -> list[tuple[str, str | None]]:
    with sqlite3.connect(config.journal_path) as conn:
        return list(conn.execute("SELECT state, sha256 FROM documents ORDER BY id"))


def delivered() -> list[tuple[int, str]]:
    return [
        (r.document.size, r.document.sha256)
        for sink in MemorySink.instances
        for r in sink.records.values()
    ]


class TestSlowWriter:
    def test_inotify_waits_for_the_writers_close_whatever_the_pause(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """inotify: half written, a pause of 4 x settle with the file open, then the rest: the
        file is not taken during the pause; one document, its result for the whole file."""
        data = pipeline_data(tmp_path, sinks=[{"type": "memory"}])
        data["watch"].update(settle=SETTLE, polling=False)
        config = make_config(data)
        target = Path(config.pipelines[0].watch.path) / "a.pdf"
        watch = Watch()
        pm.register(watch, name="watch")

        def writer() -> None:
            with open(target, "wb") as handle:
                handle.write(WHOLE[:HALF])
                handle.flush()
                # The writer's own pause (the scenario), well past `settle`.
                threading.Event().wait(4 * SETTLE)
                assert watch.submitted_sizes == [], "taken while still open for writing"
                handle.write(WHOLE[HALF:])

        asyncio.run(watched_run(config, pm, watch, writer))
        assert watch.submitted_sizes == [len(WHOLE)]
        assert delivered() == [(len(WHOLE), sha(WHOLE))]
        assert (tmp_path / "invoices" / "done" / "a.pdf").read_bytes() == WHOLE
        assert documents(config) == [("archived", sha(WHOLE))]

    def test_polling_takes_the_file_again_when_the_writer_finishes_after_it_was_taken(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """Polling (no open/close events): the half-written file is taken after `settle`; the
        writer finishes while it is processed; nothing is delivered for the half, and the
        result delivered is the whole file's, which is what is archived."""
        data = pipeline_data(tmp_path, sinks=[{"type": "memory"}])
        data["watch"].update(settle=SETTLE, polling=True)
        config = make_config(data)
        target = Path(config.pipelines[0].watch.path) / "a.pdf"
        watch = Watch()
        pm.register(watch, name="watch")
        taken, finished = threading.Event(), threading.Event()

        def on_submit(document: Document) -> None:
            if document.size == HALF:
                taken.set()
                # Hold the submission until the writer is done: the change is then certain
                # to fall between hashing and the result (what the checks must catch).
                assert finished.wait(10)

        watch.on_submit = on_submit

        def writer() -> None:
            with open(target, "wb") as handle:
                handle.write(WHOLE[:HALF])
                handle.flush()
                assert taken.wait(10), "the half-written file was never taken"
                handle.write(WHOLE[HALF:])
            finished.set()

        asyncio.run(watched_run(config, pm, watch, writer))
        assert delivered() == [(len(WHOLE), sha(WHOLE))]
        assert (tmp_path / "invoices" / "done" / "a.pdf").read_bytes() == WHOLE
        assert documents(config) == [("superseded", sha(WHOLE[:HALF])), ("archived", sha(WHOLE))]

    def test_a_file_open_longer_than_max_open_wait_is_taken_with_a_warning(
        self, tmp_path: Path, make_config: ConfigFactory, pm: pluggy.PluginManager
    ) -> None:
        """A write seen and no close-after-write ever: after watch.max_open_wait the file is
        taken as it is, with a `document_open_too_long` warning."""
        data = pipeline_data(tmp_path, sinks=[{"type": "memory"}])
        data["watch"].update(settle=0.05, max_open_wait=0.4)
        config = make_config(data)
        target = Path(config.pipelines[0].watch.path) / "a.pdf"
        target.write_bytes(WHOLE)
        watch = Watch()
        pm.register(watch, name="watch")

        async def scenario() -> None:
            engine = Engine(config, plugin_manager=pm)
            await engine.start()
            try:
                # As if inotify had reported a write and lost the close (queue overflow).
                assert engine.nominate("invoices", target, writing=True)
                await asyncio.wait_for(engine.wait_idle(), 30)
            finally:
                await engine.stop(grace=0)

        with capture_logs() as logs:
            asyncio.run(scenario())
        (warning,) = [e for e in logs if e["event"] == "document_open_too_long"]
        assert warning["log_level"] == "warning"
        assert warning["open_s"] >= 0.4
        assert delivered() == [(len(WHOLE), sha(WHOLE))]
