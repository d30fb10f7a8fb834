"""A cluster node watches its own folders (inotify) as the single-node daemon does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from docutray_watch.config import parse_config
from docutray_watch.plugins import load_plugins
from docutray_watch.testing import EmulatorFactory
from tests.cluster.test_runtime import local_config, running, wait_until

pytestmark = pytest.mark.postgres

RESCAN_S = 60.0


async def test_a_new_local_file_is_taken_before_the_next_rescan(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """A node with a local inbox rescanned every 60 s takes a file written after its start-up
    scan within seconds: the folder's watcher nominates it."""
    emulator = emulator_factory(latency=0.2)
    data = local_config(tmp_path, initialised_url, emulator, "n1").model_dump(
        mode="json", exclude_none=True
    )
    data["cluster"]["database"] = initialised_url
    data["api"]["api_key"] = emulator.api_key
    data["pipelines"][0]["watch"].update(rescan_interval=RESCAN_S, settle=1.0)
    config = parse_config(
        data, config_dir=tmp_path, sink_types=load_plugins().config_sink_types, environ={}
    )
    done = tmp_path / "n1" / "done"
    with capture_logs() as logs:
        async with running(config):
            await wait_until(lambda: _started(logs) is not None, timeout=10)
            assert _started(logs) == "inotify"
            await asyncio.sleep(1.0)  # the start-up scan of the empty folder is over
            (tmp_path / "n1" / "inbox" / "late.pdf").write_bytes(b"%PDF-1.4\nlate file\n" * 20)
            await wait_until(lambda: (done / "late.pdf").exists(), timeout=RESCAN_S / 3)
    results = [p.name for p in (tmp_path / "n1" / "out").rglob("*") if p.is_file()]
    assert len(results) == 1


def _started(logs: list[dict[str, object]]) -> object:
    """The mode of the first watcher started, None before."""
    return next((e["mode"] for e in logs if e["event"] == "watcher_started"), None)
