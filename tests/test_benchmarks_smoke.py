"""CI smoke of the benchmark harness: a tiny run of both tools, so that `benchmarks/` cannot rot.

No performance is asserted here (figures on a shared CI machine mean nothing); only that the
harness runs the baseline and docutray-watch end to end, prints its table and writes its JSON.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from docutray_watch.journal import Journal

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"

pytest.importorskip("docutray", reason="the baseline needs the official SDK (dev extra)")
pytest.importorskip("psutil", reason="the harness measures the emulator with psutil")


def run_script(name: str, *args: str, timeout: float = 120, cwd: Path | None = None) -> str:
    """Run `benchmarks/<name>` with `args`; assert it exits 0 and return what it printed."""
    completed = subprocess.run(
        [sys.executable, str(RUN.with_name(name)), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


@pytest.fixture(name="smoke", scope="module")
def smoke_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    """One run of 6 documents, L=0.1 s, C=4 with the baseline and a cold docutray-watch."""
    folder = tmp_path_factory.mktemp("bench")
    report = folder / "results.json"
    stdout = run_script(
        RUN.name,
        "--docs",
        "6",
        "--latency",
        "0.1",
        "--concurrency",
        "4",
        "--tools",
        "baseline",
        "watch",
        "--json",
        str(report),
        "--workdir",
        str(folder / "work"),
    )
    return stdout, json.loads(report.read_text())


class TestBenchmarkSmoke:
    def test_prints_the_comparison_table(self, smoke: tuple[str, dict[str, object]]) -> None:
        """The table has both tools, the ratio column and the throughput row."""
        stdout, _ = smoke
        assert "baseline" in stdout
        assert "watch (cold)" in stdout
        assert "÷ baseline" in stdout
        assert "throughput ÷ Little bound" in stdout

    def test_writes_json_with_both_tools(self, smoke: tuple[str, dict[str, object]]) -> None:
        """The JSON names the machine and holds, per tool, every document's result written."""
        _, report = smoke
        assert isinstance(report["machine"], dict)
        assert report["machine"]["python"]
        scenarios = report["scenarios"]
        assert isinstance(scenarios, list)
        assert len(scenarios) == 1
        results = scenarios[0]["results"]
        assert set(results) == {"baseline", "watch"}
        for figures in results.values():
            assert figures["results_written"] == 6
            assert figures["executions"] == 6
            assert figures["cpu_s"] > 0
        assert "watch" in scenarios[0]["ratios"]
        assert scenarios[0]["problems"] == []


class TestAdaptiveRateScenarios:
    def test_g_and_h_run_at_smoke_size(self, tmp_path: Path) -> None:
        """(g) on defaults and (h) with an unannounced limit, shrunk: both tools run, (h) has
        its counted-window figures and targets, and no problem is reported."""
        report = tmp_path / "results.json"
        stdout = run_script(
            RUN.name,
            *("--scenario", "g", "h20", "--shrink", "--tools", "baseline", "watch"),
            *("--json", str(report), "--workdir", str(tmp_path / "work")),
            timeout=300,
        )
        assert "throughput ÷ Little bound (defaults)" in stdout
        assert "accepted requests/s ÷ limit" in stdout
        g, h = json.loads(report.read_text())["scenarios"]
        assert g["scenario"]["watch_defaults"] is True
        assert g["results"]["watch"]["results_written"] == 6
        assert h["scenario"]["hidden_limit"] is True
        for figures in h["results"].values():
            assert figures["counted_accepted_per_s"] > 0
            assert figures["counted_window_s"] >= 5
        assert {t["target"] for t in h["targets"]} == {
            "accepted requests/s ÷ limit",
            "429 answers ÷ requests",
            "detection delay mean (s)",
        }
        assert g["problems"] == h["problems"] == []


def test_soak_harness_runs_the_daemon_and_accounts_for_every_file(tmp_path: Path) -> None:
    """benchmarks/soak.py, 15 s at 4 files/s: the daemon stops cleanly and no file is lost."""
    stdout = run_script(
        "soak.py",
        "--minutes",
        "0.25",
        "--rate",
        "4",
        "--latency",
        "0.1",
        "--sample-every",
        "3",
        timeout=300,
        cwd=tmp_path,
    )
    assert "exit code 0" in stdout
    assert "lost: 0" in stdout
    assert "left in the inbox 0" in stdout


def test_http_stack_measures_every_layer(tmp_path: Path) -> None:
    """benchmarks/http_stack.py, 20 reads per stack: prints one row per stack, raw at 1.00."""
    stdout = run_script("http_stack.py", "--requests", "20", "--rounds", "1", cwd=tmp_path)
    rows = {line.split()[0]: line.split() for line in stdout.splitlines()[2:]}
    assert set(rows) == {"raw", "aiohttp", "httpx", "client"}
    assert rows["raw"][-1] == "1.00"


def test_fsync_cost_measures_the_synced_writes(tmp_path: Path) -> None:
    """benchmarks/fsync_cost.py, 5 operations each: one row per kind of synced write."""
    stdout = run_script("fsync_cost.py", "--count", "5", "--dir", str(tmp_path))
    assert "synchronous=FULL" in stdout
    assert "500-byte write + fsync" in stdout
    assert list(tmp_path.iterdir()) == []  # its temporary folder is gone


