"""The cluster under faults: three `docutray-watch run` processes on loopback against the emulator
(latency 1-3 s), one node killed with `kill -9` at random 5-15 s after the previous one was
restarted (a restart waits until the node's name is free, the stalled timeout after the kill), and
every node's PostgreSQL backends terminated once (`pg_terminate_backend` on the
backends whose application_name is `docutray-watch/<node>`), with a 10 s stalled timeout.

The faults follow a seeded `random.Random`, so a failure names the seed that produced it.

Oracles, at the end:
- every document is in a final state (journaled `archived` / `success`, its file moved);
- every result is in the sink exactly once (one file per document, holding that document);
- extra POSTs in total ≤ kills + connection terminations (each fault can leave at most one
  submission uncertain, which is submitted again);
- the cap held at every moment: the emulator's `peak_latest_executions_running` (the running
  executions at one instant, counting only the latest of each document) is ≤ max_in_flight, that
  is, the peak of running executions is ≤ max_in_flight plus the uncertain resubmissions still
  running at that moment (the per-moment bound, tracked by the emulator as it happens); the
  simple bound, max_in_flight plus all resubmissions, follows and is checked too.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from docutray_watch.cluster.app import libpq_url
from docutray_watch.emulator import EmulatorServer
from docutray_watch.testing import EmulatorFactory
from tests.cluster.daemons import Daemons

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NODES = ("n1", "n2", "n3")
MAX_IN_FLIGHT = 16
STALLED_TIMEOUT = 10.0
WRITE_TIMEOUT = 2.0
LATENCY = 2.0  # seconds, ± 50 %: 1-3 s
SEED = 20261205
KILL_EVERY = (5.0, 15.0)


def node_config(
    root: Path, url: str, emulator: EmulatorServer, node: str, *, local: bool
) -> dict[str, Any]:
    """A node's config: the shared inbox `<root>/inbox`, or with `local` its own folder,
    sink and archive under `<root>/<node>/`."""
    home = root / node if local else root
    return {
        "state_dir": str(root / f"state-{node}"),
        "shutdown_grace": 5,
        "api": {
            "base_url": emulator.base_url,
            "api_key": emulator.api_key,
            "requests_per_second": 1000,
            "max_retries": 2,
            "max_in_flight": MAX_IN_FLIGHT,
            "timeout": {"write": WRITE_TIMEOUT},
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
                "watch": {"path": str(home / "inbox"), "settle": 0, "shared": not local},
                "steps": ["stp_test"],
                "poll": {"initial": 0.5, "max": 1.0, "timeout": 600},
                "on_success": {"action": "move", "to": str(home / "done")},
                "on_failure": {"action": "move", "to": str(home / "failed")},
                "sinks": [{"type": "filesystem", "path": str(home / "out")}],
            }
        ],
    }


def write_documents(inbox: Path, prefix: str, count: int) -> dict[str, str]:
    """`count` distinct small PDFs in `inbox`: their sha256 by file name."""
    inbox.mkdir(parents=True, exist_ok=True)
    written = {}
    for i in range(count):
        name = f"{prefix}-{i:04}.pdf"
        body = b"%PDF-1.4\n" + f"{prefix} document {i}\n".encode() * 20
        (inbox / name).write_bytes(body)
        written[name] = hashlib.sha256(body).hexdigest()
    return written


@dataclass
class Faults:
    """What the chaos did: kills by node, and the nodes whose backends were terminated."""

    kills: list[str] = field(default_factory=list)
    terminated: dict[str, int] = field(default_factory=dict)  # node -> backends terminated

    @property
    def count(self) -> int:
        return len(self.kills) + len(self.terminated)


def run_chaos(
    daemons: Daemons,
    rng: random.Random,
    *,
    progress: Callable[[], int],
    total: int,
    timeout: float,
) -> Faults:
    """Until `progress()` reaches `total`: kill -9 a random node 5-15 s (drawn from `rng`) after
    the previous victim was restarted, restart it once its heartbeat is older than the stalled
    timeout (its name is free then: at least 10 s after the kill, so one node is down at a time
    and kills come every 15-25 s or so), and terminate each node's backends once, when progress
    passes 1/4, 2/4 and 3/4 of `total` (or as soon as that node is up again)."""
    faults = Faults()
    terminate_at = {node: total * (i + 1) // 4 for i, node in enumerate(NODES)}
    down: str | None = None
    deadline = time.monotonic() + timeout
    next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
    while (done := progress()) < total:
        if time.monotonic() > deadline:
            pytest.fail(
                f"seed {SEED}: {done}/{total} done after {timeout:g} s ({faults})\n"
                + daemons.logs()
            )
        for node in NODES:
            if node != down and not daemons.alive(node):
                pytest.fail(f"seed {SEED}: node {node} exited by itself\n" + daemons.logs())
        if down is not None and daemons.silent_for(down) > STALLED_TIMEOUT:
            daemons.start(down)
            down = None
            next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
        if down is None and time.monotonic() >= next_kill:
            down = rng.choice(NODES)
            daemons.kill(down)
            faults.kills.append(down)
        for node, at in terminate_at.items():
            if node not in faults.terminated and done >= at and daemons.alive(node):
                terminated = daemons.terminate_backends(node)
                if terminated:
                    faults.terminated[node] = terminated
        time.sleep(0.25)
    return faults


def count_files(*folders: Path) -> int:
    """The documents (not their error sidecars) in these folders."""
    return sum(len(list(f.glob("*.pdf"))) for f in folders if f.exists())


def final_states(url: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT state, outcome, count(*) FROM docutray.documents GROUP BY state, outcome"
        ).fetchall()
    return [(str(s), str(o), int(n)) for s, o, n in rows]


def results_in(out: Path) -> dict[str, str]:
    """The sink's results: the sha256 each holds, by result file name."""
    found = {}
    for path in out.rglob("*"):
        if path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
            found[path.name] = record["document"]["sha256"]
    return found


