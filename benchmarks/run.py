"""docutray-watch against the official SDK + a thread pool, side by side, against the emulator.

For each scenario the harness starts the API emulator in its own process (latency L, optional
jitter and rate limit), generates the documents, runs the baseline (``baseline_sdk.py``: official
SDK, ``ThreadPoolExecutor`` with C workers, ``wait()``) and then ``docutray-watch process`` with
``max_in_flight: C`` on an identical copy of the files, each as a child process measured with
``wait4`` (CPU, peak RSS). The emulator is reset before each run; after each, its statistics give
status requests per document, detection delays and the steady-state throughput (see
``_bench_metrics``). Prints one table per scenario and the targets, and writes everything as JSON.

docutray-watch runs twice where it matters: *cold* (a fresh state directory: nothing learned
about the step's processing time yet, as on the very first run) and *warm* (a state directory
that already processed 4 other documents, as every later run or a long-running daemon).

    .venv/bin/python benchmarks/run.py --list
    .venv/bin/python benchmarks/run.py --scenario a b            # presets
    .venv/bin/python benchmarks/run.py --docs 6 --concurrency 4 --latency 0.1   # a custom one

docutray-watch runs with its defaults (poll settings, journal, fsync, JSON logs at info level)
except: a filesystem sink, ``settle: 0``, ``max_in_flight: C`` and ``requests_per_second`` set to
100000 (or to the emulator's limit in rate-limited scenarios) — except in (g) and (h), where it
keeps its default ``requests_per_second: auto``: (g) an API that does not throttle, (h) one that
enforces R requests/s without saying it (no ``limit`` in its 429 bodies, ``Retry-After`` in
fractions of a second), each tool run for 120 s and counted after its first 20 s (accepted
requests per second, share of 429s, mean detection delay, from the emulator's per-second counts).
``--scenario h`` runs R = 5, 20 and 50; ``--shrink`` runs presets at CI-smoke size.

``--tools watch-nofsync`` adds a diagnostic run, never a target: a cold docutray-watch with
``fsync`` made a no-op by libeatmydata (Debian package ``eatmydata``, preloaded into that process
only). The difference from the cold run is what durability costs in CPU; nothing in
docutray-watch changes for it.
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _bench_docs import write_set
from _bench_metrics import run_metrics, window_metrics
from _bench_proc import ChildResult, Emulator, machine_info, run_child, start_emulator

API_KEY = "benchmark-key"
STEP_ID = "step_benchmark"
HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"
UNLIMITED_RPS = 100_000.0
REFERENCE_PDF_BYTES = 64 * 1024
WARMUP_DOCS = 4
WARMUP_SEED = 10_000_000
EMPTY_RUNS = 3

TOOLS = {
    "baseline": "baseline",
    "watch": "watch (cold)",
    "watch-warm": "watch (warm)",
    "watch-nofsync": "watch nofsync",
}
DEFAULT_TOOLS = ["baseline", "watch", "watch-warm"]


@dataclass(frozen=True)
class Scenario:
    """One benchmark setting."""

    key: str
    title: str
    docs: int
    concurrency: int
    latency: float
    jitter: float = 0.0
    rate_limit: float | None = None
    pdf_mb: float | None = None  # None: small PNGs
    mode: str = "batch"  # batch | scan (stop once the inbox is scanned) | large (RSS added)
    # | timed (stopped after `duration` s, counted after its first `skip_first` s)
    warm: bool = True  # also run docutray-watch warm
    timeout: float = 1800.0
    watch_defaults: bool = False  # docutray-watch without requests_per_second (auto)
    hidden_limit: bool = False  # the emulator enforces rate_limit without saying it
    duration: float = 0.0  # timed mode
    skip_first: float = 0.0  # timed mode


def _unthrottled(key: str, title: str) -> Scenario:
    return Scenario(key, title, 300, 64, 2.0, watch_defaults=True)


def _unannounced(rate: float) -> Scenario:
    """(h): the API enforces `rate` requests/s without saying it; 120 s, counted after 20 s.
    Enough documents that no tool runs out of them (each needs at least 2 requests)."""
    return Scenario(
        f"h{rate:g}",
        f"unannounced limit {rate:g} requests/s, C=64, L=2 s, 120 s on defaults",
        docs=int(rate * 120 / 2 * 1.2),
        concurrency=64,
        latency=2.0,
        rate_limit=rate,
        mode="timed",
        warm=False,
        watch_defaults=True,
        hidden_limit=True,
        duration=120.0,
        skip_first=20.0,
    )


PRESETS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario("a", "C=16, L=0.5 s, 300 small documents", 300, 16, 0.5),
        Scenario("b", "C=64, L=2 s, 300 small documents", 300, 64, 2.0),
        Scenario("c", "C=1000, L=10 s, 2000 small documents (memory)", 2000, 1000, 10.0),
        Scenario(
            "d",
            "20000 files waiting: first submission, end of scan",
            20000,
            64,
            2.0,
            mode="scan",
            warm=False,
        ),
        Scenario(
            "e", "one 95 MiB PDF: peak RSS added", 1, 1, 0.5, pdf_mb=95.0, mode="large", warm=False
        ),
        Scenario(
            "f", "rate limit 5 requests/s, C=16, L=0.5 s, 60 documents", 60, 16, 0.5, rate_limit=5.0
        ),
        _unthrottled("g", "an API that does not throttle, C=64, L=2 s, 300 documents, defaults"),
        _unannounced(5.0),
        _unannounced(20.0),
        _unannounced(50.0),
    )
}
GROUPS = {"h": ["h5", "h20", "h50"]}


def shrunk(scenario: Scenario) -> Scenario:
    """A preset at CI-smoke size: the same kind of run, seconds long (no figure means much)."""
    title = f"{scenario.title} — shrunk to C=4, L=0.1 s"
    if scenario.mode == "timed":
        docs = int((scenario.rate_limit or 20) * 8 / 2 * 1.2)
        return replace(
            scenario,
            title=f"{title}, 8 s counted after 2 s",
            docs=docs,
            concurrency=4,
            latency=0.1,
            duration=8,
            skip_first=2,
        )
    docs = min(scenario.docs, 6)
    title = f"{title}, {docs} documents"
    return replace(scenario, title=title, docs=docs, concurrency=4, latency=0.1)


# What is compared, and how it is labelled.
ROWS: list[tuple[str, str]] = [
    ("wall_s", "wall time (s)"),
    ("docs_per_s_wall", "documents/s (wall time)"),
    ("docs_per_s_window", "documents/s (first POST → last result)"),
    ("fraction_of_bound", "throughput ÷ Little bound"),
    ("cpu_ms_per_doc", "CPU ms/doc (user+sys, whole run)"),
    ("startup_cpu_s", "CPU s of an empty inbox (fixed cost)"),
    ("cpu_ms_per_doc_marginal", "CPU ms/doc beyond the fixed cost"),
    ("peak_rss_mb", "peak RSS (MB)"),
    ("status_requests_per_doc", "status requests per document"),
    ("detection_delay_mean_s", "detection delay mean (s)"),
    ("detection_delay_p95_s", "detection delay p95 (s)"),
    ("first_submission_s", "first submission after start (s)"),
    ("max_in_flight", "max executions in flight"),
    ("http_429", "429 answers"),
    ("results_written", "results written"),
    ("documents_failed", "documents failed"),
]
TIMED_ROWS: list[tuple[str, str]] = [
    ("counted_accepted_per_s", "accepted requests/s (counted window)"),
    ("counted_accepted_of_limit", "accepted requests/s ÷ limit"),
    ("counted_share_429", "429 answers ÷ requests (counted)"),
    ("counted_detection_delay_mean_s", "detection delay mean, counted (s)"),
    ("counted_documents_detected", "results detected (counted window)"),
]


# -- running the tools -----------------------------------------------------------------------


def _watch_command() -> list[str]:
    script = Path(sys.executable).with_name("docutray-watch")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from docutray_watch.cli import main; main()"]


def _watch_config(folder: Path, emulator: Emulator, scenario: Scenario) -> Path:
    api: dict[str, Any] = {
        "base_url": emulator.base_url,
        "api_key": emulator.api_key,
        "max_in_flight": scenario.concurrency,
    }
    if not scenario.watch_defaults:
        api["requests_per_second"] = scenario.rate_limit or UNLIMITED_RPS
    config = {
        "api": api,
        "state_dir": str(folder / "state"),
        "log": {"level": "info", "format": "json"},
        "pipelines": [
            {
                "name": "bench",
                "watch": {"path": str(folder / "inbox"), "settle": 0},
                "steps": [STEP_ID],
                "sinks": [{"type": "filesystem", "path": str(folder / "out")}],
            }
        ],
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def _argv(tool: str, folder: Path, emulator: Emulator, scenario: Scenario) -> list[str]:
    if tool == "baseline":
        return [
            sys.executable,
            str(HERE / "baseline_sdk.py"),
            "--base-url",
            emulator.base_url,
            "--api-key",
            emulator.api_key,
            "--step",
            STEP_ID,
            "--inbox",
            str(folder / "inbox"),
            "--out",
            str(folder / "out"),
            "--workers",
            str(scenario.concurrency),
        ]
    config = _watch_config(folder, emulator, scenario)
    return [*_watch_command(), "process", "-c", str(config), "--no-progress"]


def eatmydata_library() -> str:
    """The libeatmydata to preload (its soname, found the way the dynamic loader finds it)."""
    library = ctypes.util.find_library("eatmydata")
    if library is None:
        raise SystemExit(
            "--tools watch-nofsync needs libeatmydata (Debian: apt-get install eatmydata)"
        )
    return library


def child_env(tool: str) -> dict[str, str] | None:
    """The environment of a tool's process: inherited, except that ``watch-nofsync`` preloads
    libeatmydata, which turns fsync, fdatasync and O_SYNC into no-ops for that process only."""
    if tool != "watch-nofsync":
        return None
    preload = " ".join(p for p in (os.environ.get("LD_PRELOAD"), eatmydata_library()) if p)
    return {**os.environ, "LD_PRELOAD": preload}


def _results_written(folder: Path) -> int:
    out = folder / "out"
    return sum(1 for _ in out.rglob("*.json")) if out.exists() else 0


class _ScanWatch:
    """Stops a scan scenario's child once every file is taken in and one was submitted."""

    def __init__(self, tool: str, outputs: tuple[Path, Path], docs: int, emu: Emulator) -> None:
        self.tool = tool
        self.stdout, self.stderr = outputs
        self.docs = docs
        self.emulator = emu
        self.scan_end_wall: float | None = None
        self._offset = 0
        self._count = 0
        self._partial = b""

    def _scan_done(self) -> bool:
        if self.scan_end_wall is not None:
            return True
        if self.tool == "baseline":
            match = re.search(r"listed (\S+) (\d+)", self.stdout.read_text(errors="replace"))
            if match:
                self.scan_end_wall = float(match.group(1))
            return self.scan_end_wall is not None
        # docutray-watch: the log line of the last document taken in (hashed, journaled, queued).
        with self.stderr.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if b'"document_discovered"' in line:
                self._count += 1
                if self._count >= self.docs:
                    stamp = json.loads(line)["timestamp"]
                    self.scan_end_wall = datetime.fromisoformat(stamp).timestamp()
        return self.scan_end_wall is not None

    def __call__(self) -> bool:
        if not self._scan_done():
            return False
        return int(self.emulator.counts().get("posts", 0)) > 0


