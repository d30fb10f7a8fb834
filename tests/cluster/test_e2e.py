"""Three `docutray-watch run` processes on one shared inbox against the emulator (latency 1 s).

Each test takes well under two minutes on a busy two-core box.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from docutray_watch.cluster.app import libpq_url
from docutray_watch.emulator import EmulatorServer
from docutray_watch.testing import EmulatorFactory
from tests.cluster.daemons import EXECUTABLE, Daemons, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(120)]

DOCUMENTS = 60
MAX_IN_FLIGHT = 6
NODES = ("n1", "n2", "n3")
STALLED_TIMEOUT = 3.0


def write_node_config(root: Path, url: str, emulator: EmulatorServer, node: str) -> Path:
    data: dict[str, Any] = {
        "state_dir": str(root / f"state-{node}"),
        "shutdown_grace": 5,
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 1000,
            "max_retries": 2,
            "max_in_flight": MAX_IN_FLIGHT,
            "timeout": {"write": 2},
        },
        "cluster": {
            "database": url,
            "node": node,
            "heartbeat_interval": 1,
            "stalled_timeout": STALLED_TIMEOUT,
        },
        "pipelines": [
            {
                "name": "invoices",
                "watch": {"path": str(root / "inbox"), "settle": 0, "shared": True},
                "steps": ["stp_test"],
                "poll": {"initial": 0.5, "max": 1.0, "timeout": 90},
                "on_success": {"action": "move", "to": str(root / "done")},
                "on_failure": {"action": "move", "to": str(root / "failed")},
                "sinks": [{"type": "filesystem", "path": str(root / "out")}],
            }
        ],
    }
    path = root / f"{node}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(name="nodes")
def nodes_fixture(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> Iterator[tuple[Daemons, EmulatorServer]]:
    emulator = emulator_factory(latency=1.0)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(DOCUMENTS):
        (inbox / f"doc-{i:03}.pdf").write_bytes(b"%PDF-1.4\n" + f"document {i}\n".encode() * 20)
    configs = {n: write_node_config(tmp_path, initialised_url, emulator, n) for n in NODES}
    daemons = Daemons(tmp_path, configs, initialised_url)
    try:
        yield daemons, emulator
    finally:
        daemons.kill_all()


def done_count(root: Path) -> int:
    done = root / "done"
    return len(list(done.iterdir())) if done.exists() else 0


def assert_every_document_once(root: Path, url: str, emulator: EmulatorServer) -> Any:
    """Every document final (delivered, then moved), each result in the sink exactly once."""
    stats = emulator.stats()
    results = sorted(p.name for p in (root / "out").rglob("*") if p.is_file())
    assert len(results) == DOCUMENTS
    assert sum(len(per_doc) for per_doc in stats.submissions.values()) == DOCUMENTS
    with psycopg.connect(libpq_url(url)) as conn:
        ends = conn.execute(
            "SELECT state, outcome, count(*) FROM docutray.documents GROUP BY state, outcome"
        ).fetchall()
    assert ends == [("archived", "success", DOCUMENTS)]  # delivered, then the file moved
    return stats


def test_three_nodes_process_a_shared_inbox(
    tmp_path: Path, initialised_url: str, nodes: tuple[Daemons, EmulatorServer]
) -> None:
    """Three daemons on one shared inbox of 60 documents: each ends delivered once, each
    content POSTed once, never more than max_in_flight executions running at the service."""
    daemons, emulator = nodes
    for node in NODES:
        daemons.start(node)
    wait_until(lambda: done_count(tmp_path) == DOCUMENTS, 100, "every document done")
    assert daemons.stop_all() == dict.fromkeys(NODES, 0)
    stats = assert_every_document_once(tmp_path, initialised_url, emulator)
    assert stats.resubmissions == 0
    assert stats.peak_executions_running <= MAX_IN_FLIGHT


def test_a_node_killed_mid_run_loses_nothing(
    tmp_path: Path, initialised_url: str, nodes: tuple[Daemons, EmulatorServer]
) -> None:
    """A node killed with SIGKILL mid-run and restarted: its stalled jobs are retried by the
    others, every document still ends delivered once, at most one extra POST per kill."""
    daemons, emulator = nodes
    for node in NODES:
        daemons.start(node)
    wait_until(lambda: done_count(tmp_path) >= DOCUMENTS // 4, 60, "a quarter done")
    daemons.kill("n2")
    kills = 1
    # Its name is free once its heartbeat is older than the stalled timeout.
    wait_until(lambda: daemons.silent_for("n2") > STALLED_TIMEOUT, 30, "n2 stale")
    daemons.start("n2")
    wait_until(lambda: done_count(tmp_path) == DOCUMENTS, 100, "every document done")
    assert daemons.stop_all() == dict.fromkeys(NODES, 0)
    stats = assert_every_document_once(tmp_path, initialised_url, emulator)
    assert stats.resubmissions <= kills


def test_run_refuses_an_uninitialised_database(
    tmp_path: Path, cluster_url: str, emulator_factory: EmulatorFactory
) -> None:
    """`run` with a cluster block on a database `cluster init` never prepared exits 78 and says
    what to run."""
    config = write_node_config(tmp_path, cluster_url, emulator_factory(), "n1")
    (tmp_path / "inbox").mkdir()
    result = subprocess.run(
        [str(EXECUTABLE), "run", "-c", str(config)], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 78
    assert b"cluster init" in result.stdout + result.stderr
