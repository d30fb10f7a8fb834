"""Multi-node mode: throughput of 1, 2 and 3 nodes where the per-node cap binds, CPU per node,
and the added latency from a file being ready to its POST, cluster mode vs single node.

    python benchmarks/cluster.py                 # full size (a few minutes)
    python benchmarks/cluster.py --shrink        # smoke size (CI)

Every node is a `docutray-watch run` subprocess on loopback; the emulator runs in a process of
its own (`docutray-watch emulator`); each run gets a fresh PostgreSQL database (created, then
dropped) on the server at 127.0.0.1:5432.

Throughput: `--docs-per-node` x N documents are renamed at once into the shared inbox of N
running nodes (`node_max_in_flight: 4`, the cluster's `max_in_flight` large, latency L); the
figure is documents ÷ seconds from that rename until the last file is archived. A node's cap
binds, so the ideal is N x 4 / (L + polling); the ratio N nodes ÷ one node is printed (goal
≥ 2.7 with three). CPU per node: user + system seconds of each daemon from /proc/<pid>/stat over
that window.

Latency: files written one at a time (every `--gap` s) into an idle daemon's inbox; for each,
the emulator's submission time (`created_at_wall`) minus the file's mtime. Single node (SQLite
journal, no cluster block) vs a cluster of three on a shared inbox (the periodic scan, one node
per period, finds them) vs a cluster node with a folder of its own (its rescan finds them).
A benchmark, not a test: nothing is asserted about the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_proc import Emulator, machine_info, start_emulator

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
API_KEY = "bench-key-0123456789abcdef"
EXECUTABLE = Path(sys.executable).with_name("docutray-watch")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DATABASES: list[str] = []  # every database a run created (and dropped), for the report


# -- the database and the daemons ---------------------------------------------------------------


def connect(conninfo: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A connection, asked again for up to a minute while the server has no slot to spare
    (a PostgreSQL shared with other work: `too many clients already`)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return psycopg.connect(conninfo, **kwargs)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextmanager
def fresh_database(admin: str) -> Iterator[str]:
    """A new database, initialised for the cluster (`cluster init`'s schema); dropped after."""
    from docutray_watch.cluster.schema import init_schema

    name = f"dtw_bench_{uuid.uuid4().hex[:12]}"
    DATABASES.append(name)
    with connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    url = f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    try:
        for attempt in range(60):
            try:
                init_schema(url)
                break
            except Exception:
                if attempt == 59:
                    raise
                time.sleep(1.0)
        yield url
    finally:
        with connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def daemon_config(
    root: Path,
    emulator: Emulator,
    *,
    node: str | None,
    url: str | None,
    inbox: Path,
    shared: bool,
    node_cap: int,
) -> Path:
    """A daemon's config: a cluster node (`url`) or a single-node daemon (`url` None)."""
    name = node or "single"
    data: dict[str, Any] = {
        "state_dir": str(root / f"state-{name}"),
        "shutdown_grace": 5,
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 1000,
            "max_in_flight": node_cap if url is None else 1000,
        },
        "pipelines": [
            {
                "name": "bench",
                "watch": {"path": str(inbox), "settle": 0, "rescan_interval": 1},
                "steps": ["stp_bench"],
                "poll": {"initial": 0.5, "max": 1.0, "timeout": 600},
                "on_success": {"action": "move", "to": str(inbox.parent / "done")},
                "on_failure": {"action": "move", "to": str(inbox.parent / "failed")},
                "sinks": [{"type": "filesystem", "path": str(inbox.parent / "out")}],
            }
        ],
    }
    if url is not None:
        data["pipelines"][0]["watch"]["shared"] = shared
        data["cluster"] = {
            "database": url,
            "node": node,
            "node_max_in_flight": node_cap,
            "heartbeat_interval": 1,
            "stalled_timeout": 10,
        }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class Daemons:
    """`docutray-watch run` subprocesses, stopped with SIGTERM at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, config: Path) -> None:
        log = (self.root / f"{name}.log").open("ab")
        env = {**os.environ, "DOCUTRAY_API_KEY": ""}
        self.procs[name] = subprocess.Popen(
            [str(EXECUTABLE), "run", "-c", str(config)], stdout=log, stderr=log, env=env
        )

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU of each daemon so far, from /proc/<pid>/stat."""
        return {name: proc_cpu(proc.pid) for name, proc in self.procs.items()}

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"daemon {name} exited {proc.returncode}:\n{log}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def proc_cpu(pid: int) -> float:
    """utime + stime of `pid` in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_for(condition: Callable[[], bool], timeout: float, what: str, daemons: Daemons) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        daemons.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def nodes_serving(url: str, count: int) -> Callable[[], bool]:
    from docutray_watch.cluster.app import libpq_url

    def check() -> bool:
        with connect(libpq_url(url)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_workers"
                " WHERE last_heartbeat > now() - interval '5 seconds'"
            ).fetchone()
        return bool(row and row[0] >= count)

    return check


def write_docs(folder: Path, prefix: str, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}-{i:04}.pdf"
        path.write_bytes(b"%PDF-1.4\n" + f"{prefix} {i} {uuid.uuid4().hex}\n".encode() * 20)
        paths.append(path)
    return paths


def count_in(*folders: Path) -> int:
    return sum(len(os.listdir(f)) for f in folders if f.exists())


# -- the two measurements ---------------------------------------------------------------------


def throughput_run(
    work: Path, emulator: Emulator, admin: str, nodes: int, docs: int, node_cap: int
) -> dict[str, Any]:
    """`docs` documents renamed at once into the shared inbox of `nodes` running nodes."""
    root = work / f"throughput-{nodes}"
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    staged = write_docs(root / "staging", "doc", docs)
    emulator.reset()
    with fresh_database(admin) as url:
        daemons = Daemons(root)
        names = [f"n{i + 1}" for i in range(nodes)]
        try:
            for name in names:
                config = daemon_config(
                    root, emulator, node=name, url=url, inbox=inbox, shared=True, node_cap=node_cap
                )
                daemons.start(name, config)
            wait_for(nodes_serving(url, nodes), 120, "the nodes to serve", daemons)
            time.sleep(1.0)
            cpu_before = daemons.cpu_seconds()
            started = time.time()
            for path in staged:
                path.rename(inbox / path.name)
            wait_for(
                lambda: count_in(root / "done") >= docs, 60 + docs * 5, "every document", daemons
            )
            elapsed = time.time() - started
            cpu_after = daemons.cpu_seconds()
        finally:
            daemons.stop()
    counts = emulator.counts()
    cpu = {n: round(cpu_after[n] - cpu_before[n], 2) for n in names}
    return {
        "nodes": nodes,
        "documents": docs,
        "seconds": round(elapsed, 2),
        "docs_per_s": round(docs / elapsed, 3),
        "cpu_s_per_node": cpu,
        "cpu_ms_per_doc": round(1000 * sum(cpu.values()) / docs, 1),
        "peak_executions_running": counts["peak_executions_running"],
        "resubmissions": counts["resubmissions"],
        "posts": counts["posts"],
    }


def latency_run(
    work: Path,
    emulator: Emulator,
    admin: str,
    *,
    mode: str,
    files: int,
    gap: float,
    node_cap: int,
) -> dict[str, Any]:
    """Files written one every `gap` s into idle daemons; file mtime → POST, per file."""
    root = work / f"latency-{mode}"
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    emulator.reset()
    daemons = Daemons(root)

    def measure(url: str | None, names: list[str], shared: bool) -> list[float]:
        for name in names:
            config = daemon_config(
                root,
                emulator,
                node=None if url is None else name,
                url=url,
                inbox=inbox,
                shared=shared,
                node_cap=node_cap,
            )
            daemons.start(name, config)
        if url is not None:
            wait_for(nodes_serving(url, len(names)), 120, "the nodes to serve", daemons)
        time.sleep(3.0)  # past the start-up scan: the daemons are idle
        mtimes: dict[str, float] = {}
        for i in range(files):
            path = write_docs(root / "staging", f"lat{i}", 1)[0]
            target = inbox / path.name
            path.rename(target)
            os.utime(target)  # ready now: its mtime is the moment it appeared
            mtimes[target.name] = target.stat().st_mtime
            time.sleep(gap)
        wait_for(
            lambda: count_in(root / "done") >= files, 60 + files * 5, "every document", daemons
        )
        executions = emulator.stats()["executions"].values()
        return sorted(e["created_at_wall"] - mtimes[e["original_filename"]] for e in executions)

    try:
        if mode == "single":
            delays = measure(None, ["single"], shared=False)
        else:
            with fresh_database(admin) as url:
                try:
                    if mode == "cluster-shared":
                        delays = measure(url, ["n1", "n2", "n3"], shared=True)
                    else:
                        delays = measure(url, ["n1"], shared=False)
                finally:
                    daemons.stop()
    finally:
        daemons.stop()
    return {
        "mode": mode,
        "files": files,
        "mean_s": round(statistics.fmean(delays), 3),
        "median_s": round(statistics.median(delays), 3),
        "max_s": round(max(delays), 3),
    }


# -- the report ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--docs-per-node", type=int, default=48)
    parser.add_argument("--node-cap", type=int, default=4, help="node_max_in_flight")
    parser.add_argument("--latency", type=float, default=2.0, help="the emulator's L (s)")
    parser.add_argument("--latency-files", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.7, help="seconds between latency files")
    parser.add_argument("--shrink", action="store_true", help="smoke size: a few documents")
    parser.add_argument("--pg", default=PG_ADMIN, help="an admin connection to PostgreSQL")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a tmp dir)")
    args = parser.parse_args(argv)
    if args.shrink:
        args.nodes = [1, 2]
        args.docs_per_node = 4
        args.latency = 0.3
        args.latency_files = 2
        args.gap = 0.3
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dtw-bench-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "load_average": [round(x, 2) for x in load],
        "settings": {
            "node_max_in_flight": args.node_cap,
            "latency_s": args.latency,
            "docs_per_node": args.docs_per_node,
        },
    }
    try:
        with start_emulator(
            folder=work, api_key=API_KEY, latency=args.latency, jitter=0.0, rate_limit_rps=None
        ) as emulator:
            runs = [
                throughput_run(work, emulator, args.pg, n, args.docs_per_node * n, args.node_cap)
                for n in args.nodes
            ]
            latencies = [
                latency_run(
                    work,
                    emulator,
                    args.pg,
                    mode=mode,
                    files=args.latency_files,
                    gap=args.gap,
                    node_cap=args.node_cap,
                )
                for mode in ("single", "cluster-shared", "cluster-local")
            ]
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    one = next((r["docs_per_s"] for r in runs if r["nodes"] == 1), None)
    for run in runs:
        run["ratio_to_one_node"] = round(run["docs_per_s"] / one, 2) if one else None
    report["throughput"] = runs
    report["latency"] = latencies
    report["databases"] = DATABASES
    single = next(x for x in latencies if x["mode"] == "single")
    for row in latencies:
        row["added_mean_s"] = round(row["mean_s"] - single["mean_s"], 3)
    print_report(report, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    load = report["load_average"]
    print(
        f"multi-node throughput: node_max_in_flight {args.node_cap}, L = {args.latency:g} s, "
        f"{args.docs_per_node} documents per node; load average {load[0]} {load[1]} {load[2]}"
    )
    print(
        f"{'nodes':>5} {'docs':>5} {'s':>7} {'docs/s':>7} {'÷ one node':>10} "
        f"{'CPU ms/doc':>10}  CPU s per node"
    )
    for r in report["throughput"]:
        cpu = " ".join(f"{n}={s:.1f}" for n, s in r["cpu_s_per_node"].items())
        ratio = "-" if r["ratio_to_one_node"] is None else f"{r['ratio_to_one_node']:.2f}x"
        print(
            f"{r['nodes']:>5} {r['documents']:>5} {r['seconds']:>7.1f} {r['docs_per_s']:>7.2f} "
            f"{ratio:>10} {r['cpu_ms_per_doc']:>10.0f}  {cpu}"
        )
    print("\nfile ready → POST (s)")
    print(f"{'mode':<15} {'files':>5} {'mean':>7} {'median':>7} {'max':>7} {'added mean':>10}")
    for x in report["latency"]:
        print(
            f"{x['mode']:<15} {x['files']:>5} {x['mean_s']:>7.3f} {x['median_s']:>7.3f} "
            f"{x['max_s']:>7.3f} {x['added_mean_s']:>+10.3f}"
        )


if __name__ == "__main__":
    sys.exit(main())