def assert_the_oracles(emulator: EmulatorServer, faults: Faults, documents: int) -> None:
    """POSTs and the cap (see the module docstring); the sinks and states are checked by each
    test."""
    stats = emulator.stats(include_executions=False)
    extra_posts = stats.posts - documents
    context = f"seed {SEED}, faults {faults}"
    assert faults.kills, context  # the faults happened
    assert len(faults.terminated) == len(NODES), context
    assert sum(len(per_doc) for per_doc in stats.submissions.values()) == documents, context
    assert extra_posts <= faults.count, context
    assert stats.peak_latest_executions_running <= MAX_IN_FLIGHT, context
    assert stats.peak_executions_running <= MAX_IN_FLIGHT + stats.resubmissions, context
    # Shown with `pytest -rP`: what the run went through.
    print(
        f"kills {len(faults.kills)}, backends terminated {faults.terminated}, posts "
        f"{stats.posts} for {documents} documents, resubmissions {stats.resubmissions}, peak "
        f"running {stats.peak_executions_running} (latest only "
        f"{stats.peak_latest_executions_running}) for max_in_flight {MAX_IN_FLIGHT}, peak "
        f"requests/s {stats.peak_requests_per_second}"
    )


@pytest.fixture(name="daemons")
def daemons_fixture(tmp_path: Path, initialised_url: str) -> Iterator[Daemons]:
    daemons = Daemons(tmp_path, {}, initialised_url)
    try:
        yield daemons
    finally:
        daemons.kill_all()


@pytest.mark.timeout(540)
def test_three_nodes_survive_kills_and_cut_connections_on_a_shared_inbox(
    tmp_path: Path,
    initialised_url: str,
    emulator_factory: EmulatorFactory,
    daemons: Daemons,
) -> None:
    """600 documents, one shared inbox, kill -9 every 5-15 s, each node's backends terminated
    once: every document final, every result in the sink once, extra POSTs ≤ faults, the cap
    held at every moment."""
    documents = 600
    emulator = emulator_factory(latency=LATENCY, latency_jitter=0.5, seed=SEED)
    written = write_documents(tmp_path / "inbox", "doc", documents)
    for node in NODES:
        config = node_config(tmp_path, initialised_url, emulator, node, local=False)
        daemons.configs[node] = tmp_path / f"{node}.yaml"
        daemons.configs[node].write_text(yaml.safe_dump(config), encoding="utf-8")
        daemons.start(node)
    faults = run_chaos(
        daemons,
        random.Random(SEED),
        progress=lambda: count_files(tmp_path / "done"),
        total=documents,
        timeout=480,
    )
    codes = daemons.stop_all()
    assert set(codes.values()) == {0}, codes
    assert final_states(initialised_url) == [("archived", "success", documents)]
    results = results_in(tmp_path / "out")
    assert sorted(results.values()) == sorted(written.values())  # each document's, once
    assert_the_oracles(emulator, faults, documents)


@pytest.mark.timeout(300)
def test_local_inboxes_stay_on_their_node_through_kills(
    tmp_path: Path,
    initialised_url: str,
    emulator_factory: EmulatorFactory,
    daemons: Daemons,
) -> None:
    """Each node its own inbox and filesystem sink, 120 documents in all, the same kills and
    cut connections: every file's result lands in its own node's sink, exactly once."""
    per_node = 40
    emulator = emulator_factory(latency=LATENCY, latency_jitter=0.5, seed=SEED)
    written: dict[str, dict[str, str]] = {}
    for node in NODES:
        written[node] = write_documents(tmp_path / node / "inbox", node, per_node)
        config = node_config(tmp_path, initialised_url, emulator, node, local=True)
        daemons.configs[node] = tmp_path / f"{node}.yaml"
        daemons.configs[node].write_text(yaml.safe_dump(config), encoding="utf-8")
        daemons.start(node)
    faults = run_chaos(
        daemons,
        random.Random(SEED + 1),
        progress=lambda: count_files(
            *(tmp_path / n / folder for n in NODES for folder in ("done", "failed"))
        ),
        total=per_node * len(NODES),
        timeout=240,
    )
    codes = daemons.stop_all()
    assert set(codes.values()) == {0}, codes
    assert final_states(initialised_url) == [("archived", "success", per_node * len(NODES))]
    for node in NODES:
        results = results_in(tmp_path / node / "out")
        assert sorted(results.values()) == sorted(written[node].values()), node
        assert sorted(p.name for p in (tmp_path / node / "done").iterdir()) == sorted(written[node])
    assert_the_oracles(emulator, faults, per_node * len(NODES))
