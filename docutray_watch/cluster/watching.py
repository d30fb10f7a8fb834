"""A cluster node's watchers of its own folders (not `shared: true`): the single-node daemon's
`FolderWatcher` (inotify; polling on network file systems, with `watch.polling: true`, or when
inotify cannot watch the folder), so a new local file is nominated at once rather than at the
next `watch.rescan_interval`.

Events only nominate (`Engine.nominate`), as in single-node mode: discovery applies the name
rules, waits until the file is complete (a close-after-write takes it without waiting `settle`;
a write not yet closed holds it up to `watch.max_open_wait`), and its handoff defers the first
job with the file's source identity. Shared folders have no watcher: inotify does not see
another machine's writes, and only one node per period scans them (`readiness.py`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from docutray_watch.engine import Engine
from docutray_watch.inbox import ensure_inbox
from docutray_watch.watcher import FolderWatcher

__all__ = ["LocalWatchers"]

log = structlog.get_logger("docutray_watch.cluster")


class LocalWatchers:
    """One `FolderWatcher` per local pipeline of a node (started from its event loop)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.watchers: dict[str, FolderWatcher] = {}
        self._failed: set[str] = set()

    def ensure(self, pipeline: str) -> None:
        """Watch this pipeline's folder unless a live watcher of that very folder does (one of
        a folder no longer configured is stopped); a folder that cannot be watched is logged
        once (its rescans still find its files)."""
        config = self.engine.pipelines.get(pipeline)
        if config is not None and (config.folder_watch is None or config.folder_watch.shared):
            config = None  # nothing of this node's own to watch
        watcher = self.watchers.get(pipeline)
        if (
            watcher is not None
            and config is not None
            and watcher.alive
            and (watcher.root, watcher.recursive, watcher.polling)
            == (Path(config.folder.path), config.folder.recursive, config.folder.polling)
        ):
            return
        if watcher is not None:  # died, or its pipeline changed (a reload) or went away
            watcher.stop()
            del self.watchers[pipeline]
        if config is None:
            return
        loop = asyncio.get_running_loop()
        engine = self.engine

        def nominate(path: Path, signal: str) -> None:
            loop.call_soon_threadsafe(
                lambda: engine.nominate(
                    pipeline, path, closed=signal == "closed", writing=signal == "writing"
                )
            )

        root = Path(config.folder.path)
        watcher = FolderWatcher(
            pipeline=pipeline,
            root=root,
            recursive=config.folder.recursive,
            polling=config.folder.polling,
            nominate=nominate,
        )
        try:
            ensure_inbox(root)
            watcher.start()
        except OSError as exc:
            if pipeline not in self._failed:
                self._failed.add(pipeline)
                log.warning(
                    "watch_failed",
                    pipeline=pipeline,
                    path=str(root),
                    error=exc.strerror or str(exc),
                    note="its files are found by the rescans only (watch.rescan_interval)",
                )
            return
        self._failed.discard(pipeline)
        self.watchers[pipeline] = watcher
        log.info("watcher_started", pipeline=pipeline, path=str(root), mode=watcher.mode)

    def stop(self) -> None:
        """Stop every watcher (and wait for its thread)."""
        for watcher in self.watchers.values():
            watcher.stop()
        self.watchers.clear()
