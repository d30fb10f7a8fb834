"""Crash loop with routing: `kill -9` during identifications and during the routed steps loses
nothing and identifies a document again only when its first identification's outcome was unknown."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.samples import make_pdf
from tests.reliability.conftest import (
    DaemonFactory,
    Report,
    Sizes,
    base_config,
    elapsed_since,
    integrity_of,
    journal_rows,
    pipeline_config,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SEED = 20261205
ROUTES = {"invoice": ["stp_inv"], "receipt": ["stp_rec", "stp_tot"]}
TYPES = ["invoice", "receipt", "id_card"]  # id_card: no route, `otherwise: fail`


def documents(count: int, rng: random.Random) -> dict[str, tuple[str, bytes]]:
    """`count` distinct PDFs, each marked with the type the emulator will identify."""
    docs = {}
    for index in range(count):
        doc_type = rng.choice(TYPES)
        marker = f"DOCUTRAY-EMULATOR:TYPE={doc_type}"
        docs[f"doc-{index:04d}.pdf"] = (doc_type, make_pdf([f"routed {index}", marker]))
    return docs


def test_kill_9_during_identification_and_steps_loses_nothing(
    tmp_path: Path,
    emulator_factory: Any,
    reliable_daemon: DaemonFactory,
    sizes: Sizes,
    report: Report,
) -> None:
    """Every document ends with exactly its route's results, or failed with the routing reason;
    extra identifications ≤ identifications whose outcome a kill made unknown."""
    started = time.monotonic()
    rng = random.Random(SEED)
    count, kills = sizes.pick((60, 8), (600, 30))
    # Slow enough that kills land while identifications and steps are in flight.
    emulator = emulator_factory(latency=1.5, latency_jitter=0.5, seed=SEED)
    root = tmp_path / "mixed"
    spec = pipeline_config(
        tmp_path,
        "mixed",
        identify={"options": TYPES, "min_confidence": 0.6},
        routes=ROUTES,
        sinks=[{"type": "filesystem", "path": str(root / "out")}],
    )
    del spec["steps"]
    daemon = reliable_daemon(base_config(tmp_path, emulator, spec, shutdown_grace=2))
    journal = tmp_path / "state" / "journal.sqlite3"
    docs = documents(count, rng)
    for name, (_type, data) in docs.items():
        (root / "in" / name).write_bytes(data)

    for _ in range(kills):
        daemon.spawn()
        time.sleep(rng.uniform(0.5, 3.0))
        assert daemon.alive, daemon.log()[-3000:]
        daemon.kill9()
        if journal.exists():
            assert integrity_of(journal) == "ok"
    daemon.start()

    def all_terminal() -> bool:
        done = {p.name for p in (root / "done").glob("*.pdf")}
        failed = {p.name for p in (root / "failed").glob("*.pdf")}
        return len(done | failed) == count

    wait_for(all_terminal, timeout=sizes.pick(240, 1800), interval=0.25)
    assert daemon.stop() == 0

    done = {p.name for p in (root / "done").glob("*.pdf")}
    failed = {p.name for p in (root / "failed").glob("*.pdf")}
    assert done == {n for n, (t, _d) in docs.items() if t in ROUTES}
    assert failed == {n for n, (t, _d) in docs.items() if t not in ROUTES}
    for name in failed:
        sidecar = json.loads((root / "failed" / f"{name}.error.json").read_text())
        assert "identified as `id_card`" in sidecar["reason"], sidecar["reason"]

    # Exactly each routed document's route, once per step, in the sink.
    records = [json.loads(p.read_text()) for p in (root / "out").rglob("*.json")]
    found = Counter((r["document"]["name"], r["step_id"]) for r in records)
    expected = Counter((n, step) for n in done for step in ROUTES[docs[n][0]])
    assert found == expected

    stats = emulator.stats()
    uncertain = journal_rows(
        journal, "SELECT COUNT(*) FROM steps WHERE step_id = '@identify' AND uncertain > 0"
    )[0][0]
    extra_identifications = stats.identifications_created - count
    report(
        "crash-loop-routing",
        documents=count,
        kills=kills,
        delivered=len(done),
        failed=len(failed),
        identifications=stats.identifications_created,
        extra_identifications=extra_identifications,
        identifications_uncertain=uncertain,
        executions=stats.executions_created,
        seconds=elapsed_since(started),
    )
    assert 0 <= extra_identifications <= uncertain
