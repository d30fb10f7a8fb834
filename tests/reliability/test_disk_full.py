"""Disk full: on the output folder (no partial output files, delivery completes once space
returns) and on the state directory (the journal refuses writes: nothing lost, nothing paid twice,
the daemon goes on once space returns).

The small disk is a 1 MiB tmpfs when the test may mount one (root, outside a locked-down
sandbox), else a loop-mounted ext4 image; the output-folder test then falls back to a probe sink
that raises ENOSPC. The figures line says which one ran.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.samples import make_pdf
from tests.daemon.conftest import free_port, local_get
from tests.reliability.conftest import (
    DaemonFactory,
    Report,
    base_config,
    elapsed_since,
    pipeline_config,
    wait_for,
)

pytestmark = pytest.mark.slow

RETRY = {"initial": 0.3, "max": 1.0, "timeout": 600}


def _run(*argv: str) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(name="small_disk")
def small_disk_fixture(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A tiny file system mounted on a fresh folder: ("tmpfs" | "loop" | "none", folder)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    kind = "none"
    if shutil.which("mount") and _run(
        "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)
    ):
        kind = "tmpfs"
    elif shutil.which("mkfs.ext4"):
        image = tmp_path / "small-disk.img"
        with open(image, "wb") as handle:
            handle.truncate(2 * 1024 * 1024)
        if _run("mkfs.ext4", "-q", "-F", str(image)) and _run(
            "mount", "-o", "loop", str(image), str(folder)
        ):
            kind = "loop"
    try:
        yield kind, folder
    finally:
        if kind != "none" and not _run("umount", str(folder)):
            _run("umount", "-l", str(folder))


def fill(folder: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        chunk = b"\0" * 4096
        with contextlib.suppress(OSError):
            while True:
                handle.write(chunk)
    with pytest.raises(OSError, match="No space") as info:
        (folder / "probe").write_bytes(b"x" * 8192)
    assert info.value.errno == errno.ENOSPC
    with contextlib.suppress(OSError):
        (folder / "probe").unlink()
    return filler


class TestDiskFull:
    def test_full_output_folder_delays_delivery_and_leaves_no_partial_file(
        self,
        tmp_path: Path,
        emulator_factory: Any,
        reliable_daemon: DaemonFactory,
        small_disk: tuple[str, Path],
        report: Report,
    ) -> None:
        """A full disk delays delivery with no partial file; all is written once space returns."""
        started = time.monotonic()
        kind, disk = small_disk
        count = 12
        emulator = emulator_factory(latency=0.2)
        flag = tmp_path / "disk-full"
        if kind == "none":
            sink: dict[str, Any] = {
                "type": "probe",
                "path": str(disk / "out"),
                "fail_while": str(flag),
                "failure": "enospc",
                "retry": RETRY,
            }
        else:
            sink = {"type": "filesystem", "path": str(disk / "out"), "retry": RETRY}
        spec = pipeline_config(tmp_path, "full", sinks=[sink])
        daemon = reliable_daemon(base_config(tmp_path, emulator, spec)).start()
        out = disk / "out"
        out.mkdir(exist_ok=True)
        filler = fill(disk) if kind != "none" else None
        if filler is None:
            flag.write_text("full")

        for i in range(count):
            (tmp_path / "full" / "in" / f"f{i:02d}.pdf").write_bytes(make_pdf([f"full {i}"]))

        def enospc_failures() -> int:
            return sum(
                1
                for line in daemon.log_lines()
                if line.get("event") == "delivery_failed" and "No space" in str(line.get("error"))
            )

        wait_for(lambda: enospc_failures() >= count, timeout=60, interval=0.2)
        partial_seen = sorted(p.name for p in out.rglob("*"))
        assert partial_seen == []  # nothing half-written while the disk is full
        assert not list((tmp_path / "full" / "done").glob("*.pdf"))
        assert not list((tmp_path / "full" / "failed").glob("*.pdf"))
        assert daemon.alive
        failures_while_full = enospc_failures()

        if filler is not None:
            filler.unlink()
        else:
            flag.unlink()
        wait_for(
            lambda: len(list((tmp_path / "full" / "done").glob("*.pdf"))) == count,
            timeout=120,
            interval=0.2,
        )
        assert daemon.stop() == 0
        files = sorted(out.rglob("*"))
        assert all(not p.name.startswith(".") for p in files), files
        records = [json.loads(p.read_text()) for p in files]
        assert len(records) == count
        assert {r["document"]["name"] for r in records} == {f"f{i:02d}.pdf" for i in range(count)}
        report(
            "disk-full",
            mechanism=kind if kind != "none" else "probe sink raising ENOSPC",
            documents=count,
            enospc_failures=failures_while_full,
            partial_files_while_full=len(partial_seen),
            delivered_after_space_returned=len(records),
            temp_files_left=sum(p.name.startswith(".") for p in files),
            seconds=elapsed_since(started),
        )

    def test_full_state_dir_holds_work_and_nothing_is_paid_twice(
        self,
        tmp_path: Path,
        emulator_factory: Any,
        reliable_daemon: DaemonFactory,
        small_disk: tuple[str, Path],
        report: Report,
    ) -> None:
        """With the journal's disk full the daemon keeps running and submits nothing twice; once
        space returns every document is delivered."""
        kind, disk = small_disk
        if kind != "tmpfs":
            pytest.skip("needs a tmpfs to fill (mount, as root)")
        # Room for SQLite's WAL to reach its 4 MiB auto-checkpoint once space returns.
        assert _run("mount", "-o", "remount,size=16m", str(disk))
        started = time.monotonic()
        count = 30
        emulator = emulator_factory(latency=0.2)
        spec = pipeline_config(tmp_path, "statefull")
        port = free_port()
        config = base_config(
            tmp_path,
            emulator,
            spec,
            state_dir=str(disk / "state"),
            metrics={"listen": f"127.0.0.1:{port}"},
        )
        daemon = reliable_daemon(config).start()
        filler = fill(disk)
        inbox = tmp_path / "statefull" / "in"
        for i in range(count):
            (inbox / f"s{i:02d}.pdf").write_bytes(make_pdf([f"state full {i}"]))

        def refused() -> int:
            return sum(
                1
                for line in daemon.log_lines()
                if "disk is full" in str(line.get("error")) or "disk is full" in str(line)
            )

        wait_for(lambda: refused() >= 5, timeout=60, interval=0.2)
        time.sleep(2)  # let rescans and retries meet the full disk a few more times
        assert daemon.alive
        refused_while_full = refused()
        status, body = local_get(port, "/readyz")
        assert status == 503
        assert "journal not writable" in body
        assert "disk is full" in body
        assert "docutray_watch_journal_writable 0.0" in local_get(port, "/metrics")[1]
        done = tmp_path / "statefull" / "done"

        filler.unlink()
        wait_for(lambda: len(list(done.glob("*.pdf"))) == count, timeout=120, interval=0.2)
        assert local_get(port, "/readyz")[0] == 200
        assert "docutray_watch_journal_writable 1.0" in local_get(port, "/metrics")[1]
        assert daemon.stop() == 0
        assert not list((tmp_path / "statefull" / "failed").glob("*.pdf"))
        assert sorted(p.name for p in inbox.iterdir()) == []
        results = list((tmp_path / "statefull" / "out").rglob("*.json"))
        assert len(results) == count
        executions = emulator.stats().executions_created
        assert executions == count  # no execution id was lost to the full disk
        report(
            "state-dir-full",
            mechanism=kind,
            documents=count,
            refused_journal_writes_logged=refused_while_full,
            delivered_after_space_returned=len(results),
            executions=executions,
            seconds=elapsed_since(started),
        )
