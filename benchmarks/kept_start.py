"""Start with many files kept in place: the old code and the new, alternately, on one fixture.

`history.py` builds a journal and an inbox of M kept files (`on_success: keep`) each time it runs;
this script builds them once (or reuses `--workdir`), then starts `docutray-watch run` with one
new file waiting, R rounds, each round once per code tree given (`--code new` is this checkout;
`--code /path/to/an/older/tree` runs that tree's `docutray_watch` through PYTHONPATH), and
prints for each: start → first submission (wall and the daemon's CPU), idle RSS, the CPU of one
rescan of the folder and the RSS after the rescans. The journal is restored before every start.

    .venv/bin/python benchmarks/kept_start.py --kept 100000 --rounds 2 --code /tmp/old new
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _bench_proc import start_emulator
from history import _config, _cpu_s, _rss_mb, build
from run import API_KEY, _watch_command

_RESCAN_S = 3.0


def _reset(folder: Path, journal: Path) -> None:
    """The fixture as built: the journal copied back, outputs and the new file removed."""
    for name in ("out", "done", "failed", "state"):
        shutil.rmtree(folder / name, ignore_errors=True)
    (folder / "state").mkdir()
    shutil.copyfile(journal, folder / "state" / "journal.sqlite3")
    (folder / "inbox" / "new.pdf").write_bytes(b"%PDF-1.7\n% the new one\n%%EOF\n")


def _wait(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon did not get there in time")
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the fixture, measure each code tree R times, print one line each."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kept", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--code", nargs="+", default=["new"], help="'new' or a tree's path")
    parser.add_argument("--workdir", type=Path, help="keep the fixture here and reuse it")
    args = parser.parse_args(argv)
    folder = args.workdir or Path(f"/tmp/docutray-kept-start-{args.kept}")
    journal = folder / "journal.built"
    if not journal.exists():
        shutil.rmtree(folder, ignore_errors=True)
        build(folder, 0, args.kept)
        shutil.copyfile(folder / "state" / "journal.sqlite3", journal)
    with start_emulator(folder=folder, api_key=API_KEY, latency=0.2, jitter=0.0,
                        rate_limit_rps=None) as emulator:  # fmt: skip
        config = _config(folder, emulator, _RESCAN_S)
        for _ in range(args.rounds):
            for code in args.code:
                _reset(folder, journal)
                env = dict(os.environ)
                if code != "new":
                    env["PYTHONPATH"] = code
                emulator.reset()
                load = os.getloadavg()[0]
                started = time.monotonic()
                daemon = subprocess.Popen(
                    [*_watch_command(), "run", "-c", str(config)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
                try:
                    _wait(lambda: int(emulator.counts().get("posts", 0)) > 0)
                    wall, cpu = time.monotonic() - started, _cpu_s(daemon.pid)
                    _wait(lambda: any((folder / "out").rglob("*.json")))
                    time.sleep(1.0)  # idle: the result is written
                    idle_rss = _rss_mb(daemon.pid)
                    cpu_before, wall_before = _cpu_s(daemon.pid), time.monotonic()
                    time.sleep(3 * _RESCAN_S)
                    spent = _cpu_s(daemon.pid) - cpu_before
                    rescan = spent * _RESCAN_S / (time.monotonic() - wall_before)
                    rss_after = _rss_mb(daemon.pid)
                    posts = int(emulator.counts().get("posts", 0))
                finally:
                    daemon.terminate()
                    daemon.wait(timeout=60)
                print(
                    f"{code}: start → first submission {wall:.2f} s wall, {cpu:.2f} s CPU;"
                    f" idle RSS {idle_rss:.1f} MB; one rescan {rescan:.3f} s CPU;"
                    f" RSS after {rss_after:.1f} MB; submissions {posts}; load {load:.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
