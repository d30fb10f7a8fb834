"""What the journal's writes for one document cost: SQL statements, rows built, CPU.

Takes N documents through the writes of the engine's usual path — ``add_queued``,
``step_submitting``, ``step_accepted``, ``step_finished``, ``completion``, ``delivery_done``,
``deliver_and_finish`` — each in its own transaction (as with one document in flight: no group
commit), on a fresh journal in ``--dir``, and prints per document the statements the journal
executes, the statements SQLite runs (the count triggers' included), and the CPU of each write
(durable, or with ``--no-fsync``: ``synchronous=OFF``).

    .venv/bin/python benchmarks/journal_writes.py [--docs 1000] [--no-fsync] [--dir .]

Compare two trees with ``PYTHONPATH=/path/to/other/tree``.
"""

from __future__ import annotations

import argparse
import collections
import resource
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from docutray_watch.journal import Journal

T = TypeVar("T")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Counting(sqlite3.Connection):
    """A connection that counts the statements the journal asks it to execute."""

    executed = 0

    def execute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _Counting.executed += 1
        return super().execute(*args, **kwargs)

    def executemany(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _Counting.executed += 1
        return super().executemany(*args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """Run the writes; print the figures per document."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--no-fsync", action="store_true", help="synchronous=OFF")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where the journal goes")
    args = parser.parse_args(argv)
    connect = sqlite3.connect

    def counting_connect(*a, **k):  # type: ignore[no-untyped-def]
        return connect(*a, **k, factory=_Counting)

    sqlite3.connect = counting_connect  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        journal = Journal(Path(folder) / "journal.sqlite3")
        journal.open()
        conn = journal.conn
        if args.no_fsync:
            conn.execute("PRAGMA synchronous=OFF")
        run: collections.Counter[str] = collections.Counter()
        cpu: collections.Counter[str] = collections.Counter()
        current = [""]
        conn.set_trace_callback(lambda _sql: run.update([current[0]]))
        executed_before = _Counting.executed

        def write(name: str, fn: Callable[[], T]) -> T:
            current[0] = name
            started = _cpu()
            conn.execute("BEGIN IMMEDIATE")
            result = fn()
            conn.execute("COMMIT")
            cpu[name] += _cpu() - started
            return result

        for i in range(args.docs):
            doc, (step,) = write(
                "add_queued",
                lambda i=i: journal.add_queued(
                    "bench", f"/in/doc{i}.png", f"doc{i}.png", sha256=f"{i:064x}",
                    content_type="image/png", size=3000, mtime_ns=i, steps=["stp"],
                    ctime_ns=i, inode=i,
                ),
            )  # fmt: skip
            write("step_submitting", lambda step=step: journal.step_submitting(step.id))
            write("step_accepted", lambda s=step: journal.step_accepted(s.id, "ex", "ENQUEUED"))
            write(
                "step_finished",
                lambda s=step: journal.step_finished(
                    s.id, state="success", status="SUCCESS", result={"status": "SUCCESS"},
                    sinks=["files"],
                ),
            )  # fmt: skip
            view = write("completion", lambda doc=doc: journal.completion(doc.id))
            delivery = view.deliveries[0].id
            write("delivery_done", lambda d=delivery: journal.delivery_done(d, None))
            write("deliver_and_finish", lambda d=doc: journal.deliver_and_finish(d.id, d.path))
        executed = _Counting.executed - executed_before
        journal.close()
    n = args.docs
    print(f"{n} documents, fsync {'off' if args.no_fsync else 'on'}; per document:")
    print(f"  statements the journal executes (BEGIN/COMMIT included): {executed / n:.1f}")
    print(f"  statements SQLite runs (count triggers included): {sum(run.values()) / n:.1f}")
    print(f"  CPU of the writes: {1000 * sum(cpu.values()) / n:.3f} ms")
    for name, seconds in cpu.items():
        print(f"    {name:<20} {1000 * seconds / n:.3f} ms  {run[name] / n:5.1f} statements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
