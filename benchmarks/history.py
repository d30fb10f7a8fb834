"""Does history slow docutray-watch down? A journal of N finished documents and M kept files.

Builds, in a work folder:

- a journal created by the real `Journal` class, then filled by bulk SQL with N finished
  documents (archived, moved to a done folder; one step row each; 1 % of them failed; a share
  of them, `--routed`, identified as one of three types, as a pipeline that routes by type
  leaves them) — the journal's own triggers keep its counts as they would in a daemon's life;
- an inbox of M files kept in place (`on_success: keep`), each registered in the journal as a
  finished document whose file was kept where it was found, plus one new file;

then measures, against the API emulator in its own process:

- `docutray-watch status --json` wall time through the real CLI (median of 3), and
  `status_report` alone in this process;
- `docutray-watch run`: start to the first submission (the one new file), its idle RSS once that
  document is done, and the CPU of rescans of the kept folder (the daemon rescans every
  `--rescan-interval` s; CPU over 3 intervals ÷ 3, idle ticks included), RSS after them.

Prints each figure with the target of issue 16 and the ratio to it.

    .venv/bin/python benchmarks/history.py [--docs 1000000] [--kept 100000] [--routed 0.5]
        [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench_proc import Emulator, machine_info, start_emulator
from run import API_KEY, STEP_ID, _watch_command

from docutray_watch.journal import Journal

TARGETS = {
    "status_json_s": 0.5,
    "first_submission_s": 1.0,
    "idle_rss_mb": 80.0,
    "rescan_cpu_s": 1.0,
    "idle_rss_kept_mb": 120.0,
}
_CHUNK = 50_000
_T0 = 1_700_000_000.0  # when the history starts (epoch s)
_TYPES = ("invoice", "receipt", "id_card")  # the codes routed documents were identified as


def _config(folder: Path, emulator: Emulator, rescan: float) -> Path:
    config = {
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "max_in_flight": 16,
            "requests_per_second": 100000,
        },
        "state_dir": str(folder / "state"),
        "log": {"level": "info", "format": "json"},
        "pipelines": [
            {
                "name": "bench",
                "watch": {"path": str(folder / "inbox"), "settle": 0, "rescan_interval": rescan},
                "steps": [STEP_ID],
                "on_success": {"action": "keep"},
                "sinks": [{"type": "filesystem", "path": str(folder / "out")}],
            }
        ],
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


_INSERT_DOC = (
    "INSERT INTO documents (id, pipeline, path, relative_path, size, mtime_ns, ctime_ns, inode,"
    " sha256, content_type, state, outcome, attempts, error, error_stage, archived_to,"
    " created_at, updated_at, finished_at, identified_type) VALUES"
    " (?, 'bench', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_STEP = (
    "INSERT INTO steps (id, document_id, step_id, state, execution_id, status, attempts,"
    " first_try_at, submitted_at, completed_at, result) VALUES"
    " (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)"
)


def build(folder: Path, docs: int, kept: int, routed: float = 0.0) -> None:
    """The journal (created by `Journal`, filled by bulk SQL) and the inbox of kept files;
    a `routed` share of the finished documents carries an identified type."""
    journal_path = folder / "state" / "journal.sqlite3"
    Journal(journal_path).open().close()  # the real schema, triggers and indexes
    inbox = folder / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    conn = sqlite3.connect(journal_path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # building a fixture, not journaling work
    next_id = 1
    for start in range(0, docs + kept, _CHUNK):
        rows, steps = [], []
        for index in range(start, min(start + _CHUNK, docs + kept)):
            t = _T0 + index
            if index < docs:
                name = f"old-{index:07d}.png"
                path = f"{folder}/old-inbox/{name}"
                size, mtime_ns, inode = 3000 + index % 500, int(t * 1e9), None
                failed = index % 100 == 0
                state, outcome = ("failed", "failed") if failed else ("archived", "success")
                archived_to = f"{folder}/{'failed' if failed else 'done'}/{name}"
                # Evenly spread over the history (not its first rows only), as a pipeline would.
                is_routed = int((index + 1) * routed) > int(index * routed)
                code = _TYPES[index % 3] if is_routed else None
            else:
                name = f"kept-{index - docs:07d}.pdf"
                path = str(inbox / name)
                data = f"%PDF-1.7\n% kept {index}\n%%EOF\n".encode()
                Path(path).write_bytes(data)
                st = os.stat(path)
                size, mtime_ns, inode = st.st_size, st.st_mtime_ns, st.st_ino
                failed, state, outcome, archived_to = False, "archived", "success", path
                code = None
            sha = rng.randbytes(32).hex()
            rows.append(
                (next_id, path, name, size, mtime_ns, mtime_ns, inode, sha, "image/png", state,
                 outcome, "boom" if failed else None, "result" if failed else None,
                 archived_to, t, t + 3, t + 3, code)
            )  # fmt: skip
            steps.append(
                (next_id, next_id, STEP_ID, "error" if failed else "success", f"exec_{next_id}",
                 "ERROR" if failed else "SUCCESS", t, t + 1, t + 2,
                 None if failed else '{"data": {"total": 1}}')
            )  # fmt: skip
            next_id += 1
        conn.execute("BEGIN")
        conn.executemany(_INSERT_DOC, rows)
        conn.executemany(_INSERT_STEP, steps)
        conn.execute("COMMIT")
    conn.close()
    with Journal(journal_path) as journal:  # checkpoints the WAL
        if hasattr(journal, "counted_states"):  # (absent from the code before issue 16)
            assert journal.counted_states() == journal.counts()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(args: list[str]) -> tuple[float, float, str]:
    """Run a command: its wall seconds, its own CPU seconds (user + system), its stdout."""
    started = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = child.stdout.read() if child.stdout is not None else ""
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{args} failed")
    return wall, usage.ru_utime + usage.ru_stime, out


def measure_status(config: Path) -> dict[str, float]:
    """`status --json` through the CLI (median of 3 runs; wall and the command's own CPU),
    `status_report` in process, and `--version` (the CLI's own start, median of 3)."""
    walls, cpus = [], []
    for _ in range(3):
        wall, cpu, out = _timed([*_watch_command(), "status", "--json", "-c", str(config)])
        walls.append(wall)
        cpus.append(cpu)
        json.loads(out)
    from docutray_watch.config import load_config
    from docutray_watch.runner import status_report

    loaded = load_config(config)
    started = time.perf_counter()
    status_report(loaded)
    in_process = time.perf_counter() - started
    bare = [_timed([*_watch_command(), "--version"])[:2] for _ in range(3)]
    return {
        "status_json_s": statistics.median(walls),
        "status_json_cpu_s": statistics.median(cpus),
        "status_report_in_process_s": in_process,
        "cli_version_s": statistics.median(w for w, _ in bare),
        "cli_version_cpu_s": statistics.median(c for _, c in bare),
    }


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def measure_daemon(folder: Path, config: Path, emulator: Emulator, rescan: float) -> dict[str, Any]:
    """Start `run` with one new file waiting: first submission, idle RSS, CPU of rescans."""
    (folder / "inbox" / "new.pdf").write_bytes(b"%PDF-1.7\n% the new one\n%%EOF\n")
    emulator.reset()
    log = (folder / "daemon.log").open("wb")
    started = time.monotonic()
    daemon = subprocess.Popen(
        [*_watch_command(), "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait(lambda: int(emulator.counts().get("posts", 0)) > 0, 120, "the first submission")
        first = time.monotonic() - started
        first_cpu = _cpu_s(daemon.pid)
        _wait(lambda: any((folder / "out").rglob("*.json")), 120, "the first result")
        time.sleep(1.0)  # idle: the result is written, nothing else waits
        idle_rss = _rss_mb(daemon.pid)
        # The first scan (at start) is done: let 3 rescan periods pass.
        cpu_before, wall_before = _cpu_s(daemon.pid), time.monotonic()
        time.sleep(3 * rescan)
        cpu = _cpu_s(daemon.pid) - cpu_before
        wall = time.monotonic() - wall_before
        rss_after = _rss_mb(daemon.pid)
        posts = int(emulator.counts().get("posts", 0))
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        log.close()
    return {
        "first_submission_s": first,
        "first_submission_cpu_s": first_cpu,
        "idle_rss_mb": idle_rss,
        "rescan_cpu_s": cpu * rescan / wall,
        "idle_rss_kept_mb": rss_after,
        "submissions": posts,
    }


def measure_reference(folder: Path, emulator: Emulator) -> tuple[float, float]:
    """Start to first submission with an empty journal and one file: the same start-up
    without any history, to tell the two apart on a loaded machine."""
    fresh = folder / "reference"
    (fresh / "inbox").mkdir(parents=True, exist_ok=True)
    (fresh / "inbox" / "new.pdf").write_bytes(b"%PDF-1.7\n% the reference\n%%EOF\n")
    config = _config(fresh, emulator, 60.0)
    emulator.reset()
    started = time.monotonic()
    daemon = subprocess.Popen(
        [*_watch_command(), "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: int(emulator.counts().get("posts", 0)) > 0, 120, "the first submission")
        return time.monotonic() - started, _cpu_s(daemon.pid)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    """Build the fixture, measure, print; exit 1 if a kept file was submitted again."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000, help="finished documents")
    parser.add_argument("--kept", type=int, default=100_000, help="files kept in place")
    parser.add_argument(
        "--routed", type=float, default=0.5, help="share of the finished documents identified"
    )
    parser.add_argument("--rescan-interval", type=float, default=5.0)
    parser.add_argument("--workdir", type=Path, help="build here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="docutray-history-") as temp:
        folder = args.workdir or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        build(folder, args.docs, args.kept, args.routed)
        built_s = time.monotonic() - started
        journal_mb = (folder / "state" / "journal.sqlite3").stat().st_size / 1e6
        with start_emulator(folder=folder, api_key=API_KEY, latency=0.2, jitter=0.0,
                            rate_limit_rps=None) as emulator:  # fmt: skip
            config = _config(folder, emulator, args.rescan_interval)
            figures: dict[str, Any] = measure_status(config)
            figures.update(measure_daemon(folder, config, emulator, args.rescan_interval))
            wall, cpu = measure_reference(folder, emulator)
            figures.update(first_submission_empty_s=wall, first_submission_empty_cpu_s=cpu)
    machine = machine_info()
    print(f"machine: {machine['cpu_model']}, {machine['logical_cpus']} CPUs")
    print(
        f"journal: {args.docs} finished documents ({args.routed:.0%} routed) + {args.kept} kept"
        f" files, {journal_mb:.0f} MB"
        f" (built in {built_s:.1f} s); load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'figure':<42}{'value':>10}{'target':>10}{'÷ target':>10}")
    labels = {
        "status_json_s": "status --json, wall (s, CLI, median of 3)",
        "status_json_cpu_s": "  its CPU (s, median of 3)",
        "status_report_in_process_s": "  status_report alone (s)",
        "cli_version_s": "  docutray-watch --version (s)",
        "cli_version_cpu_s": "  its CPU (s)",
        "first_submission_s": "start → first submission (s)",
        "first_submission_empty_s": "  the same with an empty journal (s)",
        "first_submission_cpu_s": "  CPU of the daemon until then (s)",
        "first_submission_empty_cpu_s": "  the same with an empty journal (s)",
        "idle_rss_mb": "idle RSS after it (MB)",
        "rescan_cpu_s": "CPU of one rescan of the kept folder (s)",
        "idle_rss_kept_mb": "RSS after the rescans (MB)",
        "submissions": "submissions (must be 1: the new file)",
    }
    for key, label in labels.items():
        value = figures[key]
        target = TARGETS.get(key)
        ratio = f"{value / target:10.2f}" if target else ""
        shown = f"{value:10.3f}" if isinstance(value, float) else f"{value:10d}"
        print(f"{label:<42}{shown}{target if target else '':>10}{ratio}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"docs": args.docs, "kept": args.kept, "routed": args.routed, "figures": figures},
                indent=2,
            )
        )
    return 0 if figures["submissions"] == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