def _warm_up(folder: Path, emulator: Emulator, scenario: Scenario) -> int:
    """Process a few other documents with the same state directory; the results they wrote."""
    write_set(folder / "inbox", WARMUP_DOCS, prefix="warmup", seed=WARMUP_SEED)
    child = run_child(
        _argv("watch-warm", folder, emulator, scenario),
        stdout=folder / "warmup-stdout.txt",
        stderr=folder / "warmup-stderr.txt",
        timeout=scenario.timeout,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the warm-up run failed: {child.stderr.read_text()[-1500:]}")
    return _results_written(folder)


def _run_tool(
    tool: str, scenario: Scenario, emulator: Emulator, folder: Path, *, pdf_bytes: int | None
) -> tuple[ChildResult, dict[str, Any]]:
    folder.mkdir(parents=True, exist_ok=True)
    earlier = _warm_up(folder, emulator, scenario) if tool == "watch-warm" else 0
    write_set(folder / "inbox", scenario.docs, pdf_bytes=pdf_bytes)
    emulator.reset()
    argv = _argv(tool, folder, emulator, scenario)
    outputs = (folder / "stdout.txt", folder / "stderr.txt")
    stop: Callable[[], bool] | None = None
    if scenario.mode == "scan":
        stop = _ScanWatch(tool, outputs, scenario.docs, emulator)
    elif scenario.mode == "timed":
        ends = time.monotonic() + scenario.duration
        stop = lambda: time.monotonic() >= ends  # noqa: E731 - a one-line condition
    emulator_cpu = emulator.cpu_seconds()
    child = run_child(
        argv,
        stdout=outputs[0],
        stderr=outputs[1],
        timeout=scenario.timeout,
        stop_when=stop,
        env=child_env(tool),
    )
    emulator_cpu = emulator.cpu_seconds() - emulator_cpu
    stats = emulator.stats()
    (folder / "emulator-stats.json").write_text(json.dumps(stats))
    metrics = run_metrics(
        stats=stats,
        documents=scenario.docs,
        results_written=_results_written(folder) - earlier,
        returncode=child.returncode,
        wall_s=child.wall_s,
        started_wall=child.started_wall,
        cpu_user_s=child.cpu_user_s,
        cpu_sys_s=child.cpu_sys_s,
        max_rss_mb=child.max_rss_mb,
        emulator_cpu_s=emulator_cpu,
        concurrency=scenario.concurrency,
        latency=scenario.latency,
        rate_limit=scenario.rate_limit,
    )
    if isinstance(stop, _ScanWatch):
        metrics["documents_failed"] = None  # stopped once the inbox was taken in
        metrics["scan_end_s"] = (
            round(stop.scan_end_wall - child.started_wall, 3) if stop.scan_end_wall else None
        )
        metrics["stopped_after_scan"] = child.stopped_early
    if scenario.mode == "timed":
        metrics["documents_failed"] = None  # stopped after `duration`, documents left over
        counted = window_metrics(
            stats,
            start=child.started_wall + scenario.skip_first,
            end=child.started_wall + min(scenario.duration, child.wall_s),  # or its exit
            rate_limit=scenario.rate_limit,
        )
        metrics.update({f"counted_{key}": value for key, value in counted.items()})
        metrics["stopped_after_duration"] = child.stopped_early
    metrics["command"] = argv
    # The machine may be shared: the 1-minute load average as this run ended goes with its figures.
    metrics["load_average_1m"] = round(os.getloadavg()[0], 2)
    if tool == "baseline" and scenario.mode != "scan":
        summary = child.stdout.read_text(errors="replace").strip().splitlines()
        if summary and summary[-1].startswith("{"):
            metrics["baseline_errors"] = json.loads(summary[-1]).get("errors", [])[:3]
    return child, metrics


def _problem(tool: str, scenario: Scenario, child: ChildResult, metrics: dict[str, Any]) -> str:
    if scenario.mode == "scan":
        return "" if metrics.get("scan_end_s") is not None else f"{tool}: the scan did not end"
    if scenario.mode == "timed":
        if child.stopped_early or child.returncode == 0 or tool == "baseline":
            return ""  # the baseline gives documents up on 429s: a finding, not a failure
        tail = child.stderr.read_text(errors="replace")[-1500:]
        return f"{tool}: exit {child.returncode} before {scenario.duration:g} s:\n{tail}"
    if child.returncode != 0 or metrics["results_written"] != scenario.docs:
        if tool == "baseline" and scenario.rate_limit:
            # A finding, not a harness failure: the SDK gives up on 429 after two retries.
            return ""
        tail = child.stderr.read_text(errors="replace")[-1500:]
        return (
            f"{tool}: exit {child.returncode}, {metrics['results_written']}/{scenario.docs} "
            f"results written; stderr tail:\n{tail}"
        )
    return ""


def _fixed_cost(tool: str, scenario: Scenario, emulator: Emulator, folder: Path) -> dict[str, Any]:
    """The median of 3 runs on an empty inbox: interpreter, imports, set-up and shut-down."""
    runs = []
    for index in range(EMPTY_RUNS):
        _, empty = _run_tool(
            tool,
            replace(scenario, docs=0),
            emulator,
            folder / f"{tool}-empty-{index}",
            pdf_bytes=None,
        )
        runs.append(empty)
    return sorted(runs, key=lambda r: float(r["cpu_s"]))[len(runs) // 2]


def _measure_tool(
    tool: str,
    scenario: Scenario,
    emulator: Emulator,
    folder: Path,
    pdf_bytes: int | None,
    empty: dict[str, Any] | None,
) -> tuple[dict[str, Any], list[str]]:
    """One tool on one scenario, with its reference runs; its figures and any problems."""
    problems: list[str] = []
    reference: dict[str, Any] | None = None
    if scenario.mode == "large":
        # The same run with a small PDF: what the large upload adds is the difference.
        small = replace(scenario, pdf_mb=None)
        ref_child, reference = _run_tool(
            tool, small, emulator, folder / f"{tool}-reference", pdf_bytes=REFERENCE_PDF_BYTES
        )
        problems.append(_problem(tool, small, ref_child, reference))
    child, metrics = _run_tool(tool, scenario, emulator, folder / tool, pdf_bytes=pdf_bytes)
    problems.append(_problem(tool, scenario, child, metrics))
    if empty is not None:
        metrics["startup_cpu_s"] = empty["cpu_s"]
        metrics["startup_wall_s"] = empty["wall_s"]
        metrics["startup_rss_mb"] = empty["peak_rss_mb"]
        metrics["cpu_ms_per_doc_marginal"] = round(
            1000 * (metrics["cpu_s"] - empty["cpu_s"]) / scenario.docs, 3
        )
    if reference is not None:
        metrics["reference_peak_rss_mb"] = reference["peak_rss_mb"]
        metrics["rss_added_mb"] = round(metrics["peak_rss_mb"] - reference["peak_rss_mb"], 1)
    return metrics, [p for p in problems if p]


def run_scenario(scenario: Scenario, tools: list[str], workdir: Path) -> dict[str, Any]:
    """The chosen tools on one scenario; the figures, ratios and targets."""
    folder = workdir / f"scenario-{scenario.key}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pdf_bytes = int(scenario.pdf_mb * 2**20) if scenario.pdf_mb else None
    if not scenario.warm:
        tools = [t for t in tools if t != "watch-warm"]
    results: dict[str, Any] = {}
    problems: list[str] = []
    with start_emulator(
        folder=folder,
        api_key=API_KEY,
        latency=scenario.latency,
        jitter=scenario.jitter,
        rate_limit_rps=scenario.rate_limit,
        hidden_limit=scenario.hidden_limit,
    ) as emulator:
        fixed: dict[str, dict[str, Any]] = {}
        for tool in tools:
            # cold and warm runs share a fixed cost; the fsync-off run measures its own
            family = "watch" if tool == "watch-warm" else tool
            if scenario.mode == "batch" and family not in fixed:
                # So that the cost per document can be told apart from the fixed cost.
                fixed[family] = _fixed_cost(tool, scenario, emulator, folder)
            results[tool], found = _measure_tool(
                tool, scenario, emulator, folder, pdf_bytes, fixed.get(family)
            )
            problems.extend(found)
    return {
        "scenario": asdict(scenario),
        "results": results,
        "ratios": {
            t: _ratios(results[t], results.get("baseline")) for t in results if t != "baseline"
        },
        "targets": _targets(scenario, results),
        "problems": problems,
    }


# -- ratios and targets ----------------------------------------------------------------------

_RATIO_KEYS = [k for k, _ in ROWS + TIMED_ROWS] + ["scan_end_s", "rss_added_mb"]


def _ratio(value: Any, baseline: Any) -> float | None:
    if not isinstance(value, int | float) or not isinstance(baseline, int | float):
        return None
    if baseline == 0:
        return None
    return round(value / baseline, 3)


def _ratios(watch: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, float | None]:
    if baseline is None:
        return {}
    return {k: _ratio(watch.get(k), baseline.get(k)) for k in _RATIO_KEYS if k in watch}


def _target(name: str, value: Any, goal: str, met: bool | None) -> dict[str, Any]:
    return {"target": name, "value": value, "goal": goal, "met": met}


def _at_most(value: Any, limit: float | None) -> bool | None:
    if value is None or limit is None:
        return None
    return bool(value <= limit)


def _timed_targets(watch: dict[str, Any]) -> list[dict[str, Any]]:
    """(h): at least 0.9 of the limit accepted, at most 2 % of requests answered 429, results
    detected within 0.3 s on average — all counted after the first seconds."""
    accepted = watch.get("counted_accepted_of_limit")
    share = watch.get("counted_share_429")
    delay = watch.get("counted_detection_delay_mean_s")
    return [
        _target(
            "accepted requests/s ÷ limit",
            accepted,
            "≥ 0.90",
            None if accepted is None else accepted >= 0.9,
        ),
        _target("429 answers ÷ requests", share, "≤ 0.02", _at_most(share, 0.02)),
        _target("detection delay mean (s)", delay, "≤ 0.3", _at_most(delay, 0.3)),
    ]


def _targets_of(
    scenario: Scenario, watch: dict[str, Any], base: dict[str, Any] | None, tool: str = "watch"
) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    if scenario.mode == "timed":
        return _timed_targets(watch)
    if scenario.key == "g":
        # On its defaults (requests_per_second: auto): slow start costs the cold run a little.
        goal = 0.95 if tool == "watch-warm" else 0.90
        fraction = watch["fraction_of_bound"]
        targets.append(
            _target(
                "throughput ÷ Little bound (defaults)",
                fraction,
                f"≥ {goal:.2f}",
                None if fraction is None else fraction >= goal,
            )
        )
    if scenario.key in ("a", "b"):
        fraction = watch["fraction_of_bound"]
        targets.append(
            _target(
                "throughput ÷ Little bound",
                fraction,
                "≥ 0.95",
                None if fraction is None else fraction >= 0.95,
            )
        )
        if base is not None:
            for key, label in (
                ("cpu_ms_per_doc_marginal", "beyond the fixed cost"),
                ("cpu_ms_per_doc", "whole run"),
            ):
                if watch.get(key, 0) > 0 and base.get(key) is not None:
                    times = round(base[key] / watch[key], 2)
                    targets.append(
                        _target(f"CPU/doc {label}: baseline ÷ watch", times, "≥ 4", times >= 4)
                    )
    if scenario.mode == "batch" and scenario.rate_limit is None and base is not None:
        reads, base_reads = watch["status_requests_per_doc"], base["status_requests_per_doc"]
        targets.append(
            _target(
                "status requests per document",
                reads,
                f"≤ baseline {base_reads}",
                _at_most(reads, base_reads),
            )
        )
        delay, base_delay = watch["detection_delay_mean_s"], base["detection_delay_mean_s"]
        targets.append(
            _target(
                "detection delay mean (s)",
                delay,
                f"≤ baseline {base_delay}",
                _at_most(delay, base_delay),
            )
        )
    if scenario.key == "c":
        targets.append(
            _target(
                "peak RSS, 1000 in flight (MB)",
                watch["peak_rss_mb"],
                "≤ 150",
                _at_most(watch["peak_rss_mb"], 150),
            )
        )
    if scenario.mode == "scan":
        targets.append(
            _target(
                "first submission (s)",
                watch["first_submission_s"],
                "≤ 2",
                _at_most(watch["first_submission_s"], 2),
            )
        )
    if scenario.mode == "large":
        targets.append(
            _target(
                "peak RSS added (MB)",
                watch.get("rss_added_mb"),
                "≤ 16",
                _at_most(watch.get("rss_added_mb"), 16),
            )
        )
    if scenario.rate_limit:
        requests = (watch["posts_per_doc"] + watch["status_requests_per_doc"]) * watch["documents"]
        share = round(watch["http_429"] / max(1.0, requests), 4)
        targets.append(_target("429 answers ÷ requests", share, "≤ 0.01", share <= 0.01))
        rate = watch["requests_per_s_window"]
        at_limit = None if rate is None else round(rate / scenario.rate_limit, 3)
        targets.append(
            _target(
                "requests/s ÷ limit",
                at_limit,
                "≥ 0.9",
                None if at_limit is None else at_limit >= 0.9,
            )
        )
    return targets


def _targets(scenario: Scenario, results: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for tool in ("watch", "watch-warm"):
        if tool in results:
            for target in _targets_of(scenario, results[tool], results.get("baseline"), tool):
                found.append({"tool": tool, **target})
    return found


# -- output ----------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def print_scenario(summary: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """The comparison table of one scenario, then its targets."""
    scenario = summary["scenario"]
    results = summary["results"]
    jitter = f", latency jitter ±{scenario['jitter']:.0%}" if scenario["jitter"] else ""
    out(f"\n({scenario['key']}) {scenario['title']}{jitter}")
    rows = list(ROWS)
    if scenario["mode"] == "scan":
        rows.append(("scan_end_s", "end of scan after start (s)"))
    if scenario["mode"] == "large":
        rows.append(("rss_added_mb", "peak RSS added by the upload (MB)"))
    if scenario["mode"] == "timed":
        rows += TIMED_ROWS
    columns: list[tuple[str, str, str | None]] = []  # (heading, tool, ratio-of tool)
    for tool in results:
        columns.append((TOOLS[tool], tool, None))
        if tool != "baseline" and "baseline" in results:
            columns.append(("÷ baseline", tool, tool))
    out(f"{'metric':<38}" + "".join(f"{heading:>14}" for heading, _, _ in columns))
    for key, label in rows:
        cells = []
        for _, tool, ratio_of in columns:
            value = summary["ratios"][ratio_of].get(key) if ratio_of else results[tool].get(key)
            cells.append(f"{_cell(value):>14}")
        out(f"{label:<38}" + "".join(cells))
    for target in summary["targets"]:
        verdict = {True: "met", False: "NOT MET", None: "n/a"}[target["met"]]
        out(
            f"  {TOOLS[target['tool']]:<13} {target['target']}: {_cell(target['value'])} "
            f"(goal {target['goal']}) {verdict}"
        )
    for problem in summary["problems"]:
        out(f"  problem: {problem}")


def _timed(scenario: Scenario, duration: float | None, skip_first: float | None) -> Scenario:
    """A timed preset run for `duration` s (documents scaled to last) counted after
    `skip_first` s."""
    if scenario.mode != "timed" or (duration is None and skip_first is None):
        return scenario
    duration = duration or scenario.duration
    docs = int((scenario.rate_limit or 20) * duration / 2 * 1.2)
    return replace(
        scenario,
        title=scenario.title.replace(" 120 s", f" {duration:g} s"),
        docs=docs,
        duration=duration,
        skip_first=scenario.skip_first if skip_first is None else skip_first,
    )


def _custom(args: argparse.Namespace) -> Scenario:
    kind = f"{args.pdf_mb:g} MiB PDFs" if args.pdf_mb else "small documents"
    title = f"C={args.concurrency}, L={args.latency:g} s, {args.docs} {kind}"
    if args.rate_limit:
        title += f", rate limit {args.rate_limit:g}/s"
    return Scenario(
        "custom",
        title,
        args.docs,
        args.concurrency,
        args.latency,
        rate_limit=args.rate_limit,
        pdf_mb=args.pdf_mb,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--scenario", nargs="+", choices=[*PRESETS, *GROUPS, "all"], help="presets to run"
    )
    parser.add_argument(
        "--duration", type=float, help="timed presets (h): run each tool this long (s)"
    )
    parser.add_argument(
        "--skip-first", type=float, help="timed presets (h): count only after this long (s)"
    )
    parser.add_argument(
        "--shrink",
        action="store_true",
        help="run the presets at CI-smoke size (a few documents or seconds; figures mean nothing)",
    )
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--docs", type=int, default=6, help="custom scenario: documents")
    parser.add_argument("--concurrency", type=int, default=4, help="custom scenario: C")
    parser.add_argument("--latency", type=float, default=0.1, help="custom scenario: L (s)")
    parser.add_argument("--rate-limit", type=float, default=None, help="custom: requests/s")
    parser.add_argument("--pdf-mb", type=float, default=None, help="custom: PDFs of this size")
    parser.add_argument(
        "--latency-jitter",
        type=float,
        default=0.0,
        help="uniform jitter of every latency, as a fraction (0.1 = ±10 %%)",
    )
    parser.add_argument(
        "--tools",
        nargs="+",
        choices=list(TOOLS),
        default=DEFAULT_TOOLS,
        help="what to run (default: baseline watch watch-warm; watch-nofsync: see above)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temp dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios; exit 1 if a run failed (targets never change the exit code)."""
    args = _parser().parse_args(argv)
    if args.list:
        for scenario in PRESETS.values():
            print(f"{scenario.key}: {scenario.title}")
        return 0
    if args.scenario:
        keys = list(PRESETS) if "all" in args.scenario else args.scenario
        keys = [k for key in keys for k in GROUPS.get(key, [key])]
        scenarios = [PRESETS[k] for k in keys]
        if args.shrink:
            scenarios = [shrunk(s) for s in scenarios]
        scenarios = [_timed(s, args.duration, args.skip_first) for s in scenarios]
    else:
        scenarios = [_custom(args)]
    scenarios = [replace(s, jitter=args.latency_jitter) for s in scenarios]
    tools = [t for t in TOOLS if t in args.tools]

    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "machine": machine_info(),
        "scenarios": [],
    }
    machine = report["machine"]
    print(
        f"machine: {machine['cpu_model']}, {machine['logical_cpus']} CPUs, "
        f"Python {machine['python']}"
    )
    failed = False
    with tempfile.TemporaryDirectory(prefix="docutray-bench-") as temp:
        workdir = args.workdir or Path(temp)
        for scenario in scenarios:
            started = time.monotonic()
            summary = run_scenario(scenario, tools, workdir)
            summary["duration_s"] = round(time.monotonic() - started, 1)
            report["scenarios"].append(summary)
            print_scenario(summary)
            failed = failed or bool(summary["problems"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nresults written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
