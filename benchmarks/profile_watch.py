"""Where does ``docutray-watch process`` spend its CPU? py-spy around one benchmark-like run.

Starts the emulator in its own process, writes N small documents, runs ``docutray-watch process``
under ``py-spy record --gil --threads`` (samples of the thread holding the GIL: Python CPU, not
waiting) and, separately, the same run unprofiled in a child that samples each of its threads'
CPU time with psutil (SQLite, fsync and socket calls run without the GIL, so py-spy alone
under-counts them).
Prints the top functions (inclusive and self, start-up excluded), the CPU per thread, and the
journal's calls and group commits per document.

    .venv/bin/python benchmarks/profile_watch.py [--docs 300] [--concurrency 16] [--latency 0.5]

Needs py-spy (``pip install py-spy``, in the dev extra). The raw samples are kept (``--out``).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _bench_docs import write_set
from _bench_proc import start_emulator
from run import API_KEY, Scenario, _watch_command, _watch_config

_IDLE_LEAVES = (
    "EpollSelector.select",
    "select (selectors",
    "Condition.wait",
    "_worker (concurrent",
)
_STARTUP = ("_find_and_load", "load_config", "_add_emulator")


# Who owns a sample of the event loop: the innermost frame that matches one of these, in order.
_OWNERS = (
    ("the HTTP client", ("docutray_watch/client", "httpx/", "aiohttp/", "multidict", "yarl/")),
    ("logging", ("docutray_watch/log.py", "structlog/")),
    ("the journal (loop side)", ("docutray_watch/journal",)),
    ("metrics", ("prometheus_client",)),
    ("hooks", ("docutray_watch/plugins.py", "pluggy/")),
    ("sinks (loop side)", ("docutray_watch/delivery.py", "docutray_watch/sinks", "tenacity/")),
    ("pydantic models", ("pydantic",)),
    ("asyncio itself", ("asyncio/", "threading.py", "concurrent/futures", "selectors.py")),
    ("the engine's own code", ("docutray_watch/",)),
)


def _owner(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, marks in _OWNERS:
            if any(mark in frame for mark in marks):
                return name
    return "other"


def _owners(raw: Path) -> None:
    """The event loop's samples after start-up, each given to its innermost owner."""
    owners: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *rest = stack.split(";")
        frames = [re.sub(r":\d+\)$", ")", f) for f in rest]
        if "MainThread" not in thread or not frames or frames[-1].startswith(_IDLE_LEAVES):
            continue
        if not any(f.startswith(_STARTUP) for f in frames):
            owners[_owner(frames)] += int(count)
    total = sum(owners.values()) or 1
    print("\nevent loop, each sample given to its innermost owner:")
    for name, samples in owners.most_common():
        print(f"  {100 * samples / total:5.1f}%  {name}")


def _summarise(raw: Path, top: int) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = startup = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")[1:]]  # drop the thread
        if not frames or frames[-1].startswith(_IDLE_LEAVES):
            continue
        samples = int(count)
        if any(f.startswith(_STARTUP) for f in frames):
            startup += samples
            continue
        total += samples
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    print(f"GIL samples: {total} after start-up ({startup} during imports and config loading)")
    print(
        "\ntop inclusive (share of the GIL time after start-up; frames in every sample left out):"
    )
    shown = [(f, n) for f, n in inclusive.most_common() if n < 0.8 * total][:top]
    for frame, samples in shown:
        print(f"  {100 * samples / total:5.1f}%  {frame}")
    print("\ntop self:")
    for frame, samples in own.most_common(top):
        print(f"  {100 * samples / total:5.1f}%  {frame}")


_CHILD = """
import asyncio, json, os, sys, threading, time
import psutil
from docutray_watch.config import load_config
from docutray_watch.log import configure_logging
from docutray_watch.runner import process_once
from docutray_watch.journal import AsyncJournal
# Count the journal's calls and group commits (one transaction per batch of calls).
journal_counts = {"calls": 0, "batches": 0}
run_batch = AsyncJournal._run_batch
def counting_batch(self, batch):
    journal_counts["batches"] += 1
    journal_counts["calls"] += len(batch)
    run_batch(self, batch)
AsyncJournal._run_batch = counting_batch
config = load_config(sys.argv[1])
configure_logging("info", "json", stream=open(os.devnull, "w"))
me, best, names, stop = psutil.Process(), {}, {}, threading.Event()
def sample():
    while not stop.is_set():
        for t in me.threads():
            best[t.id] = (t.user_time, t.system_time)
        for t in threading.enumerate():
            names[t.native_id] = t.name
        time.sleep(0.05)
before = {t.id: (t.user_time, t.system_time) for t in me.threads()}
sampler = threading.Thread(target=sample, name="sampler", daemon=True)
sampler.start()
asyncio.run(process_once(config, echo=lambda _: None))
stop.set(); sampler.join()
out = {}
for tid, (user, system) in best.items():
    name = names.get(tid, "?")
    if name == "sampler":
        continue
    name = "main (event loop)" if tid == os.getpid() else name.rstrip("0123456789").rstrip("_")
    u0, s0 = before.get(tid, (0.0, 0.0))
    group = out.setdefault(name, [0.0, 0.0])
    group[0] += user - u0
    group[1] += system - s0
print(json.dumps({"threads": out, "journal": journal_counts}))
"""


def _thread_cpu(config: Path, docs: int) -> None:
    """The run in a child that samples its own threads (imports and config loading excluded)."""
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(config)], capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    groups: dict[str, list[float]] = report["threads"]
    print("\nCPU per thread after start-up (imports and config loading excluded):")
    for name, (user, system) in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        per_doc = 1000 * (user + system) / docs
        print(f"  {name:<28} user {user:6.2f} s  sys {system:6.2f} s  {per_doc:6.2f} ms/doc")
    journal = report["journal"]
    print(
        f"journal (whole run, start-up included): {journal['calls'] / docs:.2f} calls and"
        f" {journal['batches'] / docs:.2f} group commits per document"
    )


def main(argv: list[str] | None = None) -> int:
    """Profile one run; print the summaries."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("py-spy-watch.txt"))
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    scenario = Scenario("profile", "profile", args.docs, args.concurrency, args.latency)
    with tempfile.TemporaryDirectory(prefix="docutray-profile-") as temp:
        folder = Path(temp)
        with start_emulator(folder=folder, api_key=API_KEY, latency=args.latency, jitter=0.0,
                            rate_limit_rps=None) as emulator:  # fmt: skip
            configs = []
            for name in ("profiled", "threads"):
                run = folder / name
                run.mkdir()
                write_set(run / "inbox", args.docs)
                configs.append(_watch_config(run, emulator, scenario))
            watch = [*_watch_command(), "process", "-c", str(configs[0]), "--no-progress"]
            emulator.reset()
            subprocess.run(
                [py_spy, "record", "--gil", "--threads", "-r", str(args.rate), "-f", "raw",
                 "-o", str(args.out), "--", *watch],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            counts = emulator.counts()
            emulator.reset()
            _summarise(args.out, args.top)
            _owners(args.out)
            # A cold run's probe reads more or less often with the machine's load: shares of the
            # GIL time compare between runs only with the requests that produced them.
            print(
                f"\nrequests of the profiled run: {counts['posts'] / args.docs:.3f} POSTs and"
                f" {counts['status_gets'] / args.docs:.3f} status reads per document"
            )
            _thread_cpu(configs[1], args.docs)
    print(f"\nraw samples: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
