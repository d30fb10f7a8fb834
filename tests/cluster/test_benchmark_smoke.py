"""CI smoke of benchmarks/cluster.py at its `--shrink` size, so the multi-node benchmark cannot
rot. No figure is asserted (a shared CI machine's figures mean nothing): only that it runs 1 and
2 nodes and the three latency modes end to end, prints its tables, writes its JSON and drops the
databases it created."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.cluster.conftest import PG_ADMIN

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(400)]

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cluster.py"

pytest.importorskip("psutil", reason="the harness measures the emulator with psutil")


def test_cluster_benchmark_runs_at_smoke_size(tmp_path: Path, cluster_url: str) -> None:
    """`benchmarks/cluster.py --shrink`: every document processed by 1 and 2 nodes, each once,
    CPU measured per node, the latency of the three modes printed, no database left behind.
    (`cluster_url` only checks PostgreSQL answers: the benchmark makes databases of its own.)"""
    report = tmp_path / "cluster.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--shrink", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=380,
        check=False,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "÷ one node" in completed.stdout
    assert "file ready → POST" in completed.stdout
    figures = json.loads(report.read_text())
    runs = figures["throughput"]
    assert [r["nodes"] for r in runs] == [1, 2]
    for run in runs:
        assert run["posts"] == run["documents"] == 4 * run["nodes"]
        assert run["resubmissions"] == 0
        assert set(run["cpu_s_per_node"]) == {f"n{i + 1}" for i in range(run["nodes"])}
        assert all(cpu > 0 for cpu in run["cpu_s_per_node"].values())
    assert runs[0]["ratio_to_one_node"] == 1.0
    modes = {row["mode"]: row for row in figures["latency"]}
    assert set(modes) == {"single", "cluster-shared", "cluster-local"}
    assert all(row["files"] == 2 and row["max_s"] >= row["mean_s"] > 0 for row in modes.values())
    with psycopg.connect(PG_ADMIN) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (figures["databases"],)
        ).fetchall()
    assert len(figures["databases"]) == 4  # 1 node, 2 nodes, two cluster latency modes
    assert left == []