def _load_run_module() -> ModuleType:
    """benchmarks/run.py as a module (its helpers import as top-level names from its folder)."""
    sys.path.insert(0, str(RUN.parent))
    try:
        spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(RUN.parent))
    return module


class TestFsyncOffDiagnostic:
    def test_only_the_fsync_off_run_preloads_eatmydata(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """watch-nofsync gets libeatmydata appended to LD_PRELOAD; every other tool inherits."""
        run = _load_run_module()
        monkeypatch.setattr(run.ctypes.util, "find_library", lambda name: f"lib{name}.so.1")
        monkeypatch.setenv("LD_PRELOAD", "libother.so")
        env = run.child_env("watch-nofsync")
        assert env is not None
        assert env["LD_PRELOAD"] == "libother.so libeatmydata.so.1"
        assert env["PATH"] == os.environ["PATH"]
        for tool in ("baseline", "watch", "watch-warm"):
            assert run.child_env(tool) is None

    def test_a_missing_libeatmydata_is_a_clear_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the library the harness stops and names the package to install."""
        run = _load_run_module()
        monkeypatch.setattr(run.ctypes.util, "find_library", lambda name: None)
        with pytest.raises(SystemExit, match="apt-get install eatmydata"):
            run.child_env("watch-nofsync")

    def test_the_fsync_off_run_processes_every_document(self, tmp_path: Path) -> None:
        """A tiny run with fsync made a no-op: every result is written, no problem reported."""
        if ctypes.util.find_library("eatmydata") is None:
            if os.environ.get("CI") == "true":
                pytest.fail("libeatmydata is missing: .ci/run installs the eatmydata package")
            pytest.skip("libeatmydata is not installed (apt-get install eatmydata)")
        report = tmp_path / "results.json"
        stdout = run_script(
            RUN.name,
            *("--docs", "4", "--latency", "0.1", "--concurrency", "4"),
            *("--tools", "watch-nofsync", "--json", str(report)),
        )
        assert "watch nofsync" in stdout
        scenario = json.loads(report.read_text())["scenarios"][0]
        assert scenario["problems"] == []
        assert scenario["results"]["watch-nofsync"]["results_written"] == 4


def test_lean_floor_runs_every_stack_to_the_end(tmp_path: Path) -> None:
    """benchmarks/lean_floor.py, 4 documents: every stack processes all of them (the script exits
    non-zero on a missing result, journal row or moved file) and prints its CPU per document."""
    stdout = run_script(
        "lean_floor.py",
        "--docs",
        "4",
        "--concurrency",
        "2",
        "--latency",
        "0.05",
        "--rounds",
        "1",
        cwd=tmp_path,
    )
    rows = {line.split()[0]: line.split() for line in stdout.splitlines()[1:]}
    assert set(rows) == {"aiohttp", "httpx", "client"}
    assert all(float(row[1]) > 0 for row in rows.values())


def test_web_status_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/web_status.py builds a journal, times GET /api/status and reports the ratio
    to the 50 ms target (a small journal here; 100,000 documents by default)."""
    report = tmp_path / "web.json"
    stdout = run_script("web_status.py", "--docs", "2000", "--requests", "5", "--json", str(report))
    figures = json.loads(report.read_text())
    assert figures["documents"] == 2000
    assert figures["target_ms"] == 50.0
    assert figures["median_to_target"] == round(figures["median_ms"] / 50.0, 3)
    assert "x the target" in stdout


def test_history_benchmark_builds_and_measures_at_smoke_size(tmp_path: Path) -> None:
    """benchmarks/history.py at a tiny size: builds the journal and the kept folder, prints
    every figure with its target, and the kept files are not submitted again."""
    report = tmp_path / "history.json"
    stdout = run_script(
        "history.py",
        "--docs",
        "300",
        "--kept",
        "50",
        "--rescan-interval",
        "0.5",
        "--workdir",
        str(tmp_path / "work"),
        "--json",
        str(report),
        timeout=300,
        cwd=RUN.parent,
    )
    assert "status --json" in stdout
    assert "CPU of one rescan of the kept folder" in stdout
    figures = json.loads(report.read_text())["figures"]
    assert figures["submissions"] == 1
    assert {"status_json_s", "first_submission_s", "idle_rss_mb", "rescan_cpu_s"} <= set(figures)
    # Half the finished documents are routed (--routed 0.5 by default): status counts them.
    with Journal(tmp_path / "work" / "state" / "journal.sqlite3") as journal:
        assert sum(journal.counts_by_type()["bench"].values()) == 150


def test_cli_start_benchmark_measures_each_code_tree(tmp_path: Path) -> None:
    """benchmarks/cli_start.py runs a command once per tree and round and prints one line per
    tree with its CPU and wall (an older tree through PYTHONPATH)."""
    tree = tmp_path / "old"
    (tree / "docutray_watch").mkdir(parents=True)
    for source in (RUN.parent.parent / "docutray_watch").rglob("*.py"):
        target = tree / source.relative_to(RUN.parent.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    stdout = run_script(
        "cli_start.py", "--rounds", "1", "--code", str(tree), "new", "--", "--version",
        cwd=RUN.parent,
    )  # fmt: skip
    lines = stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(tree), "new"]
    assert all("CPU min" in line and "wall min" in line for line in lines)
