"""What does durability cost on this disk? CPU and wall time of the writes docutray-watch syncs.

Measures, in a temporary folder on the disk that holds ``--dir`` (default: the system's temp
folder; point it at the state directory's disk for a real answer):

- one SQLite commit in WAL mode of a one-row update, ``synchronous=FULL`` (what the journal does
  for every transaction) and ``synchronous=NORMAL`` (no fsync per commit, for comparison);
- one small file rewritten and fsync'ed (what the filesystem sink does with a result, before the
  rename and the folder's fsync).

CPU is this thread's (``time.thread_time``), wall is elapsed time; both per operation.

    .venv/bin/python benchmarks/fsync_cost.py [--count 300] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable


def _per_op(count: int, operation: Callable[[int], None]) -> tuple[float, float]:
    cpu, wall = time.thread_time(), time.perf_counter()
    for index in range(count):
        operation(index)
    return (
        1e6 * (time.thread_time() - cpu) / count,
        1e6 * (time.perf_counter() - wall) / count,
    )


def _sqlite_commit(folder: str, synchronous: str, count: int) -> tuple[float, float]:
    conn = sqlite3.connect(os.path.join(folder, f"{synchronous}.db"), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [("x",)] * 100)

        def commit(index: int) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE t SET v = ? WHERE id = ?", (str(index), index % 100 + 1))
            conn.execute("COMMIT")

        return _per_op(count, commit)
    finally:
        conn.close()


def _file_fsync(folder: str, count: int) -> tuple[float, float]:
    fd = os.open(os.path.join(folder, "result.json"), os.O_WRONLY | os.O_CREAT, 0o644)
    payload = b"x" * 500
    try:

        def write(_index: int) -> None:
            os.pwrite(fd, payload, 0)
            os.fsync(fd)

        return _per_op(count, write)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """Print CPU and wall µs per synced write."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--dir", default=None, help="a folder on the disk to measure")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="docutray-fsync-", dir=args.dir) as folder:
        rows = {
            "SQLite WAL commit, synchronous=FULL": _sqlite_commit(folder, "FULL", args.count),
            "SQLite WAL commit, synchronous=NORMAL": _sqlite_commit(folder, "NORMAL", args.count),
            "500-byte write + fsync": _file_fsync(folder, args.count),
        }
    print(f"{args.count} operations each, µs per operation")
    print(f"{'operation':<40}{'CPU':>8}{'wall':>8}")
    for name, (cpu, wall) in rows.items():
        print(f"{name:<40}{cpu:8.0f}{wall:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
