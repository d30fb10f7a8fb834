"""What one command of the CLI costs to start: code trees alternately, CPU and wall.

Runs `docutray-watch ARGS...` N rounds, each round once per code tree given (`new` is this
checkout; a path runs that tree's `docutray_watch` — and its `plugins/*/` packages when present —
through PYTHONPATH), each as a child process reaped with `wait4` (its own user + system CPU, no
harness mixed in), and prints per tree the minimum and median CPU and wall and the load average.
The CPU is the steadier figure on a shared machine.

    .venv/bin/python benchmarks/cli_start.py --rounds 7 --code /tmp/old new -- --version
    .venv/bin/python benchmarks/cli_start.py --code /tmp/old new -- status --json -c CONFIG

Byte-code: an installed wheel has its modules compiled; a checkout run with
PYTHONDONTWRITEBYTECODE=1 compiles its own at every start (~0.1 s of CPU for `run`). Compile
every tree first (`python -m compileall -q TREE`) to compare like with like.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run import _watch_command


def _pythonpath(code: str) -> str | None:
    if code == "new":
        return None
    tree = Path(code)
    plugins = sorted(str(p) for p in (tree / "plugins").glob("*") if p.is_dir())
    return os.pathsep.join([str(tree), *plugins])


def main(argv: list[str] | None = None) -> int:
    """Measure, print one line per code tree."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--code", nargs="+", default=["new"], help="'new' or a tree's path")
    parser.add_argument("args", nargs="+", help="the command's arguments (after --)")
    args = parser.parse_args(argv)
    cpu: dict[str, list[float]] = {code: [] for code in args.code}
    wall: dict[str, list[float]] = {code: [] for code in args.code}
    loads = []
    for _ in range(args.rounds):
        for code in args.code:
            env = dict(os.environ)
            path = _pythonpath(code)
            if path is not None:
                env["PYTHONPATH"] = path
            loads.append(os.getloadavg()[0])
            started = time.perf_counter()
            child = subprocess.Popen(
                [*_watch_command(), *args.args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _pid, status, usage = os.wait4(child.pid, 0)
            wall[code].append(time.perf_counter() - started)
            cpu[code].append(usage.ru_utime + usage.ru_stime)
            if os.waitstatus_to_exitcode(status) not in (0, 1):
                raise RuntimeError(f"{code}: exit {os.waitstatus_to_exitcode(status)}")
    for code in args.code:
        print(
            f"{code}: CPU min {min(cpu[code]):.3f} median {statistics.median(cpu[code]):.3f} s;"
            f" wall min {min(wall[code]):.3f} median {statistics.median(wall[code]):.3f} s;"
            f" load {min(loads):.1f}-{max(loads):.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
